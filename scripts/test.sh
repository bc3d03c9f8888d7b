#!/usr/bin/env bash
# test.sh -- the whole check in one command, as CI runs it (CI=true, as root, no stdin):
#   install-deps, cargo build, cargo fmt --check, cargo clippy -D warnings, cargo test.
# Stops at the first failing step and prints a summary of the steps and their times.
# The end-to-end tests need root; under CI=true they fail rather than skip without it.
#
# Knobs: STEP_TIMEOUT (seconds per step, default 1200), CARGO_TARGET_DIR,
# TEST_ARGS (extra arguments for `cargo test`, e.g. TEST_ARGS="--test e2e_forwarding").
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"
cd "$REPO_ROOT"

STEP_TIMEOUT=${STEP_TIMEOUT:-1200}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
T0=$(date +%s)
# timeout(1) puts the command in its own process group, where Ctrl-C from a terminal
# would not reach it; at a terminal keep it in the foreground group instead.
TIMEOUT_OPTS=()
[ -t 0 ] && TIMEOUT_OPTS=(--foreground)
SUMMARY=()

summary() {
	local status=$1
	echo
	echo "==================== test.sh summary ===================="
	printf '%s\n' "${SUMMARY[@]}"
	echo "---------------------------------------------------------"
	echo "result: $status after $(($(date +%s) - T0))s"
}

# step NAME CMD...: runs CMD with a time limit, records the outcome, stops on failure.
step() {
	local name=$1
	shift
	local t=$SECONDS rc=0
	echo
	echo "==> [$name] $*"
	timeout "${TIMEOUT_OPTS[@]}" --kill-after=30 "$STEP_TIMEOUT" "$@" || rc=$?
	local dt=$((SECONDS - t))
	if [ "$rc" = 0 ]; then
		SUMMARY+=("$(printf '  ok    %-8s %5ss  %s' "$name" "$dt" "$*")")
	else
		[ "$rc" = 124 ] && echo "[$name] timed out after ${STEP_TIMEOUT}s" >&2
		SUMMARY+=("$(printf '  FAIL  %-8s %5ss  %s (exit %s)' "$name" "$dt" "$*" "$rc")")
		summary FAILED
		exit 1
	fi
}

if [ "$(id -u)" = 0 ]; then
	step deps scripts/install-deps.sh
else
	# Without root apt-get cannot run; check the rest and let the tests say SKIP.
	echo "note: not root: skipping apt-get; end-to-end tests will be skipped" >&2
	step deps env NO_APT=1 scripts/install-deps.sh
fi
step build cargo build --workspace --all-targets
step fmt cargo fmt --all --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
# --no-fail-fast: one failing test binary should not hide the results of the others;
# the step still fails. Tests find vswitchd/vsctl next to their own executable
# (target/debug), which the build step put there.
# shellcheck disable=SC2086
step test cargo test --workspace --no-fail-fast ${TEST_ARGS:-}
summary PASSED
