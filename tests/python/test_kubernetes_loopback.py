"""The Kubernetes manifests' own commands, run as local processes on loopback: no cluster needed.

deploy/kubernetes/misim.yaml is only useful if the misim binary accepts exactly the flags it renders
and the parties, started that way, work together. This test takes each party's container args from
the checked-in manifests and runs them with the real binary (MISIM_BIN, default target/debug/misim),
changing only what a cluster would provide:

- addresses: 0.0.0.0, $(NODE_IP), Service names and node addresses become 127.0.0.1, and every port
  a free ephemeral one (nothing here uses a fixed port or a non-loopback address);
- $(NODE_NAME) becomes the first listed node; /data and /tls become temporary directories;
- the Secrets: deploy/kubernetes/node-values.sh and make-certs.sh run with a stand-in `kubectl`
  that lists the nodes and stores what make-certs.sh would apply, and each party's /tls is filled from those Secrets the way the manifests mount them
  (for the host: the projected volume's folder of its node, as subPathExpr selects it);
- the VM pod: deploy/kubernetes/register-vms.sh runs with the stand-in kubectl listing a pod whose IP
  is 127.0.0.1 on that node.

Then the "pod" gets a token from the host's shared IMDS listener (identified by its source address),
and a source that is no VM of the host gets none; after the host restarts on the same store (the
node's disk in the DaemonSet) the pod still gets its token. The manifests' probes then run against the parties:
the exec health checks over mTLS pass, a plaintext check (what the kubelet's gRPC probe sends) fails
on the mTLS listeners and passes on ARM's. What this cannot show: the 169.254.169.254 DNAT and the
NetworkPolicies, which need a cluster (see test_kubernetes.py and docs/kubernetes.md).
"""
from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import pathlib
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
MISIM = os.environ.get("MISIM_BIN", str(ROOT / "target" / "debug" / "misim"))
COMPONENT = "app.kubernetes.io/component"

# A stand-in for kubectl: `create secret generic … --dry-run=client -o yaml` prints the Secret,
# `label --local -f - -o yaml K=V…` adds labels, `apply -f -` stores the object in $STUB_DIR,
# `get pods …` / `get nodes …` print $STUB_DIR/pods.txt / nodes.txt (the scripts' jsonpath output).
KUBECTL_STUB = r'''
import base64, json, os, pathlib, sys
args = sys.argv[1:]
stub = pathlib.Path(os.environ["STUB_DIR"])
if "-n" in args:
    i = args.index("-n"); ns = args[i + 1]; del args[i:i + 2]
else:
    ns = "default"
if args[:3] == ["create", "secret", "generic"]:
    data = {}
    for a in args:
        if a.startswith("--from-file="):
            key, path = a[len("--from-file="):].split("=", 1)
            data[key] = base64.b64encode(pathlib.Path(path).read_bytes()).decode()
    print(json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": args[3], "namespace": ns}, "data": data}))
elif args[:1] == ["label"]:
    doc = json.loads(sys.stdin.read())
    for a in args:
        if "=" in a and not a.startswith("-"):
            k, v = a.split("=", 1)
            doc["metadata"].setdefault("labels", {})[k] = v
    print(json.dumps(doc))
elif args[:1] == ["apply"]:
    doc = json.loads(sys.stdin.read())
    (stub / f"{doc['kind']}-{doc['metadata']['name']}.json").write_text(json.dumps(doc))
elif args[:2] == ["get", "pods"]:
    sys.stdout.write((stub / "pods.txt").read_text())
elif args[:2] == ["get", "nodes"]:
    sys.stdout.write((stub / "nodes.txt").read_text())
else:
    sys.exit(f"kubectl stub: unexpected {args}")
'''


def skip_loudly(request, reason: str):
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\nSKIPPED {request.node.name}: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, log: pathlib.Path, timeout: float = 60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[:2]} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout}s:\n{log.read_text()[-3000:]}")


def imds_token(port: int, source: str) -> tuple[int, dict]:
    """GET the IMDS token endpoint of the shared listener from a given loopback source address."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", "/metadata/identity/oauth2/token?api-version=2018-02-01"
                            "&resource=https%3A%2F%2Fmanagement.azure.com%2F", headers={"Metadata": "true"})
        resp = conn.getresponse()
        body = resp.read().decode()
        try:
            return resp.status, json.loads(body)
        except ValueError:
            return resp.status, {"raw": body}
    finally:
        conn.close()


def party_containers(docs: list[dict]) -> tuple[dict[str, dict], dict]:
    """Main containers of aad, msrp, arm and host, and the host DaemonSet's pod spec."""
    out, host_spec = {}, None
    for d in docs:
        if d["kind"] not in ("Deployment", "DaemonSet"):
            continue
        spec = d["spec"]["template"]["spec"]
        comp = d["spec"]["template"]["metadata"]["labels"][COMPONENT]
        out[comp] = spec["containers"][0]
        if comp == "host":
            host_spec = spec
    assert set(out) == {"aad", "msrp", "arm", "host"}, sorted(out)
    return out, host_spec


def plaintext_health(port: int) -> bool:
    """What the kubelet's gRPC probe does: grpc.health.v1.Health/Check over plaintext HTTP/2."""
    out = subprocess.run(
        ["/bin/sh", "-c", "printf '\\0\\0\\0\\0\\0' | curl -sS --http2-prior-knowledge --max-time 4 "
         "-H 'content-type: application/grpc' -H 'te: trailers' --data-binary @- "
         f"http://127.0.0.1:{port}/grpc.health.v1.Health/Check | od -An -tx1 | tr -d ' \\n'"],
        capture_output=True, text=True, timeout=20)
    return out.stdout.strip() == "00000000020801"


def test_manifest_commands_run_together_on_loopback(request, tmp_path_factory):
    if not os.path.exists(MISIM):
        skip_loudly(request, f"{MISIM} not built (cargo build --bins)")
    probe = subprocess.run([MISIM, "certs", "issue", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        skip_loudly(request, f"{MISIM} has no `certs issue` (built before the control-plane mTLS)")

    docs = [d for d in yaml.safe_load_all((K8S / "misim.yaml").read_text()) if d]
    containers, host_spec = party_containers(docs)
    args = {comp: list(c["args"]) for comp, c in containers.items()}
    work = pathlib.Path(tempfile.mkdtemp(prefix="misim-k8s-loop-"))
    procs: list[tuple[subprocess.Popen, object]] = []
    try:
        # --- the cluster's side of things: addresses, ports, node -----------------------------------
        arm_hosts = next(a for a in args["arm"] if a.startswith("--host=")).split("=", 1)[1]
        nodes = [h.split("=", 1)[0] for h in arm_hosts.split(",")]
        node_ips = {re.match(r".*=http://([^:]+):", h).group(1) for h in arm_hosts.split(",")}
        node = nodes[0]
        port_map: dict[str, int] = {}

        def localize(a: str) -> str:
            a = a.replace("$(NODE_NAME)", node).replace("$(NODE_IP)", "127.0.0.1").replace("0.0.0.0", "127.0.0.1")
            a = re.sub(r"misim-[a-z]+\.misim\.svc", "127.0.0.1", a)
            for ip in node_ips:
                a = a.replace(f"//{ip}:", "//127.0.0.1:")
            # every port becomes an ephemeral one (the same port number maps to the same free port);
            # a second node's agent keeps a port with nothing behind it
            return re.sub(r"127\.0\.0\.1:(\d+)", lambda m: f"127.0.0.1:{port_map.setdefault(m.group(1), free_port())}", a)

        def fix_hosts(a: str) -> str:
            if not a.startswith("--host="):
                return a
            entries = []
            for h in a.split("=", 1)[1].split(","):
                name, url = h.split("=", 1)
                if name != node:
                    url = f"http://127.0.0.1:{free_port()}"
                entries.append(f"{name}={url}")
            return "--host=" + ",".join(entries)

        # --- the Secrets, made by make-certs.sh against the stand-in kubectl ------------------------
        stub = work / "stub"
        (stub / "bin").mkdir(parents=True)
        kubectl = stub / "bin" / "kubectl"
        kubectl.write_text(f"#!{sys.executable}\n{KUBECTL_STUB}")
        kubectl.chmod(kubectl.stat().st_mode | stat.S_IEXEC)
        env = dict(os.environ, PATH=f"{stub / 'bin'}:{pathlib.Path(MISIM).parent}:{os.environ['PATH']}",
                   STUB_DIR=str(stub), MISIM=MISIM, MISIM_CA_DIR=str(work / "ca"), NO_COLOR="1",
                   NO_PROXY="*", no_proxy="*")
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "MISIM_NODE_SELECTOR"):
            env.pop(var, None)
        # the nodes' values, as node-values.sh prints them (every node's address is loopback here)
        (stub / "nodes.txt").write_text("".join(f"{n}|127.0.0.1 |\n" for n in nodes))
        listed = subprocess.run(["bash", str(K8S / "node-values.sh")], env=env, capture_output=True, text=True)
        assert listed.returncode == 0, listed.stderr
        nodes_values = work / "nodes.yaml"
        nodes_values.write_text(listed.stdout)
        made = subprocess.run(["bash", str(K8S / "make-certs.sh"), "misim", str(nodes_values), "misim"],
                              env=env, capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr + made.stdout
        secrets = {p.stem[len("Secret-"):]: json.loads(p.read_text()) for p in stub.glob("Secret-*.json")}
        assert set(secrets) == {"misim-tls-arm", "misim-tls-msrp", "misim-tls-aad"} | {f"misim-tls-host-{n}" for n in nodes}
        assert all(s["metadata"]["namespace"] == "misim" for s in secrets.values())

        def mount_secret(name: str, items: list[dict] | None, dest: pathlib.Path, folder: str = ""):
            """Writes a Secret's keys into dest as a (projected) secret volume would."""
            data = secrets[name]["data"]
            for item in items or [{"key": k, "path": k} for k in data]:
                path = item["path"]
                if folder:
                    if not path.startswith(folder + "/"):
                        continue
                    path = path[len(folder) + 1:]
                f = dest / path
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(base64.b64decode(data[item["key"]]))
                f.chmod(0o400)

        # --- start the parties with the manifests' args ---------------------------------------------
        running: dict[str, subprocess.Popen] = {}

        def start(comp: str, log_name: str = "log") -> None:
            pdir = work / comp
            cmd = [fix_hosts(localize(a)) for a in args[comp]]
            cmd = [a.replace("--data-dir=/data", f"--data-dir={pdir / 'data'}")
                    .replace("--control-tls-dir=/tls", f"--control-tls-dir={pdir / 'tls'}") for a in cmd]
            log = pdir / log_name
            fh = open(log, "w")
            proc = subprocess.Popen([MISIM, *cmd], stdout=fh, stderr=subprocess.STDOUT,
                                    env=dict(env, MISIM_LOG="info"), cwd=pdir)
            procs.append((proc, fh))
            running[comp] = proc
            listen = next(a for a in cmd if re.match(r"--(grpc-)?listen=", a)).rsplit(":", 1)[1]
            wait_port(int(listen), proc, log)

        for comp in ("aad", "msrp", "host", "arm"):
            pdir = work / comp
            (pdir / "data").mkdir(parents=True)
            tls = pdir / "tls"
            tls.mkdir()
            if comp == "host":
                tls_vol = next(v for v in host_spec["volumes"] if v["name"] == "tls")
                for src in tls_vol["projected"]["sources"]:
                    mount_secret(src["secret"]["name"], src["secret"]["items"], tls, folder=node)
            else:
                mount_secret(f"misim-tls-{comp}", None, tls)
            start(comp)

        arm_grpc = next(a for a in args["arm"] if a.startswith("--grpc-listen=")).rsplit(":", 1)[1]
        imds_port = port_map[next(a for a in args["host"] if a.startswith("--imds-listen=")).rsplit(":", 1)[1]]
        env["MISIM_ARM"] = f"http://127.0.0.1:{port_map[arm_grpc]}"

        # ARM's listener is up before its default subscription exists (it waits for Azure AD)
        deadline = time.time() + 60
        while subprocess.run([MISIM, "account", "show"], env=env, capture_output=True).returncode != 0:
            assert time.time() < deadline, "ARM has no default subscription after 60 s:\n" + (work / "arm" / "log").read_text()[-3000:]
            time.sleep(0.2)

        # --- the VM pod: registered by register-vms.sh, then given a system-assigned identity -------
        (stub / "pods.txt").write_text(f"vm-a {node} 127.0.0.1 Running rg1\n")
        reg = subprocess.run(["bash", str(K8S / "register-vms.sh"), "misim"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert reg.returncode == 0, reg.stderr + reg.stdout
        assert f"rg1/vm-a -> host {node}, private IP 127.0.0.1" in reg.stdout
        again = subprocess.run(["bash", str(K8S / "register-vms.sh"), "misim"], env=env,
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, "register-vms.sh is not idempotent: " + again.stderr
        (stub / "pods.txt").write_text(f"vm-a {node} 127.0.0.9 Running rg1\n")
        moved = subprocess.run(["bash", str(K8S / "register-vms.sh"), "misim"], env=env,
                               capture_output=True, text=True, timeout=120)
        assert moved.returncode != 0 and "delete the VM" in moved.stderr, moved.stderr

        assign = subprocess.run([MISIM, "vm", "identity", "assign", "-g", "rg1", "-n", "vm-a",
                                 "--identities", "system"], env=env, capture_output=True, text=True, timeout=60)
        assert assign.returncode == 0, assign.stderr

        # --- the pod asks IMDS (the host's shared listener) -----------------------------------------
        deadline, status, body = time.time() + 30, 0, {}
        while time.time() < deadline:
            status, body = imds_token(imds_port, "127.0.0.1")
            if status == 200:
                break
            time.sleep(0.5)
        logs = {c: (work / c / "log").read_text()[-2000:] for c in ("aad", "msrp", "host", "arm")}
        assert status == 200 and body.get("access_token"), f"{status} {body}\n{logs}"
        assert body["token_type"] == "Bearer"

        # another source address is no VM of this host: no token
        other_status, other = imds_token(imds_port, "127.0.0.2")
        assert other_status != 200 and "access_token" not in other, (other_status, other)

        # --- the host pod restarts (a rolling update, a node reboot): its store is on the node's disk -
        running["host"].terminate()
        running["host"].wait(timeout=20)
        start("host", log_name="log.restarted")
        deadline, status = time.time() + 20, 0
        while time.time() < deadline:
            with contextlib.suppress(OSError):
                status, body = imds_token(imds_port, "127.0.0.1")
                if status == 200:
                    break
            time.sleep(0.5)
        assert status == 200, f"the restarted host does not serve its VM: {status} {body}"

        # --- the manifests' probes, run as the kubelet would ----------------------------------------
        if shutil.which("curl") is None:
            return  # the probes run curl (the misim image has it); nothing more to check here
        for comp in ("aad", "msrp", "host"):
            for kind in ("readinessProbe", "livenessProbe"):
                command = containers[comp][kind]["exec"]["command"]
                script = command[2].replace("/tls/", f"{work / comp / 'tls'}/").replace("${NODE_IP}", "127.0.0.1")
                script = re.sub(r"https://127\.0\.0\.1:(\d+)/", lambda m: f"https://127.0.0.1:{port_map[m.group(1)]}/", script)
                probed = subprocess.run([*command[:2], script], capture_output=True, text=True, timeout=20, env=env)
                assert probed.returncode == 0, f"{comp} {kind} failed: {probed.stderr}"
            grpc_port = port_map[re.search(r":(\d+)/grpc\.health", containers[comp]["livenessProbe"]["exec"]["command"][2]).group(1)]
            assert not plaintext_health(grpc_port), f"{comp}'s mTLS listener answered a plaintext health check"
        assert containers["arm"]["livenessProbe"]["grpc"]["port"] == int(arm_grpc)
        assert plaintext_health(port_map[arm_grpc]), "ARM's gRPC API does not answer the kubelet's plaintext probe"
    finally:
        for proc, fh in procs:
            proc.terminate()
        for proc, fh in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            fh.close()
        shutil.rmtree(work, ignore_errors=True)
