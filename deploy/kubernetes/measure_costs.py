#!/usr/bin/env python3
"""Measures what one simulated host and one VM cost, for sizing the chart (docs/kubernetes.md).

Runs the parties as the Kubernetes manifests do (one process each, mTLS control plane from
`misim certs issue`, the host with --no-vm-listeners and a shared IMDS listener), all on loopback with
ephemeral ports, then places N VMs on the host (private IPs 127.0.x.y, as pod IPs), gives each a
system-assigned identity, fetches one token per VM from its own source address, and prints each
process's resident memory (VmRSS) and CPU time before and after.

    deploy/kubernetes/measure_costs.py [--vms 100] [--misim target/debug/misim]

Only loopback is used; nothing is sent to 169.254.169.254.
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[:2]} exited {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def usage(pid: int) -> tuple[float, float]:
    """(resident MiB, CPU seconds) of a process."""
    rss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS:"))
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss / 1024, cpu


def token(port: int, source: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request("GET", "/metadata/identity/oauth2/token?api-version=2018-02-01"
                            "&resource=https%3A%2F%2Fmanagement.azure.com%2F", headers={"Metadata": "true"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=100)
    ap.add_argument("--misim", default=os.environ.get("MISIM_BIN", str(ROOT / "target" / "debug" / "misim")))
    a = ap.parse_args()
    misim = a.misim
    work = pathlib.Path(tempfile.mkdtemp(prefix="misim-measure-"))
    ports = {k: free_port() for k in ("arm", "rest", "aad", "aadg", "msrp", "agent", "imds", "ext")}
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(NO_COLOR="1", MISIM_LOG="warn", MISIM_ARM=f"http://127.0.0.1:{ports['arm']}")
    node = "node-1"
    for role, out in (("arm", "arm"), ("msrp", "msrp"), ("aad", "aad"), (f"host:{node}", "host")):
        subprocess.run([misim, "certs", "issue", "--ca-dir", str(work / "ca"), "--role", role,
                        "--out", str(work / out / "tls")], check=True, capture_output=True, env=env)
    cmds = {
        "aad": ["aad", f"--grpc-listen=127.0.0.1:{ports['aadg']}", f"--http-listen=127.0.0.1:{ports['aad']}"],
        "msrp": ["msrp", f"--listen=127.0.0.1:{ports['msrp']}", f"--aad-grpc=http://127.0.0.1:{ports['aadg']}"],
        "host": ["imds", f"--name={node}", f"--listen=127.0.0.1:{ports['agent']}",
                 f"--imds-listen=127.0.0.1:{ports['imds']}", f"--extension-listen=127.0.0.1:{ports['ext']}",
                 "--no-vm-listeners", "--no-throttle", f"--msrp=http://127.0.0.1:{ports['msrp']}",
                 f"--aad-url=http://127.0.0.1:{ports['aad']}"],
        "arm": ["arm", f"--grpc-listen=127.0.0.1:{ports['arm']}", f"--rest-listen=127.0.0.1:{ports['rest']}",
                f"--msrp=http://127.0.0.1:{ports['msrp']}", f"--aad-grpc=http://127.0.0.1:{ports['aadg']}",
                f"--aad-url=http://127.0.0.1:{ports['aad']}", f"--host={node}=http://127.0.0.1:{ports['agent']}"],
    }
    wait_for = {"aad": "aadg", "msrp": "msrp", "host": "agent", "arm": "arm"}
    procs = {}
    try:
        for party, cmd in cmds.items():
            d = work / party
            (d / "data").mkdir(parents=True, exist_ok=True)
            procs[party] = subprocess.Popen(
                [misim, *cmd, f"--data-dir={d / 'data'}", f"--control-tls-dir={d / 'tls'}"],
                stdout=open(d / "log", "w"), stderr=subprocess.STDOUT, env=env, cwd=d)
            wait_port(ports[wait_for[party]], procs[party])
        deadline = time.time() + 60  # ARM creates its default subscription once Azure AD answers
        while subprocess.run([misim, "account", "show"], capture_output=True, env=env).returncode != 0:
            if time.time() > deadline:
                raise SystemExit("ARM has no default subscription after 60 s")
            time.sleep(0.2)
        time.sleep(2)
        before = {p: usage(pr.pid) for p, pr in procs.items()}
        cli = lambda *args: subprocess.run([misim, *args], check=True, capture_output=True, env=env)  # noqa: E731
        cli("group", "create", "-n", "rg1")
        t0 = time.time()
        ips = [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(a.vms)]
        for i, ip in enumerate(ips):
            cli("vm", "create", "-g", "rg1", "-n", f"vm-{i}", "--host", node, "--private-ip", ip)
            cli("vm", "identity", "assign", "-g", "rg1", "-n", f"vm-{i}", "--identities", "system")
        setup = time.time() - t0
        t0 = time.time()
        pending = set(ips)
        while pending and time.time() - t0 < 600:
            pending = {ip for ip in pending if token(ports["imds"], ip) != 200}
            if pending:
                time.sleep(1)
        tokens = time.time() - t0
        time.sleep(2)
        after = {p: usage(pr.pid) for p, pr in procs.items()}
        print(json.dumps({
            "vms": a.vms, "tokens_ok": a.vms - len(pending), "binary": misim,
            "setup_seconds": round(setup, 1), "first_tokens_seconds": round(tokens, 1),
            "parties": {p: {"rss_mib_before": round(before[p][0], 1), "rss_mib_after": round(after[p][0], 1),
                            "rss_kib_per_vm": round((after[p][0] - before[p][0]) * 1024 / a.vms, 1),
                            "cpu_seconds": round(after[p][1] - before[p][1], 2)} for p in procs},
        }, indent=2))
    finally:
        for pr in procs.values():
            pr.terminate()
        for pr in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                pr.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
