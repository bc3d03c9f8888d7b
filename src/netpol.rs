//! The upstream Kubernetes NetworkPolicy e2e model (test/e2e/network/netpol),
//! rebuilt for one vswitchd: namespaces x, y, z with pods a, b, c each, every pod
//! serving TCP and UDP on ports 80 and 81 (small echo servers in the pod's
//! namespace), cluster state fed through `vswitch-agent --manifests`, and a full
//! 9x9 reachability matrix probed in parallel with short timeouts.

use crate::agent::Agent;
use crate::daemon::{DaemonOpts, Vswitchd};
use crate::netns::Netns;
use crate::pod::{Pod, PodOpts, pod_ip};
use crate::{Result, TempDir, err};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];
/// How long a probe waits for a connection or an echo.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(700);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// `x/a`-style pod names, in matrix order.
pub fn pod_names() -> Vec<String> {
    NAMESPACES
        .iter()
        .flat_map(|n| PODS.iter().map(move |p| format!("{n}/{p}")))
        .collect()
}

/// Expected or observed reachability: `m[from][to]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix(pub [[bool; 9]; 9]);

fn idx(name: &str) -> usize {
    pod_names().iter().position(|n| n == name).unwrap_or(0)
}

impl Matrix {
    pub fn all(v: bool) -> Matrix {
        Matrix([[v; 9]; 9])
    }
    pub fn set(&mut self, from: &str, to: &str, v: bool) -> &mut Self {
        self.0[idx(from)][idx(to)] = v;
        self
    }
    /// Every pod to `to` (`from` filter: a namespace `x`, a pod `x/a`, or `*`).
    pub fn to(&mut self, to: &str, v: bool) -> &mut Self {
        for f in 0..9 {
            self.0[f][idx(to)] = v;
        }
        self
    }
    pub fn from(&mut self, from: &str, v: bool) -> &mut Self {
        for t in 0..9 {
            self.0[idx(from)][t] = v;
        }
        self
    }
    /// A pod always reaches itself (loopback never crosses the switch).
    pub fn self_allowed(&mut self) -> &mut Self {
        for i in 0..9 {
            self.0[i][i] = true;
        }
        self
    }
    pub fn render(&self) -> String {
        let names = pod_names();
        let mut s = String::from("     ");
        for n in &names {
            s.push_str(&format!("{n:>4}"));
        }
        s.push('\n');
        for (i, n) in names.iter().enumerate() {
            s.push_str(&format!("{n:>4} "));
            for j in 0..9 {
                s.push_str(if self.0[i][j] { "   ." } else { "   X" });
            }
            s.push('\n');
        }
        s
    }
}

/// The nine pods, their servers, one vswitchd and an agent reading `manifests`.
pub struct Cluster {
    pub pods: Vec<Pod>,
    stop: Arc<AtomicBool>,
    pub manifests: TempDir,
    pub agent: Agent,
    pub daemon: Vswitchd,
    _sw: Netns,
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(name))?;
    Ok(())
}

const BASE: &str = "apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.250.0.0/16}
status:
  addresses: [{type: InternalIP, address: 192.0.2.1}]
";

fn ip_of(i: usize) -> Ipv4Addr {
    pod_ip(i as u8 + 10)
}

/// The pods and namespaces as manifests, with these namespace and pod labels.
pub fn cluster_yaml(ns_labels: &[(&str, &str, &str)], pod_labels: &[(&str, &str, &str)]) -> String {
    let mut s = String::from(BASE);
    for ns in NAMESPACES {
        let mut labels = format!("ns: {ns}");
        for (n, k, v) in ns_labels {
            if *n == ns {
                labels.push_str(&format!(", {k}: {v}"));
            }
        }
        s.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{{labels}, kubernetes.io/metadata.name: {ns}}}}}\n"
        ));
    }
    for (i, name) in pod_names().iter().enumerate() {
        let (ns, pod) = name.split_once('/').unwrap_or(("x", "a"));
        let mut labels = format!("pod: {pod}");
        for (n, k, v) in pod_labels {
            if *n == name.as_str() {
                labels.push_str(&format!(", {k}: {v}"));
            }
        }
        let ip = ip_of(i);
        s.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {ns}, uid: uid-{ns}-{pod}, labels: {{{labels}}}}}
spec:
  nodeName: node-a
  containers:
  - name: c
    image: x
    ports:
    - {{name: serve-80-tcp, containerPort: 80, protocol: TCP}}
    - {{name: serve-80-udp, containerPort: 80, protocol: UDP}}
    - {{name: serve-81-tcp, containerPort: 81, protocol: TCP}}
    - {{name: serve-81-udp, containerPort: 81, protocol: UDP}}
status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}
"
        ));
    }
    s
}

fn serve(pod: &Pod, stop: Arc<AtomicBool>) -> Result<()> {
    let socks = pod.ns.enter(|| {
        let mut t = Vec::new();
        let mut u = Vec::new();
        for port in [80u16, 81] {
            let l = TcpListener::bind(("0.0.0.0", port))?;
            l.set_nonblocking(true)?;
            t.push(l);
            let s = UdpSocket::bind(("0.0.0.0", port))?;
            s.set_read_timeout(Some(Duration::from_millis(100)))?;
            u.push(s);
        }
        Ok((t, u))
    })?;
    let (tcp, udp) = socks;
    for l in tcp {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.write_all(b"ok");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
    }
    for s in udp {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], peer);
                }
            }
        });
    }
    Ok(())
}

impl Cluster {
    /// Nine pods on one switch, servers running, the agent synced with no policy.
    pub fn new() -> Result<Cluster> {
        Cluster::with_opts(DaemonOpts::default())
    }

    /// As [`Cluster::new`], the daemon started with `opts`.
    pub fn with_opts(opts: DaemonOpts) -> Result<Cluster> {
        let sw = Netns::new("sw")?;
        let daemon = Vswitchd::start(&sw, opts)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut pods = Vec::new();
        for i in 0..9 {
            let p = Pod::new(&sw, ip_of(i), PodOpts::default())?;
            daemon.add_port(&p.switch_if, "xdp-skb")?;
            serve(&p, stop.clone())?;
            pods.push(p);
        }
        let manifests = TempDir::new("netpol")?;
        write(manifests.path(), "cluster.yaml", &cluster_yaml(&[], &[]))?;
        write(manifests.path(), "policies.yaml", "")?;
        let agent = Agent::start_manifests(daemon.socket(), "node-a", manifests.path(), &[])?;
        let c = Cluster {
            pods,
            stop,
            manifests,
            agent,
            daemon,
            _sw: sw,
        };
        c.wait_counts(9, 0)?;
        Ok(c)
    }

    fn counts(&self) -> Option<(u64, u64)> {
        let v = self.daemon.vsctl_json(&["sync-status"]).ok()?;
        let c = &v["counts"];
        Some((c["Pod"].as_u64()?, c["NetworkPolicy"].as_u64()?))
    }

    /// Waits until desired state holds `pods` pods and `policies` policies.
    pub fn wait_counts(&self, pods: u64, policies: u64) -> Result<()> {
        crate::wait_for(Duration::from_secs(20), || {
            (self.counts() == Some((pods, policies))).then_some(())
        })
        .ok_or_else(|| {
            err!(
                "desired state never reached {pods} pods / {policies} policies: {:?}\n{}",
                self.counts(),
                self.agent.log_text()
            )
        })
    }

    /// Replaces the policies (YAML documents) and waits until all are in force.
    pub fn set_policies(&self, yaml: &str, n: u64) -> Result<()> {
        write(self.manifests.path(), "policies.yaml", yaml)?;
        self.wait_counts(9, n)
    }

    /// Replaces the namespace and pod labels.
    pub fn set_labels(&self, ns: &[(&str, &str, &str)], pods: &[(&str, &str, &str)]) -> Result<()> {
        write(
            self.manifests.path(),
            "cluster.yaml",
            &cluster_yaml(ns, pods),
        )
    }

    /// Probes every pair on `port`/`proto` in parallel.
    pub fn probe(&self, port: u16, proto: Proto) -> Result<Matrix> {
        let mut handles = Vec::new();
        for (i, p) in self.pods.iter().enumerate() {
            let targets: Vec<(usize, Ipv4Addr)> = (0..9).map(|j| (j, ip_of(j))).collect();
            handles.push((
                i,
                p.ns.spawn_in(move || {
                    // Threads spawned here inherit this thread's namespace.
                    let hs: Vec<_> = targets
                        .into_iter()
                        .map(|(j, ip)| std::thread::spawn(move || (j, probe_one(ip, port, proto))))
                        .collect();
                    Ok(hs
                        .into_iter()
                        .filter_map(|h| h.join().ok())
                        .collect::<Vec<_>>())
                })?,
            ));
        }
        let mut m = Matrix::all(false);
        for (i, h) in handles {
            let row = h.join().map_err(|_| err!("probe thread panicked"))??;
            for (j, ok) in row {
                m.0[i][j] = ok;
            }
        }
        Ok(m)
    }

    /// One probe (one new connection) from pod `from` to pod `to` (`x/a` names).
    pub fn probe_pair(&self, from: &str, to: &str, port: u16, proto: Proto) -> Result<bool> {
        let i = pod_names()
            .iter()
            .position(|n| n == from)
            .ok_or_else(|| err!("no pod {from}"))?;
        let j = pod_names()
            .iter()
            .position(|n| n == to)
            .ok_or_else(|| err!("no pod {to}"))?;
        let ip = ip_of(j);
        self.pods[i]
            .ns
            .enter(move || Ok(probe_one(ip, port, proto)))
    }

    /// Probes until the matrix equals `want` (policy changes are asynchronous to
    /// the agent's file poll) or the deadline passes; returns the last observed.
    pub fn expect(
        &self,
        port: u16,
        proto: Proto,
        want: &Matrix,
    ) -> std::result::Result<(), String> {
        let mut got = Matrix::all(false);
        for _ in 0..4 {
            got = self.probe(port, proto).map_err(|e| e.to_string())?;
            if &got == want {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Err(format!(
            "{proto:?}/{port}: reachability differs\nexpected:\n{}observed:\n{}",
            want.render(),
            got.render()
        ))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn probe_one(ip: Ipv4Addr, port: u16, proto: Proto) -> bool {
    let addr = SocketAddr::from((ip, port));
    match proto {
        Proto::Tcp => TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
            .and_then(|mut s| {
                s.set_read_timeout(Some(PROBE_TIMEOUT))?;
                let mut b = [0u8; 2];
                s.read_exact(&mut b)
            })
            .is_ok(),
        Proto::Udp => (|| -> std::io::Result<bool> {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.set_read_timeout(Some(PROBE_TIMEOUT / 2))?;
            s.connect(addr)?;
            for _ in 0..2 {
                s.send(b"hi")?;
                let mut b = [0u8; 8];
                if let Ok(n) = s.recv(&mut b) {
                    return Ok(&b[..n] == b"hi");
                }
            }
            Ok(false)
        })()
        .unwrap_or(false),
    }
}
