//! Tiny XDP programs, assembled here (no compiler, no object files) and loaded
//! through libbpf (linked by libxdp-sys):
//!
//! - the forwarder of `vswitch-bench xdp-fwd` ([`redirect_program`]);
//! - the sink's program ([`SinkProg`]): it stamps the receive time
//!   (`bpf_ktime_get_ns`, the generator's CLOCK_MONOTONIC) into 8 bytes of XDP
//!   metadata in front of the frame and redirects it to the sink's AF_XDP socket
//!   through an XSKMAP. The kernel copies metadata into the UMEM along with the
//!   frame (copy mode included), so latency is measured where the frame reached
//!   the sink's interface, like vsb's XDP sink, not when our thread got round to
//!   reading the ring (which on a busy CPU can be milliseconds later).
//!
//! Programs are attached through BPF links: closing the link's descriptor
//! detaches the program, in whatever namespace the closing thread is, and the
//! kernel closes it if the process dies.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, Weak};

const BPF_FUNC_KTIME_GET_NS: i32 = 5;
const BPF_FUNC_REDIRECT: i32 = 23;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const BPF_FUNC_XDP_ADJUST_META: i32 = 54;
const XDP_PASS: i32 = 2;
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// Sockets one sink program serves (queue index = key).
const XSKMAP_ENTRIES: u32 = 64;

/// One BPF instruction as the kernel reads it: opcode, dst/src registers, offset,
/// immediate (little-endian host).
pub fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let o = off.to_le_bytes();
    let i = imm.to_le_bytes();
    [
        code,
        (src << 4) | (dst & 0x0f),
        o[0],
        o[1],
        i[0],
        i[1],
        i[2],
        i[3],
    ]
}

const MOV64_IMM: u8 = 0xb7;
const MOV64_REG: u8 = 0xbf;
const ADD64_IMM: u8 = 0x07;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const JNE_IMM: u8 = 0x55;
const JGT_REG: u8 = 0x2d;
const LDXW: u8 = 0x61;
const STXDW: u8 = 0x7b;
const LD_IMM64: u8 = 0x18;
const PSEUDO_MAP_FD: u8 = 1;

/// `r0 = bpf_redirect(ifindex, 0); exit`.
pub fn redirect_program(ifindex: u32) -> Vec<[u8; 8]> {
    vec![
        insn(MOV64_IMM, 1, 0, 0, ifindex as i32),
        insn(MOV64_IMM, 2, 0, 0, 0),
        insn(CALL, 0, 0, 0, BPF_FUNC_REDIRECT),
        insn(EXIT, 0, 0, 0, 0),
    ]
}

/// The sink program for an XSKMAP with descriptor `map_fd`:
///
/// ```text
///  0  r6 = r1                         ctx
///  1  call ktime_get_ns
///  2  r7 = r0                         receive time
///  3  r1 = r6
///  4  r2 = -8
///  5  call xdp_adjust_meta            8 bytes of metadata in front of data
///  6  if r0 != 0 goto 13              no room: redirect unstamped
///  7  r2 = ctx->data_meta
///  8  r3 = ctx->data
///  9  r4 = r2
/// 10  r4 += 8
/// 11  if r4 > r3 goto 13              (the verifier's bounds check)
/// 12  *(u64 *)(r2 + 0) = r7
/// 13  r2 = ctx->rx_queue_index
/// 14  r1 = map (ld_imm64, 2 slots)
/// 16  r3 = XDP_PASS                   no socket on this queue: to the stack
/// 17  call redirect_map
/// 18  exit
/// ```
pub fn sink_program(map_fd: i32) -> Vec<[u8; 8]> {
    vec![
        insn(MOV64_REG, 6, 1, 0, 0),
        insn(CALL, 0, 0, 0, BPF_FUNC_KTIME_GET_NS),
        insn(MOV64_REG, 7, 0, 0, 0),
        insn(MOV64_REG, 1, 6, 0, 0),
        insn(MOV64_IMM, 2, 0, 0, -8),
        insn(CALL, 0, 0, 0, BPF_FUNC_XDP_ADJUST_META),
        insn(JNE_IMM, 0, 0, 6, 0),
        insn(LDXW, 2, 6, 8, 0),
        insn(LDXW, 3, 6, 0, 0),
        insn(MOV64_REG, 4, 2, 0, 0),
        insn(ADD64_IMM, 4, 0, 0, 8),
        insn(JGT_REG, 4, 3, 1, 0),
        insn(STXDW, 2, 7, 0, 0),
        insn(LDXW, 2, 6, 16, 0),
        insn(LD_IMM64, 1, PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        insn(MOV64_IMM, 3, 0, 0, XDP_PASS),
        insn(CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        insn(EXIT, 0, 0, 0, 0),
    ]
}

fn errno_text(rc: i32) -> String {
    std::io::Error::from_raw_os_error(-rc).to_string()
}

/// Loads an XDP program.
pub fn load_xdp(name: &std::ffi::CStr, insns: &[[u8; 8]]) -> Result<OwnedFd, String> {
    // SAFETY: the instruction array outlives the call and has the kernel's 8-byte
    // layout; name and license are NUL-terminated; opts may be null.
    let fd = unsafe {
        libxdp_sys::bpf_prog_load(
            libxdp_sys::bpf_prog_type_BPF_PROG_TYPE_XDP,
            name.as_ptr(),
            c"GPL".as_ptr(),
            insns.as_ptr().cast(),
            insns.len(),
            std::ptr::null_mut(),
        )
    };
    if fd < 0 {
        return Err(format!("loading the XDP program: {}", errno_text(fd)));
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attaches `prog` to interface `ifindex` through a BPF link, trying the modes in
/// order; returns the link and the mode used ("drv" or "skb").
pub fn attach_xdp(
    prog: &OwnedFd,
    ifindex: u32,
    modes: &[(u32, &'static str)],
) -> Result<(OwnedFd, &'static str), String> {
    let mut errs = vec![];
    for &(flags, mode) in modes {
        // SAFETY: zeroed options are valid; sz and flags are set below.
        let mut opts: libxdp_sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
        opts.sz = size_of::<libxdp_sys::bpf_link_create_opts>();
        opts.flags = flags;
        // SAFETY: a valid program descriptor, interface index and options.
        let link = unsafe {
            libxdp_sys::bpf_link_create(
                prog.as_raw_fd(),
                ifindex as i32,
                libxdp_sys::bpf_attach_type_BPF_XDP,
                &opts,
            )
        };
        if link >= 0 {
            // SAFETY: a fresh descriptor we own.
            return Ok((unsafe { OwnedFd::from_raw_fd(link) }, mode));
        }
        errs.push(format!("{mode} mode: {}", errno_text(link)));
    }
    Err(errs.join("; "))
}

/// The interface index of `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> Result<u32, String> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("bad interface name {name:?}"))?;
    // SAFETY: a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(format!("no interface {name} in this network namespace"))
    } else {
        Ok(i)
    }
}

/// The sink program on one interface, shared by every sink socket (one per queue)
/// on it. The link goes (and the program is detached) with the last user.
pub struct SinkProg {
    // Drop order: the link (detach) before the program and the map.
    _link: OwnedFd,
    _prog: OwnedFd,
    map: OwnedFd,
    pub mode: &'static str,
}

type Key = ((u64, u64), u32);
static SINK_PROGS: Mutex<Vec<(Key, Weak<SinkProg>)>> = Mutex::new(Vec::new());

fn netns_id() -> Result<(u64, u64), String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/thread-self/ns/net").map_err(|e| e.to_string())?;
    Ok((m.dev(), m.ino()))
}

impl SinkProg {
    /// The sink program of `ifname` (in the calling thread's namespace): the one
    /// already attached by this process, or a new one.
    pub fn get(ifname: &str) -> Result<Arc<SinkProg>, String> {
        let ifindex = ifindex(ifname)?;
        let key = (netns_id()?, ifindex);
        let mut progs = SINK_PROGS.lock().unwrap_or_else(|e| e.into_inner());
        progs.retain(|(_, w)| w.strong_count() > 0);
        if let Some(p) = progs
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(p);
        }
        // SAFETY: plain map creation; the name is NUL-terminated, opts may be null.
        let map = unsafe {
            libxdp_sys::bpf_map_create(
                libxdp_sys::bpf_map_type_BPF_MAP_TYPE_XSKMAP,
                c"vsbench_xsks".as_ptr(),
                4,
                4,
                XSKMAP_ENTRIES,
                std::ptr::null(),
            )
        };
        if map < 0 {
            return Err(format!("creating the XSKMAP: {}", errno_text(map)));
        }
        // SAFETY: a fresh descriptor we own.
        let map = unsafe { OwnedFd::from_raw_fd(map) };
        let prog = load_xdp(c"vsbench_sink", &sink_program(map.as_raw_fd()))?;
        let (link, mode) = attach_xdp(
            &prog,
            ifindex,
            &[(XDP_FLAGS_DRV_MODE, "drv"), (XDP_FLAGS_SKB_MODE, "skb")],
        )
        .map_err(|e| format!("attaching the sink program to {ifname}: {e}"))?;
        let p = Arc::new(SinkProg {
            _link: link,
            _prog: prog,
            map,
            mode,
        });
        progs.push((key, Arc::downgrade(&p)));
        Ok(p)
    }

    /// Directs queue `queue`'s frames to the AF_XDP socket `xsk_fd`.
    pub fn add_socket(&self, queue: u32, xsk_fd: i32) -> Result<(), String> {
        if queue >= XSKMAP_ENTRIES {
            return Err(format!("queue {queue} >= {XSKMAP_ENTRIES}"));
        }
        // SAFETY: key and value are live u32/i32 locals of the map's sizes.
        let rc = unsafe {
            libxdp_sys::bpf_map_update_elem(
                self.map.as_raw_fd(),
                (&queue as *const u32).cast(),
                (&xsk_fd as *const i32).cast(),
                0,
            )
        };
        if rc < 0 {
            return Err(format!("XSKMAP update: {}", errno_text(rc)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_instructions() {
        let p = redirect_program(7);
        assert_eq!(p[0], [0xb7, 0x01, 0, 0, 7, 0, 0, 0]);
        assert_eq!(p[1], [0xb7, 0x02, 0, 0, 0, 0, 0, 0]);
        assert_eq!(p[2], [0x85, 0, 0, 0, 23, 0, 0, 0]);
        assert_eq!(p[3], [0x95, 0, 0, 0, 0, 0, 0, 0]);
        let s = sink_program(9);
        assert_eq!(s.len(), 19);
        // Both jumps land on instruction 13 (rx_queue_index load).
        assert_eq!(i16::from_le_bytes([s[6][2], s[6][3]]), 13 - 6 - 1);
        assert_eq!(i16::from_le_bytes([s[11][2], s[11][3]]), 13 - 11 - 1);
        assert_eq!(s[13], [0x61, 0x62, 16, 0, 0, 0, 0, 0]);
        // ld_imm64 with the map fd as a pseudo map reference.
        assert_eq!(s[14], [0x18, 0x11, 0, 0, 9, 0, 0, 0]);
        assert_eq!(s[4], [0xb7, 0x02, 0, 0, 0xf8, 0xff, 0xff, 0xff]);
    }
}
