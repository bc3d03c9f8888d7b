//! A "pod": a network namespace attached to the switch's namespace by a veth pair, with
//! an address in the private test range, and kernel clients to drive traffic from it.

use crate::netns::{Netns, json};
use crate::veth::{Veth, disable_offloads};
use crate::{Result, cmd, err, frames, unique_suffix};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Pod addresses come from this range. It exists only inside test namespaces (each
/// test has its own switch namespace, so tests never collide).
pub const TEST_PREFIX_LEN: u8 = 24;

/// `10.250.0.i`.
pub fn pod_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 250, 0, i)
}

#[derive(Debug, Clone, Default)]
pub struct PodOpts {
    /// MTU of the pod end only (the switch end keeps the default 1500). A larger pod
    /// MTU lets a test send frames bigger than the switch port accepts.
    pub mtu: Option<u32>,
    /// Leave TX checksum offload and TSO/GSO on at the pod end (the kernel default),
    /// e.g. to send GSO super-packets at the switch. TCP/UDP from such a pod carries
    /// unfinished checksums; call [`disable_offloads`] before relying on it.
    pub keep_offloads: bool,
}

/// A pod namespace with interface `ifname` (pod end of the veth, address `ip`/24) whose
/// peer `switch_if` sits in the switch's namespace, ready for `vsctl add-port`.
/// Dropping the pod deletes the veth and the namespace.
#[derive(Debug)]
pub struct Pod {
    pub ip: Ipv4Addr,
    /// Pod end of the veth (inside `ns`).
    pub ifname: String,
    /// Switch end of the veth (inside the switch namespace).
    pub switch_if: String,
    /// MAC of the pod end, `aa:bb:cc:dd:ee:ff` as iproute2 prints it.
    pub mac: String,
    // Held only to delete the pair on drop; declared before `ns` so it goes first.
    _veth: Veth,
    pub ns: Netns,
}

impl Pod {
    pub fn new(switch_ns: &Netns, ip: Ipv4Addr, opts: PodOpts) -> Result<Pod> {
        let ns = Netns::new("pod")?;
        let suffix = unique_suffix();
        // Same suffix on both ends so a reader can pair them up: vpNNNxM <-> vsNNNxM.
        let ifname = format!("vp{suffix}");
        let switch_if = format!("vs{suffix}");
        let veth = Veth::new(&ns, &ifname, switch_ns, &switch_if)?;
        if let Some(mtu) = opts.mtu {
            ns.ip(&["link", "set", &ifname, "mtu", &mtu.to_string()])?;
        }
        if !opts.keep_offloads {
            disable_offloads(&ns, &ifname)?;
        }
        // The MAC the CNI plugin gives a pod: 0a:58 + its IPv4 address. The node
        // pipeline's spoof guard and routing rely on it, as in a real cluster.
        let o = ip.octets();
        let pod_mac = format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]);
        ns.ip(&["link", "set", "dev", &ifname, "address", &pod_mac])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{ip}/{TEST_PREFIX_LEN}"),
            "dev",
            &ifname,
        ])?;
        let mac = ns.link(&ifname)?["address"]
            .as_str()
            .ok_or_else(|| err!("no MAC address on {ifname}"))?
            .to_string();
        Ok(Pod {
            ip,
            ifname,
            switch_if,
            mac,
            _veth: veth,
            ns,
        })
    }

    /// The MAC as bytes.
    pub fn mac_bytes(&self) -> Result<[u8; 6]> {
        frames::parse_mac(&self.mac)
    }

    /// `ping -c count` (0.2 s apart, 2 s wait per reply) to `to`; the counts back,
    /// whether or not replies came.
    pub fn ping(&self, to: Ipv4Addr, count: u32) -> Result<PingResult> {
        let mut c = self.ns.command("ping");
        c.args([
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            &to.to_string(),
        ]);
        let out = cmd::run_timeout(&mut c, Duration::from_secs(u64::from(count) + 30))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        PingResult::parse(&text).ok_or_else(|| {
            err!(
                "cannot read ping output: {text} {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })
    }

    /// Pings `to` once a try until a reply comes or `timeout` passes. The first pings
    /// may go while ARP resolves and the switch learns; this waits that out.
    pub fn ping_until(&self, to: Ipv4Addr, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < timeout {
            let mut c = self.ns.command("ping");
            c.args(["-n", "-c", "1", "-W", "1", &to.to_string()]);
            let out = cmd::run_timeout(&mut c, Duration::from_secs(10))?;
            if out.status.success() {
                return Ok(start.elapsed());
            }
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(err!(
            "{} -> {to}: no ping reply within {timeout:?}; last try: {}",
            self.ip,
            last.trim()
        ))
    }

    /// A ping flood (`ping -f`, as fast as replies come) to `to` for `secs` seconds, in
    /// the background.
    pub fn flood(&self, to: Ipv4Addr, secs: u32) -> Result<Child> {
        self.ns.spawn(&[
            "ping",
            "-n",
            "-q",
            "-f",
            "-w",
            &secs.to_string(),
            &to.to_string(),
        ])
    }

    /// The pod's neighbour entry for `ip`: (link-layer address, state), if any.
    pub fn neighbor(&self, ip: Ipv4Addr) -> Result<Option<(String, String)>> {
        let v = json(&self.ns.ip(&[
            "-j",
            "neigh",
            "show",
            "to",
            &ip.to_string(),
            "dev",
            &self.ifname,
        ])?)?;
        let Some(e) = v.as_array().and_then(|a| a.first()) else {
            return Ok(None);
        };
        let lladdr = e["lladdr"].as_str().unwrap_or("").to_string();
        let state = e["state"]
            .as_array()
            .and_then(|s| s.first())
            .and_then(|s| s.as_str())
            .unwrap_or("")
            .to_string();
        Ok(Some((lladdr, state)))
    }

    /// The pod goes away the way Kubernetes removes one: its veth is deleted (both ends
    /// go), without telling the switch.
    pub fn remove_link(&self) -> Result<()> {
        self.ns.ip(&["link", "del", &self.ifname]).map(|_| ())
    }

    /// Sends one UDP datagram of `len` bytes to `to`:9 as a single GSO super-packet
    /// with segments of `gso_size` bytes (UDP_SEGMENT). With offloads on at the pod end
    /// (see [`PodOpts::keep_offloads`]) it crosses the veth as ONE frame longer than the
    /// MTU, since veth does not check the length of GSO packets: the realistic way a
    /// switch port receives oversized frames.
    pub fn send_udp_gso(&self, to: Ipv4Addr, len: usize, gso_size: u16) -> Result<usize> {
        self.ns.enter(move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| err!("udp bind: {e}"))?;
            let size = libc::c_int::from(gso_size);
            // SAFETY: valid fd, option value is a c_int of the size passed.
            let rc = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::IPPROTO_UDP,
                    libc::UDP_SEGMENT,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(err!(
                    "setsockopt(UDP_SEGMENT): {}",
                    std::io::Error::last_os_error()
                ));
            }
            s.send_to(&vec![0x47; len], (to, 9))
                .map_err(|e| err!("udp gso send: {e}"))
        })
    }

    /// Sends each frame as it is through an AF_PACKET socket on the pod's interface
    /// (bypassing the pod's IP stack). One result per frame: bytes sent, or the error
    /// the kernel gave (it refuses frames shorter than 14 bytes or longer than MTU + 14
    /// (+4 for VLAN-tagged)).
    pub fn send_frames(
        &self,
        frames: Vec<Vec<u8>>,
    ) -> Result<Vec<std::result::Result<usize, String>>> {
        let ifname = self.ifname.clone();
        self.ns.enter(move || send_raw(&ifname, &frames))
    }
}

/// Sends frames through a packet socket bound to `ifname` in the calling thread's
/// network namespace.
fn send_raw(ifname: &str, frames: &[Vec<u8>]) -> Result<Vec<std::result::Result<usize, String>>> {
    let cname = std::ffi::CString::new(ifname).map_err(|_| err!("bad interface name {ifname}"))?;
    // SAFETY: valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(err!(
            "if_nametoindex({ifname}): {}",
            std::io::Error::last_os_error()
        ));
    }
    // Protocol 0: this socket only sends and never receives a copy of anything.
    // SAFETY: plain socket(2) call; the fd is owned right below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err!(
            "socket(AF_PACKET): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut out = Vec::with_capacity(frames.len());
    for f in frames {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        if f.len() >= 14 {
            addr.sll_addr[..6].copy_from_slice(&f[..6]);
            addr.sll_protocol = u16::from_ne_bytes([f[12], f[13]]);
        }
        // SAFETY: buffer and address are valid for the lengths passed.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                f.as_ptr().cast(),
                f.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        out.push(if n < 0 {
            Err(std::io::Error::last_os_error().to_string())
        } else {
            Ok(n as usize)
        });
    }
    Ok(out)
}

/// Counts from `ping -q`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingResult {
    pub transmitted: u32,
    pub received: u32,
}

impl PingResult {
    /// Reads "5 packets transmitted, 5 received, ...".
    pub fn parse(text: &str) -> Option<PingResult> {
        let line = text.lines().find(|l| l.contains("packets transmitted"))?;
        let mut nums = line.split(',').map(|p| {
            p.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u32>().ok())
        });
        Some(PingResult {
            transmitted: nums.next()??,
            received: nums.next()??,
        })
    }

    pub fn all_answered(&self) -> bool {
        self.transmitted > 0 && self.received == self.transmitted
    }
}

/// Outcome of [`tcp_transfer`].
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Transfer {
    pub fn mbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// How long one TCP read/write/accept may stall before the transfer fails.
pub const TCP_STALL: Duration = Duration::from_secs(20);

/// Sends `bytes` bytes over TCP from `from` to `to` with the kernel's TCP stacks in the
/// two pod namespaces, and checks that exactly those bytes (count and content) arrive.
pub fn tcp_transfer(from: &Pod, to: &Pod, bytes: u64) -> Result<Transfer> {
    tcp_transfer_ns(&from.ns, &to.ns, to.ip, bytes)
}

/// [`tcp_transfer`] between any two namespaces, `to_ip` being an address of `to`
/// (pods made by a CNI plugin rather than by [`Pod::new`]).
pub fn tcp_transfer_ns(from: &Netns, to: &Netns, to_ip: Ipv4Addr, bytes: u64) -> Result<Transfer> {
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let receiver = to.spawn_in(move || {
        let l = TcpListener::bind("0.0.0.0:0").map_err(|e| err!("bind: {e}"))?;
        let port = l.local_addr()?.port();
        let _ = port_tx.send(port);
        // accept() has no timeout; poll a non-blocking listener instead.
        l.set_nonblocking(true)?;
        let deadline = Instant::now() + TCP_STALL;
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(err!("accept: {e}")),
            }
        };
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(TCP_STALL))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got: u64 = 0;
        loop {
            let n = s
                .read(&mut buf)
                .map_err(|e| err!("receive after {got} bytes: {e}"))?;
            if n == 0 {
                break;
            }
            if let Some(i) = (0..n).find(|&i| buf[i] != pattern(got + i as u64)) {
                return Err(err!("corrupted byte at offset {}", got + i as u64));
            }
            got += n as u64;
        }
        Ok(got)
    })?;
    let port = port_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| err!("receiver did not start"))?;
    let dst = SocketAddr::from((to_ip, port));
    let sent = from.enter(move || {
        let start = Instant::now();
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(10))
            .map_err(|e| err!("connect {dst}: {e}"))?;
        s.set_write_timeout(Some(TCP_STALL))?;
        s.set_read_timeout(Some(TCP_STALL))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut off: u64 = 0;
        while off < bytes {
            let n = (bytes - off).min(buf.len() as u64) as usize;
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern(off + i as u64);
            }
            s.write_all(&buf[..n])
                .map_err(|e| err!("send after {off} bytes: {e}"))?;
            off += n as u64;
        }
        s.shutdown(Shutdown::Write)?;
        // Wait for the receiver to close: then every byte has arrived.
        let mut sink = [0u8; 64];
        let _ = s
            .read(&mut sink)
            .map_err(|e| err!("waiting for the receiver to finish: {e}"))?;
        Ok(Transfer {
            bytes: off,
            elapsed: start.elapsed(),
        })
    });
    let got = receiver.join().map_err(|_| err!("receiver panicked"))?;
    let sent = sent?;
    let got = got?;
    if got != bytes {
        return Err(err!("sent {bytes} bytes, received {got}"));
    }
    Ok(sent)
}

/// Byte `i` of a transfer; 251 is prime, so shifted or repeated chunks do not match.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

impl Pod {
    /// Runs `argv` in the pod (a convenience for tests: `pod.run(&["ip", "route"])`).
    pub fn run(&self, argv: &[&str]) -> Result<String> {
        self.ns.run(argv)
    }

    /// `ip netns exec POD program`.
    pub fn command(&self, program: &str) -> Command {
        self.ns.command(program)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_summary() {
        let t = "--- 10.250.0.2 ping statistics ---\n5 packets transmitted, 4 received, 20% packet loss, time 803ms\n";
        assert_eq!(
            PingResult::parse(t),
            Some(PingResult {
                transmitted: 5,
                received: 4
            })
        );
        let t = "3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2040ms";
        assert_eq!(
            PingResult::parse(t),
            Some(PingResult {
                transmitted: 3,
                received: 0
            })
        );
        assert_eq!(PingResult::parse("nothing"), None);
    }

    #[test]
    fn pattern_is_not_periodic_in_powers_of_two() {
        assert_ne!(pattern(0), pattern(256));
        assert_ne!(pattern(1), pattern(65537));
    }
}
