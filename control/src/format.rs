//! Human-readable output of `vsctl`: pure functions from protocol values to text,
//! shaped after the Open vSwitch tools users already read (`ovs-vsctl show`,
//! `ovs-ofctl dump-ports`, `ovs-appctl dpif-netdev/pmd-stats-show`).

use std::fmt::Write as _;

use vswitch_proto::{
    DropCounters, DropReason, HelloReply, PortEntry, PortInfo, PortState, PortStats, StatsReply,
    SyncStatus,
};

/// The line `add-port` prints: the port number and the mode actually in use.
pub fn added_port(p: &PortInfo) -> String {
    format!(
        "added {} as port {} (mode {}, worker {})",
        p.name, p.port_no, p.mode, p.worker
    )
}

/// `vsctl show`: the daemon, then every port with its settings, by port number.
pub fn show(hello: &HelloReply, ports: &[PortInfo]) -> String {
    let entries: Vec<PortEntry> = ports
        .iter()
        .map(|p| PortEntry {
            port: p.clone(),
            pod_link: None,
        })
        .collect();
    show_entries(hello, &entries)
}

/// `vsctl show` from `list_ports` entries: a pod port also shows its pod and, when
/// desired state knows the pod, the pod's addresses.
pub fn show_entries(hello: &HelloReply, ports: &[PortEntry]) -> String {
    let mut out = format!(
        "vswitchd {} (pid {}, protocol {})\n",
        hello.version, hello.pid, hello.protocol
    );
    let mut ports: Vec<&PortEntry> = ports.iter().collect();
    ports.sort_by_key(|p| p.port.port_no);
    for e in ports {
        let p = &e.port;
        let _ = writeln!(out, "    Port {}", p.name);
        let _ = writeln!(out, "        port_no: {}", p.port_no);
        let _ = writeln!(out, "        kind: {}", p.kind);
        let _ = writeln!(
            out,
            "        mode: {} (requested {})",
            p.mode, p.requested_mode
        );
        let _ = writeln!(out, "        zero_copy: {}", p.zero_copy);
        let _ = writeln!(out, "        worker: {}", p.worker);
        let _ = writeln!(out, "        ifindex: {}", p.ifindex);
        let _ = writeln!(out, "        mac: {}", p.mac);
        let _ = writeln!(out, "        mtu: {}", p.mtu);
        let state = match p.state {
            PortState::Up => "up",
            PortState::Down => "down",
        };
        let _ = writeln!(out, "        state: {state}");
        if let Some(pod) = &p.pod {
            match &e.pod_link {
                Some(l) => {
                    let _ = writeln!(out, "        pod: {}/{}", pod.namespace, pod.name);
                    let ips = if l.ips.is_empty() {
                        "(none yet)".to_string()
                    } else {
                        l.ips.join(", ")
                    };
                    let _ = writeln!(out, "        pod_ips: {ips}");
                }
                None => {
                    let _ = writeln!(
                        out,
                        "        pod: {}/{} (not in desired state)",
                        pod.namespace, pod.name
                    );
                }
            }
        }
    }
    out
}

/// `vsctl sync-status`: the realised generation, objects by kind, the last change.
pub fn sync_status(s: &SyncStatus) -> String {
    let mut out = format!("desired state: generation {}", s.generation);
    if s.restored {
        out.push_str(" (restored from the state dir)");
    }
    out.push('\n');
    let counts: Vec<String> = s.counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
    let _ = writeln!(out, "objects: {}", counts.join(", "));
    if let Some(c) = &s.last_change {
        let _ = writeln!(
            out,
            "last change: generation {} ({} sync): {} upserted, {} deleted, {} rejected, realised in {} us",
            c.generation, c.sync, c.upserted, c.deleted, c.rejected, c.realize_us
        );
    }
    out
}

/// `vsctl stats`: per port traffic and drops, then (for the whole switch, not when
/// one port was asked for) the learning counters and one line per poll worker.
pub fn stats(s: &StatsReply, one_port: bool) -> String {
    let mut out = format!(
        "port stats: {} port{}\n",
        s.ports.len(),
        plural(s.ports.len())
    );
    let mut ports: Vec<_> = s.ports.iter().collect();
    ports.sort_by_key(|p| p.port_no);
    let no_width = ports
        .iter()
        .map(|p| p.port_no.to_string().len())
        .max()
        .unwrap_or(1);
    let head = |p: &PortStats| format!("  port {:>no_width$} {}: ", p.port_no, p.name);
    // Counters start in one column for all ports, so they can be compared by eye.
    let head_width = ports
        .iter()
        .map(|p| head(p).chars().count())
        .max()
        .unwrap_or(0);
    for p in ports {
        let head = format!("{:<head_width$}", head(p));
        let pad = " ".repeat(head_width);
        let _ = writeln!(out, "{head}rx pkts={}, bytes={}", p.rx_packets, p.rx_bytes);
        let _ = writeln!(out, "{pad}tx pkts={}, bytes={}", p.tx_packets, p.tx_bytes);
        if p.fastpath_rx_packets | p.fastpath_tx_packets != 0 {
            let _ = writeln!(
                out,
                "{pad}xdp fastpath rx pkts={}, tx pkts={}",
                p.fastpath_rx_packets, p.fastpath_tx_packets
            );
        }
        let _ = writeln!(out, "{pad}{}", drops(&p.drops));
    }
    if one_port {
        return out;
    }
    let w = &s.switch;
    let _ = writeln!(
        out,
        "switch: mac entries={}/{}, learned={}, moved={}, aged={}, table_full={}",
        w.mac_entries, w.mac_capacity, w.mac_learned, w.mac_moved, w.mac_aged, w.mac_table_full
    );
    let _ = writeln!(
        out,
        "        flooded={}, ports_vanished={}",
        w.flooded, w.ports_vanished
    );
    let _ = writeln!(out, "        {}", drops(&w.drops));
    let c = &w.conntrack;
    if c.max_entries > 0 {
        let _ = writeln!(
            out,
            "conntrack: entries={}/{}, inserts={}, evictions={}, invalid={}, full={}, expired={}",
            c.entries, c.max_entries, c.inserts, c.evictions, c.invalid, c.full, c.expired
        );
    }
    for wk in &s.workers {
        let core = match wk.core {
            Some(c) => format!("core {c}"),
            None => "not pinned".to_string(),
        };
        let batch = if wk.rx_batches > 0 {
            format!(
                " ({:.1}/batch)",
                wk.rx_packets as f64 / wk.rx_batches as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "worker {} ({core}): ports={}, rx pkts={}, batches={}{batch}, busy iterations={}, idle iterations={}, sleeps={}",
            wk.id,
            wk.ports,
            wk.rx_packets,
            wk.rx_batches,
            wk.busy_iterations,
            wk.idle_iterations,
            wk.sleeps
        );
    }
    out
}

/// One poll worker's `pmd-stats` figures, derived from its counters.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PmdStats {
    pub worker: usize,
    pub core: Option<usize>,
    pub ports: u64,
    pub packets: u64,
    pub batches: u64,
    pub avg_packets_per_batch: f64,
    pub busy_iterations: u64,
    pub idle_iterations: u64,
    pub busy_ns: u64,
    pub idle_ns: u64,
    /// Share of loop time spent in iterations that moved frames (0..=100).
    pub busy_pct: f64,
    /// Mean time per received packet in busy iterations.
    pub ns_per_packet: f64,
    pub sleeps: u64,
    pub emc_hits: u64,
    pub megaflow_hits: u64,
    pub misses: u64,
    pub revalidated: u64,
    /// Shares of cache lookups (0..=100).
    pub emc_hit_pct: f64,
    pub megaflow_hit_pct: f64,
    pub miss_pct: f64,
    /// Batch-size histogram (see `WorkerStats::batch_sizes`).
    pub batch_sizes: Vec<u64>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// The `pmd-stats` figures of every worker.
pub fn pmd_stats_of(s: &StatsReply) -> Vec<PmdStats> {
    s.workers
        .iter()
        .map(|w| {
            let c = &w.cache;
            let lookups = c.emc_hits + c.megaflow_hits + c.misses;
            PmdStats {
                worker: w.id,
                core: w.core,
                ports: w.ports,
                packets: w.rx_packets,
                batches: w.rx_batches,
                avg_packets_per_batch: ratio(w.rx_packets, w.rx_batches),
                busy_iterations: w.busy_iterations,
                idle_iterations: w.idle_iterations,
                busy_ns: w.busy_ns,
                idle_ns: w.idle_ns,
                busy_pct: 100.0 * ratio(w.busy_ns, w.busy_ns + w.idle_ns),
                ns_per_packet: ratio(w.busy_ns, w.rx_packets),
                sleeps: w.sleeps,
                emc_hits: c.emc_hits,
                megaflow_hits: c.megaflow_hits,
                misses: c.misses,
                revalidated: c.revalidated,
                emc_hit_pct: 100.0 * ratio(c.emc_hits, lookups),
                megaflow_hit_pct: 100.0 * ratio(c.megaflow_hits, lookups),
                miss_pct: 100.0 * ratio(c.misses, lookups),
                batch_sizes: w.batch_sizes.clone(),
            }
        })
        .collect()
}

/// `vsctl pmd-stats`: like `ovs-appctl dpif-netdev/pmd-stats-show`.
pub fn pmd_stats(s: &StatsReply) -> String {
    let mut out = String::new();
    for p in pmd_stats_of(s) {
        let core = match p.core {
            Some(c) => format!("core_id {c}"),
            None => "not pinned".to_string(),
        };
        let _ = writeln!(out, "pmd thread worker {} ({core}):", p.worker);
        let _ = writeln!(out, "  ports: {}", p.ports);
        let _ = writeln!(out, "  packets received: {}", p.packets);
        let _ = writeln!(
            out,
            "  batches: {} (avg. packets per batch: {:.2})",
            p.batches, p.avg_packets_per_batch
        );
        let _ = writeln!(out, "  emc hits: {} ({:.1} %)", p.emc_hits, p.emc_hit_pct);
        let _ = writeln!(
            out,
            "  megaflow hits: {} ({:.1} %)",
            p.megaflow_hits, p.megaflow_hit_pct
        );
        let _ = writeln!(
            out,
            "  miss with success upcall: {} ({:.1} %)",
            p.misses, p.miss_pct
        );
        let _ = writeln!(out, "  revalidated: {}", p.revalidated);
        let _ = writeln!(
            out,
            "  iterations: busy {}, idle {}; sleeps: {}",
            p.busy_iterations, p.idle_iterations, p.sleeps
        );
        let _ = writeln!(
            out,
            "  busy time: {:.3} s ({:.1} %), idle time: {:.3} s",
            p.busy_ns as f64 / 1e9,
            p.busy_pct,
            p.idle_ns as f64 / 1e9
        );
        if p.packets > 0 {
            let _ = writeln!(out, "  avg. busy ns per packet: {:.1}", p.ns_per_packet);
        }
        if !p.batch_sizes.is_empty() {
            let n = p.batch_sizes.len();
            let parts: Vec<String> = p
                .batch_sizes
                .iter()
                .enumerate()
                .map(|(b, c)| {
                    if b + 1 == n {
                        format!("{}+:{c}", 1u64 << b)
                    } else {
                        format!("{}-{}:{c}", 1u64 << b, (1u64 << (b + 1)) - 1)
                    }
                })
                .collect();
            let _ = writeln!(out, "  batch sizes: {}", parts.join(" "));
        }
    }
    out
}

/// `drop=N`, then the reasons that are not zero: `drop=3: ring_full=2, no_buffer=1`.
fn drops(d: &DropCounters) -> String {
    let reasons: Vec<String> = DropReason::ALL
        .iter()
        .filter(|r| d.get(**r) > 0)
        .map(|r| format!("{}={}", r.name(), d.get(*r)))
        .collect();
    if reasons.is_empty() {
        format!("drop={}", d.total())
    } else {
        format!("drop={}: {}", d.total(), reasons.join(", "))
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `vsctl conntrack`: one line per connection, like `conntrack -L`; with
/// `flush`, how many went.
pub fn conntrack(r: &vswitch_proto::ConntrackReply, flush: bool) -> String {
    if flush {
        return format!(
            "flushed {} connection{}\n",
            r.flushed,
            plural(r.flushed as usize)
        );
    }
    let mut out = String::new();
    for e in &r.entries {
        let _ = write!(
            out,
            "{} zone={} {} timeout={}s src={} dst={} sport={} dport={} src={} dst={} sport={} dport={}",
            e.proto,
            e.zone,
            e.state,
            e.timeout_s,
            e.orig.src,
            e.orig.dst,
            e.orig.sport,
            e.orig.dport,
            e.reply.src,
            e.reply.dst,
            e.reply.sport,
            e.reply.dport,
        );
        if e.assured {
            out.push_str(" [ASSURED]");
        }
        if e.mark != 0 {
            let _ = write!(out, " mark={}", e.mark);
        }
        if !e.nat.is_empty() {
            let _ = write!(out, " nat={}", e.nat);
        }
        if e.hairpin {
            out.push_str(" hairpin");
        }
        if e.service != 0 {
            let _ = write!(out, " service={}", e.service);
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "{} connection{}{}",
        r.matched,
        plural(r.matched as usize),
        if r.truncated {
            format!(" ({} listed)", r.entries.len())
        } else {
            String::new()
        }
    );
    out
}

/// `vsctl services`: each frontend, its addresses and endpoints with hit counts.
pub fn services(r: &vswitch_proto::ServicesReply) -> String {
    let mut out = String::new();
    for s in &r.services {
        let _ = write!(out, "{} (id {}): {}", s.name, s.id, s.vips.join(", "));
        if let Some(t) = s.affinity_timeout_s {
            let _ = write!(out, ", affinity ClientIP {t}s");
        }
        if let Some(a) = &s.snat {
            let _ = write!(out, ", snat {a} for remote endpoints");
        }
        out.push('\n');
        if s.endpoints.is_empty() {
            out.push_str("  no endpoints (reject)\n");
        }
        for e in &s.endpoints {
            let _ = writeln!(
                out,
                "  {} {} hits={}",
                e.addr,
                if e.local { "local " } else { "remote" },
                e.hits
            );
        }
    }
    let _ = writeln!(
        out,
        "{} frontend{}",
        r.services.len(),
        plural(r.services.len())
    );
    out
}

/// `vsctl policies`: each policy, its rules with allowed counts, its denials and
/// the pods it selects; then the engine's size.
pub fn policies(r: &vswitch_proto::PoliciesReply) -> String {
    let mut out = String::new();
    for p in &r.policies {
        let _ = writeln!(
            out,
            "{}/{} ({}): denied ingress={} egress={}",
            p.namespace,
            p.name,
            p.types.join("+"),
            p.denied_ingress,
            p.denied_egress
        );
        if p.selected.is_empty() {
            out.push_str("  selects no local pod\n");
        } else {
            let _ = writeln!(out, "  selects: {}", p.selected.join(", "));
        }
        for rule in &p.rules {
            let _ = writeln!(
                out,
                "  {} rule {}: allowed={}{}",
                rule.direction,
                rule.index,
                rule.allowed,
                if rule.enforced {
                    ""
                } else {
                    " (not compiled: allows nothing)"
                }
            );
        }
    }
    let s = &r.size;
    let _ = writeln!(
        out,
        "{} polic{}, {} rules, {} address groups ({} members), {} isolated pod IP/direction entries",
        s.policies,
        if s.policies == 1 { "y" } else { "ies" },
        s.rules,
        s.groups,
        s.group_members,
        s.applied
    );
    out
}

/// `dump-flows`: one OVS-style line per flow.
pub fn dump_flows(flows: &[vswitch_proto::FlowEntry]) -> String {
    flows
        .iter()
        .map(|f| format!(" {}\n", f.text.trim_start()))
        .collect()
}

/// What a bundle did, in one line.
pub fn flow_mods(r: &vswitch_proto::FlowModsReply) -> String {
    let mut parts = Vec::new();
    for (n, what) in [
        (r.added, "added"),
        (r.replaced, "replaced"),
        (r.modified, "modified"),
        (r.deleted, "deleted"),
        (r.groups_set, "groups set"),
        (r.groups_deleted, "groups deleted"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    if parts.is_empty() {
        parts.push("no change".into());
    }
    format!("{} (flow tables version {})\n", parts.join(", "), r.version)
}

/// `trace`: each table visited, the flow matched and its notes, then the verdict.
pub fn trace(t: &vswitch_proto::TraceReply) -> String {
    let mut s = format!("Packet: {}\n\n", t.packet);
    for step in &t.tables {
        let pad = "    ".repeat(step.depth as usize);
        s.push_str(&format!("{pad}table {}:\n", step.table));
        match &step.flow {
            Some(f) => s.push_str(&format!("{pad}  matched: {}\n", f.trim_start())),
            None => s.push_str(&format!("{pad}  no match\n")),
        }
        for n in &step.notes {
            s.push_str(&format!("{pad}  -> {n}\n"));
        }
    }
    s.push_str("\nDatapath actions: ");
    if t.datapath_actions.is_empty() {
        s.push_str("drop");
    } else {
        s.push_str(&t.datapath_actions.join(", "));
    }
    s.push_str(&format!("\nVerdict: {}\n", t.verdict));
    if let Some(e) = &t.error {
        s.push_str(&format!("Error: {e}\n"));
    }
    s.push_str(&format!("Megaflow: {}\n", t.megaflow));
    let yes_no = |v: &[bool]| {
        v.iter()
            .enumerate()
            .map(|(i, b)| format!("worker {i}: {}", if *b { "hit" } else { "miss" }))
            .collect::<Vec<_>>()
            .join(", ")
    };
    s.push_str(&format!("Exact-match cache: {}\n", yes_no(&t.emc_hit)));
    s.push_str(&format!("Megaflow cache: {}\n", yes_no(&t.megaflow_hit)));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch_proto::{PortKind, PortMode, SwitchStats, WorkerStats};

    fn port(name: &str, port_no: u32) -> PortInfo {
        PortInfo {
            name: name.into(),
            port_no,
            kind: PortKind::Pod,
            requested_mode: PortMode::Auto,
            mode: PortMode::XdpDrv,
            zero_copy: false,
            worker: 0,
            ifindex: 7,
            mac: "02:00:00:00:00:01".into(),
            mtu: 1500,
            state: PortState::Up,
            pod: None,
        }
    }

    #[test]
    fn added_port_names_the_effective_mode() {
        assert_eq!(
            added_port(&port("veth1", 1)),
            "added veth1 as port 1 (mode xdp-drv, worker 0)"
        );
    }

    #[test]
    fn show_lists_ports_by_number() {
        let hello = HelloReply {
            protocol: 1,
            version: "0.1.0".into(),
            pid: 42,
        };
        let mut up = port("eth0", 1);
        up.kind = PortKind::Uplink;
        up.requested_mode = PortMode::XdpSkb;
        up.mode = PortMode::XdpSkb;
        up.zero_copy = true;
        let mut down = port("veth1", 2);
        down.state = PortState::Down;
        down.ifindex = 0;
        let text = show(&hello, &[down, up]);
        let expected = "\
vswitchd 0.1.0 (pid 42, protocol 1)
    Port eth0
        port_no: 1
        kind: uplink
        mode: xdp-skb (requested xdp-skb)
        zero_copy: true
        worker: 0
        ifindex: 7
        mac: 02:00:00:00:00:01
        mtu: 1500
        state: up
    Port veth1
        port_no: 2
        kind: pod
        mode: xdp-drv (requested auto)
        zero_copy: false
        worker: 0
        ifindex: 0
        mac: 02:00:00:00:00:01
        mtu: 1500
        state: down
";
        assert_eq!(text, expected);
    }

    #[test]
    fn show_names_the_pod_and_its_addresses() {
        let hello = HelloReply {
            protocol: 1,
            version: "0.1.0".into(),
            pid: 42,
        };
        let mut linked = port("veth1", 1);
        linked.pod = Some(vswitch_proto::PodRef {
            namespace: "shop".into(),
            name: "web-1".into(),
            container_id: None,
        });
        let mut unknown = port("veth2", 2);
        unknown.pod = Some(vswitch_proto::PodRef {
            namespace: "shop".into(),
            name: "gone".into(),
            container_id: None,
        });
        let text = show_entries(
            &hello,
            &[
                PortEntry {
                    port: linked,
                    pod_link: Some(vswitch_proto::PodLink {
                        uid: "u".into(),
                        ips: vec!["10.244.1.5".into(), "fd00::5".into()],
                        ..Default::default()
                    }),
                },
                PortEntry {
                    port: unknown,
                    pod_link: None,
                },
            ],
        );
        assert!(
            text.contains("        pod: shop/web-1\n        pod_ips: 10.244.1.5, fd00::5\n"),
            "{text}"
        );
        assert!(
            text.contains("        pod: shop/gone (not in desired state)\n"),
            "{text}"
        );
    }

    #[test]
    fn show_without_ports_is_one_line() {
        let hello = HelloReply {
            protocol: 1,
            version: "0.1.0".into(),
            pid: 42,
        };
        assert_eq!(show(&hello, &[]), "vswitchd 0.1.0 (pid 42, protocol 1)\n");
    }

    fn sample_stats() -> StatsReply {
        let drops = DropCounters {
            ring_full: 2,
            no_buffer: 1,
            ..DropCounters::default()
        };
        let switch_drops = DropCounters {
            malformed: 5,
            ..DropCounters::default()
        };
        StatsReply {
            ports: vec![
                PortStats {
                    name: "veth10".into(),
                    port_no: 10,
                    rx_packets: 5,
                    rx_bytes: 420,
                    tx_packets: 0,
                    tx_bytes: 0,
                    fastpath_rx_packets: 0,
                    fastpath_tx_packets: 0,
                    drops: DropCounters::default(),
                },
                PortStats {
                    name: "veth1".into(),
                    port_no: 1,
                    rx_packets: 120,
                    rx_bytes: 10080,
                    tx_packets: 118,
                    tx_bytes: 9912,
                    fastpath_rx_packets: 0,
                    fastpath_tx_packets: 0,
                    drops,
                },
            ],
            switch: SwitchStats {
                mac_entries: 2,
                mac_capacity: 4096,
                mac_learned: 3,
                mac_moved: 1,
                mac_aged: 1,
                mac_table_full: 0,
                flooded: 4,
                ports_vanished: 0,
                drops: switch_drops,
                ..SwitchStats::default()
            },
            workers: vec![
                WorkerStats {
                    id: 0,
                    core: Some(2),
                    ports: 2,
                    busy_iterations: 100,
                    idle_iterations: 5000,
                    sleeps: 12,
                    rx_packets: 125,
                    rx_batches: 50,
                    ..WorkerStats::default()
                },
                WorkerStats {
                    id: 1,
                    core: None,
                    ..WorkerStats::default()
                },
            ],
        }
    }

    #[test]
    fn stats_shaped_like_dump_ports() {
        let expected = "\
port stats: 2 ports
  port  1 veth1:  rx pkts=120, bytes=10080
                  tx pkts=118, bytes=9912
                  drop=3: ring_full=2, no_buffer=1
  port 10 veth10: rx pkts=5, bytes=420
                  tx pkts=0, bytes=0
                  drop=0
switch: mac entries=2/4096, learned=3, moved=1, aged=1, table_full=0
        flooded=4, ports_vanished=0
        drop=5: malformed=5
worker 0 (core 2): ports=2, rx pkts=125, batches=50 (2.5/batch), busy iterations=100, idle iterations=5000, sleeps=12
worker 1 (not pinned): ports=0, rx pkts=0, batches=0, busy iterations=0, idle iterations=0, sleeps=0
";
        assert_eq!(stats(&sample_stats(), false), expected);
    }

    #[test]
    fn stats_of_one_port_leaves_out_the_switch() {
        let mut s = sample_stats();
        s.ports.retain(|p| p.name == "veth1");
        let text = stats(&s, true);
        assert!(
            text.starts_with("port stats: 1 port\n  port 1 veth1: rx pkts=120"),
            "{text}"
        );
        assert!(!text.contains("switch:"));
        assert!(!text.contains("worker"));
    }

    #[test]
    fn every_drop_reason_is_named() {
        let all = DropCounters::from_array(&[1; DropReason::COUNT]);
        let line = drops(&all);
        for r in DropReason::ALL {
            assert!(line.contains(&format!("{}=1", r.name())), "{line}");
        }
    }
}
