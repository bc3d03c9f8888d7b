//! The uplink's own XDP program: only the switch's traffic goes to its AF_XDP socket.
//!
//! libxdp's default program redirects every frame of the queue to the socket, which
//! is right for a pod's veth but would cut the node off if done on its real NIC:
//! SSH, the kubelet, ARP and everything else of the host would vanish into the
//! switch. A port of kind `uplink` therefore gets `bpf/uplink_filter.c`, which
//! redirects only IPv4 UDP to the node's addresses at the VXLAN port and IPv4
//! TCP/UDP to the node's addresses in the NodePort range, and passes the rest
//! (XDP_PASS) to the host's stack untouched.
//!
//! # Why a C program compiled by build.rs, loaded with libbpf (not libxdp, not
//! hand-assembled eBPF)
//!
//! - C, compiled by clang (which the vendored libxdp already needs to build), is
//!   reviewable; the verifier's bounds checks are visible as plain `if`s.
//!   Hand-assembled instructions would have to be re-derived by every reader.
//! - The object is embedded in the binary (`include_bytes!`): nothing to install,
//!   no path to get wrong at run time.
//! - It is loaded and attached with libbpf directly (`bpf_object__open_mem`,
//!   `bpf_xdp_attach`) rather than through libxdp's multi-program dispatcher:
//!   the dispatcher cannot work on the kernels we run (no BPF_PROG_TYPE_EXT, see
//!   port/afxdp.rs), and with a plain attach we know exactly which program id is
//!   ours, so detaching is `XDP_FLAGS_REPLACE` with our own descriptor: it can never
//!   remove somebody else's program.
//! - The socket is bound with `XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD` (libxdp loads
//!   nothing) and put into the program's `xsks_map` by us.
//! - Parameters live in an array map (`config`), not `.rodata`, so the node's
//!   addresses can follow the uplink's addresses without reloading the program.
//!
//! # Never black-holing the host
//!
//! - Load or attach failures are errors for the port (the operator sees them in
//!   `add-port`); libxdp's redirect-everything program is used instead only when
//!   the operator asked for it (`[uplink] xdp_filter = "full-if-unavailable"`).
//! - A frame on a queue without a socket in `xsks_map` is passed
//!   (`bpf_redirect_map`'s fallback action): if vswitchd dies without cleaning up
//!   (SIGKILL), its socket closes, the map entry goes with it, and the program left
//!   behind passes everything. The next vswitchd replaces that leftover (it
//!   recognises the program by name) instead of failing on it.
//! - A foreign XDP program on the interface is never replaced: the port fails.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

/// Addresses of the node the filter matches (the uplink's first IPv4 addresses).
pub const MAX_NODE_IPS: usize = 8;
/// The program's name as the kernel reports it (`ip -d link`, `bpftool prog`).
pub const PROG_NAME: &str = "vswitch_uplink";
/// Entries of `xsks_map` (queue indexes): the most RX queues an uplink can serve.
pub(crate) const XSKS_MAP_ENTRIES: u32 = 64;

const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
/// `XDP_FLAGS_REPLACE`: attach/detach only if the program attached is the one named.
pub(crate) const XDP_FLAGS_REPLACE: u32 = 1 << 4;

#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);

/// The compiled `bpf/uplink_filter.c` (ELF, with BTF), aligned for libelf.
static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(
    env!("OUT_DIR"),
    "/uplink_filter.o"
)));

/// What the uplink filter takes besides VXLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterParams {
    /// UDP destination port of VXLAN (4789; 8472 in flannel mode).
    pub vxlan_port: u16,
    /// TCP/UDP destination ports taken for NodePort services (inclusive); `None`:
    /// none.
    pub nodeports: Option<(u16, u16)>,
}

impl Default for FilterParams {
    fn default() -> Self {
        FilterParams {
            vxlan_port: crate::overlay::vxlan::DEFAULT_PORT,
            nodeports: Some((30000, 32767)),
        }
    }
}

/// Must match `struct filter_config` in `bpf/uplink_filter.c`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FilterConfig {
    node_ips: [u32; MAX_NODE_IPS],
    n_ips: u32,
    vxlan_port: u16,
    nodeport_lo: u16,
    nodeport_hi: u16,
    pad: u16,
    pad2: u32,
}

const _: () = assert!(size_of::<FilterConfig>() == 48);

impl FilterConfig {
    fn new(p: &FilterParams, ips: &[Ipv4Addr]) -> FilterConfig {
        let mut c = FilterConfig {
            vxlan_port: p.vxlan_port,
            // lo > hi: the program takes no NodePort.
            nodeport_lo: 1,
            nodeport_hi: 0,
            ..FilterConfig::default()
        };
        if let Some((lo, hi)) = p.nodeports {
            c.nodeport_lo = lo;
            c.nodeport_hi = hi;
        }
        for (slot, ip) in c.node_ips.iter_mut().zip(ips) {
            // The program compares with the header's bytes as they are in memory.
            *slot = u32::from_ne_bytes(ip.octets());
            c.n_ips += 1;
        }
        c
    }
}

fn os_err(rc: i32) -> io::Error {
    if rc < 0 {
        io::Error::from_raw_os_error(-rc)
    } else {
        io::Error::last_os_error()
    }
}

/// The id of the XDP program attached in `flags`' mode (0: none), `None` if unknown.
pub(crate) fn query_prog(ifindex: u32, flags: u32) -> Option<u32> {
    let mut id = 0u32;
    // SAFETY: libbpf writes one u32 through the pointer.
    let rc = unsafe { libxdp_sys::bpf_xdp_query_id(ifindex as i32, flags as i32, &mut id) };
    (rc == 0).then_some(id)
}

/// The name of the loaded program `id`, and a descriptor for it.
fn prog_by_id(id: u32) -> io::Result<(OwnedFd, String)> {
    // SAFETY: plain libbpf call; a non-negative result is a descriptor we own.
    let fd = unsafe { libxdp_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return Err(os_err(fd));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: bpf_prog_info is plain data; all-zero is valid.
    let mut info: libxdp_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libxdp_sys::bpf_prog_info>() as u32;
    // SAFETY: the kernel writes at most `len` bytes into `info`.
    let rc = unsafe { libxdp_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if rc != 0 {
        return Err(os_err(rc));
    }
    let name: Vec<u8> = info
        .name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    Ok((fd, String::from_utf8_lossy(&name).into_owned()))
}

/// Writes the filter's parameters; shared with the control thread, which refreshes
/// the node addresses while the port (and the program) belong to a worker.
#[derive(Debug)]
pub struct FilterHandle {
    /// A descriptor of the `config` map (a dup: valid as long as this lives, even
    /// after the program is gone).
    cfg: OwnedFd,
    params: FilterParams,
    prog_id: u32,
}

impl PartialEq for FilterHandle {
    fn eq(&self, other: &Self) -> bool {
        self.prog_id == other.prog_id && self.params == other.params
    }
}
impl Eq for FilterHandle {}

impl FilterHandle {
    pub fn params(&self) -> FilterParams {
        self.params
    }

    /// The kernel's id of the program.
    pub fn prog_id(&self) -> u32 {
        self.prog_id
    }

    /// Sets the addresses the filter takes traffic for (the first [`MAX_NODE_IPS`]).
    pub fn set_node_ips(&self, ips: &[Ipv4Addr]) -> io::Result<()> {
        write_config(self.cfg.as_raw_fd(), &FilterConfig::new(&self.params, ips))
    }
}

fn write_config(fd: RawFd, c: &FilterConfig) -> io::Result<()> {
    let key = 0u32;
    // SAFETY: the map's key is a u32 and its value a FilterConfig (48 bytes, as the
    // BTF of the object says); both outlive the call.
    let rc = unsafe {
        libxdp_sys::bpf_map_update_elem(
            fd,
            (&key as *const u32).cast(),
            (c as *const FilterConfig).cast(),
            0,
        )
    };
    if rc != 0 {
        return Err(os_err(rc));
    }
    Ok(())
}

/// The loaded program and its maps; attached to at most one interface.
pub struct UplinkFilter {
    obj: NonNull<libxdp_sys::bpf_object>,
    prog_fd: RawFd,
    xsks_fd: RawFd,
    cfg_fd: RawFd,
    params: FilterParams,
    prog_id: u32,
    /// The program's name (what `attach` recognises as a leftover of ours).
    prog_name: &'static str,
    /// (ifindex, mode flags) while attached.
    attached: Option<(u32, u32)>,
}

// SAFETY: the libbpf object is only ever used through `&mut self`/`&self` by the one
// thread that owns the port; libbpf keeps no thread-local state about it.
unsafe impl Send for UplinkFilter {}

impl UplinkFilter {
    /// Loads the program into the kernel (not attached yet) with `params` and the
    /// node addresses `ips`.
    pub fn load(params: FilterParams, ips: &[Ipv4Addr]) -> Result<UplinkFilter, String> {
        Self::load_with(params, ips, &[])
    }

    /// [`UplinkFilter::load`] with the maps named in `reuse` shared (the XDP fast
    /// path's, for tunnel decap: port/fastpath_tunnel.rs).
    pub fn load_with(
        params: FilterParams,
        ips: &[Ipv4Addr],
        reuse: &[(&std::ffi::CStr, RawFd)],
    ) -> Result<UplinkFilter, String> {
        let mut f = Self::load_object(&OBJECT.0, PROG_NAME, reuse)?;
        f.params = params;
        f.cfg_fd = f.map_fd(c"config")?;
        write_config(f.cfg_fd, &FilterConfig::new(&params, ips))
            .map_err(|e| format!("writing the filter's configuration: {e}"))?;
        Ok(f)
    }

    /// Loads one of the switch's own XDP programs from the ELF image `buf`: the
    /// program named `prog` with its maps, except those named in `reuse`, which
    /// use the given (shared) map descriptors instead. The object must have an
    /// `xsks_map`. Not attached yet.
    pub(crate) fn load_object(
        buf: &'static [u8],
        prog: &'static str,
        reuse: &[(&std::ffi::CStr, RawFd)],
    ) -> Result<UplinkFilter, String> {
        // SAFETY: the buffer is a static ELF image that outlives the object; opts
        // may be null.
        let obj = unsafe {
            libxdp_sys::bpf_object__open_mem(buf.as_ptr().cast(), buf.len(), std::ptr::null())
        };
        let Some(obj) = NonNull::new(obj) else {
            return Err(format!(
                "opening the BPF object: {}",
                io::Error::last_os_error()
            ));
        };
        let mut f = UplinkFilter {
            obj,
            prog_fd: -1,
            xsks_fd: -1,
            cfg_fd: -1,
            params: FilterParams::default(),
            prog_id: 0,
            prog_name: prog,
            attached: None,
        };
        for (name, fd) in reuse {
            // SAFETY: valid, opened (not loaded) object and NUL-terminated name; the
            // map belongs to obj; libbpf dups `fd`.
            let rc = unsafe {
                let m = libxdp_sys::bpf_object__find_map_by_name(obj.as_ptr(), name.as_ptr());
                if m.is_null() {
                    return Err(format!("the BPF object has no map {name:?}"));
                }
                libxdp_sys::bpf_map__reuse_fd(m, *fd)
            };
            if rc != 0 {
                return Err(format!("sharing map {name:?}: {}", os_err(rc)));
            }
        }
        // SAFETY: obj is a valid, opened object.
        let rc = unsafe { libxdp_sys::bpf_object__load(obj.as_ptr()) };
        if rc != 0 {
            return Err(format!(
                "loading the XDP program (verifier, or missing CAP_BPF): {}",
                os_err(rc)
            ));
        }
        f.xsks_fd = f.map_fd(c"xsks_map")?;
        let cname = std::ffi::CString::new(prog).map_err(|e| e.to_string())?;
        // SAFETY: valid object and NUL-terminated name.
        f.prog_fd = unsafe {
            let p = libxdp_sys::bpf_object__find_program_by_name(obj.as_ptr(), cname.as_ptr());
            if p.is_null() {
                -1
            } else {
                libxdp_sys::bpf_program__fd(p)
            }
        };
        if f.prog_fd < 0 {
            return Err(format!("the BPF object has no loaded program {prog}"));
        }
        f.prog_id = prog_id_of_fd(f.prog_fd).unwrap_or(0);
        Ok(f)
    }

    /// The descriptor of the loaded map `name` (owned by the object).
    pub(crate) fn map_fd(&self, name: &std::ffi::CStr) -> Result<RawFd, String> {
        // SAFETY: valid object and NUL-terminated name; the map belongs to obj.
        let fd = unsafe {
            let m = libxdp_sys::bpf_object__find_map_by_name(self.obj.as_ptr(), name.as_ptr());
            if m.is_null() {
                -1
            } else {
                libxdp_sys::bpf_map__fd(m)
            }
        };
        if fd < 0 {
            Err(format!("the BPF object has no loaded map {name:?}"))
        } else {
            Ok(fd)
        }
    }

    /// A handle the control thread keeps to update the node addresses.
    pub fn handle(&self) -> io::Result<FilterHandle> {
        // SAFETY: dup of a descriptor we own; the result is owned by the handle.
        let fd = unsafe { libc::fcntl(self.cfg_fd, libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FilterHandle {
            // SAFETY: fd is a fresh duplicate nobody else owns.
            cfg: unsafe { OwnedFd::from_raw_fd(fd) },
            params: self.params,
            prog_id: self.prog_id,
        })
    }

    pub fn prog_id(&self) -> u32 {
        self.prog_id
    }

    /// Makes `socket` the target of frames received on `queue`.
    pub fn add_socket(&self, queue: u32, socket: RawFd) -> io::Result<()> {
        if queue >= XSKS_MAP_ENTRIES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("queue {queue} is beyond the program's map"),
            ));
        }
        let value: u32 = socket as u32;
        // SAFETY: key and value are u32s, as the map is declared; both outlive the call.
        let rc = unsafe {
            libxdp_sys::bpf_map_update_elem(
                self.xsks_fd,
                (&queue as *const u32).cast(),
                (&value as *const u32).cast(),
                0,
            )
        };
        if rc != 0 {
            return Err(os_err(rc));
        }
        Ok(())
    }

    /// Attaches the program to `ifindex` in the mode of `mode_flags`
    /// (`XDP_FLAGS_SKB_MODE` or `XDP_FLAGS_DRV_MODE`). Call in the interface's
    /// namespace. Replaces a vswitch uplink program left behind by a vswitchd that
    /// was killed; refuses any other program.
    pub fn attach(&mut self, ifindex: u32, mode_flags: u32) -> Result<(), String> {
        if self.attached.is_some() {
            return Err("the filter is attached already".into());
        }
        let existing = query_prog(ifindex, mode_flags).unwrap_or(0);
        let mut flags = mode_flags;
        let mut old: Option<OwnedFd> = None;
        if existing == 0 {
            flags |= XDP_FLAGS_UPDATE_IF_NOEXIST;
        } else {
            let (fd, name) = prog_by_id(existing)
                .map_err(|e| format!("the interface has XDP program {existing}: {e}"))?;
            // The kernel keeps 15 characters of a program's name.
            let ours = self.prog_name.get(..15).unwrap_or(self.prog_name);
            if name != ours {
                return Err(format!(
                    "the interface already has XDP program {existing} ('{name}'); not replacing it"
                ));
            }
            tracing::warn!(
                ifindex,
                prog = existing,
                prog_name = self.prog_name,
                "replacing an XDP program of ours a previous vswitchd left attached"
            );
            flags |= XDP_FLAGS_REPLACE;
            old = Some(fd);
        }
        let opts = attach_opts(old.as_ref().map(|f| f.as_raw_fd()).unwrap_or(0));
        // SAFETY: valid program descriptor; opts outlives the call.
        let rc = unsafe { libxdp_sys::bpf_xdp_attach(ifindex as i32, self.prog_fd, flags, &*opts) };
        if rc != 0 {
            return Err(format!("attaching the XDP program: {}", os_err(rc)));
        }
        self.attached = Some((ifindex, mode_flags));
        Ok(())
    }

    /// Detaches the program if it is still the one attached (never another).
    /// Call in the interface's namespace. Returns whether it was detached.
    pub fn detach(&mut self) -> bool {
        let Some((ifindex, mode_flags)) = self.attached.take() else {
            return false;
        };
        let opts = attach_opts(self.prog_fd);
        // SAFETY: opts outlives the call; REPLACE makes the kernel check that our
        // program is the one attached.
        let rc = unsafe {
            libxdp_sys::bpf_xdp_detach(ifindex as i32, mode_flags | XDP_FLAGS_REPLACE, &*opts)
        };
        if rc != 0 {
            tracing::warn!(ifindex, error = %os_err(rc), prog_name = self.prog_name, "could not detach our XDP program (gone with its interface, or replaced)");
            return false;
        }
        true
    }
}

/// `bpf_xdp_attach_opts` with its padding zeroed: libbpf refuses (EINVAL) options
/// whose bytes after the last field it knows are not zero, and a struct literal (or
/// a move of the struct) leaves the 4 bytes after `old_prog_fd` undefined. Built
/// in place on the heap and passed by pointer, so nothing copies it field-wise.
pub(crate) fn attach_opts(old_prog_fd: RawFd) -> Box<libxdp_sys::bpf_xdp_attach_opts> {
    let mut b = Box::<libxdp_sys::bpf_xdp_attach_opts>::new_zeroed();
    let p = b.as_mut_ptr();
    // SAFETY: p points at the zeroed allocation; writing the two fields keeps the
    // padding zero, and all-zero is a valid value of this plain-data struct.
    unsafe {
        (*p).sz = size_of::<libxdp_sys::bpf_xdp_attach_opts>();
        (*p).old_prog_fd = old_prog_fd;
        b.assume_init()
    }
}

fn prog_id_of_fd(fd: RawFd) -> Option<u32> {
    // SAFETY: bpf_prog_info is plain data; all-zero is valid.
    let mut info: libxdp_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libxdp_sys::bpf_prog_info>() as u32;
    // SAFETY: the kernel writes at most `len` bytes into `info`.
    let rc = unsafe { libxdp_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) };
    (rc == 0).then_some(info.id)
}

impl Drop for UplinkFilter {
    fn drop(&mut self) {
        // Closing the object closes the program and map descriptors. If the program
        // is still attached (detach could not run in the right namespace), it stays,
        // and with our socket gone it passes every frame to the host.
        // SAFETY: obj came from bpf_object__open_mem and is closed exactly once.
        unsafe { libxdp_sys::bpf_object__close(self.obj.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_layout_and_encoding() {
        let p = FilterParams {
            vxlan_port: 8472,
            nodeports: None,
        };
        let c = FilterConfig::new(&p, &[Ipv4Addr::new(192, 0, 2, 1)]);
        assert_eq!(c.n_ips, 1);
        assert_eq!(c.node_ips[0].to_ne_bytes(), [192, 0, 2, 1]);
        assert_eq!(c.vxlan_port, 8472);
        assert!(c.nodeport_lo > c.nodeport_hi, "no NodePort range: lo > hi");
        let many: Vec<Ipv4Addr> = (0..20).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        let c = FilterConfig::new(&FilterParams::default(), &many);
        assert_eq!(c.n_ips as usize, MAX_NODE_IPS);
        assert_eq!((c.nodeport_lo, c.nodeport_hi), (30000, 32767));
    }

    #[test]
    fn embedded_object_is_bpf_elf() {
        let b = &OBJECT.0;
        assert_eq!(&b[..4], b"\x7fELF");
        // e_machine = EM_BPF (247)
        assert_eq!(u16::from_le_bytes([b[18], b[19]]), 247);
    }
}
