"""The attacks of deploy/attack.sh that run inside containers of the stack (standard library, curl and
ip only, so it runs in any local/misim-vm image, old or new; it is piped in, not part of the image).

    python - MODE CONFIG_JSON < attack_vm.py

MODE `vm`: code in a VM (docker-compose exec -T vm-1b ...) trying to get an identity that is not its
own: through its host's agent gRPC, MSRP, Azure AD admin, ARM gRPC, other hosts' listeners, per-VM
ports found by a port scan, forwarding headers, address spoofing, raw sockets, the machine's addresses,
and key material in reach. MODE `control`: a container on the control network (no certificate, or a
party's certificate in /tls) calling the parties' control gRPC. MODE `keys`: key files in a volume that
another user could read.

Prints one line per attempt, `PASS <what>` when it was refused, `FAIL <what>` when it was not, each
with the evidence after ` -- `. deploy/attack.sh counts them.
"""

import base64
import errno
import json
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

RESOURCE = "https://management.azure.com/"
IMDS = "169.254.169.254"
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
PEM_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]{64,}")

results = []


def report(ok, what, evidence=""):
    line = f"{'PASS' if ok else 'FAIL'} {what}"
    if evidence:
        line += f" -- {evidence}"
    print(line[:600], flush=True)
    results.append(ok)


# ------------------------------------------------------------------------------------------- HTTP
def http(host, port, path, headers=None, method="GET", body=b"", timeout=4, bind=None, freebind=False):
    """One HTTP/1.1 request on a fresh socket; returns (status, body) or (None, error text)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if freebind:
            s.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND: bind an address this machine does not have
        if bind:
            s.bind((bind, 0))
        s.connect((host, port))
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if body:
            lines.append(f"Content-Length: {len(body)}")
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        return None, f"{type(e).__name__}: {e}"
    finally:
        s.close()
        time.sleep(0.06)
    head, _, rest = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    if not m:
        return None, f"no HTTP answer ({data[:60]!r})"
    if re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        out, buf = b"", rest
        while buf:
            size_line, _, buf = buf.partition(b"\r\n")
            try:
                size = int(size_line.split(b";")[0], 16)
            except ValueError:
                break
            if size == 0:
                break
            out, buf = out + buf[:size], buf[size + 2:]
        rest = out
    return int(m.group(1)), rest.decode("utf-8", "replace")


def mirid_of(body):
    """xms_mirid of the access token in an IMDS-style JSON answer, or None when there is no token."""
    try:
        token = json.loads(body)["access_token"]
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims.get("xms_mirid", "?")).lower()
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def token_path(selector=None):
    q = f"api-version=2018-02-01&resource={urllib.parse.quote(RESOURCE, safe='')}"
    if selector:
        q += f"&{selector[0]}={urllib.parse.quote(selector[1], safe='')}"
    return f"/metadata/identity/oauth2/token?{q}"


def ext_path(selector=None):
    q = f"resource={urllib.parse.quote(RESOURCE, safe='')}"
    if selector:
        q += f"&{selector[0]}={urllib.parse.quote(selector[1], safe='')}"
    return f"/oauth2/token?{q}"


def foreign_tokens(cfg, answers):
    """The answers [(label, status, body)] that carry a token of an identity the attacker does not have."""
    own = set(cfg.get("own_mirids", []))
    bad = []
    for label, status, body in answers:
        m = mirid_of(body) if status == 200 else None
        if m is not None and m not in own:
            bad.append(f"{label}: 200, token of {m}")
    return bad


def summary(answers, limit=4):
    out = []
    for label, status, body in answers[:limit]:
        out.append(f"{label}: {status if status is not None else body[:70]}")
    more = f" (+{len(answers) - limit} more)" if len(answers) > limit else ""
    return "; ".join(out) + more


# ------------------------------------------------------------------------------------------- gRPC
def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def pb_str(num, value):
    data = value if isinstance(value, bytes) else value.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def pb_int(num, value):
    return varint(num << 3) + varint(value)


def identity_ref(ref):
    """misim.imds.v1.IdentityRef"""
    kind = 1 if ref.get("kind") == "system" else 2
    return (pb_str(1, ref["msi_res_id"]) + pb_int(2, kind) + pb_str(3, ref.get("client_id", ""))
            + pb_str(4, ref.get("principal_id", "")) + pb_str(5, ref.get("tenant_id", "")))


def grpc(host, port, path, msg, tls, cert_dir=None, name=None):
    """A unary gRPC call made with curl (h2c with prior knowledge, or TLS with ALPN h2). Returns
    (answered, evidence): answered is True only for grpc-status 0."""
    with tempfile.TemporaryDirectory() as d:
        req, hdr, body = (os.path.join(d, n) for n in ("req", "hdr", "body"))
        with open(req, "wb") as f:
            f.write(b"\0" + len(msg).to_bytes(4, "big") + msg)
        target = name or host
        url = f"{'https' if tls else 'http'}://{target}:{port}{path}"
        args = ["curl", "-sS", "--noproxy", "*", "--connect-timeout", "3", "--max-time", "6", "-X", "POST",
                "-H", "content-type: application/grpc", "-H", "te: trailers",
                "--data-binary", f"@{req}", "-D", hdr, "-o", body]
        if name and name != host:
            args += ["--resolve", f"{name}:{port}:{host}"]
        if tls:
            args += ["--http2"]
            if cert_dir:
                args += ["--cert", f"{cert_dir}/cert.pem", "--key", f"{cert_dir}/key.pem",
                         "--cacert", f"{cert_dir}/ca.pem"]
            else:
                args += ["-k"]
        else:
            args += ["--http2-prior-knowledge"]
        r = subprocess.run(args + [url], capture_output=True, text=True)
        headers = open(hdr, errors="replace").read() if os.path.exists(hdr) else ""
        size = os.path.getsize(body) if os.path.exists(body) else 0
    status = re.findall(r"(?im)^grpc-status:\s*(\d+)", headers)
    message = re.findall(r"(?im)^grpc-message:\s*(.*?)\s*$", headers)
    if status and status[-1] == "0":
        return True, f"grpc-status 0, {size} bytes"
    if status:
        text = urllib.parse.unquote(message[-1]) if message else ""
        return False, f"grpc-status {status[-1]} {text}".strip()
    code = re.findall(r"(?m)^HTTP/\S+ (\d+)", headers)
    if code:
        return False, f"HTTP {code[-1]}, no grpc-status"
    return False, f"curl {r.returncode}: {r.stderr.strip().splitlines()[-1][:90] if r.stderr.strip() else ''}"


def grpc_attempt(what, targets, path, msg, transports=("h2c", "tls"), cert_dir=None):
    """One attempt: the call at every (host, port, name) target over every transport; PASS when none
    answered with grpc-status 0."""
    evidence, answered = [], []
    seen = set()
    targets = [t for t in targets if not ((t[0], t[1]) in seen or seen.add((t[0], t[1])))]
    for host, port, name in targets:
        for t in transports:
            ok, ev = grpc(host, port, path, msg, tls=(t != "h2c"), cert_dir=cert_dir, name=name)
            label = f"{name or host}:{port}/{t}"
            evidence.append(f"{label}: {ev}")
            if ok:
                answered.append(f"{label}: {ev}")
    if answered:
        report(False, what, "answered: " + "; ".join(answered))
    else:
        report(True, what, "; ".join(evidence[:6]) + (f" (+{len(evidence) - 6} more)" if len(evidence) > 6 else ""))
    return not answered


# ------------------------------------------------------------------------------------------- helpers
def resolve(name):
    try:
        return socket.gethostbyname(name)
    except OSError:
        return None


def cap_eff():
    for line in open("/proc/self/status"):
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def ipv4_interfaces():
    """[(ifname, address, prefix)] of the global IPv4 addresses."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True).stdout
    res = []
    for line in out.splitlines():
        parts = line.split()
        addr, prefix = parts[3].split("/")
        res.append((parts[1].split("@")[0], addr, int(prefix)))
    return res


def first_host(addr, prefix):
    n = int.from_bytes(socket.inet_aton(addr), "big") & (0xFFFFFFFF << (32 - prefix) & 0xFFFFFFFF)
    return socket.inet_ntoa((n + 1).to_bytes(4, "big"))


def scan(host, ports, batch=400, wait=1.0):
    """Open TCP ports of host (non-blocking connects, batch by batch)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < batch + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, batch + 100), hard))
    found = []
    for i in range(0, len(ports), batch):
        sel = selectors.DefaultSelector()
        for p in ports[i:i + batch]:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((host, p))
            if err == 0:
                found.append(p)
                s.close()
            elif err == errno.EINPROGRESS:
                sel.register(s, selectors.EVENT_WRITE, p)
            else:
                s.close()
        deadline = time.time() + wait
        while sel.get_map() and time.time() < deadline:
            for key, _ in sel.select(timeout=max(0.0, deadline - time.time())):
                s = key.fileobj
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    found.append(key.data)
                sel.unregister(s)
                s.close()
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()
    return sorted(found)


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    return r.returncode, (r.stderr or r.stdout).strip()


def refused_command(what, cmd, undo=None):
    """PASS when the command fails with a permission error; FAIL (and undo) when it works."""
    rc, out = run(cmd)
    if rc == 0:
        if undo:
            run(undo)
        report(False, what, f"`{' '.join(cmd)}` succeeded")
    else:
        perm = re.search(r"(?i)not permitted|permission denied|you must be root", out)
        report(bool(perm), what, f"`{' '.join(cmd)}`: {out.splitlines()[-1][:100] if out else rc}")


# ------------------------------------------------------------------------------------------- VM mode
def vm_mode(cfg):
    me = cfg["me"]
    host_ip, host_name = cfg["host_ip"], cfg["host_name"]
    control = cfg["control"]
    victim_ip = cfg["victim_ip"]
    selectors_ = [tuple(s) for s in cfg["victim_selectors"]]

    if "HTTP2" not in subprocess.run(["curl", "-V"], capture_output=True, text=True).stdout:
        report(False, f"{me}: curl speaks HTTP/2 (needed for the gRPC attempts)")

    # --- capabilities and spoofing
    eff = cap_eff()
    has = [n for n, bit in (("NET_ADMIN", CAP_NET_ADMIN), ("NET_RAW", CAP_NET_RAW)) if eff >> bit & 1]
    report(not has, f"{me}: the VM's processes hold neither NET_ADMIN nor NET_RAW",
           f"CapEff {eff:#x}" + (f" includes {', '.join(has)}" if has else ""))
    ifs = ipv4_interfaces()
    vm_if = next((i for i, a, p in ifs if first_host(a, p) == first_host(host_ip, p)), ifs[0][0] if ifs else "eth0")
    refused_command(f"{me}: take the address of {cfg['victim_name']} ({victim_ip}) with ip addr add -> EPERM",
                    ["ip", "addr", "add", f"{victim_ip}/32", "dev", vm_if],
                    undo=["ip", "addr", "del", f"{victim_ip}/32", "dev", vm_if])
    refused_command(f"{me}: add a default route -> EPERM",
                    ["ip", "route", "add", "default", "via", host_ip],
                    undo=["ip", "route", "del", "default", "via", host_ip])
    refused_command(f"{me}: change the firewall that blocks the machine (iptables -N) -> EPERM",
                    ["iptables", "-N", "MISIM-ATTACK"], undo=["iptables", "-X", "MISIM-ATTACK"])
    for label, args in (("AF_PACKET raw socket (gratuitous ARP)", (socket.AF_PACKET, socket.SOCK_RAW, 0x0806)),
                        ("AF_INET raw socket (forged IP source)", (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW))):
        try:
            socket.socket(*args).close()
            report(False, f"{me}: open an {label} -> EPERM", "opened")
        except PermissionError as e:
            report(True, f"{me}: open an {label} -> EPERM", str(e))
        except OSError as e:
            report(True, f"{me}: open an {label} -> EPERM", f"refused otherwise: {e}")
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_IP, 19, 1)  # IP_TRANSPARENT: send from addresses the VM does not have
        s.close()
        report(False, f"{me}: IP_TRANSPARENT (send from {cfg['victim_name']}'s address) -> EPERM", "allowed")
    except OSError as e:
        report(e.errno == errno.EPERM, f"{me}: IP_TRANSPARENT (send from {cfg['victim_name']}'s address) -> EPERM", str(e))
    status, body = http(host_ip, 80, token_path(), {"Metadata": "true"}, bind=victim_ip, freebind=True, timeout=3)
    bad = foreign_tokens(cfg, [("freebind", status, body)])
    report(not bad, f"{me}: IMDS from {cfg['victim_name']}'s address without owning it (IP_FREEBIND)",
           "; ".join(bad) or f"{status if status is not None else body[:90]}")

    # --- forwarding headers and foreign selectors at the VM's own IMDS and extension endpoint
    for header, value in (("X-Forwarded-For", victim_ip), ("X-Real-IP", victim_ip),
                          ("Forwarded", f"for={victim_ip}"), ("X-Client-IP", victim_ip),
                          ("True-Client-IP", victim_ip), ("X-Original-Forwarded-For", victim_ip)):
        answers = []
        for sel in [None] + selectors_[:2]:
            s, b = http(IMDS, 80, token_path(sel), {"Metadata": "true", header: value})
            answers.append((f"imds {sel[0] if sel else 'default'}", s, b))
            s, b = http("127.0.0.1", 50342, ext_path(sel), {"Metadata": "true", header: value})
            answers.append((f"ext {sel[0] if sel else 'default'}", s, b))
        bad = foreign_tokens(cfg, answers)
        report(not bad, f"{me}: {header}: {value} ({cfg['victim_name']}) at 169.254.169.254 and localhost:50342",
               "; ".join(bad) or summary(answers))
    for sel in selectors_:
        s, b = http(IMDS, 80, token_path(sel), {"Metadata": "true"})
        s2, b2 = http("127.0.0.1", 50342, ext_path(sel), {"Metadata": "true"})
        answers = [("imds", s, b), ("ext", s2, b2)]
        bad = foreign_tokens(cfg, answers)
        report(not bad, f"{me}: ask own IMDS for another VM's identity {sel[0]}={sel[1][-36:]}",
               "; ".join(bad) or summary(answers))

    # --- the host's address: port scan, then every open port
    t0 = time.time()
    open_ports = scan(host_ip, list(range(1, 65536)))
    extra = [p for p in open_ports if p not in (80, 50342)]
    report(not extra, f"{me}: {host_name} ({host_ip}) exposes only IMDS :80 and the extension :50342 to VMs",
           f"open: {open_ports} (scan of 1-65535 in {time.time() - t0:.0f}s)")
    answers = []
    for p in open_ports:
        for sel in [None] + selectors_:
            s, b = http(host_ip, p, token_path(sel), {"Metadata": "true"}, timeout=3)
            answers.append((f":{p} imds {sel[0] if sel else 'default'}", s, b))
            s, b = http(host_ip, p, ext_path(sel), {"Metadata": "true"}, timeout=3)
            answers.append((f":{p} ext {sel[0] if sel else 'default'}", s, b))
    bad = foreign_tokens(cfg, answers)
    report(not bad, f"{me}: another VM's token from any open port of {host_name} (per-VM listeners)",
           "; ".join(bad[:4]) or f"{len(answers)} requests on ports {open_ports}, no foreign token")

    # --- a request whose headers never end (one connection held open forever starved the old hosts)
    wait = cfg.get("slow_wait", 20)
    try:
        s = socket.create_connection((host_ip, 80), timeout=3)
        s.sendall(b"GET /metadata/instance?api-version=2021-02-01 HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n")
        s.settimeout(wait)
        t0 = time.time()
        try:
            data = s.recv(4096)
            took = time.time() - t0
            report(True, f"{me}: a request whose headers never end is cut off (header-read timeout)",
                   f"closed after {took:.0f}s" + (f" with {data.splitlines()[0][:40]!r}" if data else ""))
        except socket.timeout:
            report(False, f"{me}: a request whose headers never end is cut off (header-read timeout)",
                   f"still open after {wait}s")
        finally:
            s.close()
    except OSError as e:
        report(False, f"{me}: a request whose headers never end is cut off (header-read timeout)", f"no connection: {e}")

    # --- other hosts' listeners and the control network
    answers = []
    for ip in cfg["other_host_ips"] + [control[h] for h in cfg["host_names"]]:
        for port in (80, 50342):
            s, b = http(ip, port, token_path(), {"Metadata": "true"}, timeout=3)
            answers.append((f"{ip}:{port}", s, b))
    got = [f"{label}: {s}" for label, s, _ in answers if s is not None]
    report(not got and not foreign_tokens(cfg, answers),
           f"{me}: other hosts' IMDS and extension listeners (VM networks and control addresses)",
           "; ".join(got) or summary(answers, 6))

    # --- host agent gRPC at every host address a VM can name
    host_targets = [(host_ip, 7711, None)] + [(host_ip, p, None) for p in extra]
    for h in cfg["host_names"]:
        host_targets.append((control[h], 7711, None))
        ip = resolve(h)
        if ip:
            host_targets.append((ip, 7711, h))
    host_targets += [(ip, 7711, None) for ip in cfg["other_host_ips"]]
    host_targets.append((IMDS, 7711, None))
    grpc_attempt(f"{me}: HostAgent/ListVms at every host address (h2c and TLS without a client certificate)",
                 host_targets, "/misim.imds.v1.HostAgent/ListVms", b"")
    cross = cfg["cross"]
    msg = pb_str(1, cfg["my_vm_id"]) + b"".join(pb_str(2, identity_ref(r)) for r in cfg["my_refs"] + [cross])
    grpc_attempt(f"{me}: HostAgent/ConfigureIdentities attaching {cross['name']} (a VM's identity on another host) to {me}",
                 host_targets, "/misim.imds.v1.HostAgent/ConfigureIdentities", msg)
    time.sleep(2)
    answers = []
    for _ in range(3):
        s, b = http(IMDS, 80, token_path(("client_id", cross["client_id"])), {"Metadata": "true"})
        answers.append(("imds client_id", s, b))
        if s == 200:
            break
        time.sleep(1)
    bad = foreign_tokens(cfg, answers)
    report(not bad, f"{me}: IMDS serves {cross['name']} after the ConfigureIdentities attempts",
           "; ".join(bad) or summary(answers[-1:]))

    # --- MSRP, Azure AD admin and ARM gRPC: every address a VM can name
    edge = resolve("aad") or resolve("arm")
    def targets(party, port):
        t = [(control[party], port, None), (host_ip, port, None)]
        ip = resolve(party)
        if ip:
            t.append((ip, port, party))
        if edge and edge != ip:
            t.append((edge, port, None))
        return t
    grpc_attempt(f"{me}: Msrp/GetCredential for {cross['name']} (its private key)",
                 targets("msrp", 7704), "/misim.msrp.v1.Msrp/GetCredential",
                 pb_str(1, cross["msi_res_id"]) + pb_str(2, host_name))
    grpc_attempt(f"{me}: AadAdmin/AddKeyCredential (attacker's certificate) on {cross['name']}'s service principal",
                 targets("aad", 7703), "/misim.aad.v1.AadAdmin/AddKeyCredential",
                 pb_str(1, cross["tenant_id"]) + pb_str(2, cross["principal_id"]) + pb_str(3, attacker_cert_der()))
    grpc_attempt(f"{me}: ARM gRPC (Arm/GetAccount; the user-facing API that assigns identities)",
                 targets("arm", 7700), "/misim.arm.v1.Arm/GetAccount", b"", transports=("h2c",))

    # --- the machine
    gateways = sorted({first_host(a, p) for _, a, p in ifs} | set(cfg.get("machine_ips", [])))
    reached = []
    evidence = []
    for gw in gateways:
        for port in (1, 9):  # ports where nothing listens: a refusal (RST) still proves the machine answered
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(2)
            err = s.connect_ex((gw, port))
            s.close()
            name = errno.errorcode.get(err, str(err)) if err else "connected"
            evidence.append(f"{gw}:{port} {name}")
            if err in (0, errno.ECONNREFUSED):
                reached.append(f"{gw}:{port} {name}")
    report(not reached, f"{me}: the machine (bridge gateways {', '.join(gateways)}) is unreachable",
           ("answered: " + "; ".join(reached)) if reached else "; ".join(evidence))
    v6 = [l.split()[-1] for l in open("/proc/net/if_inet6")] if os.path.exists("/proc/net/if_inet6") else []
    v6 = [i for i in v6 if i != "lo"]
    sent = None
    if v6:
        try:
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.sendto(b"x", (f"ff02::1%{v6[0]}", 9))
            s.close()
            sent = f"UDP to ff02::1%{v6[0]} sent"
        except OSError as e:
            sent = None
            v6 = [f"{v6[0]} ({e.strerror})"]
    report(sent is None, f"{me}: no IPv6 way out (link-local reaches the machine's bridge)",
           sent or (f"IPv6 output refused: {v6}" if v6 else "no IPv6 address"))

    # --- public surfaces (as on Azure: ARM REST and Azure AD over the network, authenticated)
    arm = resolve("arm")
    if arm:
        s, b = http(arm, 7701, f"{cfg['victim_vm_id']}?api-version=2024-07-01")
        report(s not in range(200, 300), f"{me}: ARM REST GET {cfg['victim_name']} without a token", f"{s} {b[:80]}")
        s0, b0 = http(IMDS, 80, token_path(), {"Metadata": "true"})
        token = json.loads(b0).get("access_token") if s0 == 200 else None
        patch = json.dumps({"identity": {"type": "UserAssigned",
                                         "userAssignedIdentities": {cross["msi_res_id"]: {}}}}).encode()
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        s, b = http(arm, 7701, f"{cfg['my_vm_id']}?api-version=2024-07-01", headers, method="PATCH", body=patch)
        report(s not in range(200, 300),
               f"{me}: ARM REST PATCH {me} adding {cross['name']} with {'its own token (no role)' if token else 'no token'}",
               f"{s} {b[:100]}")
    aad = resolve("aad")
    if aad:
        form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": cross["client_id"],
                                       "scope": RESOURCE + ".default"}).encode()
        s, b = http(aad, 7702, f"/{cross['tenant_id']}/oauth2/v2.0/token",
                    {"Content-Type": "application/x-www-form-urlencoded"}, method="POST", body=form)
        report("access_token" not in b, f"{me}: Azure AD token for {cross['name']}'s client id without a credential",
               f"{s} {b[:100]}")

    # --- key material within reach
    mounts = [l.split()[4] for l in open("/proc/self/mountinfo") if "/volumes/" in l.split()[3]]
    report(not mounts, f"{me}: no volume mounted in the VM (no party data, certificates or CA)", f"volumes at {mounts}")
    found = []
    for root, dirs, files in os.walk("/", topdown=True):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys", "/dev")]
        for f in files:
            p = os.path.join(root, f)
            try:
                if os.path.islink(p) or os.path.getsize(p) > 2_000_000:
                    continue
                with open(p, "rb") as fh:
                    if PEM_KEY.search(fh.read()):
                        found.append(p)
            except OSError:
                continue
    report(not found, f"{me}: no private key readable anywhere in the VM", f"found: {found[:5]}" if found else "none")


def attacker_cert_der():
    """A self-signed certificate the attacker owns (DER), made with openssl if present, else a fixed blob."""
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{d}/k",
                            "-subj", "/CN=attacker", "-days", "2", "-outform", "DER", "-out", f"{d}/c"],
                           capture_output=True)
        if r.returncode == 0:
            return open(f"{d}/c", "rb").read()
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID
        import datetime
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now)
                .not_valid_after(now + datetime.timedelta(days=2)).sign(key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.DER)
    except ImportError:
        return b"0\x82\x01\x00not-a-certificate"


# ------------------------------------------------------------------------------------------- control mode
def control_mode(cfg):
    who = cfg["who"]
    cert_dir = cfg.get("cert_dir")
    transports = ("tls",) if cert_dir else ("h2c", "tls")
    control = cfg["control"]
    v = cfg["victim"]
    t = lambda party, port: [(resolve(party) or control[party], port, party)]
    grpc_attempt(f"{who}: Msrp/GetCredential for {v['name']} (on {v['host']} only)",
                 t("msrp", 7704), "/misim.msrp.v1.Msrp/GetCredential",
                 pb_str(1, v["msi_res_id"]) + pb_str(2, cfg.get("as_host", "attacker")), transports, cert_dir)
    grpc_attempt(f"{who}: AadAdmin/AddKeyCredential (attacker's certificate) on {v['name']}'s service principal",
                 t("aad", 7703), "/misim.aad.v1.AadAdmin/AddKeyCredential",
                 pb_str(1, v["tenant_id"]) + pb_str(2, v["principal_id"]) + pb_str(3, attacker_cert_der()),
                 transports, cert_dir)
    for h in cfg["host_names"]:
        grpc_attempt(f"{who}: HostAgent/ListVms on {h}", t(h, 7711), "/misim.imds.v1.HostAgent/ListVms", b"",
                     transports, cert_dir)
    a = cfg["attach"]
    msg = pb_str(1, a["vm_id"]) + pb_str(2, identity_ref(v))
    grpc_attempt(f"{who}: HostAgent/ConfigureIdentities on {a['host']} attaching {v['name']} to {a['vm_name']}",
                 t(a["host"], 7711), "/misim.imds.v1.HostAgent/ConfigureIdentities", msg, transports, cert_dir)
    own = cfg.get("own_credential")
    if own and cert_dir:
        ok, ev = grpc(resolve("msrp") or control["msrp"], 7704, "/misim.msrp.v1.Msrp/GetCredential",
                      pb_str(1, own["msi_res_id"]) + pb_str(2, cfg["as_host"]), tls=True, cert_dir=cert_dir,
                      name="msrp")
        report(ok, f"{who}: (control) does get {own['name']}, assigned to a VM on its own host: the refusals "
                   "above are authorization, not a broken handshake", ev)


# ------------------------------------------------------------------------------------------- keys mode
def keys_mode(cfg):
    """Key material in a volume mounted at cfg["root"]: sled database files (db, snap.*, blobs/*: keys
    as base64 PKCS#8; conf is only sled's settings), PEM private keys, *.key and key.pem. PASS when a
    process of another user (uid/gid 65534) can read none of them."""
    import stat
    top = cfg["root"]
    keys, loose = [], []
    for root, dirs, files in os.walk(top):
        sled = ("conf" in files and "db" in files) or os.path.basename(root) == "blobs"
        for f in files:
            p = os.path.join(root, f)
            st = os.lstat(p)
            if not stat.S_ISREG(st.st_mode):
                continue
            with open(p, "rb") as fh:
                pem = b"PRIVATE KEY-----" in fh.read(1 << 20)
            if pem or (sled and f != "conf") or f.endswith(".key") or f == "key.pem":
                keys.append(p)
                if st.st_mode & 0o077:
                    loose.append(f"{p[len(top):]} {stat.S_IMODE(st.st_mode):04o}")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        got = []
        for p in keys:
            try:
                with open(p, "rb") as fh:
                    fh.read(1)
                got.append(p[len(top):])
            except OSError:
                pass
        os.write(w, "\n".join(got).encode())
        os._exit(0)
    os.close(w)
    read = [line for line in os.read(r, 1 << 20).decode().split("\n") if line]
    os.waitpid(pid, 0)
    what = f"{cfg['label']}: key material readable only by its owner"
    if read:
        report(False, what, f"uid 65534 read {', '.join(read[:6])}")
    else:
        mode = stat.S_IMODE(os.stat(top).st_mode)
        note = (f"; group/other bits on {', '.join(loose[:3])}, but the directories (top {mode:04o}) keep "
                "other users out") if loose else ""
        report(True, what, f"{len(keys)} key/database files, none readable by uid 65534{note}")


# ------------------------------------------------------------------------------------------- flood mode
def flood_mode(cfg):
    """Opens cfg["count"] idle TCP connections to cfg["host"]:cfg["port"], prints `holding N open (of M
    connected)` once they are up, keeps them cfg["hold"] seconds, then closes them. Not an attempt of
    its own: deploy/attack.sh measures another VM's token meanwhile."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    count = min(cfg["count"], hard - 64)
    socks = []
    for i in range(0, count, 500):  # batch by batch; connections not up within 3 s count as refused
        pending = selectors.DefaultSelector()
        for _ in range(min(500, count - i)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((cfg["host"], cfg["port"]))
            if err == errno.EINPROGRESS:
                pending.register(s, selectors.EVENT_WRITE)
            elif err == 0:
                socks.append(s)
            else:
                s.close()
        deadline = time.time() + 3
        while pending.get_map() and time.time() < deadline:
            for key, _ in pending.select(timeout=max(0.0, deadline - time.time())):
                pending.unregister(key.fileobj)
                if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    socks.append(key.fileobj)
                else:
                    key.fileobj.close()
        for key in list(pending.get_map().values()):
            key.fileobj.close()
        pending.close()
    time.sleep(2)
    check = selectors.DefaultSelector()
    for s in socks:
        check.register(s, selectors.EVENT_READ)
    closed = len(check.select(timeout=0))
    print(f"holding {len(socks) - closed} open (of {len(socks)} connected, {count} tried)", flush=True)
    time.sleep(cfg["hold"])
    for s in socks:
        s.close()
    print("flood over", flush=True)


def main():
    mode, cfg = sys.argv[1], json.loads(sys.argv[2])
    {"vm": vm_mode, "control": control_mode, "keys": keys_mode, "flood": flood_mode}[mode](cfg)


if __name__ == "__main__":
    main()
