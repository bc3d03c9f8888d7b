//! Checks the test support library itself, without vswitchd: pods joined by a Linux
//! bridge in the switch namespace must ping, move TCP data and accept raw frames. When
//! an end-to-end test fails, this tells whether the harness or the switch is at fault.
//!
//!     cargo test --test support_selftest

use std::time::Duration;
use vswitch_suite::netns::Netns;
use vswitch_suite::pod::{Pod, PodOpts, pod_ip, tcp_transfer};
use vswitch_suite::{frames, wait_for};

/// A kernel bridge standing in for the switch: enslaves the switch ends of the pods.
fn bridge(sw: &Netns, pods: &[&Pod]) {
    sw.ip(&["link", "add", "br0", "type", "bridge"])
        .expect("add bridge");
    sw.ip(&["link", "set", "br0", "up"]).expect("bridge up");
    for p in pods {
        sw.ip(&["link", "set", &p.switch_if, "master", "br0"])
            .expect("enslave");
    }
}

#[test]
fn pods_talk_through_a_kernel_bridge() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let sw = Netns::new("sw").expect("switch namespace");
    let a = Pod::new(&sw, pod_ip(1), PodOpts::default()).expect("pod a");
    let b = Pod::new(
        &sw,
        pod_ip(2),
        PodOpts {
            mtu: Some(2000),
            ..PodOpts::default()
        },
    )
    .expect("pod b");
    assert!(a.switch_if.len() <= 15 && a.ifname.len() <= 15);
    assert!(sw.links().expect("links").contains(&a.switch_if));
    bridge(&sw, &[&a, &b]);

    a.ping_until(b.ip, Duration::from_secs(10)).expect("a -> b");
    let r = b.ping(a.ip, 3).expect("b -> a");
    assert!(r.all_answered(), "{r:?}");
    let (lladdr, state) = a.neighbor(b.ip).expect("neigh").expect("an entry for b");
    assert_eq!(lladdr, b.mac, "state {state}");

    let t = tcp_transfer(&a, &b, 4 << 20).expect("tcp a -> b");
    assert_eq!(t.bytes, 4 << 20);

    // Raw frames: valid ones arrive (bridge counts them), runts are refused by the kernel.
    let (am, bm) = (a.mac_bytes().expect("mac"), b.mac_bytes().expect("mac"));
    let (before, _) = b.ns.link_packets(&b.ifname).expect("counters");
    let good = frames::udp_frame(bm, am, a.ip, b.ip, (1, 9), &[0; 64]);
    let res = a
        .send_frames(vec![good.clone(), good, vec![0u8; 10]])
        .expect("send");
    assert_eq!(res[0], Ok(64 + 42));
    assert!(res[2].is_err(), "a 10-byte frame must be refused: {res:?}");
    let after = wait_for(Duration::from_secs(2), || {
        let (rx, _) = b.ns.link_packets(&b.ifname).ok()?;
        (rx >= before + 2).then_some(rx)
    });
    assert!(after.is_some(), "raw frames did not reach b");

    // A flood runs in the background and is reaped when the namespace goes.
    let mut flood = a.flood(b.ip, 1).expect("flood");
    let st = flood.wait().expect("wait flood");
    assert!(st.success(), "{st:?}");

    // The veth disappears with the pod; nothing is left in the switch namespace.
    let sw_if = a.switch_if.clone();
    a.remove_link().expect("remove");
    assert!(!sw.links().expect("links").contains(&sw_if));
    let a_ns = a.ns.name().to_string();
    drop(a);
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&a_ns));
}

#[test]
fn namespace_threads_see_their_namespace() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let ns = Netns::new("probe").expect("ns");
    // Inside a fresh namespace only `lo` exists.
    let n = ns
        .enter(|| {
            let c = std::ffi::CString::new("lo").map_err(|e| vswitch_suite::err!("{e}"))?;
            // SAFETY: valid C string.
            Ok(unsafe { libc::if_nametoindex(c.as_ptr()) })
        })
        .expect("enter");
    assert_eq!(n, 1);
    assert_eq!(ns.links().expect("links"), vec!["lo".to_string()]);
    assert!(ns.run(&["false"]).is_err());
}
