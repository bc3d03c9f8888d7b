//! A kernel XDP forwarder for baselines: every frame arriving on `in` is
//! redirected to `out` with `bpf_redirect` (the cheapest forwarding path between
//! two veths). Four BPF instructions, loaded without a compiler:
//!
//! ```text
//! r1 = <ifindex of out>
//! r2 = 0
//! call bpf_redirect        ; returns XDP_REDIRECT
//! exit
//! ```
//!
//! The program hangs off a BPF link owned by this process, so it is detached when
//! the process exits, however it exits. Only use it on interfaces you created.

use std::os::fd::{FromRawFd, OwnedFd};

const BPF_FUNC_REDIRECT: i32 = 23;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// One BPF instruction as the kernel reads it: opcode, dst/src registers, offset,
/// immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
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

/// The program's instructions for redirecting to `ifindex`.
pub fn program(ifindex: u32) -> Vec<[u8; 8]> {
    vec![
        insn(0xb7, 1, 0, 0, ifindex as i32), // mov64 r1, imm
        insn(0xb7, 2, 0, 0, 0),              // mov64 r2, 0
        insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT),
        insn(0x95, 0, 0, 0, 0), // exit
    ]
}

fn ifindex(name: &str) -> Result<u32, String> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("bad interface name {name:?}"))?;
    // SAFETY: a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(format!("no interface {name} in this network namespace"))
    } else {
        Ok(i)
    }
}

/// The attached forwarder; dropping it detaches the program.
pub struct XdpFwd {
    _link: OwnedFd,
    _prog: OwnedFd,
    pub mode: &'static str,
}

impl XdpFwd {
    /// Loads the program and attaches it to `input` (driver mode unless `skb`).
    pub fn attach(input: &str, output: &str, skb: bool) -> Result<XdpFwd, String> {
        let in_idx = ifindex(input)?;
        let out_idx = ifindex(output)?;
        let insns = program(out_idx);
        let name = c"vsbench_fwd";
        let license = c"GPL";
        // SAFETY: the instruction array outlives the call and has the kernel's
        // 8-byte layout; name and license are NUL-terminated; opts may be null.
        let prog = unsafe {
            libxdp_sys::bpf_prog_load(
                libxdp_sys::bpf_prog_type_BPF_PROG_TYPE_XDP,
                name.as_ptr(),
                license.as_ptr(),
                insns.as_ptr().cast(),
                insns.len(),
                std::ptr::null_mut(),
            )
        };
        if prog < 0 {
            return Err(format!(
                "loading the XDP program: {}",
                std::io::Error::from_raw_os_error(-prog)
            ));
        }
        // SAFETY: a fresh descriptor we own.
        let prog = unsafe { OwnedFd::from_raw_fd(prog) };
        let mut errs = vec![];
        let modes: &[(u32, &'static str)] = if skb {
            &[(XDP_FLAGS_SKB_MODE, "skb")]
        } else {
            &[(XDP_FLAGS_DRV_MODE, "drv"), (XDP_FLAGS_SKB_MODE, "skb")]
        };
        for &(flags, mode) in modes {
            // SAFETY: zeroed options are valid; sz and flags are set below.
            let mut opts: libxdp_sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
            opts.sz = size_of::<libxdp_sys::bpf_link_create_opts>();
            opts.flags = flags;
            // SAFETY: valid program fd, interface index and options.
            let link = unsafe {
                libxdp_sys::bpf_link_create(
                    std::os::fd::AsRawFd::as_raw_fd(&prog),
                    in_idx as i32,
                    libxdp_sys::bpf_attach_type_BPF_XDP,
                    &opts,
                )
            };
            if link >= 0 {
                return Ok(XdpFwd {
                    // SAFETY: a fresh descriptor we own.
                    _link: unsafe { OwnedFd::from_raw_fd(link) },
                    _prog: prog,
                    mode,
                });
            }
            errs.push(format!(
                "{mode} mode: {}",
                std::io::Error::from_raw_os_error(-link)
            ));
        }
        Err(format!("attaching XDP to {input}: {}", errs.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_instructions() {
        let p = program(7);
        assert_eq!(p[0], [0xb7, 0x01, 0, 0, 7, 0, 0, 0]);
        assert_eq!(p[1], [0xb7, 0x02, 0, 0, 0, 0, 0, 0]);
        assert_eq!(p[2], [0x85, 0, 0, 0, 23, 0, 0, 0]);
        assert_eq!(p[3], [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }
}
