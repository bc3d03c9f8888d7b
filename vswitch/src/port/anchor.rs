//! The UMEM anchor: a socket that keeps a worker's UMEM usable for the worker's life.
//!
//! libxdp binds the *first* AF_XDP socket of a UMEM through the UMEM's own file
//! descriptor, and every later socket names that descriptor in `XDP_SHARED_UMEM`.
//! That descriptor stays bound to the first socket's interface until the UMEM is
//! destroyed. If the first port were a pod, deleting the pod would leave the UMEM's
//! descriptor unbound and every later AF_XDP bind on the worker would fail (EBADF),
//! and the pod's interface name could never be bound again. So each worker binds its
//! UMEM first to an interface the switch creates for that purpose and keeps: one end
//! of a private veth pair, `vsanc<N>a`/`vsanc<N>b` (dummy devices are not always
//! available). No XDP program is loaded on it (`INHIBIT_PROG_LOAD`) and no traffic
//! ever reaches it.
//!
//! Consequence, documented in docs/architecture.md: the anchor is bound in copy mode
//! and later sockets inherit the UMEM's mode, so a worker's ports run in copy mode.
//! veth has no zero-copy anyway; giving a zero-copy NIC uplink its own worker (and
//! letting it anchor that worker's UMEM) is the way to zero-copy.

use crate::pool::UmemHandle;
use std::process::Command;
use xsk_rs::config::{BindFlags, Interface, LibxdpFlags, QueueSize, SocketConfig, XdpFlags};
use xsk_rs::{CompQueue, FillQueue, RxQueue, Socket, TxQueue};

type Queues = (TxQueue, RxQueue, Option<(FillQueue, CompQueue)>);

pub struct UmemAnchor {
    veth: String,
    queues: Option<Queues>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl UmemAnchor {
    /// Creates worker `worker`'s anchor veth pair in the current network namespace
    /// (replacing one a crashed switch left behind) and binds the UMEM to it.
    pub fn create(umem: &UmemHandle, worker: usize) -> Result<UmemAnchor, String> {
        let a = format!("vsanc{worker}a");
        let b = format!("vsanc{worker}b");
        let _ = ip(&["link", "del", &a]);
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
        let mut anchor = UmemAnchor {
            veth: a.clone(),
            queues: None,
        };
        let iface: Interface = a.parse().map_err(|_| format!("bad interface name {a}"))?;
        let small = QueueSize::new(64).map_err(|e| e.to_string())?;
        let config = SocketConfig::builder()
            .rx_queue_size(small)
            .tx_queue_size(small)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .xdp_flags(XdpFlags::XDP_FLAGS_SKB_MODE)
            .bind_flags(BindFlags::XDP_COPY)
            .build();
        // SAFETY: a fresh UMEM with no socket on (anchor, 0) yet; no program loaded.
        let queues = unsafe { Socket::new(config, &umem.umem, &iface, 0) }
            .map_err(|e| format!("binding the UMEM anchor {a}: {e}"))?;
        anchor.queues = Some(queues);
        Ok(anchor)
    }

    pub fn interface(&self) -> &str {
        &self.veth
    }
}

impl Drop for UmemAnchor {
    fn drop(&mut self) {
        drop(self.queues.take());
        if let Err(e) = ip(&["link", "del", &self.veth]) {
            tracing::warn!(error = %e, "could not remove UMEM anchor");
        }
    }
}
