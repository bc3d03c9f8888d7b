//! VXLAN through the worker on memory ports: node A encapsulates a pod's packet
//! towards node B's address, node B decapsulates it and delivers the inner frame;
//! wrong VNIs are dropped and counted; a DF packet too big for the tunnel gets an
//! ICMP fragmentation-needed from the gateway. No root needed.

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use vswitch::flow::parse::{NoPortNames, parse_flow};
use vswitch::flow::tables::FlowMod;
use vswitch::overlay::TunnelConfig;
use vswitch::port::memory::{MemoryPort, MemoryPortHandle};
use vswitch::{Datapath, DatapathConfig};
use vswitch_proto::{DropReason, PortKind};

const GW_A: [u8; 6] = [0x0a, 0x58, 10, 1, 0, 1];
const GW_B: [u8; 6] = [0x0a, 0x58, 10, 2, 0, 1];
const POD_A: [u8; 6] = [0x0a, 0x58, 10, 1, 0, 2];
const POD_B: [u8; 6] = [0x0a, 0x58, 10, 2, 0, 3];

fn udp(payload: usize, df: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(POD_A, GW_A)
        .ipv4([10, 1, 0, 2], [10, 2, 0, 3], 64)
        .udp(40000, 7);
    let mut out = Vec::new();
    b.write(&mut out, &vec![0x5a; payload]).expect("build");
    if !df {
        // etherparse sets DF; clear it and fix the header checksum.
        out[20] &= !0x40;
        let old = u16::from_be_bytes([out[24], out[25]]);
        let sum = u32::from(old) + 0x4000;
        let new = ((sum & 0xffff) + (sum >> 16)) as u16;
        out[24..26].copy_from_slice(&new.to_be_bytes());
    }
    out
}

struct Node {
    dp: Datapath,
    pod: MemoryPortHandle,
    up: MemoryPortHandle,
    pod_no: u32,
    up_no: u32,
}

impl Node {
    fn new(gw_ip: [u8; 4], gw_mac: [u8; 6]) -> Node {
        let mut dp = Datapath::new(DatapathConfig::in_process(1)).expect("datapath");
        let (p, pod) = MemoryPort::queue();
        let pod_no = dp
            .add_memory_port("pod", PortKind::Pod, p)
            .expect("pod")
            .port_no;
        let (u, up) = MemoryPort::queue();
        let up_no = dp
            .add_memory_port("up", PortKind::Uplink, u)
            .expect("up")
            .port_no;
        dp.tunnel().set(&TunnelConfig {
            mtu: 1500,
            gw_ip: u32::from_be_bytes(gw_ip),
            gw_mac,
            ..TunnelConfig::default()
        });
        Node {
            dp,
            pod,
            up,
            pod_no,
            up_no,
        }
    }

    fn flows(&mut self, text: &[String]) {
        let mods = text
            .iter()
            .flat_map(|t| parse_flow(t, &NoPortNames).expect("flow parses"))
            .map(FlowMod::Add)
            .collect();
        self.dp.flow_mods(mods).expect("bundle");
    }

    fn run(&mut self) {
        for _ in 0..4 {
            self.dp.run_once();
        }
    }

    fn drops(&self, r: DropReason) -> u64 {
        self.dp
            .stats(None)
            .expect("stats")
            .ports
            .iter()
            .map(|p| p.drops.get(r))
            .sum()
    }
}

fn pair() -> (Node, Node) {
    let mut a = Node::new([10, 1, 0, 1], GW_A);
    let mut b = Node::new([10, 2, 0, 1], GW_B);
    let (ap, au) = (a.pod_no, a.up_no);
    a.flows(&[format!(
        "table=0,priority=100,in_port={ap},ip,nw_dst=10.2.0.0/24 actions=\
         set_field:0a:58:0a:01:00:01->eth_src,set_field:0a:58:0a:02:00:01->eth_dst,dec_ttl,\
         set_field:1->tun_id,set_field:192.0.2.1->tun_src,set_field:192.0.2.2->tun_dst,\
         encap(vxlan),set_field:02:00:00:00:00:aa->eth_src,set_field:02:00:00:00:00:bb->eth_dst,\
         output:{au}"
    )]);
    let (bp, bu) = (b.pod_no, b.up_no);
    b.flows(&[
        format!(
            "table=0,priority=100,in_port={bu},udp,nw_src=192.0.2.1,nw_dst=192.0.2.2,tp_dst=4789 \
             actions=load:4->reg0,decap(table=30)"
        ),
        format!(
            "table=30,priority=100,reg0=4,ip,nw_dst=10.2.0.3 actions=\
             set_field:0a:58:0a:02:00:01->eth_src,set_field:0a:58:0a:02:00:03->eth_dst,dec_ttl,output:{bp}"
        ),
    ]);
    (a, b)
}

#[test]
fn pod_packet_crosses_the_tunnel_and_arrives_intact() {
    let (mut a, mut b) = pair();
    let sent = udp(100, true);
    assert!(a.pod.inject(&sent));
    a.run();
    let wire = a.up.take_output();
    assert_eq!(wire.len(), 1, "one encapsulated frame on A's uplink");
    let outer = &wire[0];
    assert_eq!(outer.len(), sent.len() + 50);
    assert_eq!(&outer[0..6], &[2, 0, 0, 0, 0, 0xbb], "next-hop MAC");
    assert_eq!(&outer[6..12], &[2, 0, 0, 0, 0, 0xaa], "uplink MAC");
    let p = SlicedPacket::from_ethernet(outer).expect("outer parses");
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("IPv4")
    };
    assert_eq!(ip.header().source(), [192, 0, 2, 1]);
    assert_eq!(ip.header().destination(), [192, 0, 2, 2]);
    assert!(ip.header().dont_fragment());
    let Some(TransportSlice::Udp(u)) = &p.transport else {
        panic!("UDP")
    };
    assert_eq!(u.destination_port(), 4789);
    let inner = &u.payload()[8..];
    assert_eq!(&inner[0..6], &GW_B, "inner dst: remote gateway scheme");
    assert_eq!(&inner[6..12], &GW_A);

    assert!(b.up.inject(outer));
    b.run();
    let got = b.pod.take_output();
    assert_eq!(got.len(), 1, "delivered to B's pod");
    let f = &got[0];
    assert_eq!(f.len(), sent.len());
    assert_eq!(&f[0..6], &POD_B);
    assert_eq!(&f[6..12], &GW_B);
    let p = SlicedPacket::from_ethernet(f).expect("inner parses");
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("IPv4")
    };
    assert_eq!(ip.header().ttl(), 62, "two routed hops");
    assert_eq!(
        ip.header().header_checksum(),
        ip.header().to_header().calc_header_checksum()
    );
    assert_eq!(&f[42..], &sent[42..], "payload intact");
    assert_eq!(b.drops(DropReason::TunnelRejected), 0);
}

#[test]
fn wrong_vni_is_rejected_and_counted() {
    let (mut a, mut b) = pair();
    assert!(a.pod.inject(&udp(64, true)));
    a.run();
    let mut outer = a.up.take_output().remove(0);
    outer[14 + 20 + 8 + 6] = 9; // VNI 1 -> 9
    assert!(b.up.inject(&outer));
    b.run();
    assert!(b.pod.take_output().is_empty());
    assert_eq!(b.drops(DropReason::TunnelRejected), 1);
}

#[test]
fn too_big_with_df_gets_frag_needed_without_df_is_counted() {
    let (mut a, _b) = pair();
    assert!(a.pod.inject(&udp(1472, true)));
    a.run();
    assert!(a.up.take_output().is_empty(), "nothing too big on the wire");
    let back = a.pod.take_output();
    assert_eq!(back.len(), 1, "ICMP back to the sender");
    let p = SlicedPacket::from_ethernet(&back[0]).expect("parses");
    assert_eq!(&back[0][0..6], &POD_A);
    assert_eq!(&back[0][6..12], &GW_A);
    let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
        panic!("ICMP")
    };
    match icmp.icmp_type() {
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu },
        ) => assert_eq!(next_hop_mtu, 1450),
        t => panic!("{t:?}"),
    }
    assert_eq!(a.drops(DropReason::TunnelTooBig), 1);
    assert!(a.pod.inject(&udp(1472, false)));
    a.run();
    assert!(a.pod.take_output().is_empty());
    assert_eq!(a.drops(DropReason::TunnelTooBig), 2);
    // Largest that fits: 1450-byte inner IP packet.
    assert!(a.pod.inject(&udp(1422, true)));
    a.run();
    assert_eq!(a.up.take_output()[0].len(), 1464 + 50);
}
