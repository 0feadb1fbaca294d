"""Observability of a real `misim up` (its own, started with --otlp-endpoint and --log-format json):
the README walkthrough's seven steps, then `misim trace show --last --format mermaid` draws them,
`/metrics` shows the counters, a local OTLP/HTTP collector stand-in (loopback) receives the spans,
and the JSON log lines of a flow carry its trace ID."""
import http.server
import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import MISIM

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Collector(http.server.BaseHTTPRequestHandler):
    """OTLP/HTTP stand-in: records the bodies POSTed to /v1/traces."""

    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Collector.received.append((self.path, self.headers.get("Content-Type"), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def traced_misim():
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    otlp = f"http://127.0.0.1:{collector.server_address[1]}"
    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="misim-obs-"))
    log_path = data_dir / "misim.log"
    log = open(log_path, "w")
    env = {k: v for k, v in os.environ.items() if k != "OTEL_EXPORTER_OTLP_ENDPOINT"}
    proc = subprocess.Popen(
        [MISIM, "up", "--data-dir", str(data_dir), "--base-port", "0", "--hosts", "2",
         "--otlp-endpoint", otlp, "--log-format", "json"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    endpoints_file = data_dir / "endpoints.json"
    deadline = time.time() + 60
    while not endpoints_file.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError("misim up did not start:\n" + log_path.read_text())
        time.sleep(0.1)
    yield {"data_dir": data_dir, "endpoints": json.loads(endpoints_file.read_text()), "log": log_path}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    collector.shutdown()
    shutil.rmtree(data_dir, ignore_errors=True)


def cli(m, *args):
    env = dict(os.environ, MISIM_ARM=m["endpoints"]["arm_grpc"], MISIM_DATA_DIR=str(m["data_dir"]))
    out = subprocess.run([MISIM, *args], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"misim {' '.join(args)}: {out.stderr}"
    return out.stdout


def arm_get(m, path, token):
    req = urllib.request.Request(m["endpoints"]["arm_rest"] + path,
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with NO_PROXY.open(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture(scope="module")
def walkthrough(traced_misim):
    m = traced_misim
    cli(m, "group", "create", "-n", "rg1", "-l", "westeurope")
    cli(m, "vm", "create", "-g", "rg1", "-n", "vm1")
    identity = json.loads(cli(m, "vm", "identity", "assign", "-g", "rg1", "-n", "vm1", "--identities", "system"))
    cli(m, "token", "get", "-g", "rg1", "-n", "vm1", "--resource", "https://management.azure.com/")
    token = json.loads(cli(m, "token", "get", "-g", "rg1", "-n", "vm1"))["access_token"]  # cached
    vm_id = json.loads(cli(m, "vm", "show", "-g", "rg1", "-n", "vm1"))["id"]
    path = f"{vm_id}?api-version=2024-07-01"
    assert arm_get(m, path, token) == 403
    sub = json.loads(cli(m, "account", "show"))["id"]
    cli(m, "role", "assignment", "create", "--assignee-object-id", identity["principalId"],
        "--role", "Reader", "--scope", f"/subscriptions/{sub}/resourceGroups/rg1")
    assert arm_get(m, path, token) == 200
    return m


def test_trace_show_last_draws_the_seven_steps_of_the_last_token(walkthrough):
    mermaid = cli(walkthrough, "trace", "show", "--last", "--format", "mermaid")
    print(mermaid)
    assert mermaid.startswith("sequenceDiagram\n")
    for step, arrow in [
        (1, "user->>ARM: 1. enable identity: /misim.arm.v1.Arm/AssignVmIdentity → OK"),
        (2, "ARM->>MSRP: 2. create identity: /misim.msrp.v1.Msrp/CreateIdentity → OK"),
        (2, "MSRP->>Azure_AD: 2. create identity: /misim.aad.v1.AadAdmin/CreateServicePrincipal → OK"),
        (3, "ARM->>host_1: 3. configure host: /misim.imds.v1.HostAgent/ConfigureIdentities → OK"),
        (3, "host_1->>MSRP: 3. configure host: /misim.msrp.v1.Msrp/GetCredential → OK"),
        (4, "user->>ARM: 4. role assignment: /misim.arm.v1.Arm/CreateRoleAssignment → OK"),
        (5, "workload->>IMDS: 5. token request: GET /metadata/identity/oauth2/token → 200"),
        (6, "IMDS->>Azure_AD: 6. token from Azure AD: POST /{tenantId}/oauth2/token → 200"),
        (7, "workload-xARM: 7. protected call: GET /subscriptions/{subscriptionId}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1 → 403"),
        (7, "workload->>ARM: 7. protected call: GET /subscriptions/{subscriptionId}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1 → 200"),
    ]:
        assert arrow in mermaid, f"step {step}: {arrow!r} missing"
    numbered = set(int(n) for n in re.findall(r": (\d)\. ", mermaid))
    assert numbered == {1, 2, 3, 4, 5, 6, 7}
    text = cli(walkthrough, "trace", "show", "--vm", "vm1", "--format", "text")
    assert "workload ──▶ IMDS" in text
    svg = cli(walkthrough, "trace", "show", "--format", "svg")
    assert svg.startswith("<svg") and "5. token request" in svg


def test_metrics_show_the_counters(walkthrough):
    with NO_PROXY.open(walkthrough["endpoints"]["arm_rest"] + "/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    for series in [
        'misim_requests_total{endpoint="/metadata/identity/oauth2/token",party="imds",status="200",vm="vm1"}',
        'misim_aad_tokens_issued_total{grant_type="client_credentials",party="aad",resource="https://management.azure.com/"}',
        'misim_imds_token_cache_total{party="imds",result="miss"}',
        'misim_imds_token_cache_total{party="imds",result="hit"}',
        'misim_resources{kind="identities",party="arm"} 1',
        'misim_resources{kind="hosts",party="arm"} 2',
        'misim_request_duration_seconds_bucket{endpoint="/metadata/identity/oauth2/token",party="imds"',
    ]:
        assert series in text, f"{series} missing from /metrics"


def test_spans_are_exported_with_otlp_to_a_local_collector(walkthrough):
    deadline = time.time() + 20  # the batch exporter sends every 5 s
    while time.time() < deadline:
        bodies = [b for (p, _, b) in Collector.received if p == "/v1/traces"]
        if any(b"step 6: token from Azure AD" in b for b in bodies):
            break
        time.sleep(0.5)
    assert Collector.received, "no OTLP export received"
    path, content_type, _ = Collector.received[0]
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    blob = b"".join(b for (_, _, b) in Collector.received)
    for name in [b"misim-up", b"step 1: enable identity (ARM)", b"step 5: token request to IMDS",
                 b"step 6: token from Azure AD (client assertion)", b"step 7: call a protected resource"]:
        assert name in blob, name


def test_json_log_lines_of_a_flow_carry_its_trace_id(walkthrough):
    lines = [json.loads(l) for l in walkthrough["log"].read_text().splitlines() if l.startswith("{")]
    flow = [l for l in lines if l.get("fields", {}).get("step") == 5]
    assert flow, "a step 5 log line"
    # The request's span (in the line's span list) names the trace.
    trace_ids = {s["trace_id"] for l in flow for s in l.get("spans", []) if "trace_id" in s}
    assert len(trace_ids) >= 1, flow[0]
    trace_id = sorted(trace_ids)[0]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    shown = cli(walkthrough, "trace", "show", "--trace-id", trace_id, "--format", "text")
    assert "5. token request" in shown


def test_compose_parties_serve_metrics_on_the_control_network_only():
    """Every party of deploy/docker-compose.yml has --metrics-listen on its fixed control-network
    address (port 9464), so a Prometheus scrape works from the control network and no VM reaches it."""
    import yaml
    from conftest import ROOT
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    parties = {"aad", "msrp", "host-1", "host-2", "arm"}
    for name in parties:
        service = compose["services"][name]
        cmd = service["command"]
        value = cmd[cmd.index("--metrics-listen") + 1]
        control_ip = service["networks"]["control"]["ipv4_address"]
        assert value == f"{control_ip}:9464", f"{name}: --metrics-listen {value}"


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_parties_in_separate_processes_keep_their_own_spans_and_trace_show_merges_them():
    """aad, msrp, one host and arm as four processes (one shared CA directory on disk): traceparent
    crosses process boundaries, each party serves its own /metrics and /debug/traces (MSRP and the
    host on --metrics-listen), and `misim trace show --collect …` merges them by trace ID."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="misim-parties-"))
    p = {k: free_port() for k in ["aad_grpc", "aad_http", "aad_metrics", "msrp", "msrp_metrics", "host",
                                  "host_metrics", "arm_grpc", "arm_rest"]}
    loop = "127.0.0.1"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MISIM_", "OTEL_"))}
    common = ["--ca-dir", str(root / "ca")]
    commands = {
        "aad": ["aad", "--data-dir", str(root / "aad"), "--grpc-listen", f"{loop}:{p['aad_grpc']}",
                "--http-listen", f"{loop}:{p['aad_http']}", "--metrics-listen", f"{loop}:{p['aad_metrics']}", *common],
        "msrp": ["msrp", "--data-dir", str(root / "msrp"), "--listen", f"{loop}:{p['msrp']}",
                 "--aad-grpc", f"http://{loop}:{p['aad_grpc']}", "--metrics-listen", f"{loop}:{p['msrp_metrics']}", *common],
        "host-1": ["imds", "--name", "host-1", "--data-dir", str(root / "host-1"), "--listen", f"{loop}:{p['host']}",
                   "--msrp", f"http://{loop}:{p['msrp']}", "--aad-url", f"http://{loop}:{p['aad_http']}",
                   "--metrics-listen", f"{loop}:{p['host_metrics']}", *common],
        "arm": ["arm", "--data-dir", str(root / "arm"), "--grpc-listen", f"{loop}:{p['arm_grpc']}",
                "--rest-listen", f"{loop}:{p['arm_rest']}", "--msrp", f"http://{loop}:{p['msrp']}",
                "--aad-grpc", f"http://{loop}:{p['aad_grpc']}", "--aad-url", f"http://{loop}:{p['aad_http']}",
                "--host", f"host-1=http://{loop}:{p['host']}", *common],
    }
    procs = []
    try:
        for name, args in commands.items():
            log = open(root / f"{name}.log", "w")
            procs.append((subprocess.Popen([MISIM, *args], stdout=log, stderr=subprocess.STDOUT, env=env), log))
            if name == "aad":
                time.sleep(1)  # the CA is made once, by the first party
        arm_env = dict(env, MISIM_ARM=f"http://{loop}:{p['arm_grpc']}")

        def run(*args):
            out = subprocess.run([MISIM, *args], env=arm_env, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, f"misim {' '.join(args)}: {out.stderr}\n" + "".join(
                (root / f"{n}.log").read_text()[-1500:] for n in commands)
            return out.stdout

        deadline = time.time() + 60
        while True:
            out = subprocess.run([MISIM, "account", "show"], env=arm_env, capture_output=True, text=True, timeout=30)
            if out.returncode == 0:
                break
            assert time.time() < deadline, out.stderr
            time.sleep(0.3)
        run("group", "create", "-n", "rg1", "-l", "westeurope")
        run("vm", "create", "-g", "rg1", "-n", "vm-sep")
        run("vm", "identity", "assign", "-g", "rg1", "-n", "vm-sep", "--identities", "system")
        run("token", "get", "-g", "rg1", "-n", "vm-sep")

        sources = [f"http://{loop}:{p['arm_rest']}", f"http://{loop}:{p['aad_metrics']}",
                   f"http://{loop}:{p['msrp_metrics']}", f"http://{loop}:{p['host_metrics']}"]
        merged = run("trace", "show", "--last", "--format", "mermaid", "--collect", ",".join(sources))
        for arrow in ["user->>ARM: 1. enable identity", "ARM->>MSRP: 2. create identity",
                      "MSRP->>Azure_AD: 2. create identity", "ARM->>host_1: 3. configure host",
                      "host_1->>MSRP: 3. configure host: /misim.msrp.v1.Msrp/GetCredential",
                      "workload->>IMDS: 5. token request", "IMDS->>Azure_AD: 6. token from Azure AD"]:
            assert arrow in merged, f"{arrow!r} missing from the merged diagram:\n{merged}"
        # ARM alone holds only its own spans: the calls MSRP and the host made are not there.
        arm_only = run("trace", "show", "--trace-id", merged.split("Note over user: trace ")[1][:8],
                       "--format", "mermaid", "--collect", sources[0])
        assert "user->>ARM: 1. enable identity" in arm_only and "MSRP->>Azure_AD" not in arm_only
        for url in sources[2:]:
            with NO_PROXY.open(url + "/metrics", timeout=10) as r:
                text = r.read().decode()
            assert "misim_requests_total{" in text, url
        with NO_PROXY.open(sources[3] + "/metrics", timeout=10) as r:
            assert 'misim_imds_token_cache_total{party="imds",result="miss"} 1' in r.read().decode()
    finally:
        for proc, log in procs:
            proc.terminate()
        for proc, log in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        shutil.rmtree(root, ignore_errors=True)
