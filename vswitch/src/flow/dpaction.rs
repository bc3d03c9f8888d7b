//! Datapath actions: what the slow path (`xlate`) compiles a pipeline traversal
//! into and what the caches hold. Everything that depends only on the fields the
//! traversal consulted is resolved already (tables, groups, resubmits, registers);
//! what remains is the work to do on each packet.

use super::field::Field;
use super::spec::{NatSpec, Punt};

#[derive(Debug, Clone, PartialEq)]
pub enum DpAction {
    /// Transmit (a copy of) the frame as it is now.
    Output(u32),
    /// The learning bridge: learn the source, forward by destination MAC.
    Normal,
    /// Every port except the ingress port.
    Flood,
    /// Rewrite a packet header field (checksums fixed incrementally).
    SetField {
        field: Field,
        value: u128,
        mask: u128,
    },
    /// Key-only metadata (registers, metadata, ct mark/label staging) carried into
    /// a recirculation: `word = (word & !mask) | value`.
    SetMeta {
        word: u8,
        value: u64,
        mask: u64,
    },
    DecTtl,
    PushVlan(u16),
    PopVlan,
    /// Run the inner actions on a copy of the frame (group `all` buckets).
    Clone(Box<[DpAction]>),
    /// Conntrack, then (with `recirc`) look the packet up again from that table + 1.
    Ct {
        zone: u16,
        commit: bool,
        nat: Option<NatSpec>,
        set_mark: Option<(u32, u32)>,
        set_label: Option<(u128, u128)>,
        recirc: Option<u32>,
    },
    /// VXLAN encapsulation with these outer parameters.
    Encap {
        vni: u64,
        src: u32,
        dst: u32,
    },
    /// Strip the tunnel header and look up again (`recirc` = table + 1).
    Decap {
        recirc: u32,
    },
    Punt(Punt),
    /// NetworkPolicy verdict: drop here when denied, else go on.
    Policy(crate::policy::Dir),
    /// Choose an endpoint of service frontend `id`, commit with DNAT in `zone`,
    /// rewrite, and look up again from `recirc` - 1.
    ServiceLb {
        id: u32,
        zone: u16,
        recirc: u32,
    },
}

impl std::fmt::Display for DpAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DpAction::Output(p) => write!(f, "output:{p}"),
            DpAction::Normal => f.write_str("normal"),
            DpAction::Flood => f.write_str("flood"),
            DpAction::SetField { field, value, mask } => {
                if *mask == field.full_mask() || *mask == u128::MAX {
                    write!(f, "set_field:{value:#x}->{}", field.name())
                } else {
                    write!(f, "set_field:{value:#x}/{mask:#x}->{}", field.name())
                }
            }
            DpAction::SetMeta { word, value, mask } => {
                write!(f, "set_meta(word{word}={value:#x}/{mask:#x})")
            }
            DpAction::DecTtl => f.write_str("dec_ttl"),
            DpAction::PushVlan(t) => write!(f, "push_vlan:{t:#06x}"),
            DpAction::PopVlan => f.write_str("pop_vlan"),
            DpAction::Clone(inner) => {
                f.write_str("clone(")?;
                for (i, a) in inner.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
            DpAction::Ct {
                zone,
                commit,
                nat,
                recirc,
                ..
            } => {
                write!(f, "ct(zone={zone}")?;
                if *commit {
                    f.write_str(",commit")?;
                }
                if nat.is_some() {
                    f.write_str(",nat")?;
                }
                f.write_str(")")?;
                if let Some(r) = recirc {
                    write!(f, ",recirc(table {})", r - 1)?;
                }
                Ok(())
            }
            DpAction::Encap { vni, src, dst } => write!(
                f,
                "encap(vxlan,vni={vni},src={},dst={})",
                std::net::Ipv4Addr::from(*src),
                std::net::Ipv4Addr::from(*dst)
            ),
            DpAction::Decap { recirc } => write!(f, "decap,recirc(table {})", recirc - 1),
            DpAction::Punt(p) => write!(f, "punt({p:?})"),
            DpAction::Policy(d) => write!(f, "policy({})", d.as_str()),
            DpAction::ServiceLb { id, zone, recirc } => write!(
                f,
                "service_lb(id={id},zone={zone}),recirc(table {})",
                recirc - 1
            ),
        }
    }
}

/// A one-word summary of what the actions do to a packet.
pub fn verdict(actions: &[DpAction]) -> &'static str {
    let mut v = "drop";
    for a in actions {
        v = match a {
            DpAction::Output(_) => "forward",
            DpAction::Normal => "normal (learning bridge)",
            DpAction::Flood => "flood",
            DpAction::Clone(_) => "forward (copies)",
            DpAction::Ct {
                recirc: Some(_), ..
            }
            | DpAction::Decap { .. }
            | DpAction::ServiceLb { .. } => "recirculate",
            DpAction::Encap { .. } => "tunnel",
            DpAction::Punt(_) => "answered by the switch",
            _ => continue,
        };
    }
    v
}
