#!/usr/bin/env bash
# demo.sh -- from a fresh machine to a working switch in one command (as root):
# installs dependencies, builds release binaries, starts a private vswitchd in its own
# network namespace, attaches three "pod" namespaces by veth pairs, pings between them,
# runs a TCP transfer, prints `vsctl show` / `vsctl stats` and the packet rate, and
# removes everything again (also on error or Ctrl-C).
#
# Knobs: DEMO_MODE (port mode: auto|xdp-drv|xdp-skb|packet, default auto),
# DEMO_SECONDS (iperf3 duration, default 5), SKIP_DEPS=1, SKIP_BUILD=1,
# VSWITCH_BIN_DIR (binaries to use instead of target/release).
#
# Nothing is configured in the root namespace: all addresses (10.250.0.0/24) exist only
# inside the namespaces this script creates, and all names carry its pid.
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"
cd "$REPO_ROOT"

MODE=${DEMO_MODE:-auto}
SECS=${DEMO_SECONDS:-5}
TAG=$$
SW=vsdemo-$TAG-sw
NPODS=3
TMP=
DAEMON_PID=
IPERF_PID=
PODS=()

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (namespaces, veths and XDP need it)"

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	say "teardown"
	if [ -n "$IPERF_PID" ]; then kill "$IPERF_PID" 2>/dev/null || true; fi
	if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
		# SIGTERM: the daemon detaches its XDP programs itself.
		kill -TERM "$DAEMON_PID" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$DAEMON_PID" 2>/dev/null; then
			echo "vswitchd ignored SIGTERM; killing it" >&2
			kill -KILL "$DAEMON_PID" 2>/dev/null || true
		fi
		wait "$DAEMON_PID" 2>/dev/null || true
		echo "vswitchd stopped"
	fi
	# Deleting a namespace deletes its interfaces, and so both ends of each veth.
	for ns in "${PODS[@]}" "$SW"; do
		if [ -e "/run/netns/$ns" ]; then ip netns del "$ns" && echo "deleted namespace $ns"; fi
	done
	if [ -n "$TMP" ]; then
		if [ "$rc" != 0 ] && [ -f "$TMP/vswitchd.log" ]; then
			echo "--- vswitchd log ---" >&2
			tail -n 50 "$TMP/vswitchd.log" >&2
		fi
		rm -rf "$TMP"
	fi
	[ "$rc" = 0 ] && echo "demo finished" || echo "demo failed (exit $rc)" >&2
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "${SKIP_DEPS:-0}" != 1 ]; then
	say "installing dependencies"
	scripts/install-deps.sh
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
	say "cargo build --release --workspace"
	cargo build --release --workspace
fi
BIN=${VSWITCH_BIN_DIR:-$(target_dir)/release}
for b in vswitchd vsctl; do [ -x "$BIN/$b" ] || die "$BIN/$b missing"; done

TMP=$(mktemp -d /tmp/vsdemo.XXXXXX)
SOCK=$TMP/vswitchd.sock
vsctl() { ip netns exec "$SW" "$BIN/vsctl" --socket "$SOCK" "$@"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
pod_ns() { echo "vsdemo-$TAG-p$1"; }
pod_ip() { echo "10.250.0.$((10 + $1))"; }

say "switch namespace $SW, vswitchd (socket and state in $TMP)"
ip netns add "$SW"
ip -n "$SW" link set lo up
ip netns exec "$SW" "$BIN/vswitchd" --socket "$SOCK" --state-dir "$TMP/state" >"$TMP/vswitchd.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 100); do
	[ -S "$SOCK" ] && vsctl show >/dev/null 2>&1 && break
	kill -0 "$DAEMON_PID" 2>/dev/null || die "vswitchd exited during startup"
	sleep 0.1
done
vsctl show >/dev/null || die "vswitchd does not answer on $SOCK"
echo "vswitchd running, pid $DAEMON_PID"

say "three pods, each on a veth pair, ports in mode $MODE"
for i in $(seq "$NPODS"); do
	ns=$(pod_ns "$i")
	pod_if=vd${TAG}p$i
	sw_if=vd${TAG}s$i
	ip netns add "$ns"
	PODS+=("$ns")
	ip -n "$ns" link set lo up
	# Created from inside the pod namespace: the pair never appears in the root one.
	ip -n "$ns" link add "$pod_if" type veth peer name "$sw_if" netns "$SW"
	# A userspace switch sees raw frames: without this the pod would hand it
	# CHECKSUM_PARTIAL and GSO frames, and TCP would break (OVS documents the same).
	in_ns "$ns" ethtool -K "$pod_if" tx off tso off gso off >/dev/null
	ip -n "$ns" addr add "$(pod_ip "$i")/24" dev "$pod_if"
	ip -n "$ns" link set "$pod_if" up
	ip -n "$SW" link set "$sw_if" up
	vsctl add-port "$sw_if" --kind pod --mode "$MODE" >/dev/null
	echo "pod $i: namespace $ns, $pod_if $(pod_ip "$i") <-> port $sw_if"
done

say "ping between the pods"
ping_pair() {
	local from=$1 to=$2
	# The first ping may wait for ARP and MAC learning: allow a few tries.
	for _ in $(seq 10); do in_ns "$(pod_ns "$from")" ping -c 1 -W 1 "$(pod_ip "$to")" >/dev/null && break; done
	local out
	out=$(in_ns "$(pod_ns "$from")" ping -n -q -c 3 -i 0.2 -W 2 "$(pod_ip "$to")") ||
		die "pod $from cannot reach pod $to: $out"
	echo "pod $from -> pod $to: $(grep 'packets transmitted' <<<"$out")"
}
ping_pair 1 2
ping_pair 2 3
ping_pair 3 1

say "TCP: iperf3 from pod 1 to pod 2 for ${SECS}s"
in_ns "$(pod_ns 2)" iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
IPERF_PID=$!
for _ in $(seq 50); do
	in_ns "$(pod_ns 2)" ss -ltn 2>/dev/null | grep -q ':5201 ' && break
	sleep 0.1
done
before=$(vsctl --json stats)
t0=$(date +%s.%N)
in_ns "$(pod_ns 1)" iperf3 -c "$(pod_ip 2)" -p 5201 -t "$SECS" -f m | grep -E 'sender|receiver'
t1=$(date +%s.%N)
after=$(vsctl --json stats)
wait "$IPERF_PID" 2>/dev/null || true
IPERF_PID=

say "vsctl show"
vsctl show
say "vsctl stats"
vsctl stats

say "packets per second through the switch during the transfer"
python3 - "$before" "$after" "$t0" "$t1" <<'PY'
import json, sys
before, after = json.loads(sys.argv[1]), json.loads(sys.argv[2])
secs = float(sys.argv[4]) - float(sys.argv[3])
def total(stats, key):
    return sum(p.get(key, 0) for p in stats.get("ports", []))
def drops(stats):
    return sum(sum(p.get("drops", {}).values()) for p in stats.get("ports", []))
rx = total(after, "rx_packets") - total(before, "rx_packets")
tx = total(after, "tx_packets") - total(before, "tx_packets")
rxb = total(after, "rx_bytes") - total(before, "rx_bytes")
print(f"{secs:.1f} s: {rx} packets in, {tx} packets out, {drops(after) - drops(before)} dropped")
print(f"  {rx / secs:,.0f} packets/s in, {tx / secs:,.0f} packets/s out, {rxb * 8 / secs / 1e6:,.0f} Mbit/s in")
PY
