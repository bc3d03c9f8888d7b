//! Flows, groups and their parts as the control plane describes them: what
//! `add-flow` parses into, `dump-flows` prints from, and the pipeline compiles.

use super::field::{Field, FieldKind};
use super::key::Key;
use std::net::IpAddr;

/// Number of flow tables (0..=MAX_TABLE).
pub const N_TABLES: usize = 64;
/// Highest table number.
pub const MAX_TABLE: u8 = (N_TABLES - 1) as u8;
/// Default priority of a flow spec without `priority=` (as OVS).
pub const DEFAULT_PRIORITY: u16 = 32768;

/// A match: a masked value and its mask. A field absent from the mask is wildcarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Match {
    /// Always already masked: `value & mask == value`.
    pub value: Key,
    pub mask: Key,
}

impl Match {
    /// The match that matches everything.
    pub const ANY: Match = Match {
        value: Key::ZERO,
        mask: Key::ZERO,
    };

    /// Adds `field == value` under `mask` (bits outside the field's width ignored).
    pub fn set(&mut self, field: Field, value: u128, mask: u128) {
        let m = mask & field.full_mask();
        field.set_masked(&mut self.mask, m, u128::MAX);
        field.set_masked(&mut self.value, value & m, u128::MAX);
    }

    /// Adds an exact `field == value`.
    pub fn set_exact(&mut self, field: Field, value: u128) {
        self.set(field, value, u128::MAX);
    }

    /// The field's (value, mask) if any bit of it is matched.
    pub fn get(&self, field: Field) -> Option<(u128, u128)> {
        let mask = field.get(&self.mask);
        (mask != 0).then(|| (field.get(&self.value), mask))
    }

    /// Whether a packet key matches.
    #[inline]
    pub fn matches(&self, key: &Key) -> bool {
        key.matches(&self.mask, &self.value)
    }

    /// Whether every packet this match accepts is accepted by `wider` (OVS's
    /// non-strict del-flows: delete flows at least as specific as the spec).
    pub fn is_subset_of(&self, wider: &Match) -> bool {
        (0..self.mask.0.len()).all(|i| {
            let wm = wider.mask.0[i];
            // wider's mask bits must all be in self's mask, with equal values there.
            (self.mask.0[i] & wm) == wm && (self.value.0[i] & wm) == wider.value.0[i]
        })
    }
}

/// Special output ports (OpenFlow's reserved numbers, kept for familiarity).
pub mod port_no {
    /// `output:in_port`: back out of the ingress port.
    pub const IN_PORT: u32 = 0xffff_fff8;
    /// No port (matches "any port" in filters).
    pub const NONE: u32 = 0xffff_ffff;
}

/// Source or destination NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatKind {
    Src,
    Dst,
}

/// `nat(src=A[-B][:P[-Q]])`, or plain `nat` (undo/apply the NAT of the connection).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NatSpec {
    /// `None`: plain `nat` — translate according to the existing connection only.
    pub kind: Option<NatKind>,
    pub addr_min: Option<IpAddr>,
    pub addr_max: Option<IpAddr>,
    pub port_min: Option<u16>,
    pub port_max: Option<u16>,
}

/// Where a `ct` action takes its zone from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtZone {
    Value(u16),
    /// `zone=NXM_NX_REG5[0..15]`-style: the low 16 bits of a register.
    Field(Field),
}

/// `ct(commit, zone=Z, table=T, nat(...), exec(set_field:..->ct_mark))`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CtAction {
    pub commit: bool,
    pub zone: CtZone,
    /// Continue processing in this table with the conntrack fields set.
    pub table: Option<u8>,
    pub nat: Option<NatSpec>,
    /// `exec(set_field:V/M->ct_mark)` on commit.
    pub set_mark: Option<(u32, u32)>,
    /// `exec(set_field:V/M->ct_label)` on commit.
    pub set_label: Option<(u128, u128)>,
}

/// The switch's own packet handlers reached by `punt:` (rate limited per worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Punt {
    /// Answer an ARP request for `arp_tpa` with this MAC, out of the ingress port.
    ArpResponder { mac: [u8; 6] },
    /// Answer an ICMP echo request (to whatever address it was sent), out of the ingress port.
    IcmpEchoReply,
    /// Refuse a connection as kube-proxy's REJECT does: TCP RST for TCP, ICMP
    /// port unreachable otherwise, out of the ingress port (services without
    /// endpoints).
    Reject,
}

/// Tunnel encapsulations the `encap` action knows (the overlay fills these in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encap {
    /// VXLAN (RFC 7348) using tun_id, tun_src, tun_dst from the key.
    Vxlan,
}

/// One action of a flow or group bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// `output:N` (or `output:in_port` with [`port_no::IN_PORT`]).
    Output(u32),
    /// Every port but the ingress port.
    Flood,
    /// The learning bridge (MAC learning + forwarding).
    Normal,
    /// Explicit drop (also what an empty action list means).
    Drop,
    /// `set_field:V[/M]->FIELD`, `load:V->FIELD[a..b]`, `mod_dl_src:`...
    SetField {
        field: Field,
        value: u128,
        mask: u128,
    },
    /// `move:SRC[a..b]->DST[c..d]`: copy `n_bits` bits.
    Move {
        src: Field,
        src_ofs: u32,
        dst: Field,
        dst_ofs: u32,
        n_bits: u32,
    },
    /// Decrement the IP TTL / hop limit; drop when it would reach 0.
    DecTtl,
    /// `push_vlan:0x8100` (the new tag has VID 0 until `set_field:..->vlan_vid`).
    PushVlan(u16),
    /// `pop_vlan` / `strip_vlan`.
    PopVlan,
    GotoTable(u8),
    /// `resubmit(PORT,TABLE)`: look up again (in_port replaced when given).
    Resubmit {
        in_port: Option<u32>,
        table: Option<u8>,
    },
    Group(u32),
    Ct(CtAction),
    Encap(Encap),
    /// Strip the tunnel header; the inner frame continues in `table` with tun_* set.
    Decap {
        table: u8,
    },
    Punt(Punt),
    /// `policy(ingress|egress)`: NetworkPolicy verdict for the packet's connection
    /// (see docs/policy.md); a denied packet is dropped here, an allowed one goes on.
    Policy(crate::policy::Dir),
    /// `service_lb(id=N,zone=Z,table=T)`: choose an endpoint of service frontend
    /// N (Maglev), commit the connection in zone Z with DNAT to it, rewrite the
    /// packet and continue in table T (see docs/services.md).
    ServiceLb {
        id: u32,
        zone: u16,
        table: u8,
    },
    /// `note:` bytes (shown in traces; no effect).
    Note(Vec<u8>),
}

/// A flow as added, dumped and deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSpec {
    pub table: u8,
    pub priority: u16,
    pub cookie: u64,
    /// Seconds without a hit before the flow is removed (0 = never).
    pub idle_timeout: u16,
    /// Seconds after which the flow is removed whatever happens (0 = never).
    pub hard_timeout: u16,
    pub m: Match,
    pub actions: Vec<Action>,
}

impl Default for FlowSpec {
    fn default() -> Self {
        FlowSpec {
            table: 0,
            priority: DEFAULT_PRIORITY,
            cookie: 0,
            idle_timeout: 0,
            hard_timeout: 0,
            m: Match::ANY,
            actions: Vec::new(),
        }
    }
}

/// Which flows `del-flows` (and `dump-flows` filters) select.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlowFilter {
    pub table: Option<u8>,
    /// `cookie=V/M`: flows whose `cookie & M == V`.
    pub cookie: Option<(u64, u64)>,
    /// Non-strict: flows whose match is at least as specific as this one.
    pub m: Match,
    /// Strict (`--strict`): the same match and priority only.
    pub strict_priority: Option<u16>,
    /// `out_port=N`: flows with an output to N.
    pub out_port: Option<u32>,
}

/// How a group picks buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupKind {
    /// Every bucket (flooding sets, mirroring).
    All,
    /// One bucket by a hash of `fields`, weighted (load balancing).
    Select,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bucket {
    pub weight: u16,
    pub actions: Vec<Action>,
}

/// `group_id=N,type=select,fields(ip_src,tp_src),bucket=...`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupSpec {
    pub id: u32,
    pub kind: GroupKind,
    /// Fields hashed by a select group (default: the 5-tuple).
    pub fields: Vec<Field>,
    pub buckets: Vec<Bucket>,
}

/// Whether a field value kind is an address (printed as prefix when masked).
pub fn is_address(kind: FieldKind) -> bool {
    matches!(kind, FieldKind::Ipv4 | FieldKind::Ipv6 | FieldKind::Mac)
}
