//! The in-kernel XDP fast path for cached L2 forwarding decisions (`[datapath]
//! xdp_fastpath`, `vswitchd --xdp-fastpath`), as OVS's netdev-offload-xdp does it.
//!
//! The user-space switch stays the slow path and the source of truth. Every
//! non-uplink AF_XDP port gets `bpf/port_fastpath.c` instead of libxdp's
//! redirect-everything program. That program looks frames up in a shared `fdb`
//! (ingress ifindex, destination MAC, source MAC, ethertype) and, on a hit whose
//! epoch is current and whose egress is in `tx_ports`, redirects the frame to the
//! egress veth inside the kernel (counted per CPU in `fp_stats`); every other frame
//! goes to the port's AF_XDP socket as before.
//!
//! - **Install**: a worker writes an entry after it forwarded a frame whose cached
//!   actions were only `normal` resolved to one known unicast port, or `output:P`,
//!   from a megaflow that consulted nothing but in_port and the Ethernet addresses
//!   and type (so the kernel's exact key is at least as specific as the megaflow),
//!   between two fast-path ports. One `bpf_map_update_elem` per (key, epoch): each
//!   worker remembers what it installed ([`Installed`]). Floods are never offloaded.
//! - **Invalidation**: one switch-wide epoch ([`FastPath::invalidate`]), bumped on
//!   every change that could alter a decision: flow changes, port add/del,
//!   services/policy/overlay state, MAC moves and expiry, capture start/stop. A
//!   worker reads the epoch *before* it loads the state it decides with and tags its
//!   entries with that value, so an entry computed from older state never matches.
//! - **MAC aging**: frames forwarded in the kernel never reach the worker, so at
//!   each housekeeping sweep the worker reads `last_seen` of its entries and
//!   refreshes the source MAC's learning entry (OVS's revalidator does the same with
//!   datapath flow statistics).
//! - **Counters**: per-port rx/tx of fast-path frames come from `fp_stats` (summed
//!   over CPUs when read) and are added to the port's counters in `stats`.
//!
//! Requirement of the kernel: a veth accepts redirected XDP frames only when its
//! *peer* has NAPI enabled (an XDP program on it, or GRO on: `ethtool -K PEER gro
//! on`); otherwise the kernel drops them. The CNI plugin turns GRO on on the pod's
//! side of every veth it makes.

use super::xdp_filter::UplinkFilter;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The program's name as the kernel reports it.
pub const PROG_NAME: &str = "vswitch_fastpath";
/// Port numbers the program can count (`MAX_PORTS` in the C source): larger ones
/// are never offloaded.
pub const MAX_PORTS: u32 = 1024;
/// Entries a worker remembers as installed (more: no further installs until the
/// next epoch).
pub const MAX_INSTALLED: usize = 65536;
/// How often a worker reads `last_seen` of its entries to refresh MAC learning.
pub const AGING_SWEEP_NS: u64 = 1_000_000_000;

#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);

/// The compiled `bpf/port_fastpath.c` (ELF, with BTF), aligned for libelf.
static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(
    env!("OUT_DIR"),
    "/port_fastpath.o"
)));

/// Must match `struct fdb_key` in `bpf/port_fastpath.c` (20 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FdbKey {
    pub in_ifindex: u32,
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// As on the wire (the two bytes in memory order).
    pub eth_type: [u8; 2],
    pub pad: u16,
}

const _: () = assert!(size_of::<FdbKey>() == 20);

impl FdbKey {
    /// The key of an Ethernet frame received on `in_ifindex`; `None` when the frame
    /// is one the program always sends to the slow path (too short, group
    /// destination, VLAN tag) or has a group source address.
    pub fn of_frame(in_ifindex: u32, frame: &[u8]) -> Option<FdbKey> {
        let h = frame.get(..14)?;
        let (dst, rest) = h.split_at(6);
        let (src, ty) = rest.split_at(6);
        if dst[0] & 1 != 0 || src[0] & 1 != 0 {
            return None;
        }
        if matches!(ty, [0x81, 0x00] | [0x88, 0xa8]) {
            return None;
        }
        let mut k = FdbKey {
            in_ifindex,
            ..FdbKey::default()
        };
        k.dst.copy_from_slice(dst);
        k.src.copy_from_slice(src);
        k.eth_type.copy_from_slice(ty);
        Some(k)
    }

    /// The source MAC as the bridge's table key (VLAN 0).
    pub fn src_key(&self) -> u64 {
        crate::bridge::mac_key(crate::wire::MacAddr(self.src), None)
    }
}

/// Must match `struct fdb_value` in `bpf/port_fastpath.c` (24 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FdbValue {
    pub out_ifindex: u32,
    pub out_port: u32,
    pub in_port: u32,
    pub epoch: u32,
    /// CLOCK_MONOTONIC ns (`bpf_ktime_get_ns`), refreshed by the program about once
    /// a second while the entry is used.
    pub last_seen: u64,
}

const _: () = assert!(size_of::<FdbValue>() == 24);

/// Must match `struct fp_stats` in `bpf/port_fastpath.c`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FpStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// CLOCK_MONOTONIC now, in ns (the clock of `last_seen`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

fn os_err(rc: i32) -> io::Error {
    if rc < 0 {
        io::Error::from_raw_os_error(-rc)
    } else {
        io::Error::last_os_error()
    }
}

fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: dup of a valid descriptor; the result is owned by the caller.
    let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if d < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: d is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(d) })
}

/// CPUs the kernel sizes per-CPU maps for (`/sys/devices/system/cpu/possible`).
fn possible_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let mut n = 0usize;
    for part in text.trim().split(',') {
        let mut it = part.split('-');
        let lo = it.next().and_then(|s| s.trim().parse::<usize>().ok());
        let hi = it.next().and_then(|s| s.trim().parse::<usize>().ok());
        match (lo, hi) {
            (Some(l), Some(h)) if h >= l => n = n.max(h + 1),
            (Some(l), None) => n = n.max(l + 1),
            _ => {}
        }
    }
    n.max(1)
}

/// Counters of the fast path's control (not of frames).
#[derive(Debug, Default)]
pub struct FastPathCounters {
    /// Entries written to the kernel's fdb.
    pub installs: AtomicU64,
    /// fdb writes the kernel refused (map full is not an error: it is an LRU).
    pub install_errors: AtomicU64,
    /// Epoch bumps (invalidations of every entry).
    pub invalidations: AtomicU64,
    /// Times a port was taken out of `tx_ports` because the kernel stopped
    /// accepting redirected frames on it (its veth peer has no NAPI).
    pub ports_disabled: AtomicU64,
}

/// The maps every fast-path port shares, and the switch-wide epoch. One per
/// datapath; shared by the control thread and the workers (every operation is a
/// map syscall on a descriptor or an atomic: no lock per packet, none at all on
/// the worker's side except the rare epoch bump).
#[derive(Debug)]
pub struct FastPath {
    fdb: OwnedFd,
    epoch_map: OwnedFd,
    tx_ports: OwnedFd,
    stats: OwnedFd,
    /// VXLAN encap/decap entries (port/fastpath_tunnel.rs).
    pub tunnel: super::fastpath_tunnel::TunnelMaps,
    /// Established NAT connections (port/fastpath_nat.rs).
    pub(super) nat_flows: OwnedFd,
    epoch: AtomicU32,
    /// Serialises bumps so the kernel's epoch never goes backwards.
    bump: Mutex<()>,
    ncpus: usize,
    pub counters: FastPathCounters,
}

fn update<K, V>(fd: RawFd, k: &K, v: &V) -> io::Result<()> {
    // SAFETY: key and value are plain repr(C) data of the sizes the map was made
    // with (the BTF of the embedded object); both outlive the call.
    let rc = unsafe {
        libxdp_sys::bpf_map_update_elem(fd, (k as *const K).cast(), (v as *const V).cast(), 0)
    };
    if rc != 0 {
        return Err(os_err(rc));
    }
    Ok(())
}

impl FastPath {
    /// Loads the program once (not attached) to create the shared maps, and keeps
    /// their descriptors. Needs CAP_BPF (root).
    pub fn new() -> Result<FastPath, String> {
        let template = UplinkFilter::load_object(&OBJECT.0, PROG_NAME, &[])?;
        let take = |name: &CStr| -> Result<OwnedFd, String> {
            let fd = template.map_fd(name)?;
            dup(fd).map_err(|e| format!("map {name:?}: {e}"))
        };
        let fp = FastPath {
            fdb: take(c"fdb")?,
            epoch_map: take(c"epoch_map")?,
            tx_ports: take(c"tx_ports")?,
            stats: take(c"fp_stats")?,
            tunnel: super::fastpath_tunnel::TunnelMaps::new(take)?,
            nat_flows: take(c"nat_flows")?,
            epoch: AtomicU32::new(0),
            bump: Mutex::new(()),
            ncpus: possible_cpus(),
            counters: FastPathCounters::default(),
        };
        drop(template);
        // Epoch 0 is what a zeroed value carries: start at 1.
        fp.invalidate();
        Ok(fp)
    }

    /// Loads a port's copy of the program, sharing this fast path's maps (its
    /// `xsks_map` is its own). Attach it with [`UplinkFilter::attach`].
    pub fn load_port_program(&self) -> Result<UplinkFilter, String> {
        let [t0, t1] = self.tunnel.reuse();
        UplinkFilter::load_object(
            &OBJECT.0,
            PROG_NAME,
            &[
                (c"fdb", self.fdb.as_raw_fd()),
                (c"epoch_map", self.epoch_map.as_raw_fd()),
                (c"tx_ports", self.tx_ports.as_raw_fd()),
                (c"fp_stats", self.stats.as_raw_fd()),
                t0,
                t1,
                (c"nat_flows", self.nat_flows.as_raw_fd()),
            ],
        )
    }

    /// The maps the uplink filter shares to decapsulate in XDP.
    pub fn uplink_reuse(&self) -> Vec<(&'static CStr, RawFd)> {
        let mut v = vec![
            (c"epoch_map", self.epoch_map.as_raw_fd()),
            (c"tx_ports", self.tx_ports.as_raw_fd()),
            (c"fp_stats", self.stats.as_raw_fd()),
        ];
        v.extend(self.tunnel.reuse());
        v
    }

    /// The current epoch (read it *before* the state a decision is made from).
    #[inline]
    pub fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Makes every installed entry stale: bumps the epoch here and in the kernel.
    pub fn invalidate(&self) {
        let _g = self.bump.lock().unwrap_or_else(|e| e.into_inner());
        let mut e = self.epoch.load(Ordering::Relaxed).wrapping_add(1);
        if e == 0 {
            e = 1;
        }
        self.epoch.store(e, Ordering::Release);
        if let Err(err) = update(self.epoch_map.as_raw_fd(), &0u32, &e) {
            // Cannot happen for an array index 0; should it, take every entry out.
            tracing::error!(error = %err, "fast path: cannot write the epoch; flushing the fdb");
            self.flush();
        }
        self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
    }

    /// Deletes every fdb entry (slow; only when the epoch cannot be written).
    fn flush(&self) {
        let mut key = FdbKey::default();
        let mut keys = Vec::new();
        let mut first = true;
        loop {
            let mut next = FdbKey::default();
            let prev: *const FdbKey = if first { std::ptr::null() } else { &key };
            // SAFETY: keys are FdbKeys; `next` is written by the kernel.
            let rc = unsafe {
                libxdp_sys::bpf_map_get_next_key(
                    self.fdb.as_raw_fd(),
                    prev.cast(),
                    (&mut next as *mut FdbKey).cast(),
                )
            };
            if rc != 0 {
                break;
            }
            keys.push(next);
            key = next;
            first = false;
        }
        for k in keys {
            // SAFETY: a key of this map; gone already is fine.
            unsafe {
                libxdp_sys::bpf_map_delete_elem(self.fdb.as_raw_fd(), (&k as *const FdbKey).cast())
            };
        }
    }

    /// Writes one fdb entry.
    pub fn install(&self, key: &FdbKey, value: &FdbValue) -> io::Result<()> {
        let r = update(self.fdb.as_raw_fd(), key, value);
        match &r {
            Ok(()) => self.counters.installs.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counters.install_errors.fetch_add(1, Ordering::Relaxed),
        };
        r
    }

    /// The entry for `key`, if the kernel has it.
    pub fn lookup(&self, key: &FdbKey) -> Option<FdbValue> {
        let mut v = FdbValue::default();
        // SAFETY: key and value have the map's sizes; `v` is written by the kernel.
        let rc = unsafe {
            libxdp_sys::bpf_map_lookup_elem(
                self.fdb.as_raw_fd(),
                (key as *const FdbKey).cast(),
                (&mut v as *mut FdbValue).cast(),
            )
        };
        (rc == 0).then_some(v)
    }

    /// Lets the program redirect to `ifindex` (a fast-path port's interface).
    pub fn add_tx_port(&self, ifindex: u32) -> io::Result<()> {
        update(self.tx_ports.as_raw_fd(), &ifindex, &ifindex)
    }

    /// Stops redirects to `ifindex` (before its port goes).
    pub fn del_tx_port(&self, ifindex: u32) {
        // SAFETY: the key is a u32 as the map is declared; absent is fine.
        unsafe {
            libxdp_sys::bpf_map_delete_elem(
                self.tx_ports.as_raw_fd(),
                (&ifindex as *const u32).cast(),
            )
        };
    }

    /// Frames the kernel forwarded for port `port_no`, summed over CPUs.
    pub fn port_stats(&self, port_no: u32) -> FpStats {
        let mut sum = FpStats::default();
        if port_no >= MAX_PORTS {
            return sum;
        }
        let mut vals = vec![FpStats::default(); self.ncpus];
        // SAFETY: a per-CPU array lookup writes one value (32 bytes, a multiple of
        // 8) per possible CPU; `vals` has that many.
        let rc = unsafe {
            libxdp_sys::bpf_map_lookup_elem(
                self.stats.as_raw_fd(),
                (&port_no as *const u32).cast(),
                vals.as_mut_ptr().cast(),
            )
        };
        if rc != 0 {
            return sum;
        }
        for v in &vals {
            sum.rx_packets += v.rx_packets;
            sum.rx_bytes += v.rx_bytes;
            sum.tx_packets += v.tx_packets;
            sum.tx_bytes += v.tx_bytes;
        }
        sum
    }

    /// Zeroes port `port_no`'s counters (a new port reusing a number starts at 0).
    pub fn clear_port_stats(&self, port_no: u32) {
        if port_no >= MAX_PORTS {
            return;
        }
        let vals = vec![FpStats::default(); self.ncpus];
        // SAFETY: one value per possible CPU, as the kernel expects for per-CPU maps.
        unsafe {
            libxdp_sys::bpf_map_update_elem(
                self.stats.as_raw_fd(),
                (&port_no as *const u32).cast(),
                vals.as_ptr().cast(),
                0,
            )
        };
    }
}

/// Whether the kernel accepts XDP frames redirected to interface `ifindex`
/// (`NETDEV_XDP_ACT_NDO_XMIT` in its `xdp-features`, asked through the `netdev`
/// generic netlink family in the calling thread's namespace). For a veth this is
/// true only while its *peer* has NAPI (an XDP program, or GRO on); redirects to it
/// are dropped by the kernel otherwise. `Ok(None)`: the kernel cannot tell (no
/// `netdev` family, before Linux 6.3).
pub fn accepts_redirects(ifindex: u32) -> io::Result<Option<bool>> {
    const NETDEV_XDP_ACT_NDO_XMIT: u64 = 1 << 2;
    let mut nl = Genl::open()?;
    let Some(family) = nl.family_id(b"netdev\0")? else {
        return Ok(None);
    };
    // NETDEV_CMD_DEV_GET (1) with NETDEV_A_DEV_IFINDEX (1).
    let reply = nl.request(family, 1, &[(1, &ifindex.to_ne_bytes())])?;
    // NETDEV_A_DEV_XDP_FEATURES (3), u64.
    Ok(attr(&reply, 3)
        .and_then(|v| v.get(..8))
        .and_then(|v| v.try_into().ok())
        .map(u64::from_ne_bytes)
        .map(|f| f & NETDEV_XDP_ACT_NDO_XMIT != 0))
}

/// The payload of attribute `kind` among the generic netlink attributes `attrs`.
fn attr(attrs: &[u8], kind: u16) -> Option<&[u8]> {
    let mut at = 0usize;
    while at + 4 <= attrs.len() {
        let len = usize::from(u16::from_ne_bytes([attrs[at], attrs[at + 1]]));
        let ty = u16::from_ne_bytes([attrs[at + 2], attrs[at + 3]]) & 0x3fff;
        if len < 4 || at + len > attrs.len() {
            return None;
        }
        if ty == kind {
            return attrs.get(at + 4..at + len);
        }
        at += len.div_ceil(4) * 4;
    }
    None
}

/// A generic netlink socket for one request at a time.
struct Genl {
    fd: OwnedFd,
    seq: u32,
}

impl Genl {
    fn open() -> io::Result<Genl> {
        // SAFETY: plain socket(2); owned right below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_GENERIC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: setsockopt reads a timeval from a live local.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        Ok(Genl { fd, seq: 0 })
    }

    /// The id of generic netlink family `name` (NUL-terminated), `None` if absent.
    fn family_id(&mut self, name: &[u8]) -> io::Result<Option<u16>> {
        // GENL_ID_CTRL (0x10), CTRL_CMD_GETFAMILY (3), CTRL_ATTR_FAMILY_NAME (2).
        match self.request(0x10, 3, &[(2, name)]) {
            // CTRL_ATTR_FAMILY_ID (1), u16.
            Ok(a) => Ok(attr(&a, 1)
                .and_then(|v| v.get(..2))
                .map(|v| u16::from_ne_bytes([v[0], v[1]]))),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends one request and returns the attributes of its reply.
    fn request(&mut self, family: u16, cmd: u8, attrs: &[(u16, &[u8])]) -> io::Result<Vec<u8>> {
        const NLM_F_REQUEST: u16 = 1;
        const NLMSG_ERROR: u16 = 2;
        self.seq = self.seq.wrapping_add(1);
        let mut msg = vec![0u8; 20];
        for (ty, v) in attrs {
            let len = 4 + v.len();
            msg.extend_from_slice(&(len as u16).to_ne_bytes());
            msg.extend_from_slice(&ty.to_ne_bytes());
            msg.extend_from_slice(v);
            msg.resize(msg.len().div_ceil(4) * 4, 0);
        }
        let total = msg.len() as u32;
        msg[0..4].copy_from_slice(&total.to_ne_bytes());
        msg[4..6].copy_from_slice(&family.to_ne_bytes());
        msg[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        msg[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        msg[16] = cmd;
        msg[17] = 1; // version
        // SAFETY: sockaddr_nl is plain data; all-zero addresses the kernel.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: msg and sa are live for the call; lengths are theirs.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 16384];
        loop {
            // SAFETY: recv writes at most buf.len() bytes into buf.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let got = &buf[..n as usize];
            let mut at = 0usize;
            while at + 16 <= got.len() {
                let len =
                    u32::from_ne_bytes([got[at], got[at + 1], got[at + 2], got[at + 3]]) as usize;
                let ty = u16::from_ne_bytes([got[at + 4], got[at + 5]]);
                let seq =
                    u32::from_ne_bytes([got[at + 8], got[at + 9], got[at + 10], got[at + 11]]);
                if len < 16 || at + len > got.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink reply",
                    ));
                }
                let body = &got[at + 16..at + len];
                at += len.div_ceil(4) * 4;
                if seq != self.seq {
                    continue;
                }
                if ty == NLMSG_ERROR {
                    let code = body
                        .get(..4)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(-libc::EIO);
                    return Err(io::Error::from_raw_os_error(-code));
                }
                return Ok(body.get(4..).unwrap_or(&[]).to_vec());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_of_frame() {
        let mut f = [0u8; 60];
        f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let k = FdbKey::of_frame(7, &f).expect("unicast IPv4");
        assert_eq!(k.in_ifindex, 7);
        assert_eq!(k.dst, [0x02, 0, 0, 0, 0, 2]);
        assert_eq!(k.eth_type, [0x08, 0x00]);
        assert_eq!(k.src_key(), 0x0200_0000_0001);
        // Runt, broadcast destination, group source, VLAN tags: never offloaded.
        assert!(FdbKey::of_frame(7, &f[..13]).is_none());
        let mut b = f;
        b[..6].copy_from_slice(&[0xff; 6]);
        assert!(FdbKey::of_frame(7, &b).is_none());
        let mut g = f;
        g[6] = 0x01;
        assert!(FdbKey::of_frame(7, &g).is_none());
        for tpid in [[0x81, 0x00], [0x88, 0xa8]] {
            let mut v = f;
            v[12..14].copy_from_slice(&tpid);
            assert!(FdbKey::of_frame(7, &v).is_none());
        }
    }

    #[test]
    fn embedded_object_is_bpf_elf() {
        let b = &OBJECT.0;
        assert_eq!(&b[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([b[18], b[19]]), 247);
    }

    #[test]
    fn netlink_attributes() {
        // Two attributes, the first padded to 4 bytes.
        let a = [6u8, 0, 2, 0, b'h', b'i', 0, 0, 8, 0, 1, 0, 7, 0, 0, 0];
        assert_eq!(attr(&a, 2), Some(&b"hi"[..]));
        assert_eq!(attr(&a, 1), Some(&[7u8, 0, 0, 0][..]));
        assert_eq!(attr(&a, 3), None);
        // Lies about its length: not read past the end.
        assert_eq!(attr(&[200, 0, 1, 0, 0, 0], 1), None);
        assert_eq!(attr(&[], 1), None);
    }

    #[test]
    fn possible_cpus_is_positive() {
        assert!(possible_cpus() >= 1);
    }
}
