//! A small synchronous rtnetlink client: the links, addresses and routes a CNI ADD,
//! DEL, CHECK and GC need, built with `netlink-packet-route`.
//!
//! Synchronous on purpose: a plugin run makes a dozen requests and exits, so an
//! async runtime would only add start-up time and threads. A socket talks to the
//! network namespace of the thread that opened it (see `netns::run_in`), which is
//! how the pod side is configured.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric,
    RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::result::Cidr;

/// How long to wait for the kernel's answer; it always answers, so hitting this
/// means something is badly wrong, and a plugin must not hang the runtime.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// Receive buffer: larger than any one datagram the kernel sends for a dump
/// (it fills messages up to a page or 32 KiB).
const RECV_BUF: usize = 1 << 17;

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub alias: Option<String>,
    pub up: bool,
    /// `IFLA_LINK`: for a veth, the peer's index (in the peer's namespace).
    pub peer_index: Option<u32>,
}

/// What the veth to create looks like.
#[derive(Debug, Clone)]
pub struct VethSpec<'a> {
    /// Name of the end that stays in this namespace.
    pub host: &'a str,
    /// Name of the end created in `peer_netns`.
    pub peer: &'a str,
    pub peer_mac: [u8; 6],
    pub mtu: u32,
    /// Namespace the peer is created in (an open nsfs file).
    pub peer_netns: RawFd,
}

/// An rtnetlink socket in the calling thread's network namespace.
pub struct Netlink {
    sock: Socket,
    seq: u32,
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        set_recv_timeout(sock.as_raw_fd(), RECV_TIMEOUT)?;
        Ok(Netlink { sock, seq: 0 })
    }

    /// Sends one request and collects the answer: the messages of a dump, or
    /// nothing for an acknowledged change. A kernel error comes back as the errno.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut header = NetlinkHeader::default();
        // Every request that is not a dump asks for the ACK, a GET included: the
        // ACK is what says "that was all" after its one answer.
        header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.sock.send(&buf, 0)?;

        let mut out = Vec::new();
        let mut rx: Vec<u8> = Vec::with_capacity(RECV_BUF);
        loop {
            rx.clear();
            let n = self.sock.recv(&mut rx, 0).map_err(|e| {
                if e.kind() == io::ErrorKind::WouldBlock {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer from the kernel within {RECV_TIMEOUT:?}"),
                    )
                } else {
                    e
                }
            })?;
            if n > rx.len() {
                return Err(io::Error::other("netlink answer truncated"));
            }
            let mut off = 0;
            while off + 16 <= rx.len() {
                let len =
                    u32::from_ne_bytes([rx[off], rx[off + 1], rx[off + 2], rx[off + 3]]) as usize;
                if len < 16 || off + len > rx.len() {
                    return Err(io::Error::other("malformed netlink message"));
                }
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[off..off + len])
                    .map_err(|e| io::Error::other(format!("undecodable netlink answer: {e}")))?;
                off += (len + 3) & !3;
                if m.header.sequence_number != seq {
                    // A late answer to an earlier request: not ours.
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                    // An ACK ends a change; a dump ends with Done.
                    NetlinkPayload::Error(_) if !dump => return Ok(out),
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    _ => {}
                }
            }
        }
    }

    /// The link named `name`, or `None` if there is none.
    pub fn link_by_name(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(m), 0) {
            Ok(msgs) => Ok(msgs.into_iter().find_map(link_of)),
            Err(e) if is_no_device(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link of the namespace.
    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let msgs = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(msgs.into_iter().filter_map(link_of).collect())
    }

    /// Creates a veth pair: `spec.host` here and `spec.peer` directly in the pod's
    /// namespace (it never exists here, so its name cannot clash with ours), both
    /// with the MTU, the peer with its MAC. Fails with EEXIST if either name is
    /// taken.
    pub fn create_veth(&mut self, spec: &VethSpec<'_>) -> io::Result<()> {
        let mut peer = LinkMessage::default();
        peer.attributes = vec![
            LinkAttribute::IfName(spec.peer.to_string()),
            LinkAttribute::Mtu(spec.mtu),
            LinkAttribute::Address(spec.peer_mac.to_vec()),
            LinkAttribute::NetNsFd(spec.peer_netns),
        ];
        let mut m = LinkMessage::default();
        m.attributes = vec![
            LinkAttribute::IfName(spec.host.to_string()),
            LinkAttribute::Mtu(spec.mtu),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]),
        ];
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
    }

    /// Sets link `index` up, and its alias when given.
    pub fn set_up(&mut self, index: u32, alias: Option<&str>) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        if let Some(a) = alias {
            m.attributes.push(LinkAttribute::IfAlias(a.to_string()));
        }
        self.request(RouteNetlinkMessage::SetLink(m), 0).map(drop)
    }

    /// Deletes link `index` (for a veth, both ends). Gone already is fine.
    pub fn del_link(&mut self, index: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        match self.request(RouteNetlinkMessage::DelLink(m), 0) {
            Err(e) if is_no_device(&e) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Adds `addr` to link `index`; IPv4 gets the subnet's broadcast address
    /// (as `ip addr add ... brd +` and the reference plugins do), IPv6 skips
    /// duplicate address detection so the address is usable at once (the IPAM
    /// plugin made it unique).
    pub fn add_address(&mut self, index: u32, addr: Cidr) -> io::Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = family(addr.addr);
        m.header.prefix_len = addr.prefix;
        m.header.index = index;
        match addr.addr {
            IpAddr::V4(v4) => {
                m.attributes.push(AddressAttribute::Local(addr.addr));
                m.attributes.push(AddressAttribute::Address(addr.addr));
                if addr.prefix < 31 {
                    let host_bits = u32::MAX >> addr.prefix;
                    let brd = u32::from(v4) | host_bits;
                    m.attributes.push(AddressAttribute::Broadcast(brd.into()));
                }
            }
            IpAddr::V6(_) => {
                m.attributes.push(AddressAttribute::Address(addr.addr));
                m.attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Removes `addr` from link `index`. Gone already is fine.
    pub fn del_address(&mut self, index: u32, addr: Cidr) -> io::Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = family(addr.addr);
        m.header.prefix_len = addr.prefix;
        m.header.index = index;
        if addr.addr.is_ipv4() {
            m.attributes.push(AddressAttribute::Local(addr.addr));
        }
        m.attributes.push(AddressAttribute::Address(addr.addr));
        match self.request(RouteNetlinkMessage::DelAddress(m), 0) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
            other => other.map(drop),
        }
    }

    /// The addresses on link `index`.
    pub fn addresses(&mut self, index: u32) -> io::Result<Vec<Cidr>> {
        let msgs = self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    // IFA_LOCAL is the interface's own address where there are both
                    // (IPv4); IPv6 has only IFA_ADDRESS.
                    let pick = |want_local: bool| {
                        a.attributes.iter().find_map(|at| match at {
                            AddressAttribute::Local(ip) if want_local => Some(*ip),
                            AddressAttribute::Address(ip) if !want_local => Some(*ip),
                            _ => None,
                        })
                    };
                    let addr = pick(true).or_else(|| pick(false))?;
                    Some(Cidr {
                        addr,
                        prefix: a.header.prefix_len,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Adds a route out of link `index`. A route that exists already (the same
    /// destination, e.g. the subnet route the kernel made for the address) is not
    /// an error.
    pub fn add_route(&mut self, index: u32, route: &RouteSpec) -> io::Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = family(route.dst.addr);
        m.header.destination_prefix_length = route.dst.prefix;
        m.header.table = match route.table {
            Some(t) if t < 256 => t as u8,
            Some(_) => 0, // RT_TABLE_UNSPEC: the RTA_TABLE attribute says
            None => RouteHeader::RT_TABLE_MAIN,
        };
        m.header.protocol = route
            .protocol
            .map_or(RouteProtocol::Boot, RouteProtocol::from);
        m.header.kind = RouteType::Unicast;
        if route.onlink {
            m.header.flags = RouteFlags::Onlink;
        }
        m.header.scope = match (route.scope, route.gw) {
            (Some(s), _) => RouteScope::from(s as u8),
            (None, Some(_)) => RouteScope::Universe,
            (None, None) => RouteScope::Link,
        };
        if route.dst.prefix > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(
                    route.dst.addr,
                )));
        }
        if let Some(gw) = route.gw {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        m.attributes.push(RouteAttribute::Oif(index));
        if let Some(p) = route.priority {
            m.attributes.push(RouteAttribute::Priority(p));
        }
        if let Some(t) = route.table.filter(|t| *t >= 256) {
            m.attributes.push(RouteAttribute::Table(t));
        }
        let mut metrics = Vec::new();
        if let Some(mtu) = route.mtu {
            metrics.push(RouteMetric::Mtu(mtu));
        }
        if let Some(mss) = route.advmss {
            metrics.push(RouteMetric::Advmss(mss));
        }
        if !metrics.is_empty() {
            m.attributes.push(RouteAttribute::Metrics(metrics));
        }
        match self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other.map(drop),
        }
    }

    /// The routes of the main table of family `ipv4` (true) or IPv6.
    pub fn routes(&mut self, ipv4: bool) -> io::Result<Vec<RouteEntry>> {
        let mut q = RouteMessage::default();
        q.header.address_family = if ipv4 {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let msgs = self.request(RouteNetlinkMessage::GetRoute(q), NLM_F_DUMP)?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| {
                let RouteNetlinkMessage::NewRoute(r) = m else {
                    return None;
                };
                let mut table = u32::from(r.header.table);
                let (mut dst, mut gw, mut oif) = (None, None, None);
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Destination(d) => dst = route_ip(d),
                        RouteAttribute::Gateway(g) => gw = route_ip(g),
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        RouteAttribute::Table(t) => table = *t,
                        _ => {}
                    }
                }
                if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
                    return None;
                }
                let unspecified = if ipv4 {
                    IpAddr::from([0u8; 4])
                } else {
                    IpAddr::from([0u8; 16])
                };
                Some(RouteEntry {
                    dst: Cidr {
                        addr: dst.unwrap_or(unspecified),
                        prefix: r.header.destination_prefix_length,
                    },
                    gw,
                    oif,
                    protocol: u8::from(r.header.protocol),
                    onlink: r.header.flags.contains(RouteFlags::Onlink),
                })
            })
            .collect())
    }

    /// Deletes the main-table route to `dst` out of link `index` (by gateway `gw`
    /// when given). Gone already is fine.
    pub fn del_route(&mut self, index: u32, dst: Cidr, gw: Option<IpAddr>) -> io::Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = family(dst.addr);
        m.header.destination_prefix_length = dst.prefix;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.scope = RouteScope::NoWhere;
        if dst.prefix > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(dst.addr)));
        }
        if let Some(g) = gw {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(g)));
        }
        m.attributes.push(RouteAttribute::Oif(index));
        match self.request(RouteNetlinkMessage::DelRoute(m), 0) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Sets the MAC address of link `index`.
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.request(RouteNetlinkMessage::SetLink(m), 0).map(drop)
    }

    /// Sets the MTU of link `index`.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::Mtu(mtu));
        self.request(RouteNetlinkMessage::SetLink(m), 0).map(drop)
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A route to install: the result's route with its gateway resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: Cidr,
    pub gw: Option<IpAddr>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<u32>,
    /// `onlink`: the gateway is on the link even though no address of the link
    /// covers it (the gateway port's routes to remote pod CIDRs).
    pub onlink: bool,
    /// The route's protocol (`RTPROT_*`); `None`: `boot`, as `ip route add`.
    pub protocol: Option<u8>,
}

/// A route of the main table as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub dst: Cidr,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
    pub protocol: u8,
    pub onlink: bool,
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// ENODEV: the kernel's "no such link".
pub fn is_no_device(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENODEV)
}

fn link_of(m: RouteNetlinkMessage) -> Option<Link> {
    let RouteNetlinkMessage::NewLink(l) = m else {
        return None;
    };
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        mac: None,
        mtu: None,
        alias: None,
        up: l.header.flags.contains(LinkFlags::Up),
        peer_index: None,
    };
    for a in l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Address(mac) if mac.len() == 6 => {
                let mut b = [0u8; 6];
                b.copy_from_slice(&mac);
                link.mac = Some(b);
            }
            LinkAttribute::Mtu(m) => link.mtu = Some(m),
            LinkAttribute::IfAlias(a) => link.alias = Some(a),
            LinkAttribute::Link(i) => link.peer_index = Some(i),
            _ => {}
        }
    }
    Some(link)
}

fn set_recv_timeout(fd: RawFd, t: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: fd is an open socket; the option value is a timeval of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
