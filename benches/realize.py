#!/usr/bin/env python3
"""Realisation latency at scale, end to end through the agent's metric.

vswitchd (no ports) fed by `vswitch-agent --manifests`
holding either

  services: 10,000 ClusterIP services x 10 endpoints (EndpointSlices; endpoints
            on another node, so no pods are needed), or
  policy:   1,000 local pods and 10,000 NetworkPolicies (each selects the pods of
            one of 100 `app` labels and admits one of 50 `role` labels on one of
            20 ports),

then one change at a time, written to a small manifest file of its own:

  services: one endpoint of one service replaced; one service added (and
            removed again);
  policy:   one policy's port changed; one pod's labels changed (it moves to
            other policies' selections and address groups).

For each change the agent's `vswitch_agent_realization_seconds` histogram (from
the agent publishing the new state to vswitchd acknowledging it: diff, request,
apply, persist, realise) and `vswitch_agent_daemon_realize_seconds` (vswitchd's
own `realize_us`) grow by one observation; the script prints each and the
medians. vswitchd, the agent and its metrics address run in a network namespace
of their own. The agent's manifest poll (about a second) is before the clock starts.

    sudo benches/realize.py                      # both scenarios, REPS=7
    sudo SCENARIO=policy REPS=11 benches/realize.py

Binaries: $VSWITCH_BIN_DIR (default $CARGO_TARGET_DIR/release) for vswitchd and
vswitch-agent: cargo build --release -p vswitch -p vswitch-control.
"""

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.environ.get("VSWITCH_BIN_DIR", os.path.join(TARGET, "release"))
REPS = int(os.environ.get("REPS", "7"))
SCENARIOS = os.environ.get("SCENARIO", "services policy").split()
SERVICES = int(os.environ.get("SERVICES", "10000"))
ENDPOINTS = 10
POLICIES = int(os.environ.get("POLICIES", "10000"))
PODS = int(os.environ.get("PODS", "1000"))
METRICS = "127.0.0.1:%d" % (19400 + os.getpid() % 500)

NODE = """apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.250.0.0/16}
status: {addresses: [{type: InternalIP, address: 192.0.2.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
spec: {podCIDR: 10.251.0.0/16}
status: {addresses: [{type: InternalIP, address: 192.0.2.2}]}
---
"""


def service(s):
    ip = "172.%d.%d.%d" % (16 + (s >> 16), (s >> 8) & 255, s & 255)
    return (
        "apiVersion: v1\nkind: Service\nmetadata: {name: svc-%d, namespace: bench}\n"
        "spec: {clusterIP: %s, ports: [{name: http, port: 80, targetPort: 8080}]}\n---\n"
        % (s, ip)
    )


def ep_ip(s, i):
    n = s * ENDPOINTS + i
    return "10.%d.%d.%d" % (64 + (n >> 16), (n >> 8) & 255, n & 255)


def slice_(s, ips):
    eps = ", ".join(
        "{addresses: [%s], nodeName: node-b, conditions: {ready: true}}" % ip for ip in ips
    )
    return (
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        "metadata: {name: svc-%d-1, namespace: bench, labels: {kubernetes.io/service-name: svc-%d}}\n"
        "addressType: IPv4\nendpoints: [%s]\nports: [{name: http, port: 8080}]\n---\n"
        % (s, s, eps)
    )


def pod(j, app, role):
    ip = "10.250.%d.%d" % (1 + j // 250, 1 + j % 250)
    return (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p-%d, namespace: pol, uid: u-%d, "
        "labels: {app: a%d, role: r%d}}\nspec: {nodeName: node-a, containers: "
        "[{name: c, image: x}]}\nstatus: {phase: Running, podIP: %s, podIPs: [{ip: %s}]}\n---\n"
        % (j, j, app, role, ip, ip)
    )


def policy(i, port=None):
    port = port if port is not None else 80 + i % 20
    return (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: np-%d, namespace: pol}\nspec: {podSelector: {matchLabels: {app: a%d}}, "
        "policyTypes: [Ingress], ingress: [{from: [{podSelector: {matchLabels: {role: r%d}}}], "
        "ports: [{port: %d}]}]}\n---\n" % (i, i % 100, i % 50, port)
    )


def sh(*a, **kw):
    return subprocess.run(a, check=True, **kw)


def metrics():
    with urllib.request.urlopen("http://%s/metrics" % METRICS, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for name in ("realization_seconds", "daemon_realize_seconds"):
        for part in ("sum", "count"):
            m = re.search(r"^vswitch_agent_%s_%s (\S+)$" % (name, part), text, re.M)
            out[name + "_" + part] = float(m.group(1)) if m else 0.0
    m = re.search(r"^vswitch_agent_synced_generation (\S+)$", text, re.M)
    out["generation"] = float(m.group(1)) if m else 0.0
    return out


def wait_sync(before, timeout=600):
    """Waits for the next realisation observation; returns (e2e s, daemon s)."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            m = metrics()
        except OSError:
            m = None
        if m and m["realization_seconds_count"] > before["realization_seconds_count"]:
            # The daemon histogram is observed before the e2e one (same thread).
            n = m["realization_seconds_count"] - before["realization_seconds_count"]
            if n != 1:
                raise SystemExit("more than one realisation per change (%d)" % n)
            e2e = m["realization_seconds_sum"] - before["realization_seconds_sum"]
            dn = m["daemon_realize_seconds_count"] - before["daemon_realize_seconds_count"]
            dd = m["daemon_realize_seconds_sum"] - before["daemon_realize_seconds_sum"]
            return e2e, (dd / dn if dn else float("nan")), m
        time.sleep(0.02)
    raise SystemExit("no realisation within %d s" % timeout)


def change(path, text, label, results):
    before = metrics()
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)
    e2e, daemon, _ = wait_sync(before)
    results.setdefault(label, []).append((e2e, daemon))
    print("  %-34s agent %8.2f ms   vswitchd %8.2f ms" % (label, e2e * 1e3, daemon * 1e3), flush=True)


def run(scenario, work):
    mdir = os.path.join(work, "m")
    os.makedirs(mdir)
    big = os.path.join(mdir, "00-big.yaml")
    small = os.path.join(mdir, "50-change.yaml")
    extra = os.path.join(mdir, "60-extra.yaml")
    with open(big, "w") as f:
        f.write(NODE)
        if scenario == "services":
            for s in range(1, SERVICES):
                f.write(service(s))
                f.write(slice_(s, [ep_ip(s, i) for i in range(ENDPOINTS)]))
        else:
            f.write("apiVersion: v1\nkind: Namespace\nmetadata: {name: pol}\n---\n")
            for j in range(1, PODS):
                f.write(pod(j, j % 100, j % 50))
            for i in range(1, POLICIES):
                f.write(policy(i))
    # The one object that changes, in a file of its own (service 0 / pod 0 /
    # policy 0), so the agent re-reads only that file.
    eps0 = [ep_ip(0, i) for i in range(ENDPOINTS)]
    if scenario == "services":
        first = service(0) + slice_(0, eps0)
    else:
        first = pod(0, 0, 0) + policy(0)
    with open(small, "w") as f:
        f.write(first)
    with open(extra, "w") as f:
        f.write("")
    d = os.path.join(work, "d")
    os.makedirs(os.path.join(d, "state"))
    procs = []
    try:
        vlog = open(os.path.join(d, "vswitchd.log"), "w")
        procs.append(
            subprocess.Popen(
                [os.path.join(BIN, "vswitchd"), "--socket",
                 os.path.join(d, "sock"), "--state-dir", os.path.join(d, "state")],
                stdout=vlog, stderr=subprocess.STDOUT,
            )
        )
        for _ in range(100):
            if os.path.exists(os.path.join(d, "sock")):
                break
            time.sleep(0.1)
        alog = open(os.path.join(d, "agent.log"), "w")
        t0 = time.time()
        procs.append(
            subprocess.Popen(
                [os.path.join(BIN, "vswitch-agent"), "--socket", os.path.join(d, "sock"),
                 "--node-name", "node-a", "--manifests", mdir, "--metrics-addr", METRICS],
                stdout=alog, stderr=subprocess.STDOUT, env=dict(os.environ, RUST_LOG="warn"),
            )
        )
        while True:
            try:
                m = metrics()
                if m["generation"] > 0:
                    break
            except OSError:
                pass
            if time.time() - t0 > 900:
                raise SystemExit("initial sync did not finish")
            time.sleep(0.2)
        print("%s: initial full sync done %.1f s after the agent started" % (scenario, time.time() - t0), flush=True)
        time.sleep(2)
        results = {}
        labels = (0, 0)  # pod 0's (app, role) as last written
        for r in range(REPS):
            if scenario == "services":
                eps = list(eps0)
                eps[3] = "10.99.0.%d" % (r + 1)  # one endpoint replaced
                change(small, service(0) + slice_(0, eps), "one endpoint replaced", results)
                change(extra, service(SERVICES + r) + slice_(SERVICES + r, ["10.98.0.%d" % (r + 1)]),
                       "one service added", results)
                change(extra, "", "one service removed", results)
            else:
                # Only the policy changes (the pod keeps its labels), then only
                # the pod's labels (toggled, so every write is a change).
                change(small, pod(0, *labels) + policy(0, 9000 + r), "one policy changed (port)", results)
                labels = (1, 1) if labels == (0, 0) else (0, 0)
                change(small, pod(0, *labels) + policy(0, 9000 + r), "one pod relabelled", results)
        print("%s, medians over %d:" % (scenario, REPS))
        for label, xs in results.items():
            e = statistics.median(x[0] for x in xs)
            dd = statistics.median(x[1] for x in xs)
            print("  %-34s agent %8.2f ms   vswitchd %8.2f ms   (agent max %.2f ms)"
                  % (label, e * 1e3, dd * 1e3, max(x[0] for x in xs) * 1e3), flush=True)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    if os.geteuid() != 0:
        raise SystemExit("realize.py: run as root")
    if not os.environ.get("VSBR_INNER"):
        # Everything (vswitchd, the agent and its metrics address) runs in a
        # namespace of its own, removed afterwards.
        ns = "vsbr%d" % os.getpid()
        sh("ip", "netns", "add", ns)
        try:
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            return subprocess.run(
                ["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__)],
                env=dict(os.environ, VSBR_INNER="1"),
            ).returncode
        finally:
            subprocess.run(["ip", "netns", "del", ns])
    for b in ("vswitchd", "vswitch-agent"):
        if not os.access(os.path.join(BIN, b), os.X_OK):
            raise SystemExit("realize.py: %s missing (cargo build --release -p vswitch -p vswitch-control)" % os.path.join(BIN, b))
    for scenario in SCENARIOS:
        work = tempfile.mkdtemp(prefix="vsbr.")
        try:
            run(scenario, work)
        finally:
            if os.environ.get("KEEP"):
                print("kept", work)
            else:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
