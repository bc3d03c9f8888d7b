//! VXLAN encap and decap in the XDP fast path (`bpf/fastpath_vxlan.h`;
//! docs/overlay.md, "XDP fast path for the tunnel").
//!
//! The worker offloads a decision it just executed when the cached actions are one
//! of two shapes and nothing else (no ct, policy verdict, service, punt, clone,
//! flood, VLAN push/pop, other rewrites):
//!
//! - **encap**, on a pod port: `set_field` of the Ethernet addresses, at most one
//!   `dec_ttl`, `encap(vni, src, dst)`, `set_field` of the outer Ethernet
//!   addresses, `output` to the uplink ([`encap_plan`]);
//! - **decap**, on the uplink: the outer pass is only `decap` (with key-only
//!   metadata), and the inner pass after it `set_field` of the Ethernet addresses,
//!   at most one `dec_ttl`, `output` to a pod port ([`decap_outer_ok`],
//!   [`inner_plan`]).
//!
//! Keys are exact: the packet words of the flow key ([`bpf_words`] computes them
//! from the frame exactly as the BPF program does, and the worker checks they equal
//! the words `extract` gave), so an entry never covers a frame the switch would have
//! decided differently. Entries carry the switch-wide epoch
//! ([`super::fastpath::FastPath::invalidate`]): node, neighbour (the next-hop MAC is
//! an action of a node's flows), MTU/port/VNI (tunnel parameters) and flow changes
//! all bump it.

use crate::flow::dpaction::DpAction;
use crate::flow::field::Field;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Must match `struct tun_flow_key` (48 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunFlowKey {
    pub in_ifindex: u32,
    pub pad: u32,
    pub w: [u64; 5],
}
const _: () = assert!(size_of::<TunFlowKey>() == 48);

/// Must match `struct tun_encap` (80 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TunEncap {
    pub outer_dst: [u8; 6],
    pub outer_src: [u8; 6],
    pub inner_dst: [u8; 6],
    pub inner_src: [u8; 6],
    /// Outer addresses, network byte order in memory.
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    /// VXLAN bytes 4..8.
    pub vni: [u8; 4],
    /// UDP ports, network byte order in memory.
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub mtu: u32,
    pub max_in: u32,
    pub dec_ttl: u32,
    pub out_ifindex: u32,
    pub out_port: u32,
    pub in_port: u32,
    pub epoch: u32,
    pub pad: u32,
    pub last_seen: u64,
}
const _: () = assert!(size_of::<TunEncap>() == 80);

/// Must match `struct tun_decap_key` (88 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunDecapKey {
    pub in_ifindex: u32,
    pub vni: u32,
    pub outer: [u64; 5],
    pub inner: [u64; 5],
}
const _: () = assert!(size_of::<TunDecapKey>() == 88);

/// Must match `struct tun_decap` (48 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TunDecap {
    pub inner_dst: [u8; 6],
    pub inner_src: [u8; 6],
    pub dec_ttl: u32,
    pub max_in: u32,
    pub out_ifindex: u32,
    pub out_port: u32,
    pub in_port: u32,
    pub epoch: u32,
    pub pad: u32,
    pub last_seen: u64,
}
const _: () = assert!(size_of::<TunDecap>() == 48);

fn be16(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(u16::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
    ])))
}

fn be32(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 4)?;
    Some(u64::from(u32::from_be_bytes([s[0], s[1], s[2], s[3]])))
}

fn mac48(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 6)?;
    Some(s.iter().fold(0u64, |a, x| (a << 8) | u64::from(*x)))
}

/// The flow-key packet words 0..4 of `frame` (in_port 0) as `vx_words` in
/// `bpf/fastpath_vxlan.h` computes them, with the IPv4 total length; `None` for a
/// frame the BPF program always leaves to the slow path.
pub fn bpf_words(frame: &[u8]) -> Option<([u64; 5], usize)> {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[14] != 0x45 {
        return None;
    }
    let total = be16(frame, 16)? as usize;
    if total < 20 || 14 + total > frame.len() {
        return None;
    }
    if be16(frame, 20)? & 0x3fff != 0 {
        return None;
    }
    let proto = frame[23];
    let l4 = 34;
    let l4len = total - 20;
    let tp = match proto {
        6 => {
            if l4len < 20 || frame.len() < l4 + 20 {
                return None;
            }
            let doff = usize::from(frame[l4 + 12] >> 4) * 4;
            if doff < 20 || doff > l4len {
                return None;
            }
            be16(frame, l4)?
                | (be16(frame, l4 + 2)? << 16)
                | ((be16(frame, l4 + 12)? & 0x0fff) << 32)
        }
        17 => {
            if l4len < 8 || frame.len() < l4 + 8 {
                return None;
            }
            be16(frame, l4)? | (be16(frame, l4 + 2)? << 16)
        }
        1 => {
            if l4len < 8 || frame.len() < l4 + 8 {
                return None;
            }
            u64::from(frame[l4]) | (u64::from(frame[l4 + 1]) << 16)
        }
        _ => return None,
    };
    let w = [
        0x0800u64 << 32,
        mac48(frame, 6)? | (u64::from(proto) << 48) | (u64::from(frame[22]) << 56),
        mac48(frame, 0)? | (u64::from(frame[15]) << 48),
        be32(frame, 26)? | (be32(frame, 30)? << 32),
        tp,
    ];
    Some((w, total))
}

/// Whether `bpf` (from [`bpf_words`]) are the packet words of the extracted `key`
/// (in_port aside): the kernel will compute this key for the same frame.
pub fn words_agree(bpf: &[u64; 5], key: &crate::flow::key::Key) -> bool {
    (key.0[0] & !0xffff_ffff) == bpf[0] && key.0[1..5] == bpf[1..5]
}

fn mac_of(v: u128) -> [u8; 6] {
    let b = (v as u64).to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

const MAC_MASK: u128 = (1 << 48) - 1;

/// Ethernet rewrites and TTL decrement of one side of the tunnel.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MacRewrite {
    pub dst: Option<[u8; 6]>,
    pub src: Option<[u8; 6]>,
    pub dec_ttl: bool,
}

impl MacRewrite {
    /// Takes `a` when it is an Ethernet address rewrite (full mask) or a
    /// `dec_ttl` (at most one); false for anything else.
    fn take(&mut self, a: &DpAction, ttl_ok: bool) -> bool {
        match a {
            DpAction::SetField { field, value, mask } if *mask & MAC_MASK == MAC_MASK => {
                match field {
                    Field::EthDst => self.dst = Some(mac_of(*value)),
                    Field::EthSrc => self.src = Some(mac_of(*value)),
                    _ => return false,
                }
                true
            }
            DpAction::DecTtl if ttl_ok && !self.dec_ttl => {
                self.dec_ttl = true;
                true
            }
            _ => false,
        }
    }
}

/// An offloadable encapsulation decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncapPlan {
    pub inner: MacRewrite,
    pub outer: MacRewrite,
    pub vni: u32,
    pub src: u32,
    pub dst: u32,
    pub out: u32,
}

/// The encap shape (see the module docs), or `None`.
pub fn encap_plan(actions: &[DpAction]) -> Option<EncapPlan> {
    let mut inner = MacRewrite::default();
    let mut outer = MacRewrite::default();
    let mut tun = None;
    let (last, rest) = actions.split_last()?;
    let DpAction::Output(out) = last else {
        return None;
    };
    for a in rest {
        match (a, tun) {
            (DpAction::SetMeta { .. }, _) => {}
            (DpAction::Encap { vni, src, dst }, None) => tun = Some((*vni, *src, *dst)),
            (a, None) => {
                if !inner.take(a, true) {
                    return None;
                }
            }
            (a, Some(_)) => {
                if !outer.take(a, false) {
                    return None;
                }
            }
        }
    }
    let (vni, src, dst) = tun?;
    Some(EncapPlan {
        inner,
        outer,
        vni: vni as u32 & 0x00ff_ffff,
        src,
        dst,
        out: *out,
    })
}

/// Whether the outer pass of a tunnel frame is only `decap` (key-only metadata
/// aside).
pub fn decap_outer_ok(actions: &[DpAction]) -> bool {
    matches!(actions.split_last(), Some((DpAction::Decap { .. }, rest))
        if rest.iter().all(|a| matches!(a, DpAction::SetMeta { .. })))
}

/// The inner pass after decap as Ethernet rewrites, TTL and the output port.
pub fn inner_plan(actions: &[DpAction]) -> Option<(MacRewrite, u32)> {
    let (last, rest) = actions.split_last()?;
    let DpAction::Output(out) = last else {
        return None;
    };
    let mut r = MacRewrite::default();
    for a in rest {
        if !matches!(a, DpAction::SetMeta { .. }) && !r.take(a, true) {
            return None;
        }
    }
    Some((r, *out))
}

/// The tunnel maps every fast-path program shares.
#[derive(Debug)]
pub struct TunnelMaps {
    encap: OwnedFd,
    decap: OwnedFd,
}

fn update<K, V>(fd: RawFd, k: &K, v: &V) -> io::Result<()> {
    // SAFETY: key and value are plain repr(C) data of the sizes the map was made
    // with (asserted above against the C layouts); both outlive the call.
    let rc = unsafe {
        libxdp_sys::bpf_map_update_elem(fd, (k as *const K).cast(), (v as *const V).cast(), 0)
    };
    if rc != 0 {
        return Err(if rc < 0 {
            io::Error::from_raw_os_error(-rc)
        } else {
            io::Error::last_os_error()
        });
    }
    Ok(())
}

fn lookup<K, V: Default>(fd: RawFd, k: &K) -> Option<V> {
    let mut v = V::default();
    // SAFETY: as `update`; the kernel writes one value into `v`.
    let rc = unsafe {
        libxdp_sys::bpf_map_lookup_elem(fd, (k as *const K).cast(), (&mut v as *mut V).cast())
    };
    (rc == 0).then_some(v)
}

impl TunnelMaps {
    /// Takes the maps of a loaded fast-path object (`take` dups a map by name).
    pub fn new(
        take: impl Fn(&std::ffi::CStr) -> Result<OwnedFd, String>,
    ) -> Result<TunnelMaps, String> {
        Ok(TunnelMaps {
            encap: take(c"tun_encap")?,
            decap: take(c"tun_decap")?,
        })
    }

    /// The (name, descriptor) pairs a program loaded with these maps reuses.
    pub fn reuse(&self) -> [(&'static std::ffi::CStr, RawFd); 2] {
        [
            (c"tun_encap", self.encap.as_raw_fd()),
            (c"tun_decap", self.decap.as_raw_fd()),
        ]
    }

    pub fn install_encap(&self, k: &TunFlowKey, v: &TunEncap) -> io::Result<()> {
        update(self.encap.as_raw_fd(), k, v)
    }

    pub fn install_decap(&self, k: &TunDecapKey, v: &TunDecap) -> io::Result<()> {
        update(self.decap.as_raw_fd(), k, v)
    }

    pub fn lookup_encap(&self, k: &TunFlowKey) -> Option<TunEncap> {
        lookup(self.encap.as_raw_fd(), k)
    }

    pub fn lookup_decap(&self, k: &TunDecapKey) -> Option<TunDecap> {
        lookup(self.decap.as_raw_fd(), k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::key::Key;

    fn udp_frame(ttl: u8, df: bool) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [0x0a, 0x58, 10, 1, 0, 1])
            .ipv4([10, 1, 0, 2], [10, 2, 0, 3], ttl)
            .udp(1234, 5678);
        let mut out = Vec::new();
        b.write(&mut out, &[0xab; 18]).expect("build");
        if !df {
            out[20] &= !0x40;
        }
        out
    }

    fn extracted(frame: &[u8]) -> Key {
        let mut k = Key::ZERO;
        crate::flow::extract::extract(frame, 7, &mut k).expect("extract");
        k
    }

    #[test]
    fn bpf_words_agree_with_extract() {
        let mut frames = vec![udp_frame(64, true), udp_frame(2, false)];
        let tcp = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 1, 0, 2], [10, 2, 0, 3], 9)
            .tcp(40000, 80, 7, 1000)
            .syn()
            .ack(3);
        let mut t = Vec::new();
        tcp.write(&mut t, b"hello").expect("tcp");
        frames.push(t);
        let icmp = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 1, 0, 2], [10, 2, 0, 3], 9)
            .icmpv4_echo_request(1, 2);
        let mut i = Vec::new();
        icmp.write(&mut i, b"ping").expect("icmp");
        frames.push(i);
        for f in &frames {
            let (w, total) = bpf_words(f).expect("taken");
            assert_eq!(total + 14, f.len());
            assert!(words_agree(&w, &extracted(f)), "{f:02x?}");
        }
        // Trailing padding: still the same words (extract ignores it too).
        let mut padded = frames[0].clone();
        padded.extend_from_slice(&[0; 8]);
        let (w, _) = bpf_words(&padded).expect("padded");
        assert!(words_agree(&w, &extracted(&padded)));
        // Every truncation and single-byte corruption: never a panic, and whenever
        // the BPF parser takes a frame its words are extract's.
        for f in &frames {
            for cut in 0..f.len() {
                if let Some((w, _)) = bpf_words(&f[..cut]) {
                    assert!(words_agree(&w, &extracted(&f[..cut])));
                }
            }
            for at in 0..f.len() {
                for x in [0x01u8, 0x40, 0xff] {
                    let mut g = f.clone();
                    g[at] ^= x;
                    if let Some((w, _)) = bpf_words(&g) {
                        assert!(words_agree(&w, &extracted(&g)), "byte {at} ^ {x:#x}");
                    }
                }
            }
        }
        // Not taken: options, fragments, other protocols, VLAN, ARP.
        let mut opt = frames[0].clone();
        opt[14] = 0x46;
        assert!(bpf_words(&opt).is_none());
        let mut frag = frames[0].clone();
        frag[20] |= 0x20;
        assert!(bpf_words(&frag).is_none());
        let mut gre = frames[0].clone();
        gre[23] = 47;
        assert!(bpf_words(&gre).is_none());
        let mut arp = frames[0].clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(bpf_words(&arp).is_none());
    }

    fn set(field: Field, v: u128) -> DpAction {
        DpAction::SetField {
            field,
            value: v,
            mask: u128::MAX,
        }
    }

    #[test]
    fn encap_plan_takes_only_the_tunnel_shape() {
        let acts = vec![
            set(Field::EthSrc, 0x0a58_0a01_0001),
            set(Field::EthDst, 0x0a58_0a02_0001),
            DpAction::DecTtl,
            DpAction::Encap {
                vni: 0x1_000001,
                src: 1,
                dst: 2,
            },
            set(Field::EthSrc, 0x0200_0000_0001),
            set(Field::EthDst, 0x0200_0000_0002),
            DpAction::Output(1),
        ];
        let p = encap_plan(&acts).expect("tunnel shape");
        assert_eq!(p.vni, 1);
        assert_eq!(p.inner.dst, Some([0x0a, 0x58, 0x0a, 0x02, 0, 1]));
        assert!(p.inner.dec_ttl && !p.outer.dec_ttl);
        assert_eq!(p.outer.src, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(p.out, 1);
        // Anything else in it, or a missing encap/output: not offloaded.
        for extra in [
            DpAction::Policy(crate::policy::Dir::Egress),
            DpAction::Normal,
            DpAction::Flood,
            DpAction::PopVlan,
            set(Field::Ipv4Dst, 5),
            DpAction::Ct {
                zone: 0,
                commit: false,
                nat: None,
                set_mark: None,
                set_label: None,
                recirc: None,
            },
        ] {
            let mut a = acts.clone();
            a.insert(1, extra);
            assert!(encap_plan(&a).is_none());
        }
        let mut two_ttl = acts.clone();
        two_ttl.insert(0, DpAction::DecTtl);
        assert!(encap_plan(&two_ttl).is_none());
        let mut ttl_after = acts.clone();
        ttl_after.insert(5, DpAction::DecTtl);
        assert!(encap_plan(&ttl_after).is_none());
        assert!(encap_plan(&acts[..6]).is_none());
        let no_encap: Vec<_> = acts
            .iter()
            .filter(|a| !matches!(a, DpAction::Encap { .. }))
            .cloned()
            .collect();
        assert!(encap_plan(&no_encap).is_none());
        let mut masked = acts.clone();
        masked[0] = DpAction::SetField {
            field: Field::EthSrc,
            value: 1,
            mask: 0xff,
        };
        assert!(encap_plan(&masked).is_none());
    }

    #[test]
    fn decap_shapes() {
        let meta = DpAction::SetMeta {
            word: 15,
            value: 4,
            mask: 0xffff_ffff,
        };
        assert!(decap_outer_ok(&[
            meta.clone(),
            DpAction::Decap { recirc: 11 }
        ]));
        assert!(!decap_outer_ok(&[
            DpAction::Decap { recirc: 11 },
            DpAction::Output(2)
        ]));
        assert!(!decap_outer_ok(&[
            DpAction::DecTtl,
            DpAction::Decap { recirc: 11 }
        ]));
        assert!(!decap_outer_ok(&[]));
        let inner = [
            set(Field::EthSrc, 0x0a58_0a02_0001),
            set(Field::EthDst, 0x0a58_0a02_0002),
            DpAction::DecTtl,
            DpAction::Output(2),
        ];
        let (r, out) = inner_plan(&inner).expect("inner shape");
        assert_eq!(out, 2);
        assert!(r.dec_ttl);
        assert_eq!(r.src, Some([0x0a, 0x58, 0x0a, 0x02, 0, 1]));
        assert!(
            inner_plan(&[
                DpAction::Policy(crate::policy::Dir::Ingress),
                DpAction::Output(2)
            ])
            .is_none()
        );
        assert!(inner_plan(&[DpAction::Normal]).is_none());
        assert!(inner_plan(&[DpAction::Output(2), DpAction::Output(3)]).is_none());
    }
}
