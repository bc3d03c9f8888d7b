# shellcheck shell=bash
# Sourced by the scripts in this folder: puts cargo on PATH and sets the repository root.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export REPO_ROOT

# rustup installs into ~/.cargo/bin, which non-login shells (CI) may lack on PATH.
if ! command -v cargo >/dev/null 2>&1; then
	for d in "${CARGO_HOME:-$HOME/.cargo}/bin" /root/.cargo/bin; do
		if [ -x "$d/cargo" ]; then
			PATH="$d:$PATH"
			export PATH
			break
		fi
	done
fi

# Where cargo puts binaries: $CARGO_TARGET_DIR if set, else ./target.
target_dir() {
	printf '%s\n' "${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
}
