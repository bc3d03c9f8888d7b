//! `vsctl capture`: frames on a port land in a pcap file `tcpdump -r` reads, drops
//! come with their reason, bad requests get clear errors.
//!
//!     cargo test --test e2e_capture

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vswitch_suite::topo::Topo;

/// Runs `vsctl capture ARGS` in the background while `traffic` runs; its stdout.
fn capture_while(t: &Topo, args: &[&str], traffic: impl FnOnce()) -> String {
    let vsctl = vswitch_suite::daemon::binary("vsctl").expect("vsctl");
    let mut child = Command::new(vsctl)
        .arg("--socket")
        .arg(t.daemon.socket())
        .arg("capture")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vsctl capture");
    std::thread::sleep(Duration::from_millis(500));
    traffic();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if child.try_wait().ok().flatten().is_none() {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    }
    let out = child.wait_with_output().expect("vsctl output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "vsctl capture failed: {stderr}\n{stdout}"
    );
    stdout
}

fn tcpdump(file: &std::path::Path) -> String {
    let out = Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(file)
        .output()
        .expect("tcpdump (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "tcpdump -r failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn capture_writes_pcap_with_drops() {
    let Some(_env) = vswitch_suite::e2e() else {
        return;
    };
    let t = Topo::with_pods(2).expect("topology");
    t.add_all("xdp-skb").expect("add ports");
    t.ping_pair(0, 1).expect("bridge works");
    let (s0, s1) = (t.pods[0].switch_if.clone(), t.pods[1].switch_if.clone());
    let dir = vswitch_suite::TempDir::new("capture").expect("tempdir");

    // Pings from pod 0 to pod 1: on pod 1's port, requests go out, replies come in.
    let file = dir.path().join("icmp.pcap");
    let f = file.to_string_lossy().into_owned();
    let listing = capture_while(
        &t,
        &[&s1, "-w", &f, "--count", "6", "--filter", "icmp"],
        || {
            let r = t.pods[0].ping(t.pods[1].ip, 3).expect("ping");
            assert!(r.all_answered(), "{r:?}");
        },
    );
    assert!(listing.contains("6 packets captured"), "{listing}");
    let text = tcpdump(&file);
    let (ip0, ip1) = (t.pods[0].ip, t.pods[1].ip);
    let req = format!("{ip0} > {ip1}: ICMP echo request");
    let rep = format!("{ip1} > {ip0}: ICMP echo reply");
    assert_eq!(
        text.lines().filter(|l| l.contains(&req)).count(),
        3,
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains(&rep)).count(),
        3,
        "{text}"
    );
    assert_eq!(text.lines().count(), 6, "{text}");

    // A drop flow on pod 0's port: --drops shows each ping dropped, with the reason.
    let drop = format!("table=0,priority=100,in_port={s0},icmp actions=drop");
    t.daemon.vsctl(&["add-flow", &drop]).expect("add-flow");
    let file = dir.path().join("drops.pcap");
    let f = file.to_string_lossy().into_owned();
    let listing = capture_while(
        &t,
        &[&s0, "-w", &f, "--drops", "--count", "6", "--filter", "icmp"],
        || {
            let r = t.pods[0].ping(t.pods[1].ip, 3).expect("ping");
            assert_eq!(r.received, 0, "{r:?}");
        },
    );
    let drops: Vec<&str> = listing.lines().filter(|l| l.contains(" drop ")).collect();
    assert_eq!(drops.len(), 3, "{listing}");
    assert!(
        drops.iter().all(|l| l.contains("reason=pipeline")),
        "{listing}"
    );
    assert!(listing.contains("(3 drops, 0 lost)"), "{listing}");
    let text = tcpdump(&file);
    assert_eq!(
        text.lines().filter(|l| l.contains(&req)).count(),
        6,
        "{text}"
    );

    // Bad requests: clear errors, nothing armed.
    let e = t
        .daemon
        .vsctl(&["capture", "no-such-port", "-w", &f])
        .expect_err("unknown port refused");
    assert!(
        e.to_string().contains("no port named 'no-such-port'"),
        "{e}"
    );
    let e = t
        .daemon
        .vsctl(&["capture", &s0, "-w", &f, "--filter", "icmp,frobnicate=1"])
        .expect_err("bad filter refused");
    assert!(e.to_string().contains("frobnicate"), "{e}");
    let e = t
        .daemon
        .vsctl(&["capture", &s0, "-w", &f, "--filter", "host 10.0.0.1"])
        .expect_err("ambiguous filter refused");
    assert!(e.to_string().contains("src host"), "{e}");
    // The refused captures left nothing armed: a new one starts.
    let file = dir.path().join("again.pcap");
    let f = file.to_string_lossy().into_owned();
    let listing = capture_while(&t, &[&s1, "-w", &f, "--count", "1"], || {
        let _ = t.pods[1].ping(t.pods[0].ip, 1);
    });
    assert!(listing.contains("1 packets captured"), "{listing}");
    let _ = s1;
}
