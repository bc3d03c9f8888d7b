//! Turns off TX checksum offload, TSO and GSO on the pod's interface.
//!
//! With offloads on, the pod's kernel hands its veth frames whose TCP/UDP checksum
//! is not computed yet (CHECKSUM_PARTIAL) and TCP super-frames of up to 64 KiB. A
//! kernel bridge finishes both on the way out; a userspace switch reading raw
//! frames through AF_XDP or AF_PACKET forwards them as they are, and the other pod
//! drops them (broken checksums, oversize). Open vSwitch's AF_XDP documentation
//! asks for the same. The pod's kernel then does the work itself, as for any NIC
//! without offloads.
//!
//! It also turns GRO *on* (`ETHTOOL_SGRO`): that enables NAPI on the pod's end of
//! the veth, without which the kernel drops every frame an XDP program redirects to
//! the switch's end (`veth_xdp_xmit` needs the peer's NAPI). The switch's in-kernel
//! fast path (`vswitchd --xdp-fastpath`, vswitch/src/port/fastpath.rs) relies on
//! it; it also lets the pod's TCP receive coalesced segments. Best effort: a device
//! without GRO simply gets no fast path.
//!
//! Uses the legacy ethtool ioctls (`ETHTOOL_STXCSUM`, `ETHTOOL_STSO`,
//! `ETHTOOL_SGSO`, `ETHTOOL_SGRO`), which every kernel still maps onto the feature
//! flags; no `ethtool` binary is run.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const ETHTOOL_STXCSUM: u32 = 0x0000_0017;
const ETHTOOL_STSO: u32 = 0x0000_001f;
const ETHTOOL_SGSO: u32 = 0x0000_0024;
const ETHTOOL_SGRO: u32 = 0x0000_002c;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the `ifr_data` member of its union (40 bytes on 64-bit).
#[repr(C)]
struct IfreqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// Disables the offloads on `ifname` in the calling thread's namespace, and
/// enables GRO (see the module note).
pub fn disable(ifname: &str) -> io::Result<()> {
    if ifname.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    // SAFETY: plain socket(2); the fd is owned right below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // Checksum first: TSO depends on it and the kernel drops it along with it.
    for (cmd, data) in [
        (ETHTOOL_STXCSUM, 0),
        (ETHTOOL_STSO, 0),
        (ETHTOOL_SGSO, 0),
        (ETHTOOL_SGRO, 1),
    ] {
        let mut val = EthtoolValue { cmd, data };
        let mut req = IfreqData {
            name: [0; libc::IFNAMSIZ],
            data: (&mut val as *mut EthtoolValue).cast(),
            _pad: [0; 16],
        };
        for (d, s) in req.name.iter_mut().zip(ifname.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: valid socket; req is a properly laid out ifreq whose data points
        // at an ethtool_value that lives across the call.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            // A device without the feature has nothing to turn off (or on).
            if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(io::Error::new(
                    e.kind(),
                    format!("ethtool command {cmd:#x} on {ifname}: {e}"),
                ));
            }
        }
    }
    Ok(())
}
