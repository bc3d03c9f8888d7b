//! Hostile input: broken frames from a pod, and broken requests on the control socket.
//! The daemon must stay up, count the frames under the right drop reasons, answer every
//! broken request with an error, and keep forwarding and serving.
//!
//!     cargo test --test e2e_bad_input -- bad_frames_packet
//!     cargo test --test e2e_bad_input -- control_socket
//!
//! Needs root and built binaries (`cargo build`).

use serde_json::Value;
use std::time::Duration;
use vswitch_suite::control::{RawClient, error_code};
use vswitch_suite::daemon::{DaemonOpts, Vswitchd};
use vswitch_suite::frames;
use vswitch_suite::netns::Netns;
use vswitch_suite::pod::{PodOpts, tcp_transfer};
use vswitch_suite::topo::Topo;
use vswitch_suite::veth::disable_offloads;
use vswitch_suite::wait_for;

/// MTU of the switch ends (the default); the sending pod gets a larger one so that the
/// kernel lets it send frames the switch port must refuse.
const PORT_MTU: usize = 1500;

fn bad_frames(mode: &str) {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    // Pod 0 sends the junk. Its MTU (2000) lets it send frames a little over what the
    // switch port (1500) takes, and stays below what veth allows with native XDP on the
    // peer (about 3500), so xdp-drv can still attach. Offloads stay on so that it can
    // send GSO super-packets; they go off before the valid traffic at the end.
    let junk_pod = PodOpts {
        mtu: Some(2000),
        keep_offloads: true,
    };
    let mut t =
        Topo::new(&[junk_pod, PodOpts::default()], DaemonOpts::default()).expect("topology");
    t.add_all(mode).expect("add ports");
    t.ping_pair(0, 1).expect("ping before");
    let (a, b) = (&t.pods[0], &t.pods[1]);
    let (am, bm) = (a.mac_bytes().expect("mac"), b.mac_bytes().expect("mac"));
    let before = t.daemon.stats().expect("stats");

    // Each batch goes to pod 1's MAC (learned: unicast path) and to broadcast (flood path).
    let mut junk = Vec::new();
    for dst in [bm, [0xff; 6]] {
        for _ in 0..5 {
            junk.extend(
                frames::malformed_frames(dst, am, a.ip, b.ip)
                    .into_iter()
                    .map(|(_, f)| f),
            );
            junk.extend(frames::oversize_frames(dst, am, a.ip, b.ip, PORT_MTU));
        }
    }
    // Runts: the kernel refuses frames below 14 bytes on Ethernet; sent anyway in case a
    // future kernel passes them.
    junk.extend((0..14).map(|n| vec![0xee; n]));
    // Far beyond the veth peer's MTU: the kernel drops these before the switch.
    junk.push(frames::udp_frame(
        bm,
        am,
        a.ip,
        b.ip,
        (1, 2),
        &vec![0; 1950],
    ));
    junk.extend(frames::garbage_frames(0x5eed, 300));
    // A valid frame from a multicast source MAC.
    let mcast_src = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
    junk.extend((0..5).map(|_| frames::udp_frame(bm, mcast_src, a.ip, b.ip, (1, 2), &[0; 32])));
    let results = a.send_frames(junk).expect("send junk");
    let sent = results.iter().filter(|r| r.is_ok()).count();
    eprintln!(
        "{mode}: {sent} of {} junk frames accepted by the kernel",
        results.len()
    );
    assert!(
        sent > 300,
        "the kernel refused most junk frames: {results:?}"
    );
    // Oversized for real: 2986-byte GSO frames (2 x 1472 bytes of UDP payload), which
    // veth passes whatever the MTU.
    for _ in 0..5 {
        a.send_udp_gso(b.ip, 2 * 1472, 1472).expect("udp gso");
    }

    // Which of these a veth can deliver depends on the port mode (seen on kernel 6.18):
    // - xdp-skb: generic XDP sees raw frames: truncated VLAN tags (malformed) and GSO
    //   super-packets (oversize) both arrive;
    // - xdp-drv: native veth XDP sees truncated VLAN tags, but while a (non-frags) XDP
    //   program is attached veth turns GSO off on the peer and caps its MTU, so nothing
    //   oversized can arrive: the pod's kernel segments first;
    // - packet: the kernel drops a truncated VLAN tag before packet sockets see it
    //   (skb_vlan_untag), and the other broken frames are broken above L2; GSO
    //   super-packets arrive whole.
    // So each counter is required only where the kernel lets such frames through. In
    // xdp-skb mode an oversized frame may also be longer than the socket's UMEM frame;
    // then the kernel refuses it at the AF_XDP socket and the switch can only count it
    // as kernel_rx (from XDP_STATISTICS): accounted to the port all the same.
    let want_malformed = mode != "packet";
    let want_oversize = mode != "xdp-drv";
    let moved = wait_for(Duration::from_secs(5), || {
        let s = t.daemon.stats().ok()?;
        let d = |r: &str| {
            s.drops(&a.switch_if, r)
                .saturating_sub(before.drops(&a.switch_if, r))
        };
        let ok = d("bad_src_mac") > 0
            && (!want_malformed || d("malformed") > 0)
            && (!want_oversize || d("oversize") > 0 || (mode == "xdp-skb" && d("kernel_rx") > 0));
        ok.then_some(())
    });
    let now = t.daemon.stats().expect("stats");
    assert!(
        moved.is_some(),
        "{mode}: drops of {} did not move (want bad_src_mac, malformed: {want_malformed}, oversize: {want_oversize})\nbefore: {}\nafter: {}",
        a.switch_if,
        before.port(&a.switch_if).cloned().unwrap_or_default(),
        now.port(&a.switch_if).cloned().unwrap_or_default()
    );
    assert!(t.daemon.is_running(), "vswitchd died on junk frames");
    // Valid traffic still flows, both ways (offloads off first, as for any pod).
    disable_offloads(&t.pods[0].ns, &t.pods[0].ifname).expect("offloads off");
    t.ping_pair(0, 1).expect("ping after junk");
    t.ping_pair(1, 0).expect("ping after junk");
    tcp_transfer(&t.pods[0], &t.pods[1], 2 << 20).expect("tcp after junk");
    tcp_transfer(&t.pods[1], &t.pods[0], 2 << 20).expect("tcp after junk");
    assert!(t.daemon.is_running());
}

#[test]
fn bad_frames_xdp_drv() {
    bad_frames("xdp-drv");
}

#[test]
fn bad_frames_xdp_skb() {
    bad_frames("xdp-skb");
}

#[test]
fn bad_frames_packet() {
    bad_frames("packet");
}

/// Opens a connection and does the `hello` exchange.
fn hello(d: &Vswitchd) -> RawClient {
    let mut c = RawClient::connect(d.socket()).expect("connect");
    let r = c.request(r#"{"id":0,"op":"hello"}"#).expect("hello");
    assert!(r["result"]["protocol"].as_u64().is_some(), "hello: {r}");
    c
}

/// The daemon still answers a fresh client and `vsctl`.
fn still_serving(d: &mut Vswitchd, after: &str) {
    assert!(
        d.is_running(),
        "vswitchd died after {after}:\n{}",
        d.log_text()
    );
    let _ = hello(d);
    d.vsctl(&["show"])
        .unwrap_or_else(|e| panic!("vsctl show after {after}: {e}"));
}

#[test]
fn control_socket_survives_bad_requests() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let sw = Netns::new("sw").expect("namespace");
    let mut d = Vswitchd::start(&sw, DaemonOpts::default()).expect("vswitchd");

    // One bad line per connection, each after a good hello; the expected error code
    // (codes as in docs/control-protocol.md / vswitch_proto::ErrorCode).
    let cases: &[(&str, &[u8], &str)] = &[
        ("garbage", b"garbage\n", "parse_error"),
        (
            "unterminated json",
            b"{\"id\":1,\"op\":\"hello\"\n",
            "parse_error",
        ),
        ("not utf-8", b"\xff\xfe\xfd\n", "parse_error"),
        ("array", b"[1,2,3]\n", "invalid_request"),
        ("empty object", b"{}\n", "invalid_request"),
        ("no op", b"{\"id\":1}\n", "invalid_request"),
        (
            "op not a string",
            b"{\"id\":1,\"op\":7}\n",
            "invalid_request",
        ),
        (
            "unknown op",
            b"{\"id\":1,\"op\":\"frobnicate\"}\n",
            "unknown_op",
        ),
        (
            "add_port without params",
            b"{\"id\":2,\"op\":\"add_port\"}\n",
            "invalid_params",
        ),
        (
            "bad mode",
            b"{\"id\":3,\"op\":\"add_port\",\"params\":{\"name\":\"x\",\"mode\":\"turbo\"}}\n",
            "invalid_params",
        ),
        (
            "memory mode over the socket",
            b"{\"id\":4,\"op\":\"add_port\",\"params\":{\"name\":\"x\",\"mode\":\"memory\"}}\n",
            "",
        ),
        (
            "missing interface",
            b"{\"id\":5,\"op\":\"add_port\",\"params\":{\"name\":\"nosuchif0\"}}\n",
            "",
        ),
        (
            "deleting an unknown port",
            b"{\"id\":6,\"op\":\"del_port\",\"params\":{\"name\":\"nosuchif0\"}}\n",
            "",
        ),
        (
            "interface name with a slash",
            b"{\"id\":7,\"op\":\"add_port\",\"params\":{\"name\":\"../../etc\"}}\n",
            "",
        ),
    ];
    for (label, line, code) in cases {
        let mut c = hello(&d);
        c.send(line).expect("send");
        let r = c.read_response().unwrap_or_else(|e| panic!("{label}: {e}"));
        let got = error_code(&r).unwrap_or_else(|| panic!("{label}: expected an error, got {r}"));
        if !code.is_empty() {
            assert_eq!(got, *code, "{label}: {r}");
        }
        assert!(
            r["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{label}: no message: {r}"
        );
        still_serving(&mut d, label);
    }

    // The id comes back with the error when it could be read.
    let mut c = hello(&d);
    let r = c
        .request(r#"{"id":"abc","op":"nope"}"#)
        .expect("unknown op");
    assert_eq!(r["id"], Value::from("abc"), "{r}");

    // Several requests in one write are answered in order.
    let mut c = hello(&d);
    c.send(b"{\"id\":11,\"op\":\"hello\"}\nbad\n{\"id\":12,\"op\":\"list_ports\"}\n")
        .expect("send");
    let ids: Vec<Value> = (0..3)
        .map(|_| c.read_response().expect("pipelined")["id"].clone())
        .collect();
    assert_eq!(ids, vec![Value::from(11), Value::Null, Value::from(12)]);

    // A line over 1 MiB: an error (too_large); the daemon may then close the connection,
    // so our write may fail half way.
    let mut c = hello(&d);
    let mut big = vec![b'x'; (1 << 20) + (512 << 10)];
    big.push(b'\n');
    let _ = c.send(&big);
    match c.read_line().expect("read after oversized line") {
        Some(line) => {
            let r: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(error_code(&r), Some("too_large"), "{r}");
        }
        None => panic!("oversized line: connection closed without an error response"),
    }
    still_serving(&mut d, "an oversized line");

    // Half a request, then the client goes away.
    let mut c = hello(&d);
    c.send(br#"{"id":1,"op":"hel"#).expect("send half");
    drop(c);
    still_serving(&mut d, "a half request and disconnect");

    // Half a request, then EOF on the write side: no response needed, no crash.
    let mut c = hello(&d);
    c.send(br#"{"id":1,"op":"#).expect("send half");
    c.shutdown_write().expect("shutdown");
    let _ = c.read_line();
    still_serving(&mut d, "a half request and EOF");

    // Idle clients do not block others.
    let idle: Vec<RawClient> = (0..32)
        .map(|_| RawClient::connect(d.socket()).expect("connect"))
        .collect();
    still_serving(&mut d, "32 idle connections");
    drop(idle);

    // Clients that vanish while the daemon is answering.
    for _ in 0..20 {
        let mut c = RawClient::connect(d.socket()).expect("connect");
        let _ = c.send(b"{\"id\":1,\"op\":\"stats\"}\n{\"id\":2,\"op\":\"list_ports\"}\n");
    }
    still_serving(&mut d, "clients that left without reading");
    let status = d.stop().expect("SIGTERM");
    assert!(status.success(), "exit status after the abuse: {status:?}");
}
