//! Desired state (pods, namespaces, NetworkPolicies) to [`Engine`], incrementally.
//!
//! Each change touches only what it affects:
//! - a pod added, removed or relabelled: its membership in every address group and
//!   its selection by the policies of its namespace (O(groups + policies there));
//! - a namespace relabelled: the same for each of its pods;
//! - a policy added, changed or removed: its rules, the groups they use (a new group
//!   is filled from all pods once), and the pods it selects.
//!
//! The engine's parts sit behind `Arc`s and are changed with `Arc::make_mut`, so
//! publishing is a shallow clone and only the parts a change touched are copied.

use super::index::RuleIndex;
use super::{
    Applied, Block, Cidr, Dir, Engine, GroupId, Ip, NamedPort, PolicyCounters, PolicyId,
    PolicyInfo, PortSpec, Rule, RuleId, ip_of,
};
use crate::flow::field::ip_proto;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use vswitch_proto::model::{
    LabelSelector, Labels, NetworkPolicy, Pod, PolicyPeer, PolicyPort, PolicyType, PortRef,
    Protocol,
};

/// Label every namespace carries (Kubernetes sets it since 1.21).
pub const NS_NAME_LABEL: &str = "kubernetes.io/metadata.name";

type PodKey = (String, String);
/// A rule's peers and ports, whichever direction.
type RuleParts<'a> = (&'a [PolicyPeer], &'a [PolicyPort]);

#[derive(Debug, Clone)]
struct PodRec {
    labels: Labels,
    ips: Vec<Ip>,
    /// Whether policies may select it (a local, non-host-network pod).
    selectable: bool,
}

/// A peer selector: who an address group holds.
#[derive(Debug, Clone)]
struct GroupDef {
    /// The policy's namespace when there is no namespace selector.
    scope: Option<String>,
    ns_sel: Option<LabelSelector>,
    pod_sel: Option<LabelSelector>,
    refs: u32,
}

#[derive(Debug, Clone)]
struct PolRec {
    id: PolicyId,
    selector: LabelSelector,
    ingress: bool,
    egress: bool,
    ingress_rules: Vec<RuleId>,
    egress_rules: Vec<RuleId>,
    groups: Vec<GroupId>,
    selected: BTreeSet<PodKey>,
}

/// Of one policy: the (direction, index) of its compiled rules and the names of
/// the local pods it selects.
pub type PolicyView = (Vec<(Dir, u32)>, Vec<String>);

/// The control thread's side of the policy engine.
#[derive(Default)]
pub struct Compiler {
    engine: Engine,
    pods: HashMap<PodKey, PodRec>,
    pods_by_ns: HashMap<String, BTreeSet<String>>,
    ns_labels: HashMap<String, Labels>,
    groups: Vec<Option<GroupDef>>,
    group_index: HashMap<String, GroupId>,
    free_groups: Vec<GroupId>,
    free_rules: Vec<RuleId>,
    free_policies: Vec<PolicyId>,
    policies: HashMap<PodKey, PolRec>,
    policies_by_ns: HashMap<String, BTreeSet<String>>,
    /// The pod selectors of each namespace's policies, by id: what a pod change
    /// walks (no key allocation or hashing per policy).
    selectors_by_ns: HashMap<String, BTreeMap<PolicyId, LabelSelector>>,
    selected_by: HashMap<PodKey, BTreeSet<PolicyId>>,
    /// Policy id -> key (for selected_by lookups).
    policy_keys: Vec<Option<PodKey>>,
}

impl Compiler {
    pub fn new() -> Compiler {
        Compiler::default()
    }

    /// The engine as it stands (publish a clone).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn n_policies(&self) -> usize {
        self.policies.len()
    }

    /// Of policy `namespace/name`: the (direction, index) of its compiled rules and
    /// the names of the local pods it selects (for `vsctl policies`).
    pub fn view(&self, namespace: &str, name: &str) -> Option<PolicyView> {
        let rec = self
            .policies
            .get(&(namespace.to_string(), name.to_string()))?;
        let rules = rec
            .ingress_rules
            .iter()
            .chain(&rec.egress_rules)
            .filter_map(|id| self.engine.rules.get(*id as usize)?.as_ref())
            .map(|r| (r.dir, r.index))
            .collect();
        let pods = rec.selected.iter().map(|(_, n)| n.clone()).collect();
        Some((rules, pods))
    }

    fn ns_labels(&self, ns: &str) -> Labels {
        let mut l = self.ns_labels.get(ns).cloned().unwrap_or_default();
        l.entry(NS_NAME_LABEL.to_string())
            .or_insert_with(|| ns.to_string());
        l
    }

    fn group_has(&self, g: &GroupDef, ns: &str, ns_labels: &Labels, pod: &PodRec) -> bool {
        let ns_ok = match &g.ns_sel {
            None => g.scope.as_deref() == Some(ns),
            Some(s) => s.matches(ns_labels),
        };
        ns_ok && g.pod_sel.as_ref().is_none_or(|s| s.matches(&pod.labels))
    }

    // ---- namespaces -------------------------------------------------------------

    pub fn set_namespace(&mut self, name: &str, labels: &Labels) {
        if self.ns_labels.get(name) == Some(labels) {
            return;
        }
        let before = self.ns_labels(name);
        self.ns_labels.insert(name.to_string(), labels.clone());
        self.refresh_namespace(name, &before);
    }

    pub fn remove_namespace(&mut self, name: &str) {
        let before = self.ns_labels(name);
        if self.ns_labels.remove(name).is_some() {
            self.refresh_namespace(name, &before);
        }
    }

    /// Re-evaluates every pod of `ns` against groups with namespace selectors
    /// (`before`: the namespace's labels before the change).
    fn refresh_namespace(&mut self, ns: &str, before: &Labels) {
        let names: Vec<String> = self
            .pods_by_ns
            .get(ns)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let labels = self.ns_labels(ns);
        for name in names {
            let key = (ns.to_string(), name);
            if let Some(rec) = self.pods.get(&key).cloned() {
                self.regroup(&key, before, &labels, Some(&rec), Some(&rec));
            }
        }
    }

    // ---- pods -------------------------------------------------------------------

    pub fn set_pod(&mut self, p: &Pod) {
        let key = (p.namespace.clone(), p.name.clone());
        let ips: Vec<Ip> = p
            .ips
            .iter()
            .filter_map(|s| s.parse().ok())
            .map(ip_of)
            .collect();
        let rec = PodRec {
            labels: p.labels.clone(),
            ips: if p.host_network { Vec::new() } else { ips },
            selectable: p.local && !p.host_network,
        };
        let named: Vec<NamedPort> = p
            .ports
            .iter()
            .filter(|c| !c.name.is_empty())
            .filter_map(|c| {
                let n = u16::try_from(c.port).ok()?;
                Some((proto_num(c.protocol), c.name.as_str().into(), n))
            })
            .collect();
        let old = self.pods.insert(key.clone(), rec.clone());
        self.pods_by_ns
            .entry(key.0.clone())
            .or_default()
            .insert(key.1.clone());
        // Named ports by IP.
        let nm = Arc::make_mut(&mut self.engine.named);
        if let Some(o) = &old {
            for ip in &o.ips {
                nm.remove(ip);
            }
        }
        if !named.is_empty() {
            let arc: Arc<[NamedPort]> = named.into();
            for ip in &rec.ips {
                nm.insert(*ip, arc.clone());
            }
        }
        let labels = self.ns_labels(&key.0);
        self.regroup(&key, &labels, &labels, old.as_ref(), Some(&rec));
    }

    pub fn remove_pod(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        let Some(old) = self.pods.remove(&key) else {
            return;
        };
        if let Some(s) = self.pods_by_ns.get_mut(namespace) {
            s.remove(name);
        }
        let nm = Arc::make_mut(&mut self.engine.named);
        for ip in &old.ips {
            nm.remove(ip);
        }
        let labels = self.ns_labels(namespace);
        self.regroup(&key, &labels, &labels, Some(&old), None);
    }

    /// Moves a pod from its `old` to its `new` record in every group and selection.
    fn regroup(
        &mut self,
        key: &PodKey,
        old_ns: &Labels,
        new_ns: &Labels,
        old: Option<&PodRec>,
        new: Option<&PodRec>,
    ) {
        let ns = key.0.as_str();
        let same_ips = old.map(|o| &o.ips) == new.map(|n| &n.ips);
        let mut was_in: Vec<GroupId> = Vec::new();
        let mut is_in: Vec<GroupId> = Vec::new();
        for gi in 0..self.groups.len() {
            let Some(g) = &self.groups[gi] else { continue };
            let was = old.is_some_and(|o| self.group_has(g, ns, old_ns, o));
            let is = new.is_some_and(|n| self.group_has(g, ns, new_ns, n));
            if was {
                was_in.push(gi as GroupId);
            }
            if is {
                is_in.push(gi as GroupId);
            }
            if was == is && (same_ips || !is) {
                continue;
            }
            let Some(Some(set)) = Arc::make_mut(&mut self.engine.groups).get_mut(gi) else {
                continue;
            };
            let set = Arc::make_mut(set);
            if was && let Some(o) = old {
                for ip in &o.ips {
                    set.remove(ip);
                }
            }
            if is && let Some(n) = new {
                set.extend(n.ips.iter().copied());
            }
        }
        // The inverted membership the verdict uses.
        if !(same_ips && was_in == is_in) {
            let m = Arc::make_mut(&mut self.engine.member_of);
            for ip in old.map(|o| &o.ips[..]).unwrap_or(&[]) {
                m.remove(ip);
            }
            if !is_in.is_empty()
                && let Some(n) = new
            {
                let list: Arc<[GroupId]> = is_in.into();
                for ip in &n.ips {
                    m.insert(*ip, list.clone());
                }
            }
        }
        // Selection by the policies of the pod's namespace.
        let mut sel: BTreeSet<PolicyId> = BTreeSet::new();
        if let Some(n) = new.filter(|n| n.selectable)
            && let Some(sels) = self.selectors_by_ns.get(ns)
        {
            sel.extend(
                sels.iter()
                    .filter(|(_, s)| s.matches(&n.labels))
                    .map(|(id, _)| *id),
            );
        }
        // Keep the policies' own selected sets in step.
        let before = self.selected_by.get(key).cloned().unwrap_or_default();
        for pid in before.difference(&sel) {
            if let Some(Some(k)) = self.policy_keys.get(*pid as usize)
                && let Some(pr) = self.policies.get_mut(k)
            {
                pr.selected.remove(key);
            }
        }
        for pid in sel.difference(&before) {
            if let Some(Some(k)) = self.policy_keys.get(*pid as usize)
                && let Some(pr) = self.policies.get_mut(k)
            {
                pr.selected.insert(key.clone());
            }
        }
        if sel.is_empty() {
            self.selected_by.remove(key);
        } else {
            self.selected_by.insert(key.clone(), sel);
        }
        let old_ips = old.map(|o| o.ips.clone()).unwrap_or_default();
        self.reapply(key, &old_ips);
    }

    /// Rebuilds the applied rule lists of one pod (removing `old_ips` first).
    fn reapply(&mut self, key: &PodKey, old_ips: &[Ip]) {
        let mut lists = [Applied::default(), Applied::default()];
        let mut isolated = [false, false];
        if let Some(ids) = self.selected_by.get(key) {
            let mut rules: [Vec<RuleId>; 2] = [Vec::new(), Vec::new()];
            let mut pols: [Vec<PolicyId>; 2] = [Vec::new(), Vec::new()];
            for pid in ids {
                let Some(Some(k)) = self.policy_keys.get(*pid as usize) else {
                    continue;
                };
                let Some(pr) = self.policies.get(k) else {
                    continue;
                };
                if pr.ingress {
                    isolated[0] = true;
                    rules[0].extend(&pr.ingress_rules);
                    pols[0].push(pr.id);
                }
                if pr.egress {
                    isolated[1] = true;
                    rules[1].extend(&pr.egress_rules);
                    pols[1].push(pr.id);
                }
            }
            let named = self
                .pods
                .get(key)
                .and_then(|p| p.ips.first())
                .and_then(|ip| self.engine.named.get(ip))
                .cloned();
            for (i, dir) in [Dir::Ingress, Dir::Egress].into_iter().enumerate() {
                if !isolated[i] {
                    continue;
                }
                let index = RuleIndex::build(&self.engine, dir, &rules[i], named.as_deref());
                lists[i] = Applied {
                    rules: std::mem::take(&mut rules[i]).into(),
                    policies: std::mem::take(&mut pols[i]).into(),
                    index,
                };
            }
        }
        let ips = self
            .pods
            .get(key)
            .map(|p| p.ips.clone())
            .unwrap_or_default();
        let [ing, eg] = lists;
        for (i, (map, list)) in [
            (&mut self.engine.ingress, ing),
            (&mut self.engine.egress, eg),
        ]
        .into_iter()
        .enumerate()
        {
            let m = Arc::make_mut(map);
            for ip in old_ips {
                m.remove(ip);
            }
            if isolated[i] {
                let a = Arc::new(list);
                for ip in &ips {
                    m.insert(*ip, a.clone());
                }
            } else {
                for ip in &ips {
                    m.remove(ip);
                }
            }
        }
    }

    // ---- groups -----------------------------------------------------------------

    fn group_for(&mut self, scope: &str, peer: &PolicyPeer) -> GroupId {
        let def = GroupDef {
            scope: peer.namespace_selector.is_none().then(|| scope.to_string()),
            ns_sel: peer.namespace_selector.clone(),
            pod_sel: peer.pod_selector.clone(),
            refs: 0,
        };
        let name =
            serde_json::to_string(&(&def.scope, &def.ns_sel, &def.pod_sel)).unwrap_or_default();
        if let Some(&id) = self.group_index.get(&name)
            && let Some(Some(g)) = self.groups.get_mut(id as usize)
        {
            g.refs += 1;
            return id;
        }
        // A new group: fill it from every pod.
        let mut set = HashSet::new();
        let mut ns_cache: HashMap<&str, Labels> = HashMap::new();
        for ((ns, _), p) in &self.pods {
            let labels = ns_cache
                .entry(ns.as_str())
                .or_insert_with(|| self.ns_labels(ns));
            if self.group_has(&def, ns, labels, p) {
                set.extend(p.ips.iter().copied());
            }
        }
        let id = self
            .free_groups
            .pop()
            .unwrap_or(self.groups.len() as GroupId);
        let slot = id as usize;
        if self.groups.len() <= slot {
            self.groups.resize(slot + 1, None);
            Arc::make_mut(&mut self.engine.groups).resize(slot + 1, None);
        }
        self.groups[slot] = Some(GroupDef { refs: 1, ..def });
        if !set.is_empty() {
            let m = Arc::make_mut(&mut self.engine.member_of);
            for ip in &set {
                let mut l: Vec<GroupId> = m.get(ip).map(|l| l.to_vec()).unwrap_or_default();
                if let Err(at) = l.binary_search(&id) {
                    l.insert(at, id);
                }
                m.insert(*ip, l.into());
            }
        }
        Arc::make_mut(&mut self.engine.groups)[slot] = Some(Arc::new(set));
        self.group_index.insert(name, id);
        id
    }

    fn release_group(&mut self, id: GroupId) {
        let slot = id as usize;
        let Some(Some(g)) = self.groups.get_mut(slot) else {
            return;
        };
        g.refs = g.refs.saturating_sub(1);
        if g.refs > 0 {
            return;
        }
        let name = serde_json::to_string(&(&g.scope, &g.ns_sel, &g.pod_sel)).unwrap_or_default();
        self.group_index.remove(&name);
        self.groups[slot] = None;
        if let Some(e) = Arc::make_mut(&mut self.engine.groups).get_mut(slot)
            && let Some(set) = e.take()
            && !set.is_empty()
        {
            let m = Arc::make_mut(&mut self.engine.member_of);
            for ip in set.iter() {
                let Some(l) = m.get(ip) else { continue };
                let l: Vec<GroupId> = l.iter().copied().filter(|&g| g != id).collect();
                if l.is_empty() {
                    m.remove(ip);
                } else {
                    m.insert(*ip, l.into());
                }
            }
        }
        self.free_groups.push(id);
    }

    // ---- policies ---------------------------------------------------------------

    /// Adds or replaces a policy. Parts that cannot be compiled (a bad CIDR, port or
    /// protocol that validation let through) are skipped and reported; the rest of
    /// the policy is enforced. Dropping a peer or port only narrows what is allowed.
    pub fn set_policy(&mut self, p: &NetworkPolicy) -> Vec<String> {
        let key = (p.namespace.clone(), p.name.clone());
        let counters_keep = self.remove_policy_inner(&key);
        let mut problems = Vec::new();
        let id = self
            .free_policies
            .pop()
            .unwrap_or(self.engine.policies.len() as PolicyId);
        let slot = id as usize;
        if self.engine.policies.len() <= slot {
            Arc::make_mut(&mut self.engine.policies).resize(slot + 1, None);
            self.policy_keys.resize(slot + 1, None);
        }
        let types = p.spec.effective_policy_types();
        let mut rec = PolRec {
            id,
            selector: p.spec.pod_selector.clone(),
            ingress: types.contains(&PolicyType::Ingress),
            egress: types.contains(&PolicyType::Egress),
            ingress_rules: Vec::new(),
            egress_rules: Vec::new(),
            groups: Vec::new(),
            selected: BTreeSet::new(),
        };
        let rule_sets: [(Dir, Vec<RuleParts<'_>>); 2] = [
            (
                Dir::Ingress,
                p.spec
                    .ingress
                    .iter()
                    .map(|r| (&r.from[..], &r.ports[..]))
                    .collect(),
            ),
            (
                Dir::Egress,
                p.spec
                    .egress
                    .iter()
                    .map(|r| (&r.to[..], &r.ports[..]))
                    .collect(),
            ),
        ];
        for (dir, list) in rule_sets {
            for (index, (peers, ports)) in list.into_iter().enumerate() {
                let mut rule = Rule {
                    policy: id,
                    dir,
                    index: index as u32,
                    any_peer: peers.is_empty(),
                    groups: Vec::new(),
                    blocks: Vec::new(),
                    ports: Vec::new(),
                };
                for (pi, peer) in peers.iter().enumerate() {
                    if let Some(b) = &peer.ip_block {
                        match block(&b.cidr, &b.except) {
                            Ok(b) => rule.blocks.push(b),
                            Err(e) => problems.push(format!(
                                "{} rule {index} peer {pi}: {e}; peer ignored",
                                dir.as_str()
                            )),
                        }
                    } else if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
                        let g = self.group_for(&p.namespace, peer);
                        rule.groups.push(g);
                        rec.groups.push(g);
                    } else {
                        problems.push(format!(
                            "{} rule {index} peer {pi}: empty peer; ignored",
                            dir.as_str()
                        ));
                    }
                }
                let n_ports = ports.len();
                for (qi, port) in ports.iter().enumerate() {
                    match port_spec(port) {
                        Ok(s) => rule.ports.push(s),
                        Err(e) => problems.push(format!(
                            "{} rule {index} port {qi}: {e}; port ignored",
                            dir.as_str()
                        )),
                    }
                }
                if n_ports > 0 && rule.ports.is_empty() {
                    // Every port was bad: the rule allows nothing (never everything).
                    continue;
                }
                let rid = self
                    .free_rules
                    .pop()
                    .unwrap_or(self.engine.rules.len() as RuleId);
                if self.engine.rules.len() <= rid as usize {
                    Arc::make_mut(&mut self.engine.rules).resize(rid as usize + 1, None);
                }
                Arc::make_mut(&mut self.engine.rules)[rid as usize] = Some(Arc::new(rule));
                match dir {
                    Dir::Ingress => rec.ingress_rules.push(rid),
                    Dir::Egress => rec.egress_rules.push(rid),
                }
            }
        }
        let n_in = p.spec.ingress.len();
        let n_rules = n_in + p.spec.egress.len();
        let counters = match counters_keep {
            Some(c) if c.allowed.len() == n_rules => c,
            _ => Arc::new(PolicyCounters::new(n_rules)),
        };
        Arc::make_mut(&mut self.engine.policies)[slot] = Some(Arc::new(PolicyInfo {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            n_ingress: n_in as u32,
            n_egress: p.spec.egress.len() as u32,
            types: (rec.ingress, rec.egress),
            counters,
        }));
        // Selection.
        let names: Vec<String> = self
            .pods_by_ns
            .get(&p.namespace)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for n in names {
            let pk = (p.namespace.clone(), n);
            if let Some(pod) = self.pods.get(&pk)
                && pod.selectable
                && rec.selector.matches(&pod.labels)
            {
                rec.selected.insert(pk.clone());
                self.selected_by.entry(pk).or_default().insert(id);
            }
        }
        let selected: Vec<PodKey> = rec.selected.iter().cloned().collect();
        self.policy_keys[slot] = Some(key.clone());
        self.policies_by_ns
            .entry(key.0.clone())
            .or_default()
            .insert(key.1.clone());
        self.selectors_by_ns
            .entry(key.0.clone())
            .or_default()
            .insert(id, rec.selector.clone());
        self.policies.insert(key, rec);
        for pk in selected {
            self.reapply(&pk, &[]);
        }
        problems
    }

    pub fn remove_policy(&mut self, namespace: &str, name: &str) {
        self.remove_policy_inner(&(namespace.to_string(), name.to_string()));
    }

    /// Removes a policy; returns its counters (kept if it comes straight back).
    fn remove_policy_inner(&mut self, key: &PodKey) -> Option<Arc<PolicyCounters>> {
        let rec = self.policies.remove(key)?;
        if let Some(s) = self.policies_by_ns.get_mut(&key.0) {
            s.remove(&key.1);
        }
        if let Some(s) = self.selectors_by_ns.get_mut(&key.0) {
            s.remove(&rec.id);
        }
        for rid in rec.ingress_rules.iter().chain(&rec.egress_rules) {
            if let Some(r) = Arc::make_mut(&mut self.engine.rules).get_mut(*rid as usize) {
                *r = None;
            }
            self.free_rules.push(*rid);
        }
        for g in &rec.groups {
            self.release_group(*g);
        }
        let slot = rec.id as usize;
        let counters = Arc::make_mut(&mut self.engine.policies)
            .get_mut(slot)
            .and_then(Option::take)
            .map(|p| p.counters.clone());
        if let Some(k) = self.policy_keys.get_mut(slot) {
            *k = None;
        }
        self.free_policies.push(rec.id);
        for pk in &rec.selected {
            if let Some(s) = self.selected_by.get_mut(pk) {
                s.remove(&rec.id);
                if s.is_empty() {
                    self.selected_by.remove(pk);
                }
            }
            self.reapply(pk, &[]);
        }
        counters
    }
}

pub fn proto_num(p: Protocol) -> u8 {
    match p {
        Protocol::TCP => ip_proto::TCP,
        Protocol::UDP => ip_proto::UDP,
        Protocol::SCTP => ip_proto::SCTP,
    }
}

fn block(cidr: &str, except: &[String]) -> Result<Block, String> {
    Ok(Block {
        cidr: Cidr::parse(cidr)?,
        except: except
            .iter()
            .map(|e| Cidr::parse(e))
            .collect::<Result<_, _>>()?,
    })
}

fn port_spec(p: &PolicyPort) -> Result<PortSpec, String> {
    let proto = proto_num(p.protocol.unwrap_or_default());
    let port = |n: i32| u16::try_from(n).ok().filter(|&v| v > 0);
    Ok(match (&p.port, p.end_port) {
        (None, None) => PortSpec::Range {
            proto,
            lo: 0,
            hi: u16::MAX,
        },
        (None, Some(_)) => return Err("endPort without port".into()),
        (Some(PortRef::Number(n)), end) => {
            let lo = port(*n).ok_or_else(|| format!("port {n} out of range"))?;
            let hi = match end {
                None => lo,
                Some(e) => port(e)
                    .filter(|&e| e >= lo)
                    .ok_or_else(|| format!("endPort {e} out of range or below port {lo}"))?,
            };
            PortSpec::Range { proto, lo, hi }
        }
        (Some(PortRef::Name(_)), Some(_)) => return Err("endPort with a named port".into()),
        (Some(PortRef::Name(n)), None) if !n.is_empty() => PortSpec::Named {
            proto,
            name: n.as_str().into(),
        },
        (Some(PortRef::Name(_)), None) => return Err("empty port name".into()),
    })
}
