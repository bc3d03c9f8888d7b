#!/usr/bin/env bash
# Cross-check of vswitch-bench against the neutral vsb harness (../shared/bench) on the
# *same DUT instance*: one vsb topology (its topo.sh, its DUT plugins), one DUT started
# once, and then, round after round, the tools take turns on it within seconds of each
# other, so a change of host load or vCPU placement hits every tool alike:
#
#   vsb      vsb-gen --engine afxdp  + vsb-sink (XDP counter)      = vsb's latency engine
#   mixed    vswitch-bench gen       + vsb-sink                    = our generator alone
#   ours     vswitch-bench run (existing topology: our generator on
#            CPU 0, our XDP counting sink on the DUT's CPU)        = our tool as used
#            (OURS_SINK=afxdp: our AF_XDP sink instead, sharing the generator's
#            thread on CPU 0, as before the XDP sink existed)
#   live     vsb-gen --engine xdp-live + vsb-sink (max rate only)  = vsb's throughput engine
#
# at a fixed offered rate below saturation (RATE; g1 without interrupt moderation, as
# vsb's latency runs) and at the maximum rate (g1 with napi_defer_hard_irqs=100 and
# gro_flush_timeout=20us, as vsb's throughput runs). Everything: 64-byte frames, one
# flow, generator (and sink thread) on CPU 0, DUT on CPU 1, the sink's XDP on the DUT's
# CPU (vsb's SINK_NAPI=softirq).
#
#   sudo benches/crosscheck.sh                                 # ROUNDS=5 DURATION=4 RATE=50000
#   sudo ROUNDS=8 DUTS="xdp-redirect" benches/crosscheck.sh
#   sudo DUTS="vswitchd" RATE=100000 benches/crosscheck.sh     # vswitchd from $CARGO_TARGET_DIR/release
#
# On a shared machine (other engineers' builds), the measured threads run at nice
# NICE (default -15: generators, sinks, and the DUT's threads alike), so a few
# compilers on the same CPU do not take most of their time; NICE=0 turns it off.
#
# Output: one TSV row per measurement in $OUT/xc.tsv, the medians and per-round ratios
# in $OUT/summary.txt (printed at the end). Wrap it in `flock /tmp/bench.lock` on a
# shared machine so it does not overlap another benchmark.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${VSB_SRC:-$ROOT/../shared/bench}
T=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${VSWITCH_BIN_DIR:-$T/release}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-4}
WARMUP=${WARMUP:-1}
RATE=${RATE:-50000}
NICE=${NICE:--15}
DUTS=${DUTS:-xdp-redirect vswitchd}
OURS_SINK=${OURS_SINK:-xdp}
OUT=${OUT:-$T/bench-results/crosscheck-$(date +%Y%m%d-%H%M%S)}
[ "$(id -u)" = 0 ] || { echo "crosscheck.sh: run as root" >&2; exit 1; }
# The scheduler groups tasks by session (autogroup): a thread's nice only counts
# against its own session, so the run gets a session of its own with that nice.
if [ "$NICE" != 0 ] && [ -z "${_BENCH_SESSION:-}" ]; then
	exec env _BENCH_SESSION=1 setsid -w "$0" "$@"
fi
[ -w /proc/self/autogroup ] && echo "$NICE" >/proc/$$/autogroup
[ -d "$SHARED" ] || { echo "crosscheck.sh: no harness at $SHARED (set VSB_SRC)" >&2; exit 1; }
for b in vswitch-bench vswitchd vsctl; do
	[ -x "$BIN/$b" ] || { echo "crosscheck.sh: $BIN/$b missing (cargo build --release -p vswitch-bench -p vswitch -p vswitch-control)" >&2; exit 1; }
done
VB=$BIN/vswitch-bench

WORK=${VSB_WORK:-/tmp/vswitch-xc}
mkdir -p "$WORK/vsb" "$OUT"
(cd "$SHARED" && tar cf - --exclude=build --exclude=results .) | (cd "$WORK/vsb" && tar xf -)
chmod -R u+w "$WORK/vsb"
make -s -C "$WORK/vsb" >/dev/null
V=$WORK/vsb
# Private namespace names and state: no clash with a vsb run of someone else.
export VSB_NS_GEN=xc$$-gen VSB_NS_DUT=xc$$-dut VSB_NS_SINK=xc$$-sink
export VSB_STATE=$WORK/state.$$ VSB_BUILD=$V/build VSWITCH_BIN_DIR=$BIN
. "$V/lib/common.sh"
mkdir -p "$VSB_STATE"

CUR_DUT=""
SINK_PID=""
cleanup() {
	[ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
	[ -n "$CUR_DUT" ] && bash "$V/dut/$CUR_DUT.sh" stop >/dev/null 2>&1
	"$V/topo.sh" down >/dev/null 2>&1 || true
	rm -rf "$VSB_STATE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

moderation() { # DEFER FLUSH_NS on g1, as run.sh's ingress_moderation
	vsb_in "$VSB_NS_DUT" sh -c "echo $1 > /sys/class/net/$VSB_IF_IN/napi_defer_hard_irqs && echo $2 > /sys/class/net/$VSB_IF_IN/gro_flush_timeout"
}
N=(nice -n "$NICE")
# renice_dut: the DUT's threads at NICE too (kthreads of threaded NAPI, or every
# thread of the daemon).
renice_dut() {
	local p t
	case $CUR_DUT in
	xdp-redirect) for p in $(vsb_napi_pids "$VSB_NS_DUT" "$VSB_IF_IN"); do renice -n "$NICE" -p "$p" >/dev/null; done ;;
	vswitchd) p=$(cat "$VSB_STATE/vswitchd.pid"); for t in /proc/"$p"/task/*; do renice -n "$NICE" -p "${t##*/}" >/dev/null; done ;;
	esac
}
xcpu() { "$VSB_BUILD/vsb-xcpu" 0 1 2>/dev/null || echo -1; }
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$@"; }

# vsb-sink over [t0+WARMUP, t0+WARMUP+DURATION], in the background; sets SINK_PID.
start_vsb_sink() { # T0 JSON
	rm -f "$VSB_STATE/sink.ready"
	"${N[@]}" ip netns exec "$VSB_NS_SINK" "$VSB_BUILD/vsb-sink" -i "$VSB_IF_SINK" --cpu 0 --t0 "$1" \
		--warmup "$WARMUP" --duration "$DURATION" --ready-file "$VSB_STATE/sink.ready" >"$2" 2>"$2.err" &
	SINK_PID=$!
	for _ in $(seq 200); do [ -f "$VSB_STATE/sink.ready" ] && return 0; sleep 0.01; done
	cat "$2.err" >&2
	return 1
}

# One measurement; prints "offered_pps delivered_pps stalled_ms".
measure() { # TOOL RATE(0=max) TAG
	local tool=$1 rate=$2 f=$OUT/raw/$3 t0 r=()
	mkdir -p "$OUT/raw"
	case $tool in
	vsb | live)
		local eng=afxdp
		[ "$tool" = live ] && eng=xdp-live
		[ "$rate" != 0 ] && r=(--rate "$rate")
		t0=$(($("$VSB_BUILD/vsb-sink" --now) + 1000000000))
		start_vsb_sink "$t0" "$f.sink.json"
		"${N[@]}" ip netns exec "$VSB_NS_GEN" "$VSB_BUILD/vsb-gen" -i "$VSB_IF_GEN" --engine "$eng" \
			--src-mac "$VSB_MAC_G0" --dst-mac "$VSB_MAC_S0" --src-ip "$VSB_IP_G0" --dst-ip "$VSB_IP_S0" \
			--sport "$VSB_SPORT" --dport "$VSB_DPORT" --flows 1 --size 64 --t0 "$t0" \
			--warmup "$WARMUP" --duration "$DURATION" --cpu 0 --stamp "${r[@]}" >"$f.gen.json" 2>"$f.gen.err"
		wait "$SINK_PID"
		SINK_PID=""
		echo "$(jget "$f.gen.json" 'd["pps"]') $(jget "$f.sink.json" 'd["pps"]') 0"
		;;
	mixed)
		# vsb-sink's window lies inside the generator's: the generator starts ~0.1 s
		# after the sink is ready and sends for WARMUP+1 + DURATION+0.5 s.
		t0=$(($("$VSB_BUILD/vsb-sink" --now) + 1000000000))
		start_vsb_sink "$t0" "$f.sink.json"
		"${N[@]}" "$VB" gen --netns "$VSB_NS_GEN" --iface "$VSB_IF_GEN" --cpu 0 --engine afxdp \
			--src-mac "$VSB_MAC_G0" --dst-mac "$VSB_MAC_S0" --src-ip "$VSB_IP_G0" --dst-ip "$VSB_IP_S0" \
			--sport "$VSB_SPORT" --dport "$VSB_DPORT" --flows 1 --size 64 \
			--rate "$([ "$rate" = 0 ] && echo max || echo "$rate")" \
			--warmup "$(python3 -c "print($WARMUP+1)")" --duration "$(python3 -c "print($DURATION+0.5)")" \
			--json "$f.gen.json" >/dev/null 2>"$f.gen.err"
		wait "$SINK_PID"
		SINK_PID=""
		echo "$(jget "$f.gen.json" 'd["offered_pps"]') $(jget "$f.sink.json" 'd["pps"]') $(jget "$f.gen.json" 'd["stalled_ms"]')"
		;;
	ours)
		cat >"$f.toml" <<EOF
name = "crosscheck"
[topology]
mode = "existing"
gen_ns = "$VSB_NS_GEN"
gen_if = "$VSB_IF_GEN"
sink_ns = "$VSB_NS_SINK"
sink_if = "$VSB_IF_SINK"
[traffic]
flows = 1
size = 64
rate = $([ "$rate" = 0 ] && echo '"max"' || echo "$rate")
src_mac = "$VSB_MAC_G0"
dst_mac = "$VSB_MAC_S0"
src_ip = "$VSB_IP_G0"
dst_ip = "$VSB_IP_S0"
src_port = $VSB_SPORT
dst_port = $VSB_DPORT
sink_engine = "$OURS_SINK"
[run]
duration = $DURATION
warmup = $WARMUP
repeats = 1
gen_cpus = [0]
EOF
		"${N[@]}" "$VB" run "$f.toml" --quiet --json "$f.json" >"$f.log" 2>&1 || { cat "$f.log" >&2; return 1; }
		jget "$f.json" '"%s %s %s" % (d["trials"][0]["offered_pps"], d["trials"][0]["delivered_pps"], d["trials"][0]["stalled_ms"])'
		;;
	esac
}

printf 'dut\tround\trate\ttool\txcpu_ns\toffered_pps\tdelivered_pps\tstalled_ms\n' >"$OUT/xc.tsv"
for dut in $DUTS; do
	"$V/topo.sh" down >/dev/null 2>&1 || true
	"$V/topo.sh" up >/dev/null
	CUR_DUT=$dut
	bash "$V/dut/$dut.sh" start >/dev/null
	renice_dut
	for r in $(seq "$ROUNDS"); do
		for rate in "$RATE" 0; do
			if [ "$rate" = 0 ]; then moderation 100 20000; tools="vsb mixed ours live"; else moderation 0 0; tools="vsb mixed ours"; fi
			# rotate the order every round so no tool always runs first
			set -- $tools
			for _ in $(seq $(((r - 1) % $#))); do set -- "${@:2}" "$1"; done
			for tool in "$@"; do
				x=$(xcpu)
				res=$(measure "$tool" "$rate" "$dut.$r.$rate.$tool") || res="nan nan nan"
				line=$(printf '%s\t%s\t%s\t%s\t%s\t%s' "$dut" "$r" "$([ "$rate" = 0 ] && echo max || echo "$rate")" "$tool" "$x" "$(echo "$res" | tr ' ' '\t')")
				echo "$line" >>"$OUT/xc.tsv"
				echo "$line"
				sleep 0.5
			done
		done
	done
	bash "$V/dut/$dut.sh" stop >/dev/null 2>&1 || true
	CUR_DUT=""
	"$V/topo.sh" down >/dev/null
done

python3 - "$OUT/xc.tsv" >"$OUT/summary.txt" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
def f(x):
    try: return float(x)
    except ValueError: return float("nan")
def cls(r):
    x = f(r["xcpu_ns"])
    return "near" if 0 < x < 250 else "far"
def med(v): return statistics.median(v) if v else float("nan")
groups = {}
for r in rows: groups.setdefault((r["dut"], r["rate"]), []).append(r)
print("Delivered Mpps, median [min-max] over rounds. ratio: per round, tool / vsb (afxdp) in the same")
print("round, median [min-max], counting only rounds where both ran with the vCPUs in the same")
print("placement (vsb-xcpu < 250 ns 'near', else 'far').")
for (dut, rate), rs in groups.items():
    print(f"\n{dut} @ {rate}")
    vsb = {r["round"]: r for r in rs if r["tool"] == "vsb"}
    for tool in ["vsb", "mixed", "ours", "live"]:
        t = [r for r in rs if r["tool"] == tool]
        if not t: continue
        d = [f(r["delivered_pps"]) / 1e6 for r in t]
        o = [f(r["offered_pps"]) / 1e6 for r in t]
        ratios = [f(r["delivered_pps"]) / f(vsb[r["round"]]["delivered_pps"]) for r in t
                  if r["round"] in vsb and cls(vsb[r["round"]]) == cls(r)]
        line = f"  {tool:6} offered {med(o):.3f}  delivered {med(d):.3f} [{min(d):.3f}-{max(d):.3f}]"
        for c in ["near", "far"]:
            dc = [f(r["delivered_pps"]) / 1e6 for r in t if cls(r) == c]
            line += f"  {c} {med(dc):.3f} (n={len(dc)})"
        if tool != "vsb" and ratios:
            line += f"  ratio {med(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}] (n={len(ratios)})"
        print(line)
EOF
cat "$OUT/summary.txt"
echo "results: $OUT"
