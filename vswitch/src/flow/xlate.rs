//! The slow path: walks the flow tables for one packet key and compiles what it
//! did into datapath actions, recording which key bits it consulted (the megaflow
//! mask) and which tables it read (for cache invalidation). Optionally records a
//! trace of every table, flow and action for `vsctl trace`.

use super::dpaction::DpAction;
use super::field::Field;
use super::key::{self, KEY_WORDS, Key};
use super::rule::Rule;
use super::spec::{Action, CtZone, GroupKind, GroupSpec, port_no};
use super::tables::{GROUPS_TABLE, Pipeline};
use std::sync::Arc;

/// Deepest nesting of resubmit/goto/group before the traversal gives up (drop).
const MAX_DEPTH: u32 = 64;
/// What a select group hashes when it names no fields: the 5-tuple.
const DEFAULT_SELECT_FIELDS: [Field; 5] = [
    Field::Ipv4Src,
    Field::Ipv4Dst,
    Field::IpProto,
    Field::TpSrc,
    Field::TpDst,
];
/// Most datapath actions one traversal may produce.
const MAX_ACTIONS: usize = 256;

/// The result of a traversal.
#[derive(Debug, Clone)]
pub struct Translation {
    pub actions: Vec<DpAction>,
    /// Bits of the input key the result depends on.
    pub consulted: Key,
    /// Tables read (bit i), and bit GROUPS_TABLE when a group was used.
    pub tables: u128,
    /// Flows matched, in order (their counters get this entry's hits).
    pub rules: Vec<Arc<Rule>>,
    /// Pipeline version the traversal read.
    pub built_at: u64,
    /// Why the traversal stopped early, if it did (too deep, too many actions).
    pub error: Option<String>,
}

/// One step of a trace.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TraceStep {
    pub depth: u32,
    pub table: u8,
    /// The flow matched: (priority, cookie, flow id); `None` for a table miss.
    #[serde(skip)]
    pub rule: Option<Arc<Rule>>,
    /// Notes: actions taken, resubmits, group buckets chosen...
    pub notes: Vec<String>,
}

/// Trace output collected by [`translate`] when asked.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    pub steps: Vec<TraceStep>,
}

struct Ctx<'a> {
    pipe: &'a Pipeline,
    key: Key,
    consulted: Key,
    /// Metadata bits written by the traversal (carried into recirculation).
    meta_written: Key,
    tables: u128,
    rules: Vec<Arc<Rule>>,
    actions: Vec<DpAction>,
    trace: Option<&'a mut Trace>,
    error: Option<String>,
}

/// Translates `key` against `pipe`. A key with a recirc_id re-enters at table
/// `recirc_id - 1` (after ct or decap).
pub fn translate(pipe: &Pipeline, key: &Key, trace: Option<&mut Trace>) -> Translation {
    let mut cx = Ctx {
        pipe,
        key: *key,
        consulted: Key::ZERO,
        meta_written: Key::ZERO,
        tables: 0,
        rules: Vec::new(),
        actions: Vec::new(),
        trace,
        error: None,
    };
    // in_port and recirc_id are always part of a megaflow (as in OVS): they select
    // the pipeline segment and make output:in_port/flood exact.
    Field::InPort.set(&mut cx.consulted, u128::MAX);
    cx.consulted.0[key::W_RECIRC] = u64::MAX;
    let start = match key.recirc_id() {
        0 => 0,
        r => (r - 1).min(255) as u8,
    };
    cx.table(start, 0);
    Translation {
        actions: cx.actions,
        consulted: cx.consulted,
        tables: cx.tables,
        rules: cx.rules,
        built_at: pipe.version,
        error: cx.error,
    }
}

impl Ctx<'_> {
    fn note(&mut self, s: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_deref_mut()
            && let Some(step) = t.steps.last_mut()
        {
            step.notes.push(s());
        }
    }

    fn fail(&mut self, why: &str) {
        if self.error.is_none() {
            self.error = Some(why.to_string());
        }
    }

    fn emit(&mut self, a: DpAction) {
        if self.actions.len() >= MAX_ACTIONS {
            self.fail("too many actions");
            return;
        }
        self.actions.push(a);
    }

    fn table(&mut self, t: u8, depth: u32) {
        if depth > MAX_DEPTH {
            self.fail("pipeline too deep (resubmit loop?)");
            return;
        }
        let Some(cls) = self.pipe.tables.get(usize::from(t)) else {
            self.fail("no such table");
            return;
        };
        self.tables |= 1u128 << t;
        let hit = cls.lookup(&self.key, &mut self.consulted);
        let rule = hit.map(|(_, _, r)| r.clone());
        if let Some(tr) = self.trace.as_deref_mut() {
            tr.steps.push(TraceStep {
                depth,
                table: t,
                rule: rule.clone(),
                notes: Vec::new(),
            });
        }
        let Some(rule) = rule else {
            // Table miss: drop (OpenFlow 1.3+ default).
            self.note(|| "no flow matched: drop".into());
            return;
        };
        self.rules.push(rule.clone());
        self.actions_list(&rule.spec.actions, t, depth);
    }

    fn actions_list(&mut self, actions: &[Action], table: u8, depth: u32) {
        for a in actions {
            if self.error.is_some() {
                return;
            }
            match a {
                Action::Output(p) => {
                    let p = if *p == port_no::IN_PORT {
                        self.key.in_port()
                    } else {
                        *p
                    };
                    self.emit(DpAction::Output(p));
                }
                Action::Flood => self.emit(DpAction::Flood),
                Action::Normal => self.emit(DpAction::Normal),
                Action::Drop => {}
                Action::SetField { field, value, mask } => self.set_field(*field, *value, *mask),
                Action::Move {
                    src,
                    src_ofs,
                    dst,
                    dst_ofs,
                    n_bits,
                } => {
                    let bits = if *n_bits >= 128 {
                        u128::MAX
                    } else {
                        (1u128 << n_bits) - 1
                    };
                    // The value read decides what is written: consult those bits.
                    let mut c = Key::ZERO;
                    src.set_masked(&mut c, u128::MAX, bits << src_ofs);
                    self.consulted.or_assign(&c);
                    let v = (src.get(&self.key) >> src_ofs) & bits;
                    self.set_field(*dst, v << dst_ofs, bits << dst_ofs);
                }
                Action::DecTtl => {
                    let ttl = Field::IpTtl.get(&self.key);
                    Field::IpTtl.set(&mut self.key, ttl.saturating_sub(1));
                    self.emit(DpAction::DecTtl);
                }
                Action::PushVlan(tpid) => {
                    Field::VlanTci.set(&mut self.key, u128::from(key::VLAN_PRESENT));
                    self.emit(DpAction::PushVlan(*tpid));
                }
                Action::PopVlan => {
                    Field::VlanTci.set(&mut self.key, 0);
                    self.emit(DpAction::PopVlan);
                }
                Action::GotoTable(n) => {
                    self.note(|| format!("goto_table:{n}"));
                    self.table(*n, depth + 1);
                    return;
                }
                Action::Resubmit { in_port, table: t } => {
                    let saved = self.key.in_port();
                    if let Some(p) = in_port {
                        Field::InPort.set(&mut self.key, u128::from(*p));
                    }
                    let t = t.unwrap_or(table);
                    self.note(|| format!("resubmit to table {t}"));
                    self.table(t, depth + 1);
                    Field::InPort.set(&mut self.key, u128::from(saved));
                }
                Action::Group(id) => self.group(*id, depth),
                Action::Ct(ct) => {
                    self.flush_meta();
                    let zone = match ct.zone {
                        CtZone::Value(z) => z,
                        CtZone::Field(f) => {
                            let mut c = Key::ZERO;
                            f.set_masked(&mut c, u128::MAX, 0xffff);
                            self.consulted.or_assign(&c);
                            (f.get(&self.key) & 0xffff) as u16
                        }
                    };
                    self.emit(DpAction::Ct {
                        zone,
                        commit: ct.commit,
                        nat: ct.nat.clone(),
                        set_mark: ct.set_mark,
                        set_label: ct.set_label,
                        recirc: ct.table.map(|t| u32::from(t) + 1),
                    });
                    self.note(|| format!("ct(zone={zone}) then table {:?}", ct.table));
                }
                Action::Encap(_) => {
                    // The outer header comes from the tunnel fields: consult them
                    // unless this traversal set them itself.
                    let mut c = Key::ZERO;
                    for w in [key::W_TUN_ID, key::W_TUN_NW] {
                        c.0[w] = !self.meta_written.0[w];
                    }
                    self.consulted.or_assign(&c);
                    self.emit(DpAction::Encap {
                        vni: Field::TunId.get(&self.key) as u64,
                        src: Field::TunSrc.get(&self.key) as u32,
                        dst: Field::TunDst.get(&self.key) as u32,
                    });
                }
                Action::Decap { table: t } => {
                    // Registers loaded before decap travel with the inner frame.
                    self.flush_meta();
                    self.emit(DpAction::Decap {
                        recirc: u32::from(*t) + 1,
                    });
                    return;
                }
                Action::Punt(p) => self.emit(DpAction::Punt(*p)),
                Action::Policy(d) => {
                    // Decided per packet from the key at run time: nothing to consult.
                    self.emit(DpAction::Policy(*d));
                    self.note(|| format!("policy({}): verdict at run time", d.as_str()));
                }
                Action::ServiceLb { id, zone, table: t } => {
                    self.flush_meta();
                    self.emit(DpAction::ServiceLb {
                        id: *id,
                        zone: *zone,
                        recirc: u32::from(*t) + 1,
                    });
                    self.note(|| format!("service_lb(id={id}) then table {t}"));
                    return;
                }
                Action::Note(bytes) => {
                    let text = String::from_utf8_lossy(bytes).into_owned();
                    self.note(|| format!("note: {text}"));
                }
            }
        }
    }

    fn set_field(&mut self, field: Field, value: u128, mask: u128) {
        field.set_masked(&mut self.key, value, mask);
        if field.is_packet_field() {
            self.emit(DpAction::SetField { field, value, mask });
        } else {
            field.set_masked(&mut self.meta_written, u128::MAX, mask);
        }
    }

    /// Before a recirculation, carry the metadata this traversal wrote.
    fn flush_meta(&mut self) {
        for w in key::PACKET_WORDS..KEY_WORDS {
            let m = self.meta_written.0[w];
            if m != 0 && w != key::W_RECIRC {
                self.emit(DpAction::SetMeta {
                    word: w as u8,
                    value: self.key.0[w] & m,
                    mask: m,
                });
            }
        }
        // Tunnel fields set before a recirculation travel too.
        for w in [key::W_TUN_ID, key::W_TUN_NW] {
            let m = self.meta_written.0[w];
            if m != 0 {
                self.emit(DpAction::SetMeta {
                    word: w as u8,
                    value: self.key.0[w] & m,
                    mask: m,
                });
            }
        }
    }

    fn group(&mut self, id: u32, depth: u32) {
        self.tables |= 1u128 << GROUPS_TABLE;
        let Some(g) = self.pipe.groups.get(&id).cloned() else {
            self.note(|| format!("group {id} does not exist: drop"));
            return;
        };
        match g.kind {
            GroupKind::All => self.group_all(&g, depth),
            GroupKind::Select => {
                let Some(b) = self.select_bucket(&g) else {
                    self.note(|| format!("group {id} has no live bucket: drop"));
                    return;
                };
                self.note(|| format!("group {id}: bucket {b}"));
                let actions = g.buckets[b].actions.clone();
                self.actions_list(&actions, 0, depth + 1);
            }
        }
    }

    /// Every bucket sees the packet as it is now: all but the last run on a clone.
    fn group_all(&mut self, g: &GroupSpec, depth: u32) {
        let n = g.buckets.len();
        for (i, b) in g.buckets.iter().enumerate() {
            if i + 1 == n {
                self.actions_list(&b.actions, 0, depth + 1);
                break;
            }
            let saved_key = self.key;
            let saved_meta = self.meta_written;
            let outer = std::mem::take(&mut self.actions);
            self.actions_list(&b.actions, 0, depth + 1);
            let inner = std::mem::replace(&mut self.actions, outer);
            self.key = saved_key;
            self.meta_written = saved_meta;
            if !inner.is_empty() {
                self.emit(DpAction::Clone(inner.into_boxed_slice()));
            }
        }
    }

    /// Picks a bucket by a hash of the group's fields (consulting them), weighted.
    fn select_bucket(&mut self, g: &GroupSpec) -> Option<usize> {
        let total: u32 = g.buckets.iter().map(|b| u32::from(b.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let fields: &[Field] = if g.fields.is_empty() {
            &DEFAULT_SELECT_FIELDS
        } else {
            &g.fields
        };
        for f in fields {
            let mut c = Key::ZERO;
            f.set_masked(&mut c, u128::MAX, u128::MAX);
            self.consulted.or_assign(&c);
            let v = f.get(&self.key);
            h = (h ^ (v as u64) ^ ((v >> 64) as u64)).wrapping_mul(0x0100_0000_01b3);
            h ^= h >> 29;
        }
        let mut point = (h % u64::from(total)) as u32;
        for (i, b) in g.buckets.iter().enumerate() {
            let w = u32::from(b.weight);
            if point < w {
                return Some(i);
            }
            point -= w;
        }
        None
    }
}
