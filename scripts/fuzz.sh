#!/usr/bin/env bash
# fuzz.sh -- run one cargo-fuzz target for a while, starting from its seed corpus.
#   scripts/fuzz.sh control_decode 30      # target, seconds (default 60)
# Needs cargo-fuzz (`cargo install cargo-fuzz`). libFuzzer needs nightly compiler flags
# (-Zsanitizer); on the stable toolchain RUSTC_BOOTSTRAP=1 unlocks them. See docs/fuzzing.md.
# New inputs go to fuzz/corpus/<target> (ignored by git); seeds in fuzz/seeds/ stay as
# they are; crashes land in fuzz/artifacts/<target>.
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"
cd "$REPO_ROOT"
target=${1:?usage: $0 TARGET [SECONDS]}
secs=${2:-60}
[ -d "fuzz/seeds/$target" ] || { echo "no seeds for '$target' in fuzz/seeds/" >&2; exit 2; }
command -v cargo-fuzz >/dev/null 2>&1 || { echo "cargo-fuzz missing: cargo install cargo-fuzz" >&2; exit 2; }
# cargo fuzz creates the default corpus folder only when no folder is named.
mkdir -p "fuzz/corpus/$target"
# The fuzz workspace builds with sanitizer flags: keep it out of a shared target dir.
unset CARGO_TARGET_DIR
RUSTC_BOOTSTRAP=1 exec cargo fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
	-max_total_time="$secs"
