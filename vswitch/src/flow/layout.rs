//! The tables, registers and cookies the switch's own features use (see
//! docs/pipeline.md). Numbers are fixed so `dump-flows --table N` means the same on
//! every node, and every feature finds its place without knowing the others.

/// Ingress port kind, gateway ARP/ICMP answers, tunnel decapsulation.
pub const CLASSIFIER: u8 = 0;
/// A pod port may only send from its own addresses.
pub const SPOOF_GUARD: u8 = 5;
/// IP packets enter conntrack.
pub const CT_ZONE: u8 = 10;
/// Conntrack verdicts: invalid dropped, replies skip policy.
pub const CT_STATE: u8 = 11;
/// Service VIPs: endpoint choice and DNAT.
pub const SERVICE_LB: u8 = 15;
/// NetworkPolicy egress rules.
pub const EGRESS_POLICY: u8 = 20;
/// Egress isolation default.
pub const EGRESS_DEFAULT: u8 = 21;
/// Routing: local pods, remote pod CIDRs (tunnel), the gateway.
pub const L3_FORWARDING: u8 = 30;
/// NetworkPolicy ingress rules.
pub const INGRESS_POLICY: u8 = 40;
/// Ingress isolation default.
pub const INGRESS_DEFAULT: u8 = 41;
/// Commit allowed new connections.
pub const CT_COMMIT: u8 = 50;
/// Output: the port chosen earlier (`reg1`), else the learning bridge.
pub const OUTPUT: u8 = 60;

/// The tables in pipeline order; the skeleton chains each to the next.
pub const CHAIN: [u8; 12] = [
    CLASSIFIER,
    SPOOF_GUARD,
    CT_ZONE,
    CT_STATE,
    SERVICE_LB,
    EGRESS_POLICY,
    EGRESS_DEFAULT,
    L3_FORWARDING,
    INGRESS_POLICY,
    INGRESS_DEFAULT,
    CT_COMMIT,
    OUTPUT,
];

/// Register roles.
pub mod reg {
    use crate::flow::Field;
    /// Ingress port kind: [`super::port_kind`].
    pub const PORT_KIND: Field = Field::Reg0;
    /// Output port chosen by routing (0 = none: use the learning bridge).
    pub const OUT_PORT: Field = Field::Reg1;
    /// Id of the policy rule that decided (for per-rule counters).
    pub const POLICY_RULE: Field = Field::Reg2;
    /// Id of the service a packet was load-balanced for.
    pub const SERVICE: Field = Field::Reg3;
    /// Service flags set by conntrack/`service_lb`: [`super::svc_flags`].
    pub const SVC_FLAGS: Field = Field::Reg4;
}

/// Bits of [`reg::SVC_FLAGS`].
pub mod svc_flags {
    /// The packet goes back to the pod it came from (hairpin): `output:in_port`.
    pub const HAIRPIN: u32 = 0x1;
    /// The source MAC was rewritten to the gateway's (a routed, load-balanced
    /// packet): `normal` must not learn the gateway MAC on the pod's port.
    pub const ROUTED: u32 = 0x2;
    /// Arrived on the uplink to a node IP and NodePort (set by the node
    /// pipeline's table 0): `service_lb` source-NATs it to the node IP under
    /// `externalTrafficPolicy: Cluster` and records the client's next-hop MAC in
    /// the connection's label ([`super::ct_label`]).
    pub const UPLINK_IN: u32 = 0x4;
    /// A reply of such a connection, routed back out of the uplink (table 30 sets
    /// it, table 60 outputs on it).
    pub const UPLINK_OUT: u32 = 0x8;
}

/// What `service_lb` stores in a connection's `ct_label`.
pub mod ct_label {
    /// The connection came from the uplink (NodePort from outside the node).
    pub const VIA_UPLINK: u128 = 1 << 48;
    /// Bits 0..47: the source MAC of its first packet (the client's L2 next hop),
    /// the destination MAC of its replies.
    pub const MAC: u128 = (1 << 48) - 1;
}

/// The conntrack zone of pod traffic (policy and services share it).
pub const CT_ZONE_PODS: u16 = 1;

/// Values of [`reg::PORT_KIND`].
pub mod port_kind {
    pub const POD: u32 = 1;
    pub const GATEWAY: u32 = 2;
    pub const UPLINK: u32 = 3;
    pub const TUNNEL: u32 = 4;
}

/// Cookies: the feature that owns a flow in the top 16 bits, so a feature can
/// replace or delete exactly its own flows (`cookie=0x0003000000000000/0xffff000000000000`).
pub mod cookie {
    pub const MASK: u64 = 0xffff_0000_0000_0000;
    /// The pass-through skeleton installed at start.
    pub const SKELETON: u64 = 0x0001 << 48;
    /// The shared conntrack base flows (tables 10, 11, 50), installed while policy
    /// or services need them (`desired::realize::ct_base`). Part of the skeleton
    /// namespace: they belong to the base pipeline, not to either feature.
    pub const CT_BASE: u64 = SKELETON | 0xc7;
    /// Node, gateway, overlay and routing flows.
    pub const NODE: u64 = 0x0002 << 48;
    pub const SERVICES: u64 = 0x0003 << 48;
    pub const POLICY: u64 = 0x0004 << 48;
    /// Flows an operator added by hand carry whatever cookie they chose (0 by default).
    pub fn feature(c: u64) -> u64 {
        c & MASK
    }
}

use crate::flow::spec::{Action, FlowSpec};

/// The flows a new switch starts with: every table of [`CHAIN`] passes packets to
/// the next at priority 0, and the last hands them to the learning bridge. With no
/// feature configured the switch is a plain learning bridge; features add
/// higher-priority flows to their tables.
pub fn skeleton() -> Vec<FlowSpec> {
    CHAIN
        .iter()
        .enumerate()
        .map(|(i, &t)| FlowSpec {
            table: t,
            priority: 0,
            cookie: cookie::SKELETON,
            actions: match CHAIN.get(i + 1) {
                Some(&next) => vec![Action::GotoTable(next)],
                None => vec![Action::Normal],
            },
            ..FlowSpec::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::spec::N_TABLES;
    use crate::flow::tables::{FlowMod, FlowTables};

    #[test]
    fn skeleton_is_a_valid_bundle_in_increasing_tables() {
        assert!(CHAIN.windows(2).all(|w| w[0] < w[1]));
        assert!(CHAIN.iter().all(|&t| usize::from(t) < N_TABLES));
        let (mut t, _r) = FlowTables::new();
        let out = t
            .apply(skeleton().into_iter().map(FlowMod::Add).collect(), 0)
            .expect("skeleton applies");
        assert_eq!(out.added, CHAIN.len());
    }
}
