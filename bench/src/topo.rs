//! The "build" topology: three namespaces and two veth pairs the tool makes for
//! itself and removes on drop (also after Ctrl-C), laid out like vsb's:
//!
//! ```text
//!  ns {p}-{pid}x{n}-gen        ns {p}-{pid}x{n}-dut                  ns {p}-{pid}x{n}-sink
//!  [ {p}{pid}x{n}g0 ] <-veth-> [ ...g1 ]  DUT  [ ...s1 ] <-veth-> [ {p}{pid}x{n}s0 ]
//!  generator (CPU 0)           DUT (CPU 1)                         sink (XDP on s0)
//! ```
//!
//! Nothing is created in the root namespace: each veth is created from inside the
//! generator or sink namespace with its peer placed straight into the DUT's.
//! Names carry the process id, so several runs can share a machine, and
//! [`sweep_stale`] removes what a killed run (SIGKILL) left behind.

use crate::scenario::{GEN_MAC, SINK_MAC};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use vswitch_suite::cmd;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// MACs of the DUT-side ends.
pub const IN_MAC: [u8; 6] = [0x02, 0x76, 0, 0, 1, 0x10];
pub const OUT_MAC: [u8; 6] = [0x02, 0x76, 0, 0, 1, 0x20];

/// Names of a topology's namespaces and interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub gen_ns: Option<String>,
    pub dut_ns: Option<String>,
    pub sink_ns: Option<String>,
    pub gen_if: String,
    pub in_if: Option<String>,
    pub out_if: Option<String>,
    pub sink_if: String,
}

/// Options of the built topology.
#[derive(Debug, Clone)]
pub struct BuildOpts {
    pub prefix: String,
    /// Queues of the generator's veth pair (one per generator thread) and of the
    /// sink's (one per sink thread: a frame landing on a queue without a sink
    /// socket would miss the sink).
    pub gen_queues: u32,
    pub sink_queues: u32,
    pub dut_napi_cpu: Option<usize>,
    pub napi_defer_hard_irqs: Option<u32>,
    pub gro_flush_timeout_ns: Option<u64>,
}

/// A built topology; dropping it kills what still runs in its namespaces (only
/// processes this run started live there) and deletes them.
#[derive(Debug)]
pub struct Built {
    pub names: Names,
    made: Vec<String>,
}

fn run(c: &mut Command) -> Result<String, String> {
    cmd::run(c).map_err(|e| e.0)
}

fn ip_n(ns: &str, args: &[&str]) -> Result<String, String> {
    run(Command::new("ip").args(["-n", ns]).args(args))
}

fn in_ns(ns: &str, argv: &[&str]) -> Result<String, String> {
    run(Command::new("ip").args(["netns", "exec", ns]).args(argv))
}

fn mac(m: &[u8; 6]) -> String {
    crate::wire::format_mac(m)
}

impl Built {
    pub fn new(o: &BuildOpts) -> Result<Built, String> {
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{pid}x{n}", o.prefix);
        if tag.len() + 2 > 15 {
            return Err(format!(
                "interface names {tag}g0... would be longer than 15 characters; use a shorter topology.prefix"
            ));
        }
        let ns = |role: &str| format!("{}-{pid}x{n}-{role}", o.prefix);
        let names = Names {
            gen_ns: Some(ns("gen")),
            dut_ns: Some(ns("dut")),
            sink_ns: Some(ns("sink")),
            gen_if: format!("{tag}g0"),
            in_if: Some(format!("{tag}g1")),
            out_if: Some(format!("{tag}s1")),
            sink_if: format!("{tag}s0"),
        };
        let mut b = Built {
            names: names.clone(),
            made: vec![],
        };
        let (gns, dns, sns) = (ns("gen"), ns("dut"), ns("sink"));
        let (g0, g1, s1, s0) = (
            names.gen_if.clone(),
            format!("{tag}g1"),
            format!("{tag}s1"),
            names.sink_if.clone(),
        );
        for n in [&gns, &dns, &sns] {
            run(Command::new("ip").args(["netns", "add", n]))?;
            b.made.push(n.clone());
            ip_n(n, &["link", "set", "lo", "up"])?;
            // No IPv6 chatter (DAD, router and multicast listener messages) on the
            // links: the sink would count it as foreign frames.
            in_ns(
                n,
                &[
                    "sysctl",
                    "-q",
                    "-w",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ],
            )?;
        }
        for (ns_a, a, ma, b_, mb, q) in [
            (
                &gns,
                &g0,
                GEN_MAC,
                &g1,
                IN_MAC,
                o.gen_queues.max(1).to_string(),
            ),
            (
                &sns,
                &s0,
                SINK_MAC,
                &s1,
                OUT_MAC,
                o.sink_queues.max(1).to_string(),
            ),
        ] {
            ip_n(
                ns_a,
                &[
                    "link",
                    "add",
                    a,
                    "address",
                    &mac(&ma),
                    "numtxqueues",
                    &q,
                    "numrxqueues",
                    &q,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    b_,
                    "address",
                    &mac(&mb),
                    "numtxqueues",
                    &q,
                    "numrxqueues",
                    &q,
                    "netns",
                    &dns,
                ],
            )?;
        }
        for (n, i) in [(&gns, &g0), (&sns, &s0), (&dns, &g1), (&dns, &s1)] {
            ip_n(n, &["link", "set", i, "up"])?;
        }
        // AF_XDP copy-mode skbs take the peer's NAPI path only when the sender has
        // no TSO/GSO; otherwise veth backlogs them on the sending CPU.
        in_ns(&gns, &["ethtool", "-K", &g0, "tso", "off", "gso", "off"])?;
        // GRO on the DUT ends turns NAPI on without any program attached: veth then
        // accepts XDP frames (redirects) and NAPI can be made threaded.
        for i in [&g1, &s1] {
            in_ns(&dns, &["ethtool", "-K", i, "gro", "on"])?;
        }
        // The same for the sink's end: an AF_XDP sink attaches a program anyway,
        // but an AF_PACKET sink would otherwise never see frames a DUT redirects
        // with XDP (veth drops XDP frames for a peer without NAPI).
        in_ns(&sns, &["ethtool", "-K", &s0, "gro", "on"])?;
        in_ns(
            &dns,
            &[
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=0",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ],
        )?;
        if let Some(v) = o.napi_defer_hard_irqs {
            sysfs_write(&dns, &g1, "napi_defer_hard_irqs", &v.to_string())?;
        }
        if let Some(v) = o.gro_flush_timeout_ns {
            sysfs_write(&dns, &g1, "gro_flush_timeout", &v.to_string())?;
        }
        if let Some(cpu) = o.dut_napi_cpu {
            threaded_napi(&dns, &g1, cpu)?;
        }
        Ok(b)
    }
}

fn sysfs_write(ns: &str, ifname: &str, attr: &str, val: &str) -> Result<(), String> {
    // /sys shows the namespace of the process that mounted it: `ip netns exec`
    // remounts /sys for the namespace, so write through a shell there.
    in_ns(
        ns,
        &[
            "sh",
            "-c",
            &format!("echo {val} > /sys/class/net/{ifname}/{attr}"),
        ],
    )
    .map(|_| ())
    .map_err(|e| format!("cannot set {attr} of {ifname}: {e}"))
}

/// Switches `ifname` to threaded NAPI and pins its kernel threads
/// ("napi/{ifname}-{id}") to `cpu`, so a kernel datapath runs on the DUT CPU.
pub fn threaded_napi(ns: &str, ifname: &str, cpu: usize) -> Result<(), String> {
    sysfs_write(ns, ifname, "threaded", "1")?;
    std::thread::sleep(Duration::from_millis(200));
    // Kernel thread names are cut at 15 characters.
    let want: String = format!("napi/{ifname}-").chars().take(15).collect();
    let mut pinned = 0;
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
                continue;
            };
            if comm.trim_end().starts_with(&want) {
                run(Command::new("taskset").args(["-pc", &cpu.to_string(), &pid.to_string()]))?;
                pinned += 1;
            }
        }
    }
    if pinned == 0 {
        return Err(format!("no NAPI thread of {ifname} found to pin"));
    }
    Ok(())
}

/// Kills every process in namespace `ns` (SIGTERM, then SIGKILL after 2 s). Only
/// called on namespaces this run made, where only processes it started live.
pub fn kill_all_in(ns: &str) {
    let pids = || -> Vec<i32> {
        run(Command::new("ip").args(["netns", "pids", ns]))
            .map(|s| {
                s.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = pids();
    if first.is_empty() {
        return;
    }
    for p in &first {
        // SAFETY: kill(2) with plain integers.
        unsafe { libc::kill(*p, libc::SIGTERM) };
    }
    for _ in 0..40 {
        if pids().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in pids() {
        // SAFETY: as above.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
}

impl Drop for Built {
    fn drop(&mut self) {
        for n in self.made.iter().rev() {
            kill_all_in(n);
            if let Err(e) = run(Command::new("ip").args(["netns", "del", n])) {
                eprintln!("warning: could not delete namespace {n}: {e}");
            }
        }
    }
}

/// The run's process id in a namespace name `{prefix}-{pid}x{n}-{role}`.
fn owner_pid(prefix: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let (pid, rest) = rest.split_once('x')?;
    let (n, role) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    if !["gen", "dut", "sink"].contains(&role) {
        return None;
    }
    pid.parse().ok()
}

/// Removes namespaces of runs with this prefix whose process is gone.
pub fn sweep_stale(prefix: &str) {
    let Ok(list) = run(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = owner_pid(prefix, name) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("removing stale namespace {name} (run {pid} is gone)");
        kill_all_in(name);
        let _ = run(Command::new("ip").args(["netns", "del", name]));
    }
}

/// The MAC of `ifname` in namespace `ns` (or ours).
pub fn if_mac(ns: Option<&str>, ifname: &str) -> Result<[u8; 6], String> {
    let mut c = Command::new("ip");
    if let Some(n) = ns {
        c.args(["-n", n]);
    }
    c.args(["-j", "link", "show", "dev", ifname]);
    let out = run(&mut c)?;
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("ip -j link: {e}"))?;
    v[0]["address"]
        .as_str()
        .and_then(crate::wire::parse_mac)
        .ok_or_else(|| format!("no MAC address for {ifname}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_names() {
        assert_eq!(owner_pid("vb", "vb-123x4-gen"), Some(123));
        assert_eq!(owner_pid("vb", "vb-123x4-sink"), Some(123));
        assert_eq!(owner_pid("vb", "vb-123x4-other"), None);
        assert_eq!(owner_pid("vb", "vbx-123x4-gen"), None);
        assert_eq!(owner_pid("vb", "vst-123x4-sw"), None);
        assert_eq!(owner_pid("vb", "vb-abcx4-gen"), None);
    }
}
