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

use crate::bpfprog::{
    XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE, attach_xdp, ifindex, load_xdp, redirect_program,
};
use std::os::fd::OwnedFd;

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
        let prog = load_xdp(c"vsbench_fwd", &redirect_program(out_idx))?;
        let modes: &[(u32, &'static str)] = if skb {
            &[(XDP_FLAGS_SKB_MODE, "skb")]
        } else {
            &[(XDP_FLAGS_DRV_MODE, "drv"), (XDP_FLAGS_SKB_MODE, "skb")]
        };
        let (link, mode) = attach_xdp(&prog, in_idx, modes)
            .map_err(|e| format!("attaching XDP to {input}: {e}"))?;
        Ok(XdpFwd {
            _link: link,
            _prog: prog,
            mode,
        })
    }
}
