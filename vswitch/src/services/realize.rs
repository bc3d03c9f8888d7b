//! Services + Endpoints (desired state) → flows in tables 15 and 60 and
//! Maglev frontends for the `service_lb` action.
//!
//! Incremental: every service gets a number `n` for as long as it exists; its
//! flows carry the cookie `SERVICES | n << 16` and its frontends the ids
//! `n << 8 | port << 1 | external`. A change to one service (or its endpoints, or
//! a pod behind it) deletes that cookie and adds the new flows in one bundle, and
//! republishes the frontend map with only its entries replaced. The hairpin
//! flow (table 60) and the shared conntrack flows (tables 10, 11, 50:
//! [`crate::desired::realize::ct_base`], also NetworkPolicy's) exist only while
//! at least one service does (or a policy, for the latter), so a switch without
//! either stays the plain skeleton.

use super::lb::{Affinity, Backend, Frontend, LbTable};
use super::maglev;
use crate::conntrack::table::BackendKey;
use crate::desired::realize::{Change, RealizeCtx, Realizer};
use crate::flow::field::Field;
use crate::flow::key::ct_state;
use crate::flow::layout::{self, cookie, reg, svc_flags};
use crate::flow::spec::{Action, FlowFilter, FlowSpec, Match, port_no};
use crate::flow::tables::FlowMod;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use vswitch_proto::DesiredState;
use vswitch_proto::model::{
    Endpoint, Endpoints, Kind, Object, ObjectKey, Pod, PortRef, Protocol, Service, ServicePort,
    ServiceType, SessionAffinity, TrafficPolicy,
};

/// `[services]` in the vswitchd TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServicesConfig {
    /// Largest Maglev table (a prime).
    pub maglev_table_size: u32,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        ServicesConfig {
            maglev_table_size: maglev::DEFAULT_SIZE,
        }
    }
}

impl ServicesConfig {
    pub fn validate(&self) -> Result<(), String> {
        let m = self.maglev_table_size;
        if !(251..=65521).contains(&m) || !maglev::is_prime(m) {
            return Err(format!(
                "services.maglev_table_size = {m} must be a prime in 251..=65521"
            ));
        }
        Ok(())
    }
}

/// Most ports of one service that get flows (the frontend id has 7 bits for it).
const MAX_PORTS: usize = 128;
const PRIO_SERVICE: u16 = 200;
/// Default session affinity timeout (Kubernetes' default).
const AFFINITY_DEFAULT_S: u64 = 10_800;

#[derive(Default)]
struct SvcState {
    n: u32,
    frontends: Vec<u32>,
    /// (frontend id, endpoint ip, port) of every backend, to notice removals.
    backends: BTreeSet<(u32, u128, u16)>,
    /// Endpoint IPs (to find services behind a changed pod).
    ips: BTreeSet<u128>,
    /// (table, priority, match) of its flows, to delete them one by one
    /// (a lookup each) rather than by cookie (a walk over every flow).
    flows: Vec<(u8, u16, Match)>,
}

#[derive(Default)]
pub struct ServiceRealizer {
    cfg: ServicesConfig,
    services: BTreeMap<(String, String), SvcState>,
    frontends: LbTable,
    /// Pods by address (kept from the changes this realizer sees: every sync
    /// since the store was created), so `build` finds an endpoint's pod
    /// without a scan of all pods.
    pods_by_ip: HashMap<u128, BTreeSet<ObjectKey>>,
    /// Services by endpoint address, so a pod change finds the services
    /// behind it without a scan of all services.
    services_by_ip: HashMap<u128, BTreeSet<(String, String)>>,
    next_n: u32,
    free_n: Vec<u32>,
    base: bool,
    /// Problems found in the last realisation (reported in logs and `services`).
    pub warnings: Vec<String>,
}

fn svc_cookie(n: u32) -> u64 {
    cookie::SERVICES | (u64::from(n) << 16)
}

const SVC_COOKIE_MASK: u64 = 0xffff_ffff_ffff_0000;

fn parse_ip(s: &str) -> Option<u128> {
    match s.parse::<IpAddr>().ok()? {
        IpAddr::V4(v) => Some(u128::from(u32::from(v))),
        IpAddr::V6(v) => Some(u128::from(v)),
    }
}

fn is_v6(s: &str) -> bool {
    s.contains(':')
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut it = s.split(':');
    for b in &mut m {
        *b = u8::from_str_radix(it.next()?, 16).ok()?;
    }
    it.next().is_none().then_some(m)
}

/// The MAC the CNI plugin gives a pod with IPv4 address `ip`: `0a:58:a.b.c.d`.
fn derived_mac(ip: u128, v6: bool) -> Option<[u8; 6]> {
    if v6 {
        return None;
    }
    let [a, b, c, d] = (ip as u32).to_be_bytes();
    Some([0x0a, 0x58, a, b, c, d])
}

fn proto_num(p: Protocol) -> u8 {
    match p {
        Protocol::TCP => 6,
        Protocol::UDP => 17,
        Protocol::SCTP => 132,
    }
}

/// The services' own shared flow: hairpin packets (a pod that reached its own
/// service) go back out of the port they came in on. Present exactly while a
/// service exists; the conntrack flows around it are the shared
/// [`crate::desired::realize::ct_base`] ones.
pub fn hairpin_flow() -> FlowSpec {
    let mut m = Match::ANY;
    m.set(
        reg::SVC_FLAGS,
        u128::from(svc_flags::HAIRPIN),
        u128::from(svc_flags::HAIRPIN),
    );
    FlowSpec {
        table: layout::OUTPUT,
        priority: 100,
        cookie: cookie::SERVICES,
        m,
        actions: vec![Action::Output(port_no::IN_PORT)],
        ..FlowSpec::default()
    }
}

/// One frontend to build: which addresses, which endpoints.
struct FrontendPlan {
    id: u32,
    external: bool,
    /// (address, port) matched in table 15.
    matches: Vec<(u128, bool, u16)>,
}

/// The port of `ep` that serves service port `sp`.
fn target_port(sp: &ServicePort, ep: &Endpoint, pod: Option<&Pod>) -> Option<u16> {
    let same = |n: &Option<String>| n.as_deref().unwrap_or("") == sp.name.as_deref().unwrap_or("");
    // EndpointSlice ports carry the service port's name and the resolved number.
    if let Some(p) = ep
        .ports
        .iter()
        .find(|p| same(&p.name) && p.protocol == sp.protocol)
    {
        return u16::try_from(p.port).ok().filter(|&p| p > 0);
    }
    match &sp.target_port {
        Some(PortRef::Number(n)) => u16::try_from(*n).ok().filter(|&p| p > 0),
        Some(PortRef::Name(name)) => {
            // A named target port the endpoint did not resolve: the pod's own.
            let by_ep = ep.ports.iter().find(|p| p.name.as_deref() == Some(name));
            if let Some(p) = by_ep {
                return u16::try_from(p.port).ok().filter(|&p| p > 0);
            }
            pod.into_iter()
                .flat_map(|p| p.ports.iter())
                .find(|cp| &cp.name == name && cp.protocol == sp.protocol)
                .and_then(|cp| u16::try_from(cp.port).ok())
        }
        None => u16::try_from(sp.port).ok(),
    }
}

impl ServiceRealizer {
    pub fn new(cfg: ServicesConfig) -> ServiceRealizer {
        ServiceRealizer {
            cfg,
            next_n: 1,
            ..ServiceRealizer::default()
        }
    }

    /// The pod with address `ip`, if any.
    fn pod_for<'s>(&self, state: &'s DesiredState, ip: u128) -> Option<&'s Pod> {
        self.pods_by_ip
            .get(&ip)?
            .iter()
            .find_map(|k| match state.get(k) {
                Some(Object::Pod(p)) => Some(p),
                _ => None,
            })
    }

    /// Follows the pods a sync changed in the address index.
    fn index_pods(&mut self, state: &DesiredState, change: &Change) {
        let keys = &change.keys;
        for key in keys
            .upserted
            .iter()
            .chain(&keys.deleted)
            .filter(|k| k.kind == Kind::Pod)
        {
            if let Some(Object::Pod(p)) = change.previous.get(key) {
                for ip in p.ips.iter().filter_map(|a| parse_ip(a)) {
                    if let Some(set) = self.pods_by_ip.get_mut(&ip) {
                        set.remove(key);
                        if set.is_empty() {
                            self.pods_by_ip.remove(&ip);
                        }
                    }
                }
            }
            if let Some(Object::Pod(p)) = state.get(key) {
                for ip in p.ips.iter().filter_map(|a| parse_ip(a)) {
                    self.pods_by_ip.entry(ip).or_default().insert(key.clone());
                }
            }
        }
    }

    fn index_service(&mut self, key: &(String, String), ips: &BTreeSet<u128>, add: bool) {
        for ip in ips {
            if add {
                self.services_by_ip
                    .entry(*ip)
                    .or_default()
                    .insert(key.clone());
            } else if let Some(set) = self.services_by_ip.get_mut(ip) {
                set.remove(key);
                if set.is_empty() {
                    self.services_by_ip.remove(ip);
                }
            }
        }
    }

    fn alloc_n(&mut self) -> u32 {
        self.free_n.pop().unwrap_or_else(|| {
            let n = self.next_n;
            self.next_n += 1;
            n
        })
    }

    /// Flows and frontends of one service; warnings for what was skipped.
    fn build(
        &mut self,
        svc: &Service,
        eps: Option<&Endpoints>,
        state: &DesiredState,
        n: u32,
    ) -> (Vec<FlowSpec>, Vec<Frontend>, SvcState) {
        let mut flows = Vec::new();
        let mut fes = Vec::new();
        let mut st = SvcState {
            n,
            ..SvcState::default()
        };
        if svc.headless || svc.service_type == ServiceType::ExternalName {
            return (flows, fes, st);
        }
        let node = state.local_node();
        let node_name = node.map(|n| n.name.as_str());
        let gw_mac = node
            .and_then(|n| n.gateway_mac.as_deref())
            .and_then(parse_mac);
        let node_ips: Vec<&str> = node
            .map(|n| n.node_ips.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let key = format!("{}/{}", svc.namespace, svc.name);
        let all_eps: &[Endpoint] = eps.map(|e| e.endpoints.as_slice()).unwrap_or(&[]);
        // Ready endpoints; when none, serving-and-terminating ones (kube-proxy).
        let ready: Vec<&Endpoint> = all_eps.iter().filter(|e| e.ready).collect();
        let usable: Vec<&Endpoint> = if ready.is_empty() {
            all_eps
                .iter()
                .filter(|e| e.serving && e.terminating)
                .collect()
        } else {
            ready
        };
        for ep in all_eps {
            if ep.addresses.is_empty() {
                self.warnings
                    .push(format!("{key}: an endpoint has no address; skipped"));
            }
        }
        for (pi, sp) in svc.ports.iter().enumerate() {
            if pi >= MAX_PORTS {
                self.warnings.push(format!(
                    "{key}: more than {MAX_PORTS} ports; the rest skipped"
                ));
                break;
            }
            let Ok(port) = u16::try_from(sp.port) else {
                self.warnings
                    .push(format!("{key}: port {} out of range; skipped", sp.port));
                continue;
            };
            let proto = proto_num(sp.protocol);
            for v6 in [false, true] {
                // Endpoints of this family with their target port.
                let mut backends = Vec::new();
                for ep in &usable {
                    for a in &ep.addresses {
                        if is_v6(a) != v6 {
                            continue;
                        }
                        let Some(ip) = parse_ip(a) else {
                            self.warnings.push(format!(
                                "{key}: endpoint address '{a}' is not an IP; skipped"
                            ));
                            continue;
                        };
                        let pod = self.pod_for(state, ip);
                        let Some(tp) = target_port(sp, ep, pod) else {
                            self.warnings.push(format!(
                                "{key}: no target port for {a} (port {}); skipped",
                                sp.port
                            ));
                            continue;
                        };
                        let local = match (&ep.node_name, node_name) {
                            (Some(e), Some(n)) => e == n,
                            _ => pod.is_some_and(|p| p.local),
                        };
                        // The CNI plugin gives every pod `0a:58:` + its IPv4
                        // address; a `vswitch.dev/mac` annotation overrides it.
                        let mac = if local {
                            pod.and_then(|p| p.mac.as_deref())
                                .and_then(parse_mac)
                                .or_else(|| derived_mac(ip, v6))
                        } else {
                            None
                        };
                        backends.push((format!("{a}:{tp}"), ip, tp, local, mac));
                    }
                }
                backends.sort_by(|a, b| a.0.cmp(&b.0));
                backends.dedup_by(|a, b| a.0 == b.0);
                let fam = |s: &&String| is_v6(s) == v6;
                let mut internal = FrontendPlan {
                    id: (n << 8) | ((pi as u32) << 1),
                    external: false,
                    matches: Vec::new(),
                };
                let mut external = FrontendPlan {
                    id: (n << 8) | ((pi as u32) << 1) | 1,
                    external: true,
                    matches: Vec::new(),
                };
                for a in svc.cluster_ips.iter().filter(fam) {
                    match parse_ip(a) {
                        Some(ip) => internal.matches.push((ip, v6, port)),
                        None => self
                            .warnings
                            .push(format!("{key}: cluster IP '{a}' invalid; skipped")),
                    }
                }
                for a in svc
                    .external_ips
                    .iter()
                    .chain(&svc.load_balancer_ips)
                    .filter(fam)
                {
                    match parse_ip(a) {
                        Some(ip) => external.matches.push((ip, v6, port)),
                        None => self
                            .warnings
                            .push(format!("{key}: external address '{a}' invalid; skipped")),
                    }
                }
                if matches!(
                    svc.service_type,
                    ServiceType::NodePort | ServiceType::LoadBalancer
                ) && let Some(np) = sp.node_port
                {
                    match u16::try_from(np) {
                        Ok(np) if np > 0 => {
                            for a in node_ips.iter().filter(|a| is_v6(a) == v6) {
                                if let Some(ip) = parse_ip(a) {
                                    external.matches.push((ip, v6, np));
                                }
                            }
                        }
                        _ => self
                            .warnings
                            .push(format!("{key}: node port {np} out of range; skipped")),
                    }
                }
                let snat_node = node_ips
                    .iter()
                    .filter(|a| is_v6(a) == v6)
                    .find_map(|a| parse_ip(a));
                for plan in [internal, external] {
                    if plan.matches.is_empty() {
                        continue;
                    }
                    let id = plan.id | if v6 { 1 << 7 } else { 0 };
                    let local_only = if plan.external {
                        svc.external_traffic_policy == TrafficPolicy::Local
                    } else {
                        svc.internal_traffic_policy == TrafficPolicy::Local
                    };
                    let chosen: Vec<_> = backends.iter().filter(|b| !local_only || b.3).collect();
                    let names: Vec<String> = chosen.iter().map(|b| b.0.clone()).collect();
                    let m = maglev::size_for(names.len(), self.cfg.maglev_table_size);
                    let table = maglev::build(&names, m);
                    for b in &chosen {
                        st.backends.insert((id, b.1, b.2));
                        st.ips.insert(b.1);
                    }
                    let fe = Frontend {
                        id,
                        name: format!(
                            "{key}:{}/{:?}{}",
                            sp.port,
                            sp.protocol,
                            if plan.external { " (external)" } else { "" }
                        ),
                        vips: plan
                            .matches
                            .iter()
                            .map(|(ip, v6, p)| fmt_addr(*ip, *v6, *p))
                            .collect(),
                        backends: chosen
                            .iter()
                            .map(|b| Backend {
                                ip: b.1,
                                port: b.2,
                                mac: b.4,
                                local: b.3,
                                hits: Default::default(),
                            })
                            .collect(),
                        maglev: table,
                        snat_remote: if plan.external && !local_only {
                            snat_node
                        } else {
                            None
                        },
                        gateway_mac: gw_mac,
                        affinity: (svc.session_affinity == SessionAffinity::ClientIP).then(|| {
                            Affinity {
                                timeout_ns: svc
                                    .session_affinity_timeout
                                    .map_or(AFFINITY_DEFAULT_S, |t| t.max(1) as u64)
                                    * 1_000_000_000,
                                map: Mutex::new(HashMap::new()),
                            }
                        }),
                    };
                    let actions = if fe.backends.is_empty() {
                        vec![Action::Punt(crate::flow::spec::Punt::Reject)]
                    } else {
                        vec![
                            Action::SetField {
                                field: reg::SERVICE,
                                value: u128::from(id),
                                mask: u128::from(u32::MAX),
                            },
                            Action::ServiceLb {
                                id,
                                zone: layout::CT_ZONE_PODS,
                                table: layout::EGRESS_POLICY,
                            },
                        ]
                    };
                    for (ip, v6, p) in &plan.matches {
                        let mut mm = Match::ANY;
                        mm.set_exact(Field::EthType, if *v6 { 0x86dd } else { 0x0800 });
                        mm.set_exact(Field::IpProto, u128::from(proto));
                        mm.set_exact(if *v6 { Field::Ipv6Dst } else { Field::Ipv4Dst }, *ip);
                        mm.set_exact(Field::TpDst, u128::from(*p));
                        mm.set(
                            Field::CtState,
                            u128::from(ct_state::NEW | ct_state::TRK),
                            u128::from(ct_state::NEW | ct_state::TRK),
                        );
                        st.flows.push((layout::SERVICE_LB, PRIO_SERVICE, mm));
                        flows.push(FlowSpec {
                            table: layout::SERVICE_LB,
                            priority: PRIO_SERVICE,
                            cookie: svc_cookie(n),
                            m: mm,
                            actions: actions.clone(),
                            ..FlowSpec::default()
                        });
                    }
                    st.frontends.push(id);
                    fes.push(fe);
                }
            }
        }
        (flows, fes, st)
    }

    /// Rebuilds the given services; returns the flow mods and what conntrack
    /// must forget.
    fn rebuild(
        &mut self,
        state: &DesiredState,
        keys: &BTreeSet<(String, String)>,
    ) -> (Vec<FlowMod>, Vec<(u32, u128, u16)>) {
        let mut mods = Vec::new();
        let mut gone_backends = Vec::new();
        for (ns, name) in keys {
            let svc = match state.get(&ObjectKey::new(Kind::Service, ns, name)) {
                Some(Object::Service(s)) => Some(s),
                _ => None,
            };
            let eps = match state.get(&ObjectKey::new(Kind::Endpoints, ns, name)) {
                Some(Object::Endpoints(e)) => Some(e),
                _ => None,
            };
            let skey = (ns.clone(), name.clone());
            let old = self.services.remove(&skey);
            if let Some(o) = &old {
                for (table, prio, m) in &o.flows {
                    mods.push(FlowMod::Delete(FlowFilter {
                        table: Some(*table),
                        cookie: Some((svc_cookie(o.n), SVC_COOKIE_MASK)),
                        m: *m,
                        strict_priority: Some(*prio),
                        out_port: None,
                    }));
                }
                for id in &o.frontends {
                    self.frontends.remove(id);
                }
                self.index_service(&skey, &o.ips, false);
            }
            let Some(svc) = svc else {
                if let Some(o) = old {
                    gone_backends.extend(o.backends.iter().copied());
                    self.free_n.push(o.n);
                }
                continue;
            };
            let n = old.as_ref().map_or_else(|| self.alloc_n(), |o| o.n);
            let (flows, fes, st) = self.build(svc, eps, state, n);
            if let Some(o) = &old {
                gone_backends.extend(o.backends.difference(&st.backends).copied());
            }
            mods.extend(flows.into_iter().map(FlowMod::Add));
            for fe in fes {
                self.frontends.insert(Arc::new(fe));
            }
            self.index_service(&skey, &st.ips, true);
            self.services.insert(skey, st);
        }
        (mods, gone_backends)
    }

    /// Every frontend (for `vsctl services`).
    pub fn frontends(&self) -> impl Iterator<Item = &Arc<Frontend>> {
        self.frontends.values()
    }
}

fn fmt_addr(ip: u128, v6: bool, port: u16) -> String {
    if v6 {
        format!("[{}]:{port}", std::net::Ipv6Addr::from(ip))
    } else {
        format!("{}:{port}", std::net::Ipv4Addr::from(ip as u32))
    }
}

impl Realizer for ServiceRealizer {
    fn name(&self) -> &'static str {
        "services"
    }

    fn realize(&mut self, state: &DesiredState, change: &Change, ctx: &mut RealizeCtx<'_>) {
        if let Some(dp) = ctx.dp.as_deref() {
            self.cfg = dp.config().services;
        }
        self.index_pods(state, change);
        let k = &change.keys;
        let mut todo: BTreeSet<(String, String)> = BTreeSet::new();
        for key in k.upserted.iter().chain(&k.deleted) {
            if matches!(key.kind, Kind::Service | Kind::Endpoints) {
                todo.insert((key.namespace.clone(), key.name.clone()));
            }
        }
        if k.touches(Kind::LocalNode) {
            todo.extend(self.services.keys().cloned());
            for o in state.of_kind(Kind::Service) {
                if let Object::Service(s) = o {
                    todo.insert((s.namespace.clone(), s.name.clone()));
                }
            }
        } else if k.touches(Kind::Pod) {
            // Pods behind a service bring their MAC and locality: rebuild those.
            let mut ips = BTreeSet::new();
            for key in k
                .upserted
                .iter()
                .chain(&k.deleted)
                .filter(|k| k.kind == Kind::Pod)
            {
                let cur = state.get(key);
                let prev = change.previous.get(key);
                for o in cur.into_iter().chain(prev) {
                    if let Object::Pod(p) = o {
                        ips.extend(p.ips.iter().filter_map(|a| parse_ip(a)));
                    }
                }
            }
            for ip in &ips {
                if let Some(keys) = self.services_by_ip.get(ip) {
                    todo.extend(keys.iter().cloned());
                }
            }
        }
        if todo.is_empty() {
            return;
        }
        self.warnings.clear();
        let (mut mods, gone) = self.rebuild(state, &todo);
        let want_base = !self.services.is_empty();
        if want_base && !self.base {
            mods.push(FlowMod::Add(hairpin_flow()));
        } else if !want_base && self.base {
            mods.push(FlowMod::Delete(FlowFilter {
                cookie: Some((cookie::SERVICES, cookie::MASK)),
                ..FlowFilter::default()
            }));
        }
        for w in &self.warnings {
            tracing::warn!("{w}");
        }
        let Some(dp) = ctx.dp.as_deref_mut() else {
            self.base = want_base;
            return;
        };
        // Frontends first (a new flow must find its frontend), flows next;
        // removed frontends are only looked up by flows deleted in this bundle.
        dp.publish_services(self.frontends.clone());
        match dp.flow_mods(mods) {
            Ok(_) => self.base = want_base,
            Err(e) => tracing::error!(error = %e, "service flows refused"),
        }
        crate::desired::realize::ct_base::sync(dp);
        if !gone.is_empty() {
            // Endpoints that vanished: their connections go at once (a stale
            // UDP entry would keep sending DNS to a dead pod).
            // Through the table's backend index: in proportion to those
            // connections (and the shard count), not to the table.
            let gone: BTreeSet<(u32, u128, u16)> = gone.into_iter().collect();
            let keys: Vec<BackendKey> = gone
                .into_iter()
                .map(|(service, addr, port)| BackendKey {
                    service,
                    addr: crate::conntrack::tuple::addr_words(addr),
                    port,
                })
                .collect();
            let n = dp.conntrack().table.remove_backends(&keys);
            if n > 0 {
                // Their connections may have entries in the XDP fast path, written
                // after the frontends' epoch bump above.
                dp.fastpath_invalidate();
                tracing::info!(
                    connections = n,
                    "conntrack entries of removed endpoints flushed"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::DesiredStore;
    use crate::{Datapath, DatapathConfig};
    use vswitch_proto::{ChangeSet, SyncFullParams};

    fn obj(v: serde_json::Value) -> Object {
        serde_json::from_value(v).expect("object")
    }

    fn svc(name: &str, ip: &str, port: i64) -> Object {
        obj(
            serde_json::json!({"kind": "Service", "namespace": "shop", "name": name,
            "cluster_ips": [ip], "ports": [{"port": port, "protocol": "TCP", "target_port": 8080}]}),
        )
    }

    fn eps(name: &str, addrs: &[&[&str]]) -> Object {
        let e: Vec<serde_json::Value> = addrs
            .iter()
            .map(|a| serde_json::json!({"addresses": a, "ready": true, "serving": true, "terminating": false}))
            .collect();
        obj(
            serde_json::json!({"kind": "Endpoints", "namespace": "shop", "name": name, "endpoints": e}),
        )
    }

    /// `[services] maglev_table_size` in vswitchd's config file reaches the
    /// realizer (through `DaemonConfig::datapath`, as vswitchd builds its
    /// datapath): a service of 10 endpoints gets min(configured, 1021) slots.
    /// Values that are not a prime in 251..=65521 are refused, naming the key.
    #[test]
    fn maglev_table_size_from_the_config_file_is_used() {
        let slots = |text: &str| -> Vec<usize> {
            let cfg = crate::config::DaemonConfig::parse(text).expect("config");
            let mut dc = DatapathConfig::in_process(1);
            dc.services = cfg.datapath(vec![None]).services;
            let mut dp = Datapath::new(dc).expect("datapath");
            let mut store = DesiredStore::new(None);
            let addrs: Vec<String> = (0..10).map(|i| format!("10.250.0.{}", 10 + i)).collect();
            let one: Vec<[&str; 1]> = addrs.iter().map(|a| [a.as_str()]).collect();
            let refs: Vec<&[&str]> = one.iter().map(|a| &a[..]).collect();
            let objs = vec![
                obj(serde_json::json!({"kind": "LocalNode", "name": "node-a",
                    "node_ips": ["192.0.2.1"], "gateway_mac": "0a:58:0a:fa:00:01"})),
                svc("web", "10.96.0.10", 80),
                eps("web", &refs),
                svc("one", "10.96.0.11", 80),
                eps("one", &refs[..1]),
            ];
            store
                .sync_full(
                    SyncFullParams {
                        generation: 1,
                        state: objs.into_iter().collect(),
                        more: false,
                    },
                    Some(&mut dp),
                )
                .expect("sync");
            let lb = dp.services();
            let mut v: Vec<(String, usize)> = lb
                .values()
                .map(|f| (f.name.clone(), f.maglev.len()))
                .collect();
            v.sort();
            v.into_iter().map(|(_, n)| n).collect()
        };
        // [one, web]: one endpoint wants 100 slots (251), ten want 1000 (1021).
        assert_eq!(slots(""), vec![251, 1021]);
        assert_eq!(
            slots("[services]\nmaglev_table_size = 509\n"),
            vec![251, 509]
        );
        assert_eq!(
            slots("[services]\nmaglev_table_size = 251\n"),
            vec![251, 251]
        );
        assert_eq!(
            slots("[services]\nmaglev_table_size = 16381\n"),
            vec![251, 1021]
        );
        for bad in ["16380", "0", "250", "65537", "1000003"] {
            let e = crate::config::DaemonConfig::parse(&format!(
                "[services]\nmaglev_table_size = {bad}\n"
            ))
            .expect_err(bad);
            assert!(e.contains("maglev_table_size"), "{bad}: {e}");
        }
        assert!(
            crate::config::DaemonConfig::parse("[services]\nmaglev_table_size = \"x\"\n").is_err()
        );
    }

    /// Bad input: services with an invalid IP or a port out of range and
    /// endpoints with an invalid address are rejected (named in the reply); an
    /// endpoint without an address is skipped with a warning; everything else
    /// is applied.
    #[test]
    fn bad_services_and_endpoints_are_reported_and_skipped_the_rest_applied() {
        let mut dp = Datapath::new(DatapathConfig::in_process(1)).expect("datapath");
        let mut store = DesiredStore::new(None);
        let objs = vec![
            obj(serde_json::json!({"kind": "LocalNode", "name": "node-a",
                "node_ips": ["192.0.2.1"], "gateway_mac": "0a:58:0a:fa:00:01"})),
            svc("good", "10.96.0.10", 80),
            eps("good", &[&["10.250.0.21"], &[], &["10.250.0.22"]]),
            svc("bad-ip", "10.96.0.300", 80),
            svc("bad-port", "10.96.0.11", 70000),
            svc("bad-ep", "10.96.0.12", 80),
            eps("bad-ep", &[&["10.250.0.23"], &["not-an-ip"]]),
        ];
        let reply = store
            .sync_full(
                SyncFullParams {
                    generation: 1,
                    state: objs.into_iter().collect(),
                    more: false,
                },
                Some(&mut dp),
            )
            .expect("sync");
        let mut rejected: Vec<String> = reply
            .rejected
            .iter()
            .map(|r| format!("{:?}/{}", r.key.kind, r.key.name))
            .collect();
        rejected.sort();
        assert_eq!(
            rejected,
            ["Endpoints/bad-ep", "Service/bad-ip", "Service/bad-port"],
            "{:?}",
            reply.rejected
        );
        // The good service balances over its two addressed endpoints; bad-ep
        // (its endpoints refused) answers with a reject.
        let lb = dp.services();
        let names: BTreeMap<String, Vec<u128>> = lb
            .values()
            .map(|f| (f.name.clone(), f.backends.iter().map(|b| b.ip).collect()))
            .collect();
        let ip = |s: &str| parse_ip(s).unwrap_or_default();
        assert_eq!(
            names.get("shop/good:80/TCP"),
            Some(&vec![ip("10.250.0.21"), ip("10.250.0.22")]),
            "{names:?}"
        );
        assert_eq!(names.get("shop/bad-ep:80/TCP"), Some(&vec![]), "{names:?}");
        assert_eq!(names.len(), 2, "{names:?}");
        let mut by_vip = BTreeMap::new();
        for r in dp.dump_flows(&FlowFilter {
            table: Some(layout::SERVICE_LB),
            ..FlowFilter::default()
        }) {
            if let Some((v, _)) = r.spec.m.get(Field::Ipv4Dst) {
                let lb = r
                    .spec
                    .actions
                    .iter()
                    .any(|a| matches!(a, Action::ServiceLb { .. }));
                by_vip.insert(v, lb);
            }
        }
        assert_eq!(
            by_vip,
            BTreeMap::from([(ip("10.96.0.10"), true), (ip("10.96.0.12"), false)])
        );
        // The endpoint without an address was reported.
        let mut r = ServiceRealizer::new(ServicesConfig::default());
        let change = Change {
            keys: ChangeSet {
                upserted: store.state().iter().map(|(k, _)| k.clone()).collect(),
                deleted: BTreeSet::new(),
            },
            previous: BTreeMap::new(),
            generation: 1,
        };
        let mut ctx = RealizeCtx {
            ports: &[],
            dp: None,
        };
        r.realize(store.state(), &change, &mut ctx);
        assert!(
            r.warnings
                .iter()
                .any(|w| w == "shop/good: an endpoint has no address; skipped"),
            "{:?}",
            r.warnings
        );
    }

    /// An endpoint that leaves its service takes its conntrack entries with it
    /// (through the table's backend index); the other endpoints' entries, and
    /// entries of the same address behind another service, stay.
    #[test]
    fn removed_endpoint_flushes_its_connections_only() {
        let mut dp = Datapath::new(DatapathConfig::in_process(1)).expect("datapath");
        let mut store = DesiredStore::new(None);
        let node = obj(serde_json::json!({"kind": "LocalNode", "name": "node-a",
            "node_ips": ["192.0.2.1"], "gateway_mac": "0a:58:0a:fa:00:01"}));
        let all: &[&[&str]] = &[&["10.250.0.21"], &["10.250.0.22"], &["10.250.0.23"]];
        let mut sync = |generation, objs: Vec<Object>, dp: &mut Datapath| {
            store
                .sync_full(
                    SyncFullParams {
                        generation,
                        state: objs.into_iter().collect(),
                        more: false,
                    },
                    Some(dp),
                )
                .expect("sync")
        };
        let both = |first: &[&[&str]]| {
            vec![
                node.clone(),
                svc("web", "10.96.0.10", 80),
                eps("web", first),
                svc("api", "10.96.0.11", 80),
                eps("api", all),
            ]
        };
        sync(1, both(all), &mut dp);
        let ids: BTreeMap<String, u32> = dp
            .services()
            .values()
            .map(|f| (f.name.clone(), f.id))
            .collect();
        let (web, api) = (ids["shop/web:80/TCP"], ids["shop/api:80/TCP"]);
        let table = &dp.conntrack().table;
        let ip = |s: &str| parse_ip(s).unwrap_or_default();
        // 50 connections per endpoint per service.
        for (si, service) in [web, api].into_iter().enumerate() {
            for (b, addr) in ["10.250.0.21", "10.250.0.22", "10.250.0.23"]
                .into_iter()
                .enumerate()
            {
                for c in 0..50u16 {
                    let orig = crate::conntrack::Tuple {
                        src: crate::conntrack::tuple::addr_words(ip("10.250.1.9")),
                        dst: crate::conntrack::tuple::addr_words(ip("10.96.0.10") + si as u128),
                        sport: 10_000 + 100 * b as u16 + c,
                        dport: 80,
                        zone: 1,
                        proto: 6,
                        v6: false,
                    };
                    let mut reply = orig.reversed();
                    reply.src = crate::conntrack::tuple::addr_words(ip(addr));
                    reply.sport = 8080;
                    let mut conn = crate::conntrack::Conn::new(orig, reply, 1, 3600);
                    conn.service = service;
                    conn.backend = b as u32;
                    assert!(table.insert(conn));
                }
            }
        }
        assert_eq!(table.len(), 300);
        // 10.250.0.22 leaves web.
        sync(2, both(&[&["10.250.0.21"], &["10.250.0.23"]]), &mut dp);
        let table = &dp.conntrack().table;
        let count = |service: u32, addr: &str| {
            table
                .collect(|c| c.service == service && c.reply.src_ip() == ip(addr))
                .len()
        };
        assert_eq!(
            count(web, "10.250.0.22"),
            0,
            "the removed endpoint's entries"
        );
        assert_eq!(count(web, "10.250.0.21"), 50);
        assert_eq!(count(web, "10.250.0.23"), 50);
        for a in ["10.250.0.21", "10.250.0.22", "10.250.0.23"] {
            assert_eq!(count(api, a), 50, "api's {a} untouched");
        }
        assert_eq!(table.len(), 250);
    }

    #[test]
    fn local_endpoint_mac_follows_its_ipv4_address() {
        let ip = parse_ip("10.250.0.21").unwrap_or_default();
        assert_eq!(derived_mac(ip, false), Some([0x0a, 0x58, 10, 250, 0, 21]));
        assert_eq!(derived_mac(1, true), None);
        assert_eq!(
            parse_mac("0a:58:0a:fa:00:15"),
            Some([0x0a, 0x58, 10, 250, 0, 21])
        );
    }
}
