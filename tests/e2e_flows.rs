//! Flows added with vsctl steer real kernel traffic between pod namespaces: a
//! drop flow stops a ping, its removal restores it at once, a set_field rewrite is
//! seen by the receiving socket, trace explains the path, bad specs are refused.
//!
//!     cargo test --test e2e_flows

use std::time::Duration;
use vswitch_suite::topo::Topo;

fn ping_ok(t: &Topo, a: usize, b: usize) -> bool {
    t.pods[a]
        .ping(t.pods[b].ip, 3)
        .map(|r| r.all_answered())
        .unwrap_or(false)
}

#[test]
fn flows_steer_traffic() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let t = Topo::with_pods(2).expect("topology");
    t.add_all("xdp-skb").expect("add ports");
    t.ping_pair(0, 1).expect("bridge works before any flow");
    let (s0, s1) = (&t.pods[0].switch_if, &t.pods[1].switch_if);

    // A drop flow stops ICMP from pod 0, and only that.
    let drop = format!("table=0,priority=100,in_port={s0},icmp actions=drop");
    t.daemon.vsctl(&["add-flow", &drop]).expect("add-flow");
    let r = t.pods[0].ping(t.pods[1].ip, 3).expect("ping");
    assert_eq!(r.received, 0, "ping must be dropped: {r:?}");
    let dump = t.daemon.vsctl(&["dump-flows"]).expect("dump-flows");
    assert!(
        dump.contains("priority=100") && dump.contains("actions=drop"),
        "{dump}"
    );
    let flows = t
        .daemon
        .vsctl_json(&["dump-flows"])
        .expect("dump-flows json");
    let dropped = flows
        .as_array()
        .expect("array")
        .iter()
        .find(|f| f["priority"] == 100)
        .expect("drop flow listed");
    assert!(dropped["n_packets"].as_u64().unwrap_or(0) >= 3, "{dropped}");

    // Trace shows the table, the flow and the verdict.
    let spec = format!(
        "in_port={s0},icmp,nw_src={},nw_dst={}",
        t.pods[0].ip, t.pods[1].ip
    );
    let trace = t.daemon.vsctl(&["trace", &spec]).expect("trace");
    assert!(trace.contains("table 0"), "{trace}");
    assert!(trace.contains("actions=drop"), "{trace}");
    assert!(trace.contains("Verdict: drop"), "{trace}");
    let tj = t.daemon.vsctl_json(&["trace", &spec]).expect("trace json");
    assert_eq!(tj["verdict"], "drop", "{tj}");

    // Removing it restores the ping at once.
    let del = format!("table=0,in_port={s0},icmp");
    t.daemon.vsctl(&["del-flows", &del]).expect("del-flows");
    assert!(
        ping_ok(&t, 0, 1),
        "ping must work again right after del-flows"
    );

    // A rewrite: UDP to port 5000 from pod 0 arrives at port 6000 of pod 1.
    let rw = format!(
        "table=0,priority=100,in_port={s0},udp,tp_dst=5000 actions=set_field:6000->tp_dst,normal"
    );
    t.daemon
        .vsctl(&["add-flow", &rw])
        .expect("add-flow rewrite");
    let mut rx = t.pods[1]
        .command("socat")
        .args(["-u", "UDP4-RECV:6000", "STDOUT"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("socat receiver");
    std::thread::sleep(Duration::from_millis(300));
    let dst = format!("UDP4-SENDTO:{}:5000", t.pods[1].ip);
    let mut tx = t.pods[0]
        .command("socat")
        .args(["-u", "STDIN", &dst])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("socat sender");
    {
        use std::io::Write;
        let mut stdin = tx.stdin.take().expect("stdin");
        stdin.write_all(b"rewritten-hello\n").expect("send");
    }
    let _ = tx.wait();
    let got = vswitch_suite::wait_for(Duration::from_secs(5), || {
        use std::io::Read;
        let out = rx.stdout.as_mut()?;
        let mut buf = [0u8; 64];
        let n = out.read(&mut buf).ok()?;
        (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
    });
    let _ = rx.kill();
    let _ = rx.wait();
    assert_eq!(got.as_deref(), Some("rewritten-hello\n"));

    // Bad input: a clear error pointing at the problem, nothing changes.
    let before = t.daemon.vsctl(&["dump-flows"]).expect("dump");
    let e = t
        .daemon
        .vsctl(&["add-flow", "table=0,priority=5,frobnicate=1 actions=drop"])
        .expect_err("unknown field refused");
    let msg = e.to_string();
    assert!(msg.contains("frobnicate"), "{msg}");
    let e = t
        .daemon
        .vsctl(&["add-flow", "table=0,tcp,tp_dst=70000 actions=drop"])
        .expect_err("out of range refused");
    assert!(e.to_string().contains("70000"), "{e}");
    // A bundle from a file with one bad line applies nothing.
    let dir = vswitch_suite::TempDir::new("flows").expect("tempdir");
    let file = dir.path().join("bundle.flows");
    std::fs::write(
        &file,
        format!(
            "# two good flows and a bad one\n\
             table=0,priority=300,in_port={s0},udp,tp_dst=7 actions=drop\n\
             table=0,priority=300,in_port={s0},udp,tp_dst=9 actions=drop\n\
             table=0,priority=300,in_port={s0},udp,tp_dst=11 actions=goto_table:0\n"
        ),
    )
    .expect("write bundle");
    let e = t
        .daemon
        .vsctl(&["add-flows", &file.to_string_lossy()])
        .expect_err("bundle with a backward goto refused");
    assert!(e.to_string().contains("change 3"), "{e}");
    let after = t.daemon.vsctl(&["dump-flows"]).expect("dump");
    let strip = |s: &str| {
        s.lines()
            .map(|l| l.split("actions=").nth(1).unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&before), strip(&after));
    let _ = s1;
}
