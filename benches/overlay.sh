#!/usr/bin/env bash
# Pod-to-pod across two nodes through VXLAN: vswitchd (overlay in flannel mode) against
# the same topology built from the kernel's VXLAN device and bridge (flannel's
# datapath). One pod per node; iperf3 TCP throughput and 64-byte-frame UDP packets
# per second (18-byte payload: 14 + 20 + 8 + 18 + 4 FCS = 64), interleaved
# repetitions so both datapaths see the same machine load.
#
#   sudo benches/overlay.sh                  # REPS=3 DURATION=10
#   sudo REPS=5 DURATION=20 benches/overlay.sh
#   sudo DATAPATHS=kernel benches/overlay.sh      # one datapath only
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
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
T=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${VSWITCH_BIN_DIR:-$T/release}
CTL=${CTL_BIN_DIR:-$T/debug}
REPS=${REPS:-3}
DURATION=${DURATION:-10}
DATAPATHS=${DATAPATHS:-kernel vswitchd}
[ "$(id -u)" = 0 ] || { echo "overlay.sh: run as root" >&2; exit 1; }
for b in "$BIN/vswitchd" "$CTL/vsctl" "$CTL/vswitch-agent" "$CTL/vswitch-cni"; do
	[ -x "$b" ] || { echo "overlay.sh: $b missing (cargo build --release -p vswitch; cargo build -p vswitch-control)" >&2; exit 1; }
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
		ip -n "$n" link add v$i type veth peer name eth0 netns "$P-pod$i"
		ip -n "$n" link set v$i mtu 1450 master cni0 up
		ip -n "$P-pod$i" link set eth0 mtu 1450 up
		ip -n "$P-pod$i" addr add 10.244.$i.2/24 dev eth0
		ip -n "$P-pod$i" route add default via 10.244.$i.1
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
		nsx "$n" "$BIN/vswitchd" --socket "$d/sock" --state-dir "$d/state" --config "$d/vswitchd.toml" >"$d/vswitchd.log" 2>&1 &
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

# Waits for the path, then prints "TCP_Mbps UDP_kpps".
measure() {
	local ok=0
	for _ in $(seq 60); do
		if nsx "$P-pod1" ping -c1 -W1 10.244.2.2 >/dev/null 2>&1; then ok=1; break; fi
	done
	[ $ok = 1 ] || { echo "no path pod1 -> pod2" >&2; return 1; }
	nsx "$P-pod2" iperf3 -s -D -1 >/dev/null
	sleep 0.3
	local tcp udp
	tcp=$(nsx "$P-pod1" iperf3 -c 10.244.2.2 -t "$DURATION" -J |
		python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))')
	nsx "$P-pod2" iperf3 -s -D -1 >/dev/null
	sleep 0.3
	udp=$(nsx "$P-pod1" iperf3 -c 10.244.2.2 -u -b 0 -l 18 -t "$DURATION" -J |
		python3 -c 'import json,sys; s=json.load(sys.stdin)["end"]["sum"]; print(round((s["packets"]-s["lost_packets"])/s["seconds"]/1e3))')
	echo "$tcp $udp"
}

echo "rep datapath tcp_mbit_s udp64_kpps"
for r in $(seq "$REPS"); do
	for dp in $DATAPATHS; do
		"setup_$dp"
		res=$(measure) || res="fail fail"
		echo "$r $dp $res"
		cleanup
	done
done
