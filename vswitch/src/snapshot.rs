//! The configuration every poll worker reads: an immutable snapshot that the control
//! thread replaces atomically (arc-swap). A worker checks the generation once per
//! loop iteration — a lock-free load — and never takes a lock per packet.

use arc_swap::ArcSwap;
use std::sync::Arc;
use vswitch_proto::PortKind;

/// Where a port lives, as far as forwarding is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRoute {
    pub port_no: u32,
    /// Worker that owns the port's queue.
    pub worker: usize,
    pub kind: PortKind,
    /// Largest frame the port accepts: MTU + Ethernet header + one VLAN tag.
    pub max_frame: u32,
    /// Interface index (0 for memory ports).
    pub ifindex: u32,
    /// The port is in the XDP fast path's `tx_ports` (port/fastpath.rs): the kernel
    /// may redirect to it (its interface accepts redirected frames).
    pub fastpath: bool,
    /// The port runs the fast-path program: frames it receives may be forwarded
    /// by the kernel (to ports with `fastpath`).
    pub fp_ingress: bool,
}

/// One generation of the switch configuration.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub generation: u64,
    /// Indexed by port number; `None` for unused numbers.
    pub ports: Vec<Option<PortRoute>>,
    /// Port numbers that receive flooded frames, ascending: every attached port
    /// but the uplinks. An uplink is the node's NIC, shared with the host: only
    /// what a flow sends there explicitly (tunnel traffic, a MAC learned on it)
    /// leaves by it, never a pod's broadcast or unknown unicast.
    pub flood: Vec<u32>,
}

impl Snapshot {
    #[inline]
    pub fn port(&self, port_no: u32) -> Option<&PortRoute> {
        self.ports.get(port_no as usize).and_then(Option::as_ref)
    }

    /// A new snapshot with `route` added or replaced.
    pub fn with_port(&self, route: PortRoute) -> Snapshot {
        let mut s = self.clone();
        let i = route.port_no as usize;
        if s.ports.len() <= i {
            s.ports.resize(i + 1, None);
        }
        s.ports[i] = Some(route);
        s.rebuild_flood();
        s.generation += 1;
        s
    }

    /// A new snapshot without `port_no`.
    pub fn without_port(&self, port_no: u32) -> Snapshot {
        let mut s = self.clone();
        if let Some(slot) = s.ports.get_mut(port_no as usize) {
            *slot = None;
        }
        while matches!(s.ports.last(), Some(None)) {
            s.ports.pop();
        }
        s.rebuild_flood();
        s.generation += 1;
        s
    }

    fn rebuild_flood(&mut self) {
        self.flood = self
            .ports
            .iter()
            .flatten()
            .filter(|r| r.kind != PortKind::Uplink)
            .map(|r| r.port_no)
            .collect();
    }
}

/// The shared cell holding the current snapshot.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn route(port_no: u32) -> PortRoute {
        PortRoute {
            port_no,
            worker: 0,
            kind: PortKind::Pod,
            max_frame: 1518,
            ifindex: 0,
            fastpath: false,
            fp_ingress: false,
        }
    }

    #[test]
    fn add_and_remove_ports() {
        let s = Snapshot::default().with_port(route(1)).with_port(route(3));
        assert_eq!(s.generation, 2);
        assert_eq!(s.flood, vec![1, 3]);
        assert!(s.port(2).is_none());
        let s = s.without_port(3);
        assert_eq!(s.flood, vec![1]);
        assert_eq!(s.ports.len(), 2);
        assert!(s.port(99).is_none());
    }

    #[test]
    fn uplinks_are_never_flooded_to() {
        let s = Snapshot::default()
            .with_port(route(1))
            .with_port(PortRoute {
                kind: PortKind::Uplink,
                ..route(2)
            })
            .with_port(PortRoute {
                kind: PortKind::Gateway,
                ..route(3)
            });
        assert_eq!(s.flood, vec![1, 3]);
        assert!(s.port(2).is_some(), "still a port (explicit output works)");
    }
}
