#!/usr/bin/env bash
# vsb DUT: vswitchd as kube-proxy replacement (ClusterIP DNAT) or NetworkPolicy
# enforcer, driven only through the public contract (vswitchd, vsctl add-port,
# vsctl apply of Kubernetes manifests). The Services scenario mirrors the harness's
# linux-bridge-iptables DUT:
#
#   g1  port of kind gateway (the node's routed side: any source address, as the
#       generator varies it for new-connection runs; a pod port's spoof guard would
#       refuse them)
#   s1  pod port of Pod vsb/sink (10.77.0.20 and 10.77.0.21, MAC = the sink's s0),
#       linked with `vsctl add-port s1 --pod vsb/sink`
#   the generator sends to the node's gateway MAC (0a:58:0a:4d:00:01, the router of
#   pod CIDR 10.77.0.0/18) and the target ClusterIP (10.77.128.0/17), UDP port 80;
#   the switch picks one of the sink's two addresses (Maglev), DNATs to :8080,
#   rewrites the MACs (gateway -> sink) and forwards to s1.
#
# Params (VSB_P_*):
#   svc=N          other ClusterIP services (2 endpoints each, never reached), as
#                  linux-bridge-iptables' svc=N; total N+1 (default 0)
#   udp_timeout=S  conntrack udp_unreplied timeout (default 30, the switch's own)
#   ct_max=N       conntrack max_entries (default the switch's 1048576)
#   policies=N     NetworkPolicy scenario instead (vswitchd-policy.sh sets it):
#                  1000 synthetic pods (no interfaces) in 10 namespaces and N
#                  policies; the generator sends to the sink pod's own address
#                  10.77.0.20:5001 (routed via the gateway MAC) and exactly one
#                  policy allows it. 0 = no policy at all (nothing isolated).
#   bin_dir=DIR    where vswitchd and vsctl are (default $VSWITCH_BIN_DIR)
#   mode=M         port mode for add-port (default auto)
#   args=A         extra vswitchd arguments, as the vswitchd DUT's (e.g.
#                  args=--xdp-fastpath)
set -euo pipefail
# shellcheck source=/dev/null
. "$(dirname "$0")/../lib/common.sh"
NAME=vswitchd-svc
BIN_DIR=${VSB_P_bin_dir:-${VSWITCH_BIN_DIR:-}}
MODE=${VSB_P_mode:-auto}
SVC_N=${VSB_P_svc:-0}
POL_N=${VSB_P_policies:-}
UDP_TO=${VSB_P_udp_timeout:-30}
CT_MAX=${VSB_P_ct_max:-1048576}
SOCK=$VSB_STATE/$NAME.sock
PIDF=$VSB_STATE/$NAME.pid
NODE=vsb-node
GW_MAC=0a:58:0a:4d:00:01 # 0a:58: + 10.77.0.1, the gateway of pod CIDR 10.77.0.0/18

vsctl() { vsb_in "$VSB_NS_DUT" "$BIN_DIR/vsctl" --socket "$SOCK" "$@"; }

# Target ClusterIP: as linux-bridge-iptables for N < 32768 (10.77.128.0 + N);
# the other services live in 10.96.0.0/12 so that 100k of them fit.
cluster_ip() { local k=$((SVC_N % 32768)); echo "10.77.$((128 + k / 256)).$((k % 256))"; }

# manifests FILE : write the scenario's Kubernetes objects as one JSON List.
manifests() {
	python3 - "$1" "$SVC_N" "${POL_N:--1}" "$(cluster_ip)" "$VSB_IP_S0" "$VSB_IP_S0B" "$VSB_MAC_S0" "$VSB_IP_G0" <<'PY'
import json, sys
out, svc_n, pol_n, target, s0, s0b, s0mac, g0 = sys.argv[1:]
svc_n, pol_n = int(svc_n), int(pol_n)
items = []
def add(o): items.append(o)
add({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "vsb-node"},
     "spec": {"podCIDR": "10.77.0.0/18"},
     "status": {"addresses": [{"type": "InternalIP", "address": "10.77.127.1"}]}})
add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vsb", "labels": {"ns": "vsb"}}})
sink_ns = "vsb"
if pol_n >= 0:
    for n in range(10):
        add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns{n}", "labels": {"ns": f"ns{n}"}}})
    sink_ns = "ns0"
def pod(ns, name, ips, labels, node="vsb-node", mac=None):
    md = {"name": name, "namespace": ns, "labels": labels}
    if mac:
        md["annotations"] = {"vswitch.dev/mac": mac}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md,
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "none"}]},
            "status": {"phase": "Running", "podIP": ips[0], "podIPs": [{"ip": i} for i in ips]}}
# The sink: one pod with both of the sink's addresses (it has one port, s1).
add(pod(sink_ns, "sink", [s0, s0b], {"app": "app0", "role": "sink"}, mac=s0mac))
def svc(k, ns, name, vip, eps, node):
    add({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
         "spec": {"type": "ClusterIP", "clusterIP": vip, "clusterIPs": [vip],
                  "ports": [{"name": "udp80", "protocol": "UDP", "port": 80, "targetPort": 8080}]}})
    add({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": name + "-1", "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
         "addressType": "IPv4",
         "ports": [{"name": "udp80", "protocol": "UDP", "port": 8080}],
         "endpoints": [dict({"addresses": [a], "conditions": {"ready": True}, "nodeName": node},
                            **({"targetRef": {"kind": "Pod", "namespace": ns, "name": "sink"}} if node == "vsb-node" else {}))
                       for a in eps]})
if pol_n < 0:
    for k in range(svc_n):
        v = k
        vip = f"10.{96 + v // 65536}.{(v // 256) % 256}.{v % 256}"
        e1, e2 = (2 * k) % 16384, (2 * k + 1) % 16384
        eps = [f"10.77.{64 + e // 256}.{e % 256}" for e in (e1, e2)]
        svc(k, "vsb", f"svc-{k}", vip, eps, "vsb-remote")
    svc(svc_n, "vsb", "target", target, [s0, s0b], "vsb-node")
else:
    # The generator's source, a pod on another node (it has no port here).
    add(pod("ns0", "client", [g0], {"role": "client"}, node="vsb-remote"))
    # 1000 synthetic local pods without interfaces: pod j in ns{j%10}, app{j%100}, team t{j%50}.
    for j in range(1000):
        add(pod(f"ns{j % 10}", f"p{j}", [f"10.77.{8 + j // 256}.{j % 256}"],
                {"app": f"app{j % 100}", "team": f"t{j % 50}"}))
    for i in range(pol_n):
        if i == 0:
            # The one that allows the traffic: to app0 from role=client, UDP 5001.
            frm = [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}}]
            ports = [{"protocol": "UDP", "port": 5001}]
        else:
            frm = [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"team": f"t{i % 50}"}}}]
            ports = [{"protocol": "TCP", "port": 1000 + i % 20}]
        add({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
             "metadata": {"name": f"pol-{i}", "namespace": f"ns{i % 10}"},
             "spec": {"podSelector": {"matchLabels": {"app": f"app{i % 100}"}},
                      "policyTypes": ["Ingress"],
                      "ingress": [{"from": frm, "ports": ports}]}})
with open(out + ".tmp", "w") as f:
    json.dump({"apiVersion": "v1", "kind": "List", "items": items}, f, separators=(",", ":"))
import os
os.rename(out + ".tmp", out)
PY
}

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f\n", b-a}'; }
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$(cat "$PIDF")/status" 2>/dev/null || echo -1; }

start() {
	local st=$VSB_STATE/$NAME-state cfg=$VSB_STATE/$NAME.toml man t0 t1 sink_ns=vsb
	[ -n "$BIN_DIR" ] || vsb_die "set VSWITCH_BIN_DIR (or bin_dir=) to the directory holding vswitchd and vsctl"
	if [ ! -x "$BIN_DIR/vswitchd" ] || [ ! -x "$BIN_DIR/vsctl" ]; then
		vsb_die "vswitchd/vsctl not found in $BIN_DIR"
	fi
	[ -n "$POL_N" ] && sink_ns=ns0
	rm -rf "$st" "$SOCK"
	mkdir -p "$st" "$VSB_STATE/$NAME-manifests"
	man=$VSB_STATE/$NAME-manifests/svc$SVC_N-pol${POL_N:-none}.json
	[ -s "$man" ] || manifests "$man"
	# [overlay] turns the node pipeline on (gateway MAC, routing to pod ports);
	# no uplink port here, so nothing is tunnelled
	printf '[overlay]\nmode = "vxlan"\n[conntrack]\nmax_entries = %d\n[conntrack.timeouts]\nudp_unreplied = %d\n' "$CT_MAX" "$UDP_TO" >"$cfg"
	ip netns exec "$VSB_NS_DUT" "$BIN_DIR/vswitchd" --socket "$SOCK" --config "$cfg" \
		--state-dir "$st" --cores "$VSB_DUT_CPU" ${VSB_P_args:-} >"$VSB_STATE/$NAME.log" 2>&1 &
	echo $! >"$PIDF"
	for _ in $(seq 100); do
		[ -S "$SOCK" ] && vsctl show >/dev/null 2>&1 && break
		kill -0 "$(cat "$PIDF")" 2>/dev/null || { cat "$VSB_STATE/$NAME.log" >&2; vsb_die "$NAME died"; }
		sleep 0.1
	done
	rss_kb >"$VSB_STATE/$NAME.rss0"
	vsctl add-port "$VSB_IF_IN" --kind gateway --mode "$MODE" >/dev/null
	vsctl add-port "$VSB_IF_OUT" --kind pod --pod "$sink_ns/sink" --mode "$MODE" >/dev/null
	t0=$(now)
	vsctl apply --node-name "$NODE" "$man" >"$VSB_STATE/$NAME.apply" 2>&1 ||
		{ cat "$VSB_STATE/$NAME.apply" >&2; vsb_die "vsctl apply failed"; }
	# apply returns once the daemon has realised the whole state (flows included)
	t1=$(now)
	secs "$t0" "$t1" >"$VSB_STATE/$NAME.setup_s"
	rss_kb >"$VSB_STATE/$NAME.rss1"
	vsb_log "$NAME: $(tr -d '\n' <"$VSB_STATE/$NAME.apply") in $(cat "$VSB_STATE/$NAME.setup_s") s, RSS $(cat "$VSB_STATE/$NAME.rss0") -> $(cat "$VSB_STATE/$NAME.rss1") kB"
	sleep 0.5
}

stop() {
	if [ -f "$PIDF" ]; then
		kill -TERM "$(cat "$PIDF")" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$(cat "$PIDF")" 2>/dev/null || break; sleep 0.1; done
		vsb_kill_pid "$(cat "$PIDF")"
	fi
	rm -f "$PIDF" "$SOCK"
	rm -rf "$VSB_STATE/$NAME-state"
	vsb_in "$VSB_NS_DUT" ip link set dev "$VSB_IF_IN" xdp off 2>/dev/null || true
	vsb_in "$VSB_NS_DUT" ip link set dev "$VSB_IF_OUT" xdp off 2>/dev/null || true
}

info() {
	if [ -n "$POL_N" ]; then
		echo "DUT_DESC=$NAME (mode=$MODE) NetworkPolicy: $POL_N policies over 1000 pods, one allows; worker on CPU $VSB_DUT_CPU"
		echo "GEN_DST_MAC=$GW_MAC"
		echo "GEN_DST_IP=$VSB_IP_S0"
		echo "GEN_DPORT=$VSB_DPORT"
	else
		echo "DUT_DESC=$NAME (mode=$MODE${VSB_P_args:+ $VSB_P_args}) ClusterIP DNAT, $((SVC_N + 1)) services, udp_unreplied ${UDP_TO}s; worker on CPU $VSB_DUT_CPU"
		echo "GEN_DST_MAC=$GW_MAC"
		echo "GEN_DST_IP=$(cluster_ip)"
		echo "GEN_DPORT=80"
	fi
}

stats() {
	local s
	if [ -S "$SOCK" ]; then
		s=$(vsctl --json stats 2>/dev/null | tr -d '\n') || s='{}'
	else
		s='{}'
	fi
	printf '{"services":%d,"policies":%s,"setup_s":%s,"rss_kb_empty":%s,"rss_kb_loaded":%s,"rss_kb_now":%s,"vswitchd":%s}\n' \
		$((SVC_N + 1)) "${POL_N:-null}" "$(cat "$VSB_STATE/$NAME.setup_s" 2>/dev/null || echo -1)" \
		"$(cat "$VSB_STATE/$NAME.rss0" 2>/dev/null || echo -1)" "$(cat "$VSB_STATE/$NAME.rss1" 2>/dev/null || echo -1)" \
		"$(rss_kb)" "${s:-{\}}"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
info) info ;;
prerun) : ;;
stats) stats ;;
*) echo "usage: $0 start|stop|info|prerun|stats" >&2; exit 2 ;;
esac
