//! The learning bridge, end to end on memory ports: frames in, frames out, no root.

use std::time::Duration;
use vswitch::port::memory::{MemoryPort, MemoryPortHandle};
use vswitch::{Datapath, DatapathConfig};
use vswitch_proto::{DropReason, PortKind};

fn mac(last: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, last]
}

/// An Ethernet frame from `src` to `dst` with a recognisable payload.
fn frame(dst: [u8; 6], src: [u8; 6], tag: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend(std::iter::repeat_n(tag, 46));
    f
}

struct Switch {
    dp: Datapath,
    ports: Vec<MemoryPortHandle>,
}

impl Switch {
    fn new(cfg: DatapathConfig, n: usize) -> Switch {
        let mut dp = Datapath::new(cfg).expect("datapath");
        let ports = (0..n)
            .map(|i| {
                let (port, handle) = MemoryPort::queue();
                let w = i % dp.config().workers.len();
                dp.add_memory_port_on(&format!("p{i}"), PortKind::Pod, port, w)
                    .expect("add");
                handle
            })
            .collect();
        Switch { dp, ports }
    }

    fn with_ports(n: usize) -> Switch {
        Switch::new(DatapathConfig::in_process(1), n)
    }

    /// Injects one frame on port `i` and runs the workers until quiet.
    fn send(&mut self, i: usize, f: &[u8]) {
        assert!(self.ports[i].inject(f));
        self.settle();
    }

    fn settle(&mut self) {
        for _ in 0..8 {
            self.dp.run_once();
        }
    }

    fn outputs(&self) -> Vec<Vec<Vec<u8>>> {
        self.ports.iter().map(|p| p.take_output()).collect()
    }

    fn drops(&self, port: &str, r: DropReason) -> u64 {
        self.dp.stats(Some(port)).expect("stats").ports[0]
            .drops
            .get(r)
    }
}

#[test]
fn unknown_unicast_floods_then_learned_mac_is_unicast() {
    let mut sw = Switch::with_ports(3);
    let a_to_b = frame(mac(2), mac(1), 1);
    sw.send(0, &a_to_b);
    let out = sw.outputs();
    assert!(out[0].is_empty(), "never back out of the ingress port");
    assert_eq!(out[1], vec![a_to_b.clone()]);
    assert_eq!(out[2], vec![a_to_b.clone()]);

    // B answers: A is known, so only port 0 gets it.
    let b_to_a = frame(mac(1), mac(2), 2);
    sw.send(1, &b_to_a);
    let out = sw.outputs();
    assert_eq!(out[0], vec![b_to_a]);
    assert!(out[1].is_empty() && out[2].is_empty());

    // And now A to B is unicast too.
    sw.send(0, &a_to_b);
    let out = sw.outputs();
    assert_eq!(out[1], vec![a_to_b]);
    assert!(out[0].is_empty() && out[2].is_empty());

    let st = sw.dp.stats(None).expect("stats");
    assert_eq!(st.switch.mac_learned, 2);
    assert_eq!(st.switch.flooded, 1);
    assert_eq!(st.ports[0].rx_packets, 2);
    assert_eq!(st.ports[1].tx_packets, 2);
}

#[test]
fn broadcast_and_multicast_flood_to_all_but_ingress() {
    let mut sw = Switch::with_ports(4);
    sw.send(0, &frame(mac(9), mac(1), 0)); // learn nothing useful for dst
    sw.outputs();
    for dst in [
        [0xff; 6],
        [0x01, 0x00, 0x5e, 0, 0, 1],
        [0x33, 0x33, 0, 0, 0, 1],
    ] {
        let f = frame(dst, mac(1), 3);
        sw.send(0, &f);
        let out = sw.outputs();
        assert!(out[0].is_empty());
        for o in &out[1..] {
            assert_eq!(o, &vec![f.clone()]);
        }
    }
}

#[test]
fn split_horizon_drops_frames_for_the_ingress_port() {
    let mut sw = Switch::with_ports(2);
    sw.send(0, &frame([0xff; 6], mac(1), 0)); // A on port 0
    sw.send(0, &frame([0xff; 6], mac(3), 0)); // C on port 0 too (behind a hub)
    sw.outputs();
    sw.send(0, &frame(mac(3), mac(1), 1));
    let out = sw.outputs();
    assert!(out.iter().all(Vec::is_empty));
    assert_eq!(sw.drops("p0", DropReason::SamePort), 1);
}

#[test]
fn a_moved_mac_follows_its_new_port() {
    let mut sw = Switch::with_ports(3);
    sw.send(0, &frame([0xff; 6], mac(1), 0));
    sw.send(1, &frame([0xff; 6], mac(1), 0)); // A moved to port 1
    sw.outputs();
    let f = frame(mac(1), mac(2), 5);
    sw.send(2, &f);
    let out = sw.outputs();
    assert_eq!(out[1], vec![f]);
    assert!(out[0].is_empty());
    assert_eq!(sw.dp.stats(None).expect("stats").switch.mac_moved, 1);
}

#[test]
fn entries_age_out_and_traffic_floods_again() {
    let cfg = DatapathConfig {
        mac_aging: Duration::from_millis(50),
        ..DatapathConfig::in_process(1)
    };
    let mut sw = Switch::new(cfg, 3);
    sw.send(1, &frame([0xff; 6], mac(2), 0));
    sw.outputs();
    let f = frame(mac(2), mac(1), 1);
    sw.send(0, &f);
    assert_eq!(sw.outputs()[2].len(), 0, "known MAC: unicast");
    std::thread::sleep(Duration::from_millis(400));
    sw.send(0, &f);
    let out = sw.outputs();
    assert_eq!(out[1], vec![f.clone()]);
    assert_eq!(out[2], vec![f], "aged out: flooded again");
    assert!(sw.dp.stats(None).expect("stats").switch.mac_aged >= 1);
}

#[test]
fn full_table_stops_learning_and_counts() {
    let cfg = DatapathConfig {
        mac_capacity: 4,
        ..DatapathConfig::in_process(1)
    };
    let mut sw = Switch::new(cfg, 2);
    for i in 1..=6 {
        sw.send(0, &frame([0xff; 6], mac(i), 0));
    }
    sw.outputs();
    let st = sw.dp.stats(None).expect("stats");
    assert_eq!(st.switch.mac_learned, 4);
    assert_eq!(st.switch.mac_table_full, 2);
    assert_eq!(sw.dp.inline_worker(0).expect("worker").mac_table().len(), 4);
    // A MAC that did not fit is still reachable by flooding.
    let f = frame(mac(6), mac(7), 1);
    sw.send(1, &f);
    assert_eq!(sw.outputs()[0], vec![f]);
    // The first four are still unicast.
    let f = frame(mac(1), mac(7), 2);
    sw.send(1, &f);
    assert_eq!(sw.outputs()[0], vec![f]);
}

#[test]
fn malformed_and_bad_frames_are_counted_and_dropped() {
    let mut sw = Switch::with_ports(2);
    sw.send(0, &[]);
    sw.send(0, &[0xff; 6]);
    sw.send(0, &[0x02; 13]);
    sw.send(0, &frame([0xff; 6], [0xff; 6], 0)); // broadcast source
    let mut vlan_cut = frame([0xff; 6], mac(1), 0);
    vlan_cut.truncate(16);
    vlan_cut[12] = 0x81;
    vlan_cut[13] = 0x00;
    sw.send(0, &vlan_cut);
    let mut big = frame([0xff; 6], mac(1), 0);
    big.resize(1600, 0xab);
    sw.send(0, &big);
    let garbage: Vec<u8> = (0..200u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    sw.send(0, &garbage);
    let out = sw.outputs();
    // Only the garbage may pass (it parses as a frame with some source); nothing else.
    assert!(out[1].len() <= 1);
    assert_eq!(sw.drops("p0", DropReason::Malformed), 4);
    assert_eq!(sw.drops("p0", DropReason::BadSrcMac), 1);
    assert_eq!(sw.drops("p0", DropReason::Oversize), 1);
    // Valid traffic still flows.
    let f = frame(mac(2), mac(1), 9);
    sw.send(0, &f);
    assert_eq!(sw.outputs()[1], vec![f]);
}

#[test]
fn flood_with_no_other_port_is_no_route() {
    let mut sw = Switch::with_ports(1);
    sw.send(0, &frame([0xff; 6], mac(1), 0));
    assert_eq!(sw.drops("p0", DropReason::NoRoute), 1);
}

#[test]
fn frames_cross_workers_and_learning_is_shared() {
    // p0, p2 on worker 0; p1, p3 on worker 1.
    let mut sw = Switch::new(DatapathConfig::in_process(2), 4);
    let f = frame([0xff; 6], mac(1), 1);
    sw.send(0, &f);
    let out = sw.outputs();
    assert!(out[0].is_empty());
    for o in &out[1..] {
        assert_eq!(o, &vec![f.clone()], "flood reaches ports of both workers");
    }
    // B on p1 (worker 1) answers A (learned on worker 0): worker 1 knows A from
    // worker 0's announcement, so it is unicast across workers.
    let g = frame(mac(1), mac(2), 2);
    sw.send(1, &g);
    let out = sw.outputs();
    assert_eq!(out[0], vec![g]);
    assert!(out[2].is_empty() && out[3].is_empty());
    assert_eq!(sw.dp.stats(None).expect("stats").switch.flooded, 1);
}

#[test]
fn deleted_port_stops_receiving_and_its_macs_are_forgotten() {
    let mut sw = Switch::with_ports(3);
    sw.send(1, &frame([0xff; 6], mac(2), 0));
    sw.outputs();
    sw.dp.del_port("p1").expect("del");
    let f = frame(mac(2), mac(1), 1);
    sw.send(0, &f);
    let out = sw.outputs();
    assert!(out[1].is_empty());
    assert_eq!(
        out[2],
        vec![f],
        "unknown again: flooded to the remaining port"
    );
    assert!(sw.dp.del_port("p1").is_err());
}

#[test]
fn no_frame_leaks_from_the_pool() {
    let mut sw = Switch::with_ports(3);
    let start = sw.dp.inline_worker(0).expect("worker").pool_available();
    for i in 0..2000u32 {
        let f = frame(
            if i % 3 == 0 {
                [0xff; 6]
            } else {
                mac((i % 3) as u8)
            },
            mac((i % 5 + 1) as u8),
            i as u8,
        );
        sw.ports[(i % 3) as usize].inject(&f);
        if i % 64 == 0 {
            sw.settle();
            sw.outputs();
        }
    }
    sw.settle();
    sw.outputs();
    assert_eq!(
        sw.dp.inline_worker(0).expect("worker").pool_available(),
        start
    );
}
