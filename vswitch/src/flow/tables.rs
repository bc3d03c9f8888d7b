//! The flow tables: the read side every worker translates packets against, and the
//! control side that changes them in atomic bundles.
//!
//! Concurrency: the pipeline lives in a left-right pair. The control thread (the
//! only writer) appends operations and publishes them at once; workers read the
//! other copy without locks and never wait. A bundle of any size becomes visible in
//! one publish, so it applies all or nothing, and one flow update costs O(that
//! flow) twice, never a copy of the tables. Every publish stamps the tables it
//! changed with a new version; a worker's cache entry remembers the tables it
//! consulted and the version it was built at, and is rebuilt when one of them
//! changed later (see `cache.rs`).

use super::classifier::Classifier;
use super::rule::Rule;
use super::spec::{Action, FlowFilter, FlowSpec, GroupSpec, Match, N_TABLES, port_no};
use left_right::{Absorb, ReadHandle, ReadHandleFactory, WriteHandle};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Index of the "groups" pseudo-table in change stamps.
pub const GROUPS_TABLE: usize = N_TABLES;
/// Number of change stamps: one per table plus groups.
pub const N_STAMPS: usize = N_TABLES + 1;

/// The pipeline as workers read it.
pub struct Pipeline {
    pub tables: Vec<Classifier<Arc<Rule>>>,
    pub groups: HashMap<u32, Arc<GroupSpec>>,
    /// Version of the last publish.
    pub version: u64,
    /// Per table (and groups), the version of its last change.
    pub changed: [u64; N_STAMPS],
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline {
            tables: (0..N_TABLES).map(|_| Classifier::new()).collect(),
            groups: HashMap::new(),
            version: 0,
            changed: [0; N_STAMPS],
        }
    }
}

impl Pipeline {
    pub fn n_rules(&self) -> usize {
        self.tables.iter().map(Classifier::len).sum()
    }
}

/// One logged change, applied to both copies.
#[derive(Clone)]
pub enum PipelineOp {
    Insert(Arc<Rule>),
    Remove {
        table: u8,
        m: Box<Match>,
        priority: u16,
    },
    SetGroup(Arc<GroupSpec>),
    RemoveGroup(u32),
    /// Closes a bundle: the new version and the tables it touched (bit i = table i,
    /// bit N_TABLES = groups).
    Stamp {
        version: u64,
        touched: u128,
    },
}

impl Absorb<PipelineOp> for Pipeline {
    fn absorb_first(&mut self, op: &mut PipelineOp, _other: &Self) {
        match op {
            PipelineOp::Insert(r) => {
                let s = &r.spec;
                if let Some(t) = self.tables.get_mut(usize::from(s.table)) {
                    t.insert(s.m, s.priority, r.clone());
                }
            }
            PipelineOp::Remove { table, m, priority } => {
                if let Some(t) = self.tables.get_mut(usize::from(*table)) {
                    t.remove(m, *priority);
                }
            }
            PipelineOp::SetGroup(g) => {
                self.groups.insert(g.id, g.clone());
            }
            PipelineOp::RemoveGroup(id) => {
                self.groups.remove(id);
            }
            PipelineOp::Stamp { version, touched } => {
                self.version = *version;
                for (i, c) in self.changed.iter_mut().enumerate() {
                    if *touched & (1u128 << i) != 0 {
                        *c = *version;
                    }
                }
            }
        }
    }

    fn sync_with(&mut self, first: &Self) {
        // Only called on the first publish; rebuild from the first copy.
        *self = Pipeline::default();
        for t in &first.tables {
            for (_, _, r) in t.iter() {
                let s = &r.spec;
                self.tables[usize::from(s.table)].insert(s.m, s.priority, r.clone());
            }
        }
        self.groups = first.groups.clone();
        self.version = first.version;
        self.changed = first.changed;
    }
}

/// A change asked for by the control plane.
#[derive(Debug, Clone)]
pub enum FlowMod {
    /// Add (or replace: same table, match and priority) a flow.
    Add(FlowSpec),
    /// Delete the flows the filter selects (none selected is not an error).
    Delete(FlowFilter),
    /// Replace the actions of the flows the filter selects.
    Modify {
        filter: FlowFilter,
        actions: Vec<Action>,
    },
    /// Add or replace a group.
    SetGroup(GroupSpec),
    /// Delete a group (`None`: all groups).
    DeleteGroup(Option<u32>),
}

/// Why a bundle was refused; nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("change {index}: {message}")]
pub struct BundleError {
    /// Position of the offending change in the bundle.
    pub index: usize,
    pub message: String,
}

/// What a bundle did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BundleOutcome {
    pub added: usize,
    pub replaced: usize,
    pub deleted: usize,
    pub modified: usize,
    pub groups_set: usize,
    pub groups_deleted: usize,
    /// The pipeline version that holds the change.
    pub version: u64,
}

type RuleKey = (u8, Match, u16);

/// The control side: the only writer of the pipeline.
pub struct FlowTables {
    w: WriteHandle<Pipeline, PipelineOp>,
    next_id: u64,
    version: u64,
    /// The version workers should be at; stored after each publish so a worker
    /// checks one atomic per loop iteration to notice a change.
    published: Arc<AtomicU64>,
}

/// What a worker needs to read the pipeline.
#[derive(Clone)]
pub struct PipelineReader {
    pub factory: ReadHandleFactory<Pipeline>,
    pub published: Arc<AtomicU64>,
}

impl PipelineReader {
    pub fn handle(&self) -> ReadHandle<Pipeline> {
        self.factory.handle()
    }
}

impl FlowTables {
    pub fn new() -> (FlowTables, PipelineReader) {
        let (mut w, r) = left_right::new::<Pipeline, PipelineOp>();
        w.publish();
        let reader = PipelineReader {
            factory: r.factory(),
            published: Arc::new(AtomicU64::new(0)),
        };
        let t = FlowTables {
            w,
            next_id: 1,
            version: 0,
            published: reader.published.clone(),
        };
        (t, reader)
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Runs `f` on the current (published) pipeline.
    pub fn read<R>(&self, f: impl FnOnce(&Pipeline) -> R) -> Option<R> {
        self.w.enter().map(|g| f(&g))
    }

    /// Applies a bundle atomically: every change is validated against the tables
    /// as the earlier changes of the bundle leave them; on any error nothing is
    /// applied. `now_ns` stamps added flows (for timeouts).
    pub fn apply(&mut self, mods: Vec<FlowMod>, now_ns: u64) -> Result<BundleOutcome, BundleError> {
        let staged = {
            let Some(pipe) = self.w.enter() else {
                return Err(BundleError {
                    index: 0,
                    message: "pipeline unavailable".into(),
                });
            };
            let mut st = Staging::new(&pipe);
            for (index, m) in mods.into_iter().enumerate() {
                st.stage(m)
                    .map_err(|message| BundleError { index, message })?;
            }
            st.check_groups()?;
            st.finish()
        };
        let mut out = staged.outcome;
        if staged.ops.is_empty() {
            out.version = self.version;
            return Ok(out);
        }
        self.version += 1;
        for op in staged.ops {
            let op = match op {
                StagedOp::Insert(spec) => {
                    let id = self.next_id;
                    self.next_id += 1;
                    PipelineOp::Insert(Arc::new(Rule::new(*spec, id, now_ns)))
                }
                StagedOp::Raw(op) => op,
            };
            self.w.append(op);
        }
        self.w.append(PipelineOp::Stamp {
            version: self.version,
            touched: staged.touched,
        });
        self.w.publish();
        self.published.store(self.version, Ordering::Release);
        out.version = self.version;
        Ok(out)
    }

    /// The rules a filter selects (all when `filter` is the default), by table
    /// then descending priority.
    pub fn dump(&self, filter: &FlowFilter) -> Vec<Arc<Rule>> {
        let mut out: Vec<Arc<Rule>> = self
            .read(|p| {
                p.tables
                    .iter()
                    .flat_map(|t| t.iter())
                    .filter(|(_, _, r)| selects(filter, &r.spec))
                    .map(|(_, _, r)| r.clone())
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| {
            (a.spec.table, std::cmp::Reverse(a.spec.priority), a.id).cmp(&(
                b.spec.table,
                std::cmp::Reverse(b.spec.priority),
                b.id,
            ))
        });
        out
    }

    pub fn groups(&self) -> Vec<Arc<GroupSpec>> {
        let mut g: Vec<_> = self
            .read(|p| p.groups.values().cloned().collect())
            .unwrap_or_default();
        g.sort_by_key(|g: &Arc<GroupSpec>| g.id);
        g
    }

    /// Removes flows whose idle or hard timeout ran out. Returns how many.
    pub fn expire(&mut self, now_ns: u64) -> usize {
        let expired: Vec<FlowFilter> = self
            .read(|p| {
                p.tables
                    .iter()
                    .flat_map(|t| t.iter())
                    .filter(|(_, _, r)| r.expired(now_ns))
                    .map(|(_, _, r)| FlowFilter {
                        table: Some(r.spec.table),
                        m: r.spec.m,
                        strict_priority: Some(r.spec.priority),
                        ..FlowFilter::default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let n = expired.len();
        if n > 0 {
            let mods = expired.into_iter().map(FlowMod::Delete).collect();
            if let Err(e) = self.apply(mods, now_ns) {
                tracing::warn!(error = %e, "flow expiry failed");
                return 0;
            }
        }
        n
    }
}

/// Whether `filter` selects a flow.
pub fn selects(filter: &FlowFilter, s: &FlowSpec) -> bool {
    if filter.table.is_some_and(|t| t != s.table) {
        return false;
    }
    if let Some((v, m)) = filter.cookie
        && s.cookie & m != v & m
    {
        return false;
    }
    if let Some(p) = filter.out_port
        && !s.actions.iter().any(|a| outputs_to(a, p))
    {
        return false;
    }
    match filter.strict_priority {
        Some(p) => s.priority == p && s.m == filter.m,
        None => s.m.is_subset_of(&filter.m),
    }
}

fn outputs_to(a: &Action, port: u32) -> bool {
    match a {
        Action::Output(p) => *p == port,
        _ => port == port_no::NONE,
    }
}

enum StagedOp {
    Insert(Box<FlowSpec>),
    Raw(PipelineOp),
}

struct Staged {
    ops: Vec<StagedOp>,
    touched: u128,
    outcome: BundleOutcome,
}

/// A bundle being validated: the published tables plus the bundle's own changes.
struct Staging<'a> {
    pipe: &'a Pipeline,
    /// Rules the bundle added or replaced (latest spec per key).
    added: HashMap<RuleKey, FlowSpec>,
    /// Published rules the bundle removed.
    removed: HashSet<RuleKey>,
    groups: HashMap<u32, Option<GroupSpec>>,
    ops: Vec<StagedOp>,
    touched: u128,
    outcome: BundleOutcome,
}

impl<'a> Staging<'a> {
    fn new(pipe: &'a Pipeline) -> Self {
        Staging {
            pipe,
            added: HashMap::new(),
            removed: HashSet::new(),
            groups: HashMap::new(),
            ops: Vec::new(),
            touched: 0,
            outcome: BundleOutcome::default(),
        }
    }

    fn exists(&self, k: &RuleKey) -> bool {
        self.added.contains_key(k)
            || (!self.removed.contains(k)
                && self
                    .pipe
                    .tables
                    .get(usize::from(k.0))
                    .is_some_and(|t| t.get(&k.1, k.2).is_some()))
    }

    /// Every flow (published or staged) the filter selects.
    fn selected(&self, f: &FlowFilter) -> Vec<FlowSpec> {
        // A strict filter with a table names at most one rule: look it up
        // instead of walking every table (what keeps removing one service's
        // flows independent of how many flows there are).
        if let (Some(table), Some(prio)) = (f.table, f.strict_priority) {
            let k = (table, f.m, prio);
            let spec = match self.added.get(&k) {
                Some(s) => Some(s.clone()),
                None if self.removed.contains(&k) => None,
                None => self
                    .pipe
                    .tables
                    .get(usize::from(table))
                    .and_then(|t| t.get(&f.m, prio))
                    .map(|r| r.spec.clone()),
            };
            return spec.into_iter().filter(|s| selects(f, s)).collect();
        }
        let mut out: Vec<FlowSpec> = Vec::new();
        for t in &self.pipe.tables {
            for (m, prio, r) in t.iter() {
                let k = (r.spec.table, *m, prio);
                if !self.removed.contains(&k) && !self.added.contains_key(&k) && selects(f, &r.spec)
                {
                    out.push(r.spec.clone());
                }
            }
        }
        out.extend(self.added.values().filter(|s| selects(f, s)).cloned());
        out
    }

    fn stage(&mut self, m: FlowMod) -> Result<(), String> {
        match m {
            FlowMod::Add(spec) => {
                validate_flow(&spec)?;
                let k = (spec.table, spec.m, spec.priority);
                if self.exists(&k) {
                    self.outcome.replaced += 1;
                } else {
                    self.outcome.added += 1;
                }
                self.touched |= 1u128 << spec.table;
                self.added.insert(k, spec.clone());
                self.ops.push(StagedOp::Insert(Box::new(spec)));
            }
            FlowMod::Delete(filter) => {
                for s in self.selected(&filter) {
                    self.remove(&s);
                    self.outcome.deleted += 1;
                }
            }
            FlowMod::Modify { filter, actions } => {
                for s in self.selected(&filter) {
                    let spec = FlowSpec {
                        actions: actions.clone(),
                        ..s
                    };
                    validate_flow(&spec)?;
                    self.touched |= 1u128 << spec.table;
                    self.added
                        .insert((spec.table, spec.m, spec.priority), spec.clone());
                    self.ops.push(StagedOp::Insert(Box::new(spec)));
                    self.outcome.modified += 1;
                }
            }
            FlowMod::SetGroup(g) => {
                validate_group(&g)?;
                self.touched |= 1u128 << GROUPS_TABLE;
                self.groups.insert(g.id, Some(g.clone()));
                self.ops
                    .push(StagedOp::Raw(PipelineOp::SetGroup(Arc::new(g))));
                self.outcome.groups_set += 1;
            }
            FlowMod::DeleteGroup(id) => {
                let ids: Vec<u32> = match id {
                    Some(id) => vec![id],
                    None => self
                        .pipe
                        .groups
                        .keys()
                        .copied()
                        .chain(self.groups.keys().copied())
                        .collect::<HashSet<_>>()
                        .into_iter()
                        .collect(),
                };
                for id in ids {
                    if self.group_exists(id) {
                        self.touched |= 1u128 << GROUPS_TABLE;
                        self.groups.insert(id, None);
                        self.ops.push(StagedOp::Raw(PipelineOp::RemoveGroup(id)));
                        self.outcome.groups_deleted += 1;
                    }
                }
            }
        }
        Ok(())
    }

    fn remove(&mut self, s: &FlowSpec) {
        let k = (s.table, s.m, s.priority);
        self.touched |= 1u128 << s.table;
        self.added.remove(&k);
        self.removed.insert(k);
        self.ops.push(StagedOp::Raw(PipelineOp::Remove {
            table: s.table,
            m: Box::new(s.m),
            priority: s.priority,
        }));
    }

    fn group_exists(&self, id: u32) -> bool {
        match self.groups.get(&id) {
            Some(g) => g.is_some(),
            None => self.pipe.groups.contains_key(&id),
        }
    }

    /// Flows the bundle adds may only name groups that exist when it completes.
    fn check_groups(&self) -> Result<(), BundleError> {
        for (index, op) in self.ops.iter().enumerate() {
            if let StagedOp::Insert(spec) = op {
                for a in &spec.actions {
                    if let Action::Group(g) = a
                        && !self.group_exists(*g)
                    {
                        return Err(BundleError {
                            index,
                            message: format!("group {g} does not exist"),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Staged {
        Staged {
            ops: self.ops,
            touched: self.touched,
            outcome: self.outcome,
        }
    }
}

/// Checks what the parser cannot see alone: table numbers and goto order.
pub fn validate_flow(s: &FlowSpec) -> Result<(), String> {
    if usize::from(s.table) >= N_TABLES {
        return Err(format!(
            "table {} out of range (0..{})",
            s.table,
            N_TABLES - 1
        ));
    }
    check_actions(&s.actions, Some(s.table))
}

fn check_actions(actions: &[Action], table: Option<u8>) -> Result<(), String> {
    for a in actions {
        match a {
            Action::GotoTable(t) => {
                if usize::from(*t) >= N_TABLES {
                    return Err(format!("goto_table:{t} out of range"));
                }
                if let Some(own) = table
                    && *t <= own
                {
                    return Err(format!(
                        "goto_table:{t} must go to a later table than the flow's own ({own})"
                    ));
                }
            }
            Action::Resubmit { table: Some(t), .. } if usize::from(*t) >= N_TABLES => {
                return Err(format!("resubmit to table {t} out of range"));
            }
            Action::Ct(ct) if ct.table.is_some_and(|t| usize::from(t) >= N_TABLES) => {
                return Err("ct table out of range".into());
            }
            Action::Decap { table } if usize::from(*table) >= N_TABLES => {
                return Err("decap table out of range".into());
            }
            _ => {}
        }
    }
    Ok(())
}

fn validate_group(g: &GroupSpec) -> Result<(), String> {
    if g.buckets.is_empty() && g.kind == super::spec::GroupKind::Select {
        return Err(format!("select group {} needs at least one bucket", g.id));
    }
    for b in &g.buckets {
        check_actions(&b.actions, None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::field::Field;

    fn flow(prio: u16, idle: u16, hard: u16) -> FlowSpec {
        let mut m = Match::ANY;
        m.set_exact(Field::InPort, u128::from(prio));
        FlowSpec {
            priority: prio,
            idle_timeout: idle,
            hard_timeout: hard,
            m,
            actions: vec![Action::Normal],
            ..FlowSpec::default()
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn idle_and_hard_timeouts_remove_flows() {
        let (mut t, _r) = FlowTables::new();
        t.apply(
            vec![
                FlowMod::Add(flow(1, 2, 0)),
                FlowMod::Add(flow(2, 0, 5)),
                FlowMod::Add(flow(3, 0, 0)),
            ],
            0,
        )
        .expect("add");
        assert_eq!(t.expire(S), 0);
        // Flow 1 is hit at 1.5 s: its idle clock restarts.
        let r1 = t
            .dump(&FlowFilter::default())
            .into_iter()
            .find(|r| r.spec.priority == 1)
            .expect("flow 1");
        r1.stats.push(1, 60, S + S / 2);
        assert_eq!(t.expire(3 * S), 0, "hit at 1.5 s, idle 2 s: alive at 3 s");
        assert_eq!(t.expire(4 * S), 1, "idle since 1.5 s: gone at 4 s");
        assert_eq!(t.expire(5 * S), 1, "hard timeout 5 s");
        let left: Vec<u16> = t
            .dump(&FlowFilter::default())
            .iter()
            .map(|r| r.spec.priority)
            .collect();
        assert_eq!(left, vec![3]);
    }

    #[test]
    fn bundle_sees_its_own_earlier_changes() {
        let (mut t, _r) = FlowTables::new();
        let f = flow(7, 0, 0);
        let out = t
            .apply(
                vec![
                    FlowMod::Add(f.clone()),
                    FlowMod::Delete(FlowFilter {
                        m: f.m,
                        ..FlowFilter::default()
                    }),
                    FlowMod::Add(flow(8, 0, 0)),
                ],
                0,
            )
            .expect("bundle");
        assert_eq!((out.added, out.deleted), (2, 1));
        assert_eq!(t.dump(&FlowFilter::default()).len(), 1);
        // Replacing keeps one flow per (table, match, priority).
        let out = t
            .apply(vec![FlowMod::Add(flow(8, 0, 0))], 0)
            .expect("replace");
        assert_eq!(out.replaced, 1);
        assert_eq!(t.dump(&FlowFilter::default()).len(), 1);
        let v = t.version();
        // A bundle that changes nothing does not bump the version.
        let out = t
            .apply(
                vec![FlowMod::Delete(FlowFilter {
                    table: Some(9),
                    ..FlowFilter::default()
                })],
                0,
            )
            .expect("noop");
        assert_eq!(out.version, v);
    }
}
