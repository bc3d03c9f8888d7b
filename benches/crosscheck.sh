#!/usr/bin/env bash
# Cross-check of vswitch-bench against the neutral vsb harness (../shared/bench) on the
# *same DUT instance*, as a pass/fail check: one vsb topology (its topo.sh, its DUT
# plugins), one DUT started once, and then, round after round, the tools take turns on
# it within seconds of each other, at the same offered rates:
#
#   vsb      vsb-gen --engine afxdp + vsb-sink (XDP counter)           the reference
#   ours     vswitch-bench run (existing topology: our AF_XDP generator on CPU 0, our
#            XDP counting sink on the DUT's CPU, like vsb-sink)         checked
#   mixed    vswitch-bench gen + vsb-sink (our generator alone)        checked if in TOOLS
#   live     vsb-gen --engine xdp-live + vsb-sink (max rate only)      reported, never
#            checked: a different kind of generator (no skb), see docs/benchmarks.md
#
# For every DUT and every rate in RATES (packets/s, or "max" = each tool's own maximum)
# each round measures every tool once, the order rotating from round to round; a tool's
# ratio in a round is its delivered rate over vsb's in that round (so a slow drift of
# the host cancels), and the check is on the median ratio over the rounds:
# |median - 1| <= TOL at every (DUT, rate), else exit status 1. With SEARCH=1 it also
# runs, per DUT and round, our RFC 2544 search ([search] of a scenario) and the same
# binary search driven by vsb-gen + vsb-sink (same loss threshold LOSS_PCT, same 1 %
# resolution, same trial length), and checks those ratios too.
#
# Everything: 64-byte frames, one flow, the same MACs/addresses/ports, generator on
# CPU 0, DUT on CPU 1, the sink's XDP program where s1 transmits (the DUT's CPU; vsb's
# SINK_NAPI=softirq), g1 with vsb's throughput-run interrupt moderation
# (napi_defer_hard_irqs=100, gro_flush_timeout=20 us) at every rate.
#
#   sudo flock /tmp/bench.lock benches/crosscheck.sh     # ROUNDS=6 DURATION=3 TOL=0.10
#   sudo ROUNDS=8 DUTS="xdp-redirect" RATES="500000 max" benches/crosscheck.sh
#   sudo SEARCH=1 LOSS_PCT=0.1 benches/crosscheck.sh      # + RFC 2544 search, both tools
#   sudo TOOLS="vsb ours mixed live" benches/crosscheck.sh
#   (vswitchd from $CARGO_TARGET_DIR/release, or VSWITCH_BIN_DIR)
#
# On a shared machine (other engineers' builds), the measured threads run at nice
# NICE (default -15: generators, sinks, and the DUT's threads alike), so a few
# compilers on the same CPU do not take most of their time; NICE=0 turns it off.
#
# Output: one TSV row per measurement in $OUT/xc.tsv (offered, delivered, vsb-xcpu,
# our generator's stalls, load average), per-search rows in $OUT/search.tsv, the
# agreement table in $OUT/summary.txt (printed at the end). Exit status: 0 all checked
# points agree within TOL, 1 some point does not (or has no measurement), 2 setup error.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${VSB_SRC:-$ROOT/../shared/bench}
T=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${VSWITCH_BIN_DIR:-$T/release}
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-3}
WARMUP=${WARMUP:-1}
RATES=${RATES:-50000 250000 500000 1000000 max}
TOOLS=${TOOLS:-vsb ours}
TOL=${TOL:-0.10}
SEARCH=${SEARCH:-0}
LOSS_PCT=${LOSS_PCT:-0.1}
NICE=${NICE:--15}
DUTS=${DUTS:-xdp-redirect vswitchd}
OURS_SINK=${OURS_SINK:-xdp}
OUT=${OUT:-$T/bench-results/crosscheck-$(date +%Y%m%d-%H%M%S)}
fail() { echo "crosscheck.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || fail "run as root"
# The scheduler groups tasks by session (autogroup): a thread's nice only counts
# against its own session, so the run gets a session of its own with that nice.
if [ "$NICE" != 0 ] && [ -z "${_BENCH_SESSION:-}" ]; then
	exec env _BENCH_SESSION=1 setsid -w "$0" "$@"
fi
[ -w /proc/self/autogroup ] && echo "$NICE" >/proc/$$/autogroup
[ -d "$SHARED" ] || fail "no harness at $SHARED (set VSB_SRC)"
case " $TOOLS " in *" vsb "*) ;; *) fail "TOOLS must include vsb (the reference)" ;; esac
for t in $TOOLS; do case $t in vsb | ours | mixed | live) ;; *) fail "unknown tool $t" ;; esac; done
for b in vswitch-bench vswitchd vsctl; do
	[ -x "$BIN/$b" ] || fail "$BIN/$b missing (cargo build --release -p vswitch-bench -p vswitch -p vswitch-control)"
done
VB=$BIN/vswitch-bench

WORK=${VSB_WORK:-/tmp/vswitch-xc}
mkdir -p "$WORK/vsb" "$OUT/raw"
(cd "$SHARED" && tar cf - --exclude=build --exclude=results .) | (cd "$WORK/vsb" && tar xf -)
chmod -R u+w "$WORK/vsb"
make -s -C "$WORK/vsb" >/dev/null || fail "building vsb failed"
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
load1() { cut -d' ' -f1 /proc/loadavg; }
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

# The scenario of `ours` (vswitch-bench run on vsb's topology); $2: extra TOML.
ours_toml() { # RATE(0=max) EXTRA
	cat <<EOF
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
rate = $([ "$1" = 0 ] && echo '"max"' || echo "$1")
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
$2
EOF
}

# One measurement; prints "offered_pps delivered_pps stalled_ms".
measure() { # TOOL RATE(0=max) TAG
	local tool=$1 rate=$2 f=$OUT/raw/$3 t0 r=()
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
		ours_toml "$rate" "" >"$f.toml"
		"${N[@]}" "$VB" run "$f.toml" --quiet --json "$f.json" >"$f.log" 2>&1 || { cat "$f.log" >&2; return 1; }
		jget "$f.json" '"%s %s %s" % (d["trials"][0]["offered_pps"], d["trials"][0]["delivered_pps"], d["trials"][0]["stalled_ms"])'
		;;
	esac
}

# RFC 2544 search with vsb-gen + vsb-sink: the algorithm of bench/src/search.rs (one
# unpaced trial; if it passes the generator was the limit; else binary search between
# 0 and what it offered, a trial judged by the rate it did offer when it fell short by
# over 5 %, until within 1 % of that upper bound). Prints "throughput_pps trials".
search_vsb() { # TAG
	local f=$1 lo=0 hi top res n=1 rate res_line off del loss ok
	res_line=$(measure vsb 0 "$f.s0") || return 1
	read -r off del _ <<<"$res_line"
	loss=$(python3 -c "print(max(0.0,($off-$del)/$off*100) if $off>0 else 100)")
	echo "vsb	max	$off	$del	$loss" >>"$OUT/raw/$f.steps"
	top=$off
	if python3 -c "import sys; sys.exit(0 if $loss <= $LOSS_PCT else 1)"; then echo "$top 1 generator"; return; fi
	hi=$top
	res=$(python3 -c "print($top*0.01)")
	while python3 -c "import sys; sys.exit(0 if $hi-$lo > $res and $n < 20 else 1)"; do
		rate=$(python3 -c "print(int(($lo+$hi)/2))")
		res_line=$(measure vsb "$rate" "$f.s$n") || return 1
		read -r off del _ <<<"$res_line"
		n=$((n + 1))
		loss=$(python3 -c "print(max(0.0,($off-$del)/$off*100) if $off>0 else 100)")
		ok=$(python3 -c "print(1 if $loss <= $LOSS_PCT else 0)")
		echo "vsb	$rate	$off	$del	$loss	$ok" >>"$OUT/raw/$f.steps"
		read -r lo hi <<<"$(python3 -c "
lo,hi,mid,off,ok=$lo,$hi,$rate,$off,$ok
eff = off if off < mid*0.95 else mid
if ok: lo = max(lo, min(eff, mid))
else: hi = max(min(eff, mid), lo)
print(lo, hi)")"
	done
	echo "$lo $n dut"
}

search_ours() { # TAG
	local f=$OUT/raw/$1
	ours_toml 0 "[search]
loss_pct = $LOSS_PCT
resolution_pct = 1
trial = $DURATION" >"$f.toml"
	"${N[@]}" "$VB" run "$f.toml" --quiet --json "$f.json" >"$f.log" 2>&1 || { cat "$f.log" >&2; return 1; }
	jget "$f.json" '"%s %s %s" % (d["search"][0]["throughput_pps"], len(d["search"][0]["steps"]), d["search"][0]["limited_by"])'
}

echo "crosscheck: DUTS=\"$DUTS\" RATES=\"$RATES\" TOOLS=\"$TOOLS\" ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP SEARCH=$SEARCH TOL=$TOL load $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%FT%TZ)" | tee "$OUT/params.txt"
printf 'dut\tround\trate\ttool\txcpu_ns\toffered_pps\tdelivered_pps\tstalled_ms\tload1\n' >"$OUT/xc.tsv"
printf 'dut\tround\ttool\tthroughput_pps\ttrials\tlimited_by\tload1\n' >"$OUT/search.tsv"
for dut in $DUTS; do
	"$V/topo.sh" down >/dev/null 2>&1 || true
	"$V/topo.sh" up >/dev/null
	CUR_DUT=$dut
	bash "$V/dut/$dut.sh" start >/dev/null
	renice_dut
	moderation 100 20000
	for r in $(seq "$ROUNDS"); do
		for rate in $RATES; do
			[ "$rate" = max ] && rate=0
			tools=""
			for t in $TOOLS; do [ "$t" = live ] && [ "$rate" != 0 ] && continue; tools="$tools $t"; done
			# rotate the order every round so no tool always runs first
			set -- $tools
			for _ in $(seq $(((r - 1) % $#))); do set -- "${@:2}" "$1"; done
			for tool in "$@"; do
				x=$(xcpu)
				res=$(measure "$tool" "$rate" "$dut.$r.$rate.$tool") || res="nan nan nan"
				line=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s' "$dut" "$r" "$([ "$rate" = 0 ] && echo max || echo "$rate")" "$tool" "$x" "$(echo "$res" | tr ' ' '\t')" "$(load1)")
				echo "$line" >>"$OUT/xc.tsv"
				echo "$line"
				sleep 0.3
			done
		done
		if [ "$SEARCH" = 1 ]; then
			order="vsb ours"
			[ $((r % 2)) = 0 ] && order="ours vsb"
			for tool in $order; do
				res=$(search_$tool "$dut.$r.search.$tool") || res="nan nan error"
				line=$(printf '%s\t%s\t%s\t%s\t%s' "$dut" "$r" "$tool" "$(echo "$res" | tr ' ' '\t')" "$(load1)")
				echo "$line" >>"$OUT/search.tsv"
				echo "search $line"
			done
		fi
	done
	bash "$V/dut/$dut.sh" stop >/dev/null 2>&1 || true
	CUR_DUT=""
	"$V/topo.sh" down >/dev/null
done

rc=0
python3 - "$OUT" "$TOL" "$TOOLS" >"$OUT/summary.txt" <<'EOF' || rc=$?
import csv, math, statistics, sys
out, tol, tools = sys.argv[1], float(sys.argv[2]), sys.argv[3].split()
def f(x):
    try: return float(x)
    except ValueError: return float("nan")
def med(v):
    v = [x for x in v if not math.isnan(x)]
    return statistics.median(v) if v else float("nan")
def near(r):
    x = f(r["xcpu_ns"])
    return 0 < x < 250
def rng(v):
    v = [x for x in v if not math.isnan(x)]
    return f"[{min(v):.3f}-{max(v):.3f}]" if v else "[-]"
checked = [t for t in tools if t in ("ours", "mixed")]
bad = 0
rows = list(csv.DictReader(open(f"{out}/xc.tsv"), delimiter="\t"))
groups = {}
for r in rows: groups.setdefault((r["dut"], r["rate"]), []).append(r)
print(f"Delivered Mpps at the same offered rate (max = each tool's own maximum), median")
print(f"[min-max] over rounds; ratio = tool / vsb within each round, median [min-max];")
print(f"check: |median ratio - 1| <= {tol} for {', '.join(checked) or 'nothing'} (live: reported only).")
print("same-pl: median ratio over the rounds where both ran in the same vCPU placement (information).")
print()
hdr = f"{'DUT':13} {'rate':>8} {'tool':6} {'offered':>8} {'delivered':>9} {'[min-max]':15} {'ratio':>6} {'[min-max]':15} {'n':>2} {'same-pl':>6} {'n':>2}  verdict"
print(hdr)
for (dut, rate), rs in groups.items():
    vsb = {r["round"]: r for r in rs if r["tool"] == "vsb"}
    for tool in tools:
        t = [r for r in rs if r["tool"] == tool]
        if not t: continue
        d = [f(r["delivered_pps"]) / 1e6 for r in t]
        o = [f(r["offered_pps"]) / 1e6 for r in t]
        ratios = [f(r["delivered_pps"]) / f(vsb[r["round"]]["delivered_pps"]) for r in t
                  if r["round"] in vsb and f(vsb[r["round"]]["delivered_pps"]) > 0]
        ratios = [x for x in ratios if not math.isnan(x)]
        # for information: only the rounds where both ran with the vCPUs in the same
        # host placement (vsb-xcpu < 250 ns "near", else "far"; see vsb's README)
        same = [f(r["delivered_pps"]) / f(vsb[r["round"]]["delivered_pps"]) for r in t
                if r["round"] in vsb and f(vsb[r["round"]]["delivered_pps"]) > 0
                and near(r) == near(vsb[r["round"]])]
        same = [x for x in same if not math.isnan(x)]
        m = med(ratios)
        verdict = ""
        if tool in checked:
            ok = not math.isnan(m) and abs(m - 1) <= tol
            verdict = "ok" if ok else "DIFFER"
            bad += not ok
        rs_ = "" if tool == "vsb" else f"{m:6.3f} {rng(ratios):15} {len(ratios):2} {med(same):6.3f} {len(same):2}"
        print(f"{dut:13} {rate:>8} {tool:6} {med(o):8.3f} {med(d):9.3f} {rng(d):15} {rs_:35}  {verdict}")
try:
    srows = list(csv.DictReader(open(f"{out}/search.tsv"), delimiter="\t"))
except FileNotFoundError:
    srows = []
if srows:
    print()
    print("RFC 2544 search (highest offered rate with loss <= LOSS_PCT), Mpps, median [min-max];")
    print("ratio = ours / vsb-driven search within each round.")
    by = {}
    for r in srows: by.setdefault(r["dut"], []).append(r)
    for dut, rs in by.items():
        v = {r["round"]: r for r in rs if r["tool"] == "vsb"}
        for tool in ("vsb", "ours"):
            t = [r for r in rs if r["tool"] == tool]
            d = [f(r["throughput_pps"]) / 1e6 for r in t]
            ratios = [f(r["throughput_pps"]) / f(v[r["round"]]["throughput_pps"]) for r in t
                      if r["round"] in v and f(v[r["round"]]["throughput_pps"]) > 0]
            ratios = [x for x in ratios if not math.isnan(x)]
            m = med(ratios)
            verdict = ""
            if tool == "ours":
                ok = not math.isnan(m) and abs(m - 1) <= tol
                verdict = "ok" if ok else "DIFFER"
                bad += not ok
            lim = ",".join(sorted({r["limited_by"] for r in t}))
            rs_ = "" if tool == "vsb" else f"ratio {m:.3f} {rng(ratios)} n={len(ratios)}"
            print(f"  {dut:13} {tool:5} {med(d):.3f} {rng(d):15} limited by {lim:10} {rs_}  {verdict}")
print()
print("RESULT:", "all checked points agree within" if bad == 0 else f"{bad} checked point(s) differ by more than", f"{tol*100:.0f} %")
sys.exit(1 if bad else 0)
EOF
cat "$OUT/summary.txt"
echo "results: $OUT"
exit "$rc"
