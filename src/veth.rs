//! veth pairs with their two ends in two test namespaces.

use crate::netns::Netns;
use crate::{Result, err};

/// A veth pair `a` (in namespace `ns_a`) <-> `b` (in `ns_b`), both up. Dropping it
/// deletes `a`, which deletes `b` with it; if the namespace went first, both are gone
/// already and that is fine.
#[derive(Debug)]
pub struct Veth {
    ns_a: String,
    pub a: String,
    ns_b: String,
    pub b: String,
}

impl Veth {
    /// Creates the pair from inside `ns_a` (the interface never exists in the root
    /// namespace, not even for a moment) and sets both ends up.
    pub fn new(ns_a: &Netns, a: &str, ns_b: &Netns, b: &str) -> Result<Veth> {
        Self::create(ns_a, a, ns_b, b, None)
    }

    /// [`Veth::new`] with `queues` RX and TX queues on both ends (`numrxqueues`,
    /// `numtxqueues`), like a multi-queue NIC: the sender's TX queue, chosen by flow
    /// hash, is the receiver's RX queue.
    pub fn with_queues(ns_a: &Netns, a: &str, ns_b: &Netns, b: &str, queues: u32) -> Result<Veth> {
        Self::create(ns_a, a, ns_b, b, Some(queues))
    }

    fn create(ns_a: &Netns, a: &str, ns_b: &Netns, b: &str, queues: Option<u32>) -> Result<Veth> {
        for n in [a, b] {
            if n.is_empty() || n.len() > 15 {
                return Err(err!("interface name '{n}' must have 1 to 15 characters"));
            }
        }
        let q = queues.map(|q| q.to_string());
        let mut args = vec!["link", "add", a];
        if let Some(q) = &q {
            args.extend(["numrxqueues", q, "numtxqueues", q]);
        }
        args.extend(["type", "veth", "peer", "name", b]);
        if let Some(q) = &q {
            args.extend(["numrxqueues", q, "numtxqueues", q]);
        }
        args.extend(["netns", ns_b.name()]);
        ns_a.ip(&args)?;
        let v = Veth {
            ns_a: ns_a.name().into(),
            a: a.into(),
            ns_b: ns_b.name().into(),
            b: b.into(),
        };
        ns_a.ip(&["link", "set", a, "up"])?;
        ns_b.ip(&["link", "set", b, "up"])?;
        Ok(v)
    }

    pub fn ns_a(&self) -> &str {
        &self.ns_a
    }

    pub fn ns_b(&self) -> &str {
        &self.ns_b
    }
}

/// Turns off TX checksum offload and TSO/GSO on `ifname`. Needed on the pod end of a
/// veth that a userspace switch serves: otherwise the kernel hands over
/// CHECKSUM_PARTIAL frames (checksum not yet computed) and large GSO frames, which a
/// switch reading raw frames through AF_XDP copy mode or AF_PACKET forwards as they are,
/// and the receiving pod drops them (broken TCP). Open vSwitch documents the same.
pub fn disable_offloads(ns: &Netns, ifname: &str) -> Result<()> {
    ns.run(&[
        "ethtool", "-K", ifname, "tx", "off", "tso", "off", "gso", "off",
    ])
    .map(|_| ())
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Fails harmlessly when the pair or its namespace is already gone.
        let _ = crate::cmd::run(
            std::process::Command::new("ip").args(["-n", &self.ns_a, "link", "del", &self.a]),
        );
    }
}
