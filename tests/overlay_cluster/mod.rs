//! The two-node overlay cluster shared by tests/e2e_overlay.rs,
//! tests/e2e_overlay_fastpath.rs and tests/e2e_gateway.rs (included by each with
//! `mod overlay_cluster;`; a folder, so Cargo does not build it as a test target of
//! its own).
//!
//! Two "nodes" are network namespaces joined by an underlay bridge (a namespace of its
//! own, so further nodes can join it) carrying the node IPs 192.168.77.N; each runs
//! its own `vswitchd` with an `[overlay]` section and `vswitch-agent --manifests`
//! (Node objects with podCIDR and InternalIP, Pod objects once the CNI plugin gave the
//! pods their addresses). Pods are attached by `vswitch-cni` with `host-local` IPAM,
//! as the kubelet would. The uplink is the node's underlay veth.
//!
//! Each test file passes its own CNI network name ([`ClusterOpts::network`]);
//! namespaces and interfaces get unique names from `unique_suffix`, so the files run
//! side by side.

use serde_json::{Value, json};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;
use vswitch_suite::agent::Agent;
use vswitch_suite::cni::{Attachment, Runtime};
use vswitch_suite::daemon::{DaemonOpts, Vswitchd};
use vswitch_suite::netns::Netns;
use vswitch_suite::veth::Veth;
use vswitch_suite::{Result, TempDir, err, unique_suffix, wait_for};

pub const WAIT: Duration = Duration::from_secs(30);

/// How the cluster's nodes are set up.
pub struct ClusterOpts<'a> {
    /// `name` of the CNI network (one per test file).
    pub network: &'static str,
    /// MTU of the underlay.
    pub mtu: u32,
    /// `[overlay] mode` of the switches (`vxlan`, `flannel`).
    pub mode: &'a str,
    /// Mode of the uplink port: `packet` (the switch sees a copy of each frame; the
    /// node's stack keeps ARP working and drops the tunnel datagrams with an
    /// iptables rule, standing in for the uplink XDP filter), or an XDP mode (the
    /// switch's uplink filter takes the tunnel traffic; the rule only counts).
    pub uplink_mode: &'a str,
    /// Extra `vswitchd` arguments (`--xdp-fastpath`).
    pub vswitchd_args: Vec<String>,
    /// GRO on the underlay bridge's port of each node: NAPI on the uplink's peer, so
    /// frames XDP redirects to the uplink are accepted (else the kernel drops them
    /// and the switch takes the uplink off the fast path).
    pub underlay_gro: bool,
}

/// One node of the cluster: its namespace, switch, agent, CNI runtime and IPAM data.
/// Fields drop in order: the agent and the daemon stop before the namespace goes.
pub struct NodeNs {
    pub agent: Option<Agent>,
    pub daemon: Vswitchd,
    pub rt: Runtime,
    pub ipam: TempDir,
    pub manifests: TempDir,
    _config: TempDir,
    pub ns: Netns,
    pub name: String,
    pub node_ip: Ipv4Addr,
    /// Third octet of the pod CIDR 10.244.N.0/24.
    pub subnet: u8,
    pub uplink: String,
    /// `mtu` in the CNI configuration; without it the plugin takes the uplink's
    /// MTU − 50 from the switch.
    pub pod_mtu: Option<u32>,
    network: &'static str,
}

/// A pod made by the CNI plugin on a node.
pub struct CniPod {
    pub name: String,
    pub node: String,
    pub ip: Ipv4Addr,
    pub ns: Netns,
    _att: Attachment,
}

impl NodeNs {
    pub fn pod_cidr(&self) -> String {
        format!("10.244.{}.0/24", self.subnet)
    }

    fn conf(&self) -> Value {
        let mut c = json!({
            "cniVersion": "1.1.0",
            "name": self.network,
            "type": "vswitch-cni",
            "socket": self.daemon.socket(),
            "ipam": {
                "type": "host-local",
                "subnet": self.pod_cidr(),
                "dataDir": self.ipam.path(),
                "routes": [{"dst": "0.0.0.0/0"}]
            }
        });
        if let Some(m) = self.pod_mtu {
            c["mtu"] = json!(m);
        }
        c
    }

    /// CNI ADD of a new pod namespace.
    pub fn add_pod(&self, name: &str) -> CniPod {
        let ns = Netns::new("pod").expect("pod namespace");
        let id = format!("ctr{}", unique_suffix());
        let att = Attachment::kube(&id, &ns, "eth0", name);
        let result = self
            .rt
            .vswitch("ADD", Some(&att), &self.conf())
            .and_then(|r| r.ok())
            .unwrap_or_else(|e| panic!("ADD {name}: {e}"));
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no IPv4 address in {result}"));
        CniPod {
            name: name.into(),
            node: self.name.clone(),
            ip,
            ns,
            _att: att,
        }
    }

    /// `n_packets` of the table-0 flows whose text contains all of `words`.
    pub fn flow_packets(&self, words: &[&str]) -> u64 {
        let dump = self
            .daemon
            .vsctl_json(&["dump-flows", "--table", "0"])
            .expect("dump-flows");
        dump.as_array()
            .into_iter()
            .flatten()
            .filter(|f| {
                let t = f.to_string();
                words.iter().all(|w| t.contains(w))
            })
            .filter_map(|f| f["n_packets"].as_u64())
            .sum()
    }

    pub fn dump_flows(&self) -> String {
        self.daemon.vsctl(&["dump-flows"]).unwrap_or_default()
    }
}

/// A Node manifest document (podCIDR 10.244.`subnet`.0/24, InternalIP `ip`).
pub fn node_doc(name: &str, subnet: u8, ip: Ipv4Addr, annotations: &str) -> String {
    format!(
        "apiVersion: v1
kind: Node
metadata:
  name: {name}
  annotations: {{{annotations}}}
spec: {{podCIDR: 10.244.{subnet}.0/24}}
status:
  addresses: [{{type: InternalIP, address: {ip}}}]
---
"
    )
}

/// A running Pod manifest document for `p`.
pub fn pod_doc(p: &CniPod) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {}, namespace: default, uid: uid-{}}}
spec:
  nodeName: {}
  containers: [{{name: c, image: x}}]
status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}
---
",
        p.name,
        p.name,
        p.node,
        ip = p.ip
    )
}

/// Writes a manifest file for the agent.
pub fn write(dir: &Path, name: &str, text: &str) {
    // Write then rename: the agent never reads half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write manifest");
    std::fs::rename(&tmp, dir.join(name)).expect("rename manifest");
}

/// The two-node cluster on an underlay bridge.
pub struct Cluster {
    pub pods: Vec<CniPod>,
    pub nodes: Vec<NodeNs>,
    pub links: Vec<Veth>,
    pub underlay: Netns,
    /// The underlay bridge port of each node that joined, in order.
    pub ports: Vec<String>,
    mtu: u32,
    underlay_gro: bool,
}

/// Extra node documents (a flannel node) every agent sees.
#[derive(Default, Clone)]
pub struct Extra {
    pub nodes: String,
}

/// Our nodes' Node annotations in flannel mode: flannel's backend data with our VTEP
/// MAC (the gateway MAC), as a flannel node reads it.
fn flannel_annotations(subnet: u8, ip: Ipv4Addr) -> String {
    format!(
        "flannel.alpha.coreos.com/backend-type: vxlan, \
         flannel.alpha.coreos.com/backend-data: '{{\"VNI\":1,\"VtepMAC\":\"0a:58:0a:f4:{subnet:02x}:01\"}}', \
         flannel.alpha.coreos.com/public-ip: {ip}"
    )
}

impl Cluster {
    /// Nodes node-a (192.168.77.1, 10.244.1.0/24) and node-b (192.168.77.2,
    /// 10.244.2.0/24) with their switches running; no agents yet
    /// ([`Cluster::start_agents`]).
    pub fn new(opts: &ClusterOpts<'_>) -> Cluster {
        let underlay = Netns::new("ul").expect("underlay namespace");
        underlay
            .ip(&["link", "add", "br0", "type", "bridge"])
            .expect("underlay bridge");
        underlay
            .ip(&["link", "set", "br0", "mtu", &opts.mtu.to_string(), "up"])
            .expect("bridge up");
        let mut c = Cluster {
            pods: Vec::new(),
            nodes: Vec::new(),
            links: Vec::new(),
            underlay,
            ports: Vec::new(),
            mtu: opts.mtu,
            underlay_gro: opts.underlay_gro,
        };
        for (name, i) in [("node-a", 1u8), ("node-b", 2u8)] {
            let ns = Netns::new(&format!("node{i}")).expect("node namespace");
            let up = c.join_underlay(&ns, Ipv4Addr::new(192, 168, 77, i));
            c.nodes.push(start_node(ns, &up, name, i, opts));
        }
        c
    }

    /// Connects `ns` to the underlay bridge with address `ip`; the interface's name.
    pub fn join_underlay(&mut self, ns: &Netns, ip: Ipv4Addr) -> String {
        let (up, port) = (
            format!("u{}", unique_suffix()),
            format!("p{}", unique_suffix()),
        );
        let v = Veth::new(ns, &up, &self.underlay, &port).expect("underlay veth");
        let mtu = self.mtu.to_string();
        self.underlay
            .ip(&["link", "set", &port, "mtu", &mtu, "master", "br0", "up"])
            .expect("bridge port");
        if self.underlay_gro {
            self.underlay
                .run(&["ethtool", "-K", &port, "gro", "on"])
                .expect("gro on");
        }
        ns.ip(&["link", "set", &up, "mtu", &mtu]).expect("mtu");
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", &up])
            .expect("node ip");
        self.links.push(v);
        self.ports.push(port);
        up
    }

    /// The Node documents of our nodes (with flannel annotations when `extra` has
    /// flannel nodes) and of `extra`.
    pub fn node_docs(&self, extra: &Extra) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            let ann = if extra.nodes.is_empty() {
                String::new()
            } else {
                flannel_annotations(n.subnet, n.node_ip)
            };
            s += &node_doc(&n.name, n.subnet, n.node_ip, &ann);
        }
        s + &extra.nodes
    }

    /// Writes the Node documents into every node's manifests and starts the agents.
    pub fn start_agents(&mut self, extra: &Extra) {
        let docs = self.node_docs(extra);
        for n in &mut self.nodes {
            write(n.manifests.path(), "nodes.yaml", &docs);
            n.agent = Some(
                Agent::start_manifests(
                    n.daemon.socket(),
                    &n.name,
                    n.manifests.path(),
                    &["--uplink", &n.uplink],
                )
                .expect("agent"),
            );
        }
    }

    /// Writes the Node documents and starts every node's agent inside its node
    /// namespace with `args` after `--uplink` (the agent then manages that
    /// namespace's links: `--gateway`).
    #[allow(dead_code)] // used by e2e_gateway only
    pub fn start_agents_in_nodes(&mut self, args: &[&str]) {
        let docs = self.node_docs(&Extra::default());
        for i in 0..self.nodes.len() {
            write(self.nodes[i].manifests.path(), "nodes.yaml", &docs);
            self.restart_agent_in_node(i, args);
        }
    }

    /// Stops node `i`'s agent (if any) and starts it again inside the node
    /// namespace with `args` after `--uplink`.
    #[allow(dead_code)] // used by e2e_gateway only
    pub fn restart_agent_in_node(&mut self, i: usize, args: &[&str]) {
        let n = &mut self.nodes[i];
        n.agent = None;
        let mut all = vec!["--uplink", n.uplink.as_str()];
        all.extend_from_slice(args);
        n.agent = Some(
            Agent::start_manifests_in(&n.ns, n.daemon.socket(), &n.name, n.manifests.path(), &all)
                .expect("agent"),
        );
    }

    /// A pod on node `i`; its Pod object is published to every node's agent.
    pub fn add_pod(&mut self, node: usize, name: &str) -> usize {
        let p = self.nodes[node].add_pod(name);
        self.pods.push(p);
        let docs: String = self.pods.iter().map(pod_doc).collect();
        for n in &self.nodes {
            write(n.manifests.path(), "pods.yaml", &docs);
        }
        self.pods.len() - 1
    }

    /// Each node's flows, agent log and the tail of its switch's log.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            s += &format!(
                "=== {} flows ===\n{}\n=== {} agent ===\n{}\n=== {} log (tail) ===\n{}\n",
                n.name,
                n.dump_flows(),
                n.name,
                n.agent.as_ref().map(Agent::log_text).unwrap_or_default(),
                n.name,
                tail(&n.daemon.log_text(), 3000)
            );
        }
        s
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut at = s.len().saturating_sub(n);
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

fn start_node(ns: Netns, uplink: &str, name: &str, i: u8, opts: &ClusterOpts<'_>) -> NodeNs {
    let node_ip = Ipv4Addr::new(192, 168, 77, i);
    let config = TempDir::new("config").expect("config dir");
    let path = config.path().join("vswitchd.toml");
    std::fs::write(&path, format!("[overlay]\nmode = \"{}\"\n", opts.mode)).expect("config");
    let port = if opts.mode == "flannel" {
        "8472"
    } else {
        "4789"
    };
    // The node's own stack must not answer the tunnel traffic the switch takes:
    // in packet mode it gets a copy, which this rule drops (the uplink XDP filter
    // takes it away from the host in the XDP modes). In an XDP mode the rule only
    // counts: the host must see no tunnel traffic at all.
    let target: &[&str] = if opts.uplink_mode == "packet" {
        &["-j", "DROP"]
    } else {
        &[]
    };
    let mut rule = vec!["iptables", "-A", "INPUT", "-p", "udp", "--dport", port];
    rule.extend_from_slice(target);
    ns.run(&rule).expect("iptables");
    let daemon = Vswitchd::start(
        &ns,
        DaemonOpts {
            config: Some(path),
            extra_args: opts.vswitchd_args.clone(),
            ..DaemonOpts::default()
        },
    )
    .expect("vswitchd");
    daemon
        .add_port_kind(uplink, "uplink", opts.uplink_mode)
        .expect("uplink port");
    NodeNs {
        agent: None,
        rt: Runtime::new(&ns).expect("CNI runtime"),
        ipam: TempDir::new("ipam").expect("ipam dir"),
        manifests: TempDir::new("manifests").expect("manifest dir"),
        _config: config,
        daemon,
        ns,
        name: name.into(),
        node_ip,
        subnet: i,
        uplink: uplink.into(),
        pod_mtu: None,
        network: opts.network,
    }
}

/// Packets of the node's INPUT rule for the tunnel `port` (tunnel traffic its own
/// stack saw). Panics if there is no such rule (the count would prove nothing).
pub fn host_tunnel_packets(ns: &Netns, port: &str) -> u64 {
    let out = ns
        .run(&["iptables", "-L", "INPUT", "-v", "-n", "-x"])
        .expect("iptables -L");
    let hits: Vec<u64> = out
        .lines()
        .filter(|l| l.contains(&format!("dpt:{port}")))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .collect();
    assert!(!hits.is_empty(), "no INPUT rule for dpt:{port}: {out}");
    hits.iter().sum()
}

/// `count` pings from `ns` to `to`: how many were answered, and ping's output.
pub fn ping_ns(ns: &Netns, to: Ipv4Addr, count: u32) -> (u32, String) {
    ping_ns_args(ns, to, count, &[])
}

/// [`ping_ns`] with `extra` ping arguments (`-M do`).
pub fn ping_ns_args(ns: &Netns, to: Ipv4Addr, count: u32, extra: &[&str]) -> (u32, String) {
    let out = ns
        .command("ping")
        .args(["-n", "-q", "-i", "0.2", "-W", "1", "-c", &count.to_string()])
        .args(extra)
        .arg(to.to_string())
        .output()
        .expect("ping");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let got = text
        .split(", ")
        .find_map(|p| p.strip_suffix(" received"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    (got, text)
}

/// Waits until one ping from `ns` to `to` is answered.
pub fn ping_until(ns: &Netns, to: Ipv4Addr, timeout: Duration) -> bool {
    wait_for(timeout, || (ping_ns(ns, to, 1).0 == 1).then_some(())).is_some()
}

/// Three DF pings of `size` payload bytes from `ns` to `to` (not quiet: the
/// frag-needed answers show); ping's stdout and stderr.
pub fn ping_df(ns: &Netns, to: Ipv4Addr, size: u32) -> String {
    let out = ns
        .command("ping")
        .args([
            "-n",
            "-M",
            "do",
            "-s",
            &size.to_string(),
            "-c",
            "3",
            "-i",
            "0.3",
            "-W",
            "1",
        ])
        .arg(to.to_string())
        .output()
        .expect("ping");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// UDP request/response with real sockets: `n` distinct datagrams from `from` to an
/// echo server in `to`, each echoed back exactly (a lost one is retried up to 3 times).
pub fn udp_echo(from: &CniPod, to: &CniPod, n: u32) -> Result<()> {
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let server = to.ns.spawn_in(move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        let _ = port_tx.send(s.local_addr()?.port());
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = [0u8; 2048];
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < n as usize {
            let (len, peer) = s
                .recv_from(&mut buf)
                .map_err(|e| err!("server: after {} datagrams: {e}", seen.len()))?;
            s.send_to(&buf[..len], peer)?;
            if let Some(k) = buf[..len].get(..4) {
                seen.insert(u32::from_be_bytes([k[0], k[1], k[2], k[3]]));
            }
        }
        Ok(seen.len())
    })?;
    let port = port_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| err!("server did not start"))?;
    let dst = SocketAddr::from((to.ip, port));
    from.ns.enter(move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buf = [0u8; 2048];
        for i in 0..n {
            // Sizes from 4 to ~1400 bytes, content depending on i.
            let len = 4 + (i as usize * 97) % 1396;
            let mut msg: Vec<u8> = (0..len).map(|j| (j as u32 ^ i) as u8).collect();
            msg[..4].copy_from_slice(&i.to_be_bytes());
            let mut ok = false;
            for _ in 0..3 {
                s.send_to(&msg, dst)?;
                match s.recv_from(&mut buf) {
                    Ok((got, _)) if buf[..got] == msg[..] => {
                        ok = true;
                        break;
                    }
                    Ok((got, _)) => return Err(err!("datagram {i}: echo of {got} bytes differs")),
                    Err(_) => continue,
                }
            }
            if !ok {
                return Err(err!("datagram {i} ({len} bytes) never echoed"));
            }
        }
        Ok(())
    })?;
    let seen = server.join().map_err(|_| err!("server panicked"))??;
    if seen != n as usize {
        return Err(err!("server saw {seen} of {n} datagrams"));
    }
    Ok(())
}

/// A UDP socket on `port` in `ns` receiving datagrams (up to 256 bytes each) until
/// none came for `idle`; what it received.
pub fn udp_receiver(
    ns: &Netns,
    port: u16,
    idle: Duration,
) -> std::thread::JoinHandle<Result<Vec<Vec<u8>>>> {
    ns.spawn_in(move || {
        let s = UdpSocket::bind(("0.0.0.0", port))?;
        s.set_read_timeout(Some(idle))?;
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok((n, _)) = s.recv_from(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        Ok(got)
    })
    .expect("receiver")
}

/// A VXLAN datagram (VNI `vni`) carrying an Ethernet/IPv4/UDP frame from `src` to
/// `dst` on node a (gateway MAC 0a:58:0a:f4:01:01) for UDP port `dport`, as node b's
/// switch would send it.
pub fn vxlan_payload(src: Ipv4Addr, dst: Ipv4Addr, dport: u16, vni: u8, data: &[u8]) -> Vec<u8> {
    let udp_len = 8 + data.len();
    let mut ip = vswitch_suite::frames::ipv4_header(src, dst, 17, (20 + udp_len) as u16).to_vec();
    ip.extend_from_slice(&40000u16.to_be_bytes());
    ip.extend_from_slice(&dport.to_be_bytes());
    ip.extend_from_slice(&(udp_len as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0]); // no checksum (IPv4)
    ip.extend_from_slice(data);
    let inner = vswitch_suite::frames::ethernet(
        [0x0a, 0x58, 10, 244, 1, 1],
        [0x0a, 0x58, 10, 244, 2, 1],
        0x0800,
        &ip,
    );
    let mut v = vec![0x08, 0, 0, 0, 0, 0, vni, 0];
    v.extend_from_slice(&inner);
    v
}

/// Pod a1 connects to 203.0.113.2 behind node a; the peer address the outside saw.
#[allow(dead_code)] // used by e2e_overlay and e2e_gateway
pub fn pod_to_outside(c: &Cluster, ext: &Netns) -> String {
    let pod_ns = &c.pods[0].ns;
    assert!(
        ping_until(pod_ns, Ipv4Addr::new(203, 0, 113, 2), WAIT),
        "pod never reached the external address\n{}",
        c.logs()
    );
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let server = ext
        .spawn_in(move || {
            let l = std::net::TcpListener::bind("0.0.0.0:0")?;
            let _ = port_tx.send(l.local_addr()?.port());
            let (mut s, peer) = l.accept()?;
            std::io::copy(&mut s, &mut std::io::sink())?;
            Ok(peer.ip())
        })
        .expect("external server");
    let port = port_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server port");
    pod_ns
        .enter(move || {
            let mut s = std::net::TcpStream::connect_timeout(
                &SocketAddr::from(([203, 0, 113, 2], port)),
                Duration::from_secs(10),
            )?;
            std::io::Write::write_all(&mut s, &vec![7u8; 256 << 10])?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("pod -> external TCP: {e}\n{}", c.logs()));
    server
        .join()
        .expect("server thread")
        .expect("server")
        .to_string()
}
