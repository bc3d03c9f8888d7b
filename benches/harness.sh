#!/usr/bin/env bash
# The packets-per-second comparison: runs ../shared/bench (the neutral vsb harness)
# with vswitchd and its peers side by side, in one run, so ratios are meaningful.
#
#   sudo benches/harness.sh                         # vswitchd ovs-afxdp linux-bridge xdp-redirect
#   sudo benches/harness.sh vswitchd ovs-afxdp      # any DUT list run.sh accepts
#   sudo REPS=5 benches/harness.sh                  # any run.sh knob (REPS, DURATION, FLOWS, LAT_RATE, ...)
#   sudo FLOWS=1 LAT=1 LAT_RATE=100 benches/harness.sh "vswitchd:flows=" "ovs-afxdp:flows=" # wake-up latency only
#   sudo LAT=0 benches/harness.sh vswitchd-svc:svc=1000,flows=1+8000000,udp_timeout=1 \
#        linux-bridge-iptables:svc=1000,flows=1+8000000,udp_timeout=1   # Services (docs/benchmarks.md)
#   sudo LAT=0 benches/harness.sh vswitchd-policy:policies=1000          # NetworkPolicy
#
# shared/ is read-only, so the harness is copied to a scratch directory and built
# there; results land in target/bench-results/<date>/ (table.txt, results.jsonl).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${VSB_SRC:-$ROOT/../shared/bench}
[ -d "$SHARED" ] || { echo "harness.sh: no harness at $SHARED (set VSB_SRC)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "harness.sh: run as root" >&2; exit 1; }
WORK=${VSB_WORK:-/tmp/vswitch-vsb}
mkdir -p "$WORK"
# Refresh the copy (keeping its build/ so re-runs do not rebuild).
(cd "$SHARED" && tar cf - --exclude=build --exclude=results .) | (cd "$WORK" && tar xf -)
chmod -R u+w "$WORK"
# Our own DUT plugins (benches/vsb-dut/*.sh: vswitchd-svc, vswitchd-policy) next to
# the harness's, so `benches/harness.sh vswitchd-svc:svc=1000 linux-bridge-iptables:svc=1000` works.
cp "$ROOT"/benches/vsb-dut/*.sh "$WORK/dut/"
(cd "$WORK" && ./install.sh >/dev/null)
(cd "$ROOT" && cargo build --release -p vswitch -p vswitch-control)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
OUT=${OUT:-$ROOT/target/bench-results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
[ $# -gt 0 ] || set -- vswitchd ovs-afxdp linux-bridge xdp-redirect
cd "$WORK"
VSWITCH_BIN_DIR=$BIN OUT=$OUT ./run.sh "$@"
echo "results: $OUT/table.txt"
