//! Desired-state synchronisation over the control socket: `sync_full`, `sync_delta`,
//! `sync_status` (see `docs/control-protocol.md`), and the diff both sides use.
//!
//! The daemon's state carries a *generation*, chosen by the agent. A full sync
//! replaces everything and sets the generation; a delta names the generation it was
//! computed against (`base_generation`) and is refused with
//! [`ErrorCode::GenerationMismatch`](crate::ErrorCode::GenerationMismatch) when the
//! daemon is elsewhere, upon which the agent falls back to a full sync.

use crate::model::{DesiredState, Kind, Object, ObjectKey};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Parameters of `sync_full`.
///
/// A state too large for one request line ([`crate::MAX_LINE_BYTES`]) is sent in
/// parts: every part but the last has `more: true` and the same `generation`; the
/// daemon stages them and replaces its state only when the last part arrives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncFullParams {
    pub generation: u64,
    pub state: DesiredState,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
}

/// Parameters of `sync_delta`: deletes are applied before upserts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncDeltaParams {
    /// The generation this delta was computed against; must be the daemon's.
    pub base_generation: u64,
    /// The generation after this delta; must be greater than `base_generation`.
    pub generation: u64,
    #[serde(default)]
    pub upserts: Vec<Object>,
    #[serde(default)]
    pub deletes: Vec<ObjectKey>,
}

/// An object the daemon refused (the previous version of it, if any, stays).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub key: ObjectKey,
    pub message: String,
}

/// Result of `sync_full` and `sync_delta`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncReply {
    /// The daemon's generation now.
    pub generation: u64,
    /// Objects added or changed.
    pub upserted: usize,
    /// Objects removed.
    pub deleted: usize,
    /// Objects refused, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<Rejection>,
    /// Microseconds the daemon took to apply and realise the change.
    pub realize_us: u64,
    /// For a `sync_full` part with `more`: objects staged so far (nothing applied yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<usize>,
}

/// The last change the daemon realised.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LastChange {
    pub generation: u64,
    /// `full` or `delta`.
    pub sync: String,
    pub upserted: usize,
    pub deleted: usize,
    pub rejected: usize,
    /// How long applying and realising it took, in microseconds.
    pub realize_us: u64,
    /// When it was realised (Unix time, milliseconds).
    pub at_unix_ms: u64,
}

/// Result of `sync_status`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncStatus {
    /// Generation realised (0: nothing synced yet).
    pub generation: u64,
    /// Objects held, by kind (every kind listed).
    pub counts: BTreeMap<Kind, usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<LastChange>,
    /// Whether the state was restored from the state directory at start.
    #[serde(default)]
    pub restored: bool,
}

/// Which keys a sync changed, for the steps that realise desired state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangeSet {
    /// Added or modified.
    pub upserted: BTreeSet<ObjectKey>,
    pub deleted: BTreeSet<ObjectKey>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.upserted.is_empty() && self.deleted.is_empty()
    }

    /// Whether anything of `kind` changed.
    pub fn touches(&self, kind: Kind) -> bool {
        self.upserted
            .iter()
            .chain(&self.deleted)
            .any(|k| k.kind == kind)
    }

    /// The changed keys of one kind: (upserted, deleted).
    pub fn of_kind(&self, kind: Kind) -> (Vec<&ObjectKey>, Vec<&ObjectKey>) {
        fn pick(s: &BTreeSet<ObjectKey>, kind: Kind) -> Vec<&ObjectKey> {
            s.iter().filter(|k| k.kind == kind).collect()
        }
        (pick(&self.upserted, kind), pick(&self.deleted, kind))
    }
}

/// What turns `old` into `new`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Delta {
    pub upserts: Vec<Object>,
    pub deletes: Vec<ObjectKey>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty()
    }
}

/// The objects of `new` that are not in `old` or differ, and the keys of `old` that
/// `new` lacks; both in key order. One merge pass over the two ordered maps.
pub fn diff(old: &DesiredState, new: &DesiredState) -> Delta {
    let mut d = Delta::default();
    let mut a = old.iter().peekable();
    let mut b = new.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((ka, _)), None) => {
                d.deletes.push((*ka).clone());
                a.next();
            }
            (None, Some((_, ob))) => {
                d.upserts.push((*ob).clone());
                b.next();
            }
            (Some((ka, oa)), Some((kb, ob))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    d.deletes.push((*ka).clone());
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    d.upserts.push((*ob).clone());
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if oa != ob {
                        d.upserts.push((*ob).clone());
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
    d
}

impl From<&Delta> for ChangeSet {
    fn from(d: &Delta) -> ChangeSet {
        ChangeSet {
            upserted: d.upserts.iter().map(Object::key).collect(),
            deleted: d.deletes.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Namespace, Pod};

    fn pod(name: &str, ip: &str) -> Object {
        Object::Pod(Pod {
            namespace: "default".into(),
            name: name.into(),
            uid: String::new(),
            labels: Default::default(),
            ips: vec![ip.into()],
            mac: None,
            node_name: None,
            local: false,
            host_network: false,
            phase: None,
            host_ifname: None,
            ports: vec![],
        })
    }

    fn ns(name: &str) -> Object {
        Object::Namespace(Namespace {
            name: name.into(),
            labels: Default::default(),
        })
    }

    #[test]
    fn diff_finds_adds_changes_and_deletes() {
        let old: DesiredState = [pod("a", "10.0.0.1"), pod("b", "10.0.0.2"), ns("x")]
            .into_iter()
            .collect();
        let new: DesiredState = [pod("b", "10.0.0.9"), pod("c", "10.0.0.3"), ns("x")]
            .into_iter()
            .collect();
        let d = diff(&old, &new);
        let up: Vec<String> = d.upserts.iter().map(|o| o.key().to_string()).collect();
        let del: Vec<String> = d.deletes.iter().map(ToString::to_string).collect();
        assert_eq!(up, ["Pod/default/b", "Pod/default/c"]);
        assert_eq!(del, ["Pod/default/a"]);
        assert!(diff(&new, &new).is_empty());
        // Applying the delta to old gives new.
        let mut applied = old.clone();
        for k in &d.deletes {
            applied.remove(k);
        }
        for o in d.upserts.clone() {
            applied.upsert(o);
        }
        assert_eq!(applied, new);
        let cs = ChangeSet::from(&d);
        assert!(cs.touches(Kind::Pod));
        assert!(!cs.touches(Kind::Namespace));
        assert_eq!(cs.of_kind(Kind::Pod).0.len(), 2);
    }

    #[test]
    fn params_round_trip() {
        let p = SyncDeltaParams {
            base_generation: 3,
            generation: 4,
            upserts: vec![pod("a", "10.0.0.1")],
            deletes: vec!["Namespace/x".parse().expect("key")],
        };
        let v = serde_json::to_value(&p).expect("enc");
        assert_eq!(v["deletes"][0], "Namespace/x");
        assert_eq!(v["upserts"][0]["kind"], "Pod");
        let back: SyncDeltaParams = serde_json::from_value(v).expect("dec");
        assert_eq!(back, p);
        let s = SyncStatus {
            generation: 2,
            counts: [(Kind::Pod, 1)].into(),
            ..Default::default()
        };
        let v = serde_json::to_value(&s).expect("enc");
        assert_eq!(v["counts"]["Pod"], 1);
    }
}
