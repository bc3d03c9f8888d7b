#!/usr/bin/env bash
# Idle cost of vswitchd: CPU time used over a quiet window with ports attached,
# and its resident memory. Everything lives in private namespaces.
#
#   sudo benches/idle.sh [SECONDS] [PORTS]     # defaults: 30 s, 4 ports (xdp-drv)
#   sudo VSWITCHD_ARGS=--xdp-fastpath benches/idle.sh   # extra vswitchd flags
set -euo pipefail
SECS=${1:-30}
NPORTS=${2:-4}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
[ -x "$BIN/vswitchd" ] || (cd "$ROOT" && cargo build --release -p vswitch -p vswitch-control)
SW=vsidle$$
TMP=$(mktemp -d)
PID=""
cleanup() {
	[ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
	ip netns del "$SW" 2>/dev/null || true
	for i in $(seq "$NPORTS"); do ip netns del "${SW}p$i" 2>/dev/null || true; done
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
ip netns add "$SW"
for i in $(seq "$NPORTS"); do
	ip netns add "${SW}p$i"
	ip link add "sw$i" netns "$SW" type veth peer name eth0 netns "${SW}p$i"
	ip -n "$SW" link set "sw$i" up
	ip -n "${SW}p$i" link set eth0 up
done
# shellcheck disable=SC2086 # VSWITCHD_ARGS is a list of flags
ip netns exec "$SW" "$BIN/vswitchd" --socket "$TMP/s.sock" --state-dir "$TMP/state" ${VSWITCHD_ARGS:-} 2>"$TMP/log" &
PID=$!
for _ in $(seq 100); do [ -S "$TMP/s.sock" ] && break; sleep 0.05; done
for i in $(seq "$NPORTS"); do
	ip netns exec "$SW" "$BIN/vsctl" --socket "$TMP/s.sock" add-port "sw$i" --mode xdp-drv >/dev/null
done
sleep 2
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks)
sleep "$SECS"
t1=$(ticks)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
awk -v a="$t0" -v b="$t1" -v hz="$hz" -v s="$SECS" -v rss="$rss" -v n="$NPORTS" \
	'BEGIN { printf "idle vswitchd, %d ports, %d s: CPU %.3f%% of one core, RSS %.1f MiB\n", n, s, 100 * (b - a) / hz / s, rss / 1024 }'
