#!/usr/bin/env bash
# Pod-to-pod across two nodes through VXLAN: vswitchd (overlay in flannel mode) against
# the same topology built from the kernel's VXLAN device and bridge (flannel's
# datapath). One pod per node; iperf3 TCP throughput, and 64-byte UDP packets per
# second from vswitch-bench's AF_XDP generator in pod a to its AF_XDP sink in pod b
# (both on CPU 0; the datapaths of both nodes on CPU 1), interleaved repetitions so
# both datapaths see the same machine load.
#
#   sudo benches/overlay.sh                  # REPS=3 DURATION=10
#   sudo REPS=5 DURATION=20 benches/overlay.sh
#   sudo DATAPATHS=kernel benches/overlay.sh      # one datapath only
#   sudo DATAPATHS="kernel fastpath" benches/overlay.sh   # kernel vs vswitchd --xdp-fastpath
#   sudo PPS_FLOWS=64 PPS_RATE=300k benches/overlay.sh   # more flows / a fixed offered rate
#   sudo IPERF_UDP=1 benches/overlay.sh      # also the old iperf3 -u -l 18 column
#
# Topology (each node a namespace, the underlay a bridge in a namespace of its own):
#   pod a (10.244.1.2) - node a [vswitchd | flannel.1 + cni0] - ua 192.168.77.1
#       ═══ br0 ═══ ub 192.168.77.2 - node b [...] - pod b (10.244.2.2)
#
# vswitchd: release build (VSWITCH_BIN_DIR, default $CARGO_TARGET_DIR/release), one
# unpinned worker, pods and uplink in `auto` mode (xdp-drv on veth: the whole uplink
# goes to the switch, so the underlay neighbours are static entries, which the switch
# reads from the host table like learnt ones). vsctl, vswitch-agent and vswitch-cni
# come from CTL_BIN_DIR (default: the debug build; control plane only).
# Kernel: vxlan id 1 dstport 8472 nolearning, FDB/neigh/onlink routes as flannel
# installs them, cni0 bridge, pod on a veth; offloads left at their defaults.
#
# The measured threads run at nice NICE (-15; NICE=0 turns it off) so that builds
# sharing the machine do not take most of their CPU.
# CPU placement for the pps runs (as vsb places its DUTs, docs/benchmarking.md): the
# generator and the sink share one thread on CPU 0. vswitchd: each node's daemon
# runs its worker on CPU 1 (--cores 1); the XDP redirect of pod a's frames into
# node a's socket runs in the generator's softirq on CPU 0, as for every userspace
# switch. Kernel: the NAPI of pod a's host-side veth is threaded and pinned to CPU 1
# (with vsb's interrupt moderation), so bridge, routing, VXLAN encap, the underlay,
# decap and delivery to pod b all run on CPU 1. Frames are addressed as pod a's
# stack would (its gateway's MAC as learnt by a ping) and the sink in pod b takes
# every frame (it answers no ARP), so node b gets a static neighbour for pod b.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
T=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${VSWITCH_BIN_DIR:-$T/release}
CTL=${CTL_BIN_DIR:-$T/debug}
REPS=${REPS:-3}
DURATION=${DURATION:-10}
DATAPATHS=${DATAPATHS:-kernel vswitchd fastpath}
PPS_FLOWS=${PPS_FLOWS:-1}
PPS_RATE=${PPS_RATE:-max}
IPERF_UDP=${IPERF_UDP:-0}
# nice of the measured threads in the pps runs (generator/sink, vswitchd's threads,
# the kernel's NAPI thread): other engineers' builds share this machine.
NICE=${NICE:--15}
[ "$(id -u)" = 0 ] || { echo "overlay.sh: run as root" >&2; exit 1; }
# The scheduler groups tasks by session (autogroup): a thread's nice only counts
# against its own session, so the run gets a session of its own with that nice.
if [ "$NICE" != 0 ] && [ -z "${_BENCH_SESSION:-}" ]; then
	exec env _BENCH_SESSION=1 setsid -w "$0" "$@"
fi
[ -w /proc/self/autogroup ] && echo "$NICE" >/proc/$$/autogroup
for b in "$BIN/vswitchd" "$BIN/vswitch-bench" "$CTL/vsctl" "$CTL/vswitch-agent" "$CTL/vswitch-cni"; do
	[ -x "$b" ] || { echo "overlay.sh: $b missing (cargo build --release -p vswitch -p vswitch-bench; cargo build -p vswitch-control)" >&2; exit 1; }
done
command -v iperf3 >/dev/null || { echo "overlay.sh: iperf3 missing (scripts/install-deps.sh)" >&2; exit 1; }

P=vsbo$$
WORK=$(mktemp -d /tmp/vsbo.XXXXXX)
PIDS=()
NSS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	PIDS=()
	for n in "${NSS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
	NSS=()
}
trap 'cleanup; rm -rf "$WORK"' EXIT

mkns() { ip netns add "$1"; ip -n "$1" link set lo up; NSS+=("$1"); }
nsx() { local n=$1; shift; ip netns exec "$n" "$@"; }
mac_of() { ip -n "$1" -j link show "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])'; }

# Underlay and two node namespaces: $P-ul (br0), $P-n1, $P-n2 with u1/u2.
underlay() {
	mkns "$P-ul"
	ip -n "$P-ul" link add br0 type bridge
	ip -n "$P-ul" link set br0 up
	for i in 1 2; do
		mkns "$P-n$i"
		ip -n "$P-n$i" link add u$i type veth peer name p$i netns "$P-ul"
		ip -n "$P-ul" link set p$i master br0 up
		ip -n "$P-n$i" addr add 192.168.77.$i/24 dev u$i
		ip -n "$P-n$i" link set u$i up
	done
	# Static underlay neighbours (the same for both datapaths).
	local m1 m2
	m1=$(mac_of "$P-n1" u1)
	m2=$(mac_of "$P-n2" u2)
	ip -n "$P-n1" neigh replace 192.168.77.2 lladdr "$m2" dev u1 nud permanent
	ip -n "$P-n2" neigh replace 192.168.77.1 lladdr "$m1" dev u2 nud permanent
}

setup_kernel() {
	underlay
	for i in 1 2; do
		local n=$P-n$i o=$((3 - i))
		nsx "$n" sysctl -qw net.ipv4.ip_forward=1
		ip -n "$n" link add flannel.1 type vxlan id 1 local 192.168.77.$i dev u$i dstport 8472 nolearning
		ip -n "$n" link set flannel.1 address 0e:fa:00:00:0$i:01 mtu 1450 up
		ip -n "$n" addr add 10.244.$i.0/32 dev flannel.1
		ip -n "$n" neigh replace 10.244.$o.0 lladdr 0e:fa:00:00:0$o:01 dev flannel.1 nud permanent
		nsx "$n" bridge fdb append 0e:fa:00:00:0$o:01 dev flannel.1 dst 192.168.77.$o self permanent
		ip -n "$n" route replace 10.244.$o.0/24 via 10.244.$o.0 dev flannel.1 onlink
		ip -n "$n" link add cni0 type bridge
		ip -n "$n" addr add 10.244.$i.1/24 dev cni0
		ip -n "$n" link set cni0 up
		mkns "$P-pod$i"
		# host-side names unique to this run: their NAPI threads are found by name
		ip -n "$n" link add "k$$v$i" type veth peer name eth0 netns "$P-pod$i"
		ip -n "$n" link set "k$$v$i" mtu 1450 master cni0 up
		ip -n "$P-pod$i" link set eth0 mtu 1450 up
		ip -n "$P-pod$i" addr add 10.244.$i.2/24 dev eth0
		ip -n "$P-pod$i" route add default via 10.244.$i.1
	done
}

# vswitchd with --xdp-fastpath: cached decisions (VXLAN encap on pod a's port, decap
# on node b's uplink) run in XDP (docs/overlay.md). The underlay bridge ports get GRO
# on: a veth accepts XDP-redirected frames only when its peer has NAPI, and the
# uplink's peer is the bridge port (the pods' ends get GRO from the CNI plugin).
setup_fastpath() {
	FP_ARGS=--xdp-fastpath setup_vswitchd
	for i in 1 2; do
		nsx "$P-ul" ethtool -K p$i gro on >/dev/null
	done
}

setup_vswitchd() {
	underlay
	local nodes="$WORK/nodes.yaml"
	: >"$nodes"
	for i in 1 2; do
		cat >>"$nodes" <<EOF
apiVersion: v1
kind: Node
metadata:
  name: node-$i
spec: {podCIDR: 10.244.$i.0/24}
status:
  addresses: [{type: InternalIP, address: 192.168.77.$i}]
---
EOF
	done
	for i in 1 2; do
		local n=$P-n$i d=$WORK/n$i
		rm -rf "$d"
		mkdir -p "$d/state" "$d/m" "$d/ipam"
		cp "$nodes" "$d/m/nodes.yaml"
		printf '[overlay]\nmode = "flannel"\n' >"$d/vswitchd.toml"
		# direct ip netns exec (not nsx, a function): $! is the daemon itself, which cleanup kills
		ip netns exec "$n" "$BIN/vswitchd" --cores 1 ${FP_ARGS:-} --socket "$d/sock" --state-dir "$d/state" --config "$d/vswitchd.toml" >"$d/vswitchd.log" 2>&1 &
		PIDS+=($!)
		for _ in $(seq 100); do [ -S "$d/sock" ] && break; sleep 0.1; done
		nsx "$n" "$CTL/vsctl" --socket "$d/sock" add-port u$i --kind uplink --mode auto >/dev/null
		"$CTL/vswitch-agent" --socket "$d/sock" --node-name node-$i --manifests "$d/m" --uplink u$i \
			--metrics-addr 127.0.0.1:0 >"$d/agent.log" 2>&1 &
		PIDS+=($!)
		mkns "$P-pod$i"
		printf '{"cniVersion":"1.1.0","name":"vsbo","type":"vswitch-cni","socket":"%s","ipam":{"type":"host-local","subnet":"10.244.%s.0/24","dataDir":"%s","routes":[{"dst":"0.0.0.0/0"}]}}' \
			"$d/sock" "$i" "$d/ipam" >"$d/cni.json"
		CNI_COMMAND=ADD CNI_CONTAINERID=ctr$i CNI_NETNS=/run/netns/$P-pod$i CNI_IFNAME=eth0 \
			CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod$i" \
			CNI_PATH="$CTL:/usr/lib/cni" nsx "$n" "$CTL/vswitch-cni" <"$d/cni.json" >"$d/cni.out"
	done
	local pods="$WORK/pods.yaml"
	: >"$pods"
	for i in 1 2; do
		cat >>"$pods" <<EOF
apiVersion: v1
kind: Pod
metadata: {name: pod$i, namespace: default, uid: uid-pod$i}
spec:
  nodeName: node-$i
  containers: [{name: c, image: x}]
status: {phase: Running, podIP: 10.244.$i.2, podIPs: [{ip: 10.244.$i.2}]}
---
EOF
	done
	cp "$pods" "$WORK/n1/m/pods.yaml"
	cp "$pods" "$WORK/n2/m/pods.yaml"
}

# Kernel datapath: pod a's host-side veth NAPI threaded on CPU 1, with moderation.
kernel_pin() {
	napi_pin "k$$v1"
}

# NAPI of node a's interface DEV threaded on CPU 1, with vsb's moderation. With the
# XDP fast path, DEV is pod a's switch-side veth: its XDP program (encap), and the
# redirects after it, run in that NAPI, on CPU 1 like the kernel path's work.
napi_pin() { # DEV
	local dev=$1 p d
	nsx "$P-n1" ethtool -K "$dev" gro on >/dev/null
	nsx "$P-n1" sh -c "echo 1 > /sys/class/net/$dev/threaded && echo 100 > /sys/class/net/$dev/napi_defer_hard_irqs && echo 20000 > /sys/class/net/$dev/gro_flush_timeout"
	sleep 0.2
	d=$(printf 'napi/%s-' "$dev" | cut -c1-15) # comm is at most 15 characters
	for p in $(ps -eo pid=,comm= | awk -v d="$d" 'index($2, d) == 1 {print $1}'); do
		taskset -pc 1 "$p" >/dev/null
		renice -n "$NICE" -p "$p" >/dev/null
	done
}

# 64-byte UDP pod a -> pod b with vswitch-bench; prints "offered_kpps delivered_kpps
# loss_pct stalled_ms".
pps() { # DATAPATH
	local gw_mac src_mac dst_mac f=$WORK/pps
	# the sink takes every frame in pod b: no ARP answers from there from now on
	dst_mac=$(mac_of "$P-pod2" eth0)
	if [ "$1" = kernel ]; then
		ip -n "$P-n2" neigh replace 10.244.2.2 lladdr "$dst_mac" dev cni0 nud permanent
		nsx "$P-n2" bridge fdb replace "$dst_mac" dev "k$$v2" master static
		kernel_pin
	else
		local p t
		for p in "${PIDS[@]}"; do
			[ "$(cat /proc/"$p"/comm 2>/dev/null)" = vswitchd ] || continue
			for t in /proc/"$p"/task/*; do renice -n "$NICE" -p "${t##*/}" >/dev/null; done
		done
		if [ "$1" = fastpath ]; then
			napi_pin "$(ip -n "$P-n1" -o link show | awk -F': ' '$2 ~ /^vsw/ {sub(/@.*/, "", $2); print $2; exit}')"
		fi
	fi
	gw_mac=$(ip -n "$P-pod1" -j neigh show 10.244.1.1 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["lladdr"])')
	src_mac=$(mac_of "$P-pod1" eth0)
	# copy-mode AF_XDP frames take the peer's NAPI path only with TSO/GSO off (docs/benchmarking.md)
	nsx "$P-pod1" ethtool -K eth0 tso off gso off >/dev/null 2>&1 || true
	cat >"$f.toml" <<EOF
name = "overlay-$1"
[topology]
mode = "existing"
gen_ns = "$P-pod1"
gen_if = "eth0"
sink_ns = "$P-pod2"
sink_if = "eth0"
[traffic]
size = 64
flows = $PPS_FLOWS
fields = ["src_port"]
rate = "$PPS_RATE"
src_mac = "$src_mac"
dst_mac = "$gw_mac"
src_ip = "10.244.1.2"
dst_ip = "10.244.2.2"
[run]
duration = $DURATION
warmup = 2
repeats = 1
gen_cpus = [0]
EOF
	nice -n "$NICE" "$BIN/vswitch-bench" run "$f.toml" --quiet --json "$f.json" >"$f.log" 2>&1 || { cat "$f.log" >&2; return 1; }
	cp "$f.json" "$WORK/pps-$1-$(date +%s).json"
	python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["trials"][0]; print(round(t["offered_pps"]/1e3), round(t["delivered_pps"]/1e3), round(t["loss_pct"], 2), round(t["stalled_ms"]))' "$f.json"
}

# Waits for the path, then prints "TCP_Mbps [iperf_UDP_kpps] offered_kpps
# delivered_kpps loss_pct stalled_ms".
measure() { # DATAPATH
	local ok=0
	for _ in $(seq 60); do
		if nsx "$P-pod1" ping -c1 -W1 10.244.2.2 >/dev/null 2>&1; then ok=1; break; fi
	done
	[ $ok = 1 ] || { echo "no path pod1 -> pod2" >&2; return 1; }
	nsx "$P-pod2" iperf3 -s -D -1 >/dev/null
	sleep 0.3
	local tcp udp="" p
	tcp=$(nsx "$P-pod1" iperf3 -c 10.244.2.2 -t "$DURATION" -J |
		python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))')
	if [ "$IPERF_UDP" = 1 ]; then
		nsx "$P-pod2" iperf3 -s -D -1 >/dev/null
		sleep 0.3
		udp=$(nsx "$P-pod1" iperf3 -c 10.244.2.2 -u -b 0 -l 18 -t "$DURATION" -J |
			python3 -c 'import json,sys; s=json.load(sys.stdin)["end"]["sum"]; print(round((s["packets"]-s["lost_packets"])/s["seconds"]/1e3))')
	fi
	p=$(pps "$1") || p="fail fail fail fail"
	echo "$tcp${udp:+ $udp} $p"
}

RES=$WORK/results
: >"$RES"
echo "rep datapath tcp_mbit_s$([ "$IPERF_UDP" = 1 ] && echo " iperf_udp64_kpps") offered_kpps delivered_kpps loss_pct stalled_ms"
for r in $(seq "$REPS"); do
	for dp in $DATAPATHS; do
		"setup_$dp"
		res=$(measure "$dp") || res="fail"
		echo "$r $dp $res" | tee -a "$RES"
		cleanup
	done
done
# medians, and the ratio of delivered pps (vswitchd / kernel) per rep and overall
python3 - "$RES" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
by, per_rep = {}, {}
for r in rows:
    if "fail" in r: continue
    by.setdefault(r[1], []).append(r)
    per_rep.setdefault(r[0], {})[r[1]] = float(r[-3])
med = {}
for dp, rs in by.items():
    tcp = statistics.median(float(r[2]) for r in rs)
    med[dp] = statistics.median(float(r[-3]) for r in rs)
    print(f"median {dp}: TCP {tcp:.0f} Mbit/s, 64 B UDP delivered {med[dp]:.0f} kpps ({len(rs)} reps)")
for dp in ("vswitchd", "fastpath"):
    ratios = [v[dp] / v["kernel"] for v in per_rep.values() if v.get("kernel") and dp in v]
    if ratios:
        print(f"pps ratio {dp} / kernel: median {statistics.median(ratios):.2f}x, per rep "
              + " ".join(f"{x:.2f}" for x in ratios) + " (target 1.5x)")
EOF
