#!/usr/bin/env bash
# install-deps.sh -- everything a fresh Debian 12 machine needs to build vswitch and run
# its whole test suite (end-to-end tests included) and the packets-per-second bench.
# Idempotent: packages already installed are not touched and apt-get runs only when
# something is missing. Needs root (apt-get, mount).
#
#   scripts/install-deps.sh            # install what is missing
#   NO_APT=1 scripts/install-deps.sh   # only check bpffs and cargo
set -euo pipefail

log() { printf 'install-deps: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

PKGS=(
	# build: xsk-rs builds a vendored libxdp/libbpf (clang for the BPF objects, m4 and
	# 32-bit headers from gcc-multilib for its configure step, libelf and zlib to link)
	build-essential gcc clang llvm libelf-dev zlib1g-dev pkg-config m4 gcc-multilib
	# end-to-end tests and scripts/demo.sh: namespaces, veths, offloads, kernel clients
	iproute2 iputils-ping ethtool socat tcpdump iperf3 netcat-openbsd procps kmod python3
	# vswitch-cni's tests: the standard CNI plugins (host-local IPAM, portmap and
	# bandwidth to chain with) in /usr/lib/cni; iptables is listed below
	containernetworking-plugins
	# the packets-per-second bench (shared/bench/install.sh): libxdp/libbpf headers for
	# its generator, bpftool, and the peers it compares against (iptables, Open vSwitch)
	libxdp-dev libbpf-dev bpftool iptables openvswitch-switch util-linux
)

if [ "${NO_APT:-0}" != 1 ]; then
	[ "$(id -u)" = 0 ] || die "run as root (or NO_APT=1 $0)"
	missing=()
	for p in "${PKGS[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing: ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		# Package scripts must not start system services (openvswitch-switch would start
		# a system ovs-vswitchd in the root namespace; the bench runs a private one). A
		# policy-rc.d that answers 101 is Debian's way to say so; only add one if there is
		# none, and remove only the one we added.
		policy=/usr/sbin/policy-rc.d
		added_policy=0
		if [ ! -e "$policy" ]; then
			printf '#!/bin/sh\nexit 101\n' >"$policy"
			chmod 755 "$policy"
			added_policy=1
		fi
		rc=0
		{ apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; } || rc=$?
		[ "$added_policy" = 1 ] && rm -f "$policy"
		[ "$rc" = 0 ] || die "apt-get failed (exit $rc)"
	else
		log "all ${#PKGS[@]} packages present"
	fi
fi

# bpffs: libxdp pins its multi-program dispatcher there; without it XDP attach through
# libxdp falls back or fails. Mount it if absent; a failure here is reported, not fatal
# (e.g. inside a container that forbids mounts), because packet mode still works.
if ! mountpoint -q /sys/fs/bpf; then
	if mount -t bpf bpf /sys/fs/bpf 2>/dev/null; then
		log "mounted bpffs at /sys/fs/bpf"
	else
		log "warning: could not mount bpffs at /sys/fs/bpf"
	fi
fi

# cargo: rustup installs into ~/.cargo/bin, which a non-login shell (CI) may not have on
# PATH. Toolchains cannot be downloaded here, so only check that one is usable.
if ! command -v cargo >/dev/null 2>&1; then
	for d in "${CARGO_HOME:-$HOME/.cargo}/bin" /root/.cargo/bin; do
		if [ -x "$d/cargo" ]; then
			export PATH="$d:$PATH"
			break
		fi
	done
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found (looked on PATH and in ~/.cargo/bin)"
log "$(cargo --version) at $(command -v cargo)"
