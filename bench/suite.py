#!/usr/bin/env python3
"""misim's benchmark suite (issue #18; docs/performance.md explains every row).

`bench/run` measures misim against peers on this machine and prints one table: each row with misim's
figure, the peer's (nginx serving the same body as a static file, moto's EC2 instance-metadata
credentials, openssl's RSA-2048 bound), the ratio, the goal and whether it is met, then the machine's
load while the suite ran and the commands to reproduce each row.

Method: misim (`misim up --no-throttle --log warn`), nginx and moto_server run on loopback pinned to
core 0 (taskset), wrk and the other load generators to core 1; rows that compare two servers run
interleaved rounds (A B, B A, ...) and report the median. CPU per request is the server's
utime+stime delta (/proc/PID/stat, children included for nginx's workers) over the 2xx requests
wrk counted; memory is VmRSS (/proc/PID/status); fds and listening sockets come from /proc/PID/fd.

`bench/run --smoke` (CI) runs every row with tiny sizes and 1-second rounds on the debug build: it
checks that the suite works, not the numbers. Nothing but 127.0.0.1 is ever contacted.
"""

import argparse
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CACHE = ROOT / "target" / "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CORE = "0"
LOAD_CORE = "1"
RESOURCE = "https://management.azure.com/"

# Never follow a proxy from the environment: every request of the suite goes to loopback.
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def can_pin():
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pin(core):
    return ["taskset", "-c", core] if can_pin() else []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_loopback(url):
    host = re.match(r"https?://([^/:]+|\[[^\]]+\])", url).group(1)
    if host not in ("127.0.0.1", "localhost", "[::1]"):
        raise RuntimeError(f"refusing to load non-loopback URL {url}")


# ---------------------------------------------------------------- /proc readings


def proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    return s[s.rindex(")") + 2 :].split()


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if int(proc_stat(d)[1]) == pid:
                    out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def cpu_ticks(pids):
    """utime+stime of the processes (all threads), in clock ticks."""
    total = 0
    for pid in pids:
        try:
            f = proc_stat(pid)
            total += int(f[11]) + int(f[12])
        except OSError:
            pass
    return total


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def listening_sockets(pid):
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            t = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if t.startswith("socket:["):
            inodes.add(t[8:-1])
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "0A" and cols[9] in inodes:
                        n += 1
        except OSError:
            pass
    return n


# ---------------------------------------------------------------- processes


class Server:
    """A server process with its log in a file; stop() sends SIGTERM, then SIGKILL after 10 s."""

    def __init__(self, name, argv, log_path, cwd=None, env=None, nofile=None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.logf = open(log_path, "ab")

        def limit():
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(
            argv,
            stdout=self.logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            preexec_fn=limit,
        )

    @property
    def pid(self):
        return self.proc.pid

    def pids(self):
        return [self.pid] + children(self.pid)

    def alive(self):
        return self.proc.poll() is None

    def tail(self, n=15):
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def repin(self, cores):
        if can_pin():
            subprocess.run(["taskset", "-a", "-p", "-c", cores, str(self.pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


def wait_http(url, timeout=30, headers=None):
    assert_loopback(url)
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with NO_PROXY.open(req, timeout=2) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{url} answered {e.code}: {e.read()[:300]!r}") from None
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = e
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s: {last}")


class Misim(Server):
    """`misim up` on free loopback ports, one host, throttling off, log at warn."""

    def __init__(self, binary, data_dir, hosts=1, nofile=None, pinned=True, extra=()):
        self.binary = binary
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ep = self.data_dir / "endpoints.json"
        if ep.exists():
            ep.unlink()
        argv = (pin(SERVER_CORE) if pinned else []) + [
            str(binary), "up", "--data-dir", str(self.data_dir), "--base-port", "0",
            "--hosts", str(hosts), "--no-throttle", "--log", "warn", *extra,
        ]
        self.command = shlex.join(str(a) for a in argv)
        self.t0 = time.perf_counter()
        super().__init__("misim", argv, str(self.data_dir) + ".log", nofile=nofile)
        try:
            self.startup_s = self.wait_endpoints()
        except BaseException:
            self.stop()
            raise
        self.arm = self.endpoints["arm_grpc"]

    def wait_endpoints(self, timeout=120):
        ep = self.data_dir / "endpoints.json"
        while time.perf_counter() - self.t0 < timeout:
            if not self.alive():
                raise RuntimeError(f"misim up exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                e = json.loads(ep.read_text())
                if e.get("subscription_id"):
                    self.endpoints = e
                    return time.perf_counter() - self.t0
            except (OSError, ValueError):
                pass
            time.sleep(0.002)
        raise RuntimeError(f"misim up wrote no endpoints.json within {timeout} s:\n{self.tail()}")

    def cli(self, *args, timeout=120, check=True, core=None):
        env = dict(os.environ, MISIM_ARM=self.arm, NO_PROXY="*", no_proxy="*")
        argv = (pin(core) if core else []) + [str(self.binary), *args]
        r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {r.stderr.strip() or r.stdout.strip()}")
        return r

    def json(self, *args, **kw):
        r = self.cli(*args, **kw)
        return json.loads(r.stdout) if r.stdout.strip() else {}

    def populate(self, *args, timeout=600):
        """`misim bench populate …`: JSON even when some calls failed (then with an error)."""
        try:
            r = self.cli("bench", "populate", *args, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"timeout": timeout}
        try:
            return json.loads(r.stdout)
        except ValueError:
            raise RuntimeError(f"bench populate {' '.join(args)}: {r.stderr.strip()}") from None

    def vm_with_identity(self, rg, name, identity="system"):
        self.json("vm", "create", "-g", rg, "-n", name)
        self.json("vm", "identity", "assign", "-g", rg, "-n", name, "--identities", identity)
        return self.json("vm", "show", "-g", rg, "-n", name)["imdsEndpoint"]


def token_url(imds, client_id=None, bypass=False):
    url = f"{imds}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={RESOURCE}"
    if client_id:
        url += f"&client_id={client_id}"
    if bypass:
        url += "&bypass_cache=true"
    assert_loopback(url)
    return url


# ---------------------------------------------------------------- wrk

UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
    return float(m.group(1)) * UNIT[m.group(2)] if m else None


def wrk_cmd(url, conns, duration):
    return pin(LOAD_CORE) + [
        "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "5s",
        "-s", str(BENCH / "metadata.lua"), url,
    ]


def wrk(url, conns, duration, server_pids):
    """Runs wrk against url, returning req/s (2xx only), latency percentiles and server CPU/request."""
    assert_loopback(url)
    cmd = wrk_cmd(url, conns, duration)
    c0 = cpu_ticks(server_pids)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    wall = time.perf_counter() - t0
    c1 = cpu_ticks(server_pids)
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if not m:
        raise RuntimeError(f"wrk printed no result: {out.strip()[-400:]}")
    requests = int(m.group(1))
    secs = parse_ms(m.group(2) + m.group(3)) / 1000.0
    non2xx = int((re.search(r"Non-2xx or 3xx responses: (\d+)", out) or [0, 0])[1])
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    sock_errors = sum(int(x) for x in sock.groups()) if sock else 0
    ok = max(requests - non2xx, 0)
    pct = {p: parse_ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    cpu_s = (c1 - c0) / CLK_TCK
    return {
        "rps": ok / secs if secs else 0.0,
        "requests": ok,
        "errors": non2xx + sock_errors,
        "p50": pct.get("50"),
        "p99": pct.get("99"),
        "cpu_us": cpu_s * 1e6 / ok if ok else None,
        "cpu_util": cpu_s / wall,
    }


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# ---------------------------------------------------------------- the suite


class Suite:
    def __init__(self, args):
        self.a = args
        self.rows = []
        self.commands = []
        self.loads = [loadavg()]
        self.work = Path(tempfile.mkdtemp(prefix="misim-bench-"))
        # nginx's worker runs as an unprivileged user when the suite runs as root: let it read.
        self.work.chmod(0o755)
        self.servers = []
        self.errors = 0

    # -- bookkeeping

    def row(self, name, misim, peer=None, ratio=None, goal="reported", met=None, note=""):
        self.loads.append(loadavg())
        r = {"row": name, "misim": misim, "peer": peer or "", "ratio": ratio, "goal": goal,
             "met": met, "note": note, "load": self.loads[-1][0]}
        self.rows.append(r)
        status = {True: "met", False: "NOT MET", None: ""}[met]
        log(f"{name}: {misim} | {peer or ''} | {fmt_ratio(ratio)} | {goal} {status} {note}")

    def fail(self, name, reason, error=True):
        self.loads.append(loadavg())
        self.rows.append({"row": name, "misim": "—", "peer": "", "ratio": None, "goal": "",
                          "met": None, "note": reason, "load": self.loads[-1][0]})
        if error:
            self.errors += 1
        log(f"{name}: {reason}")

    def cmd(self, what, argv):
        """Records a command to reproduce a row: a list is shell-quoted, a string kept as written."""
        line = argv if isinstance(argv, str) else shlex.join(str(a) for a in argv)
        self.commands.append((what, line))

    def start(self, server):
        self.servers.append(server)
        return server

    def cleanup(self):
        for s in reversed(self.servers):
            try:
                s.stop()
            except Exception:  # noqa: BLE001
                pass
        if not self.a.keep:
            shutil.rmtree(self.work, ignore_errors=True)

    def section(self, title, fn):
        log(f"== {title}")
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a row's failure must not stop the suite
            self.fail(title, f"error: {e}".splitlines()[0][:300])
            traceback.print_exc(file=sys.stderr)

    # -- tools

    def have(self, tool):
        return shutil.which(tool) is not None

    def interleaved(self, a, b):
        """Runs a() and b() in alternating order for the configured rounds; lists of results."""
        ra, rb = [], []
        for r in range(self.a.rounds):
            if r % 2 == 0:
                ra.append(a())
                rb.append(b())
            else:
                rb.append(b())
                ra.append(a())
        return ra, rb

    # -- rows

    def token_rows(self):
        a = self.a
        m = self.start(Misim(a.misim, self.work / "tokens"))
        self.misim = m
        self.cmd("misim (server, core 0)", m.command)
        m.json("group", "create", "-n", "bench", "-l", "westeurope")
        imds = m.vm_with_identity("bench", "vm1")
        url = token_url(imds)
        body = wait_http(url, headers={"Metadata": "true"})
        if b"access_token" not in body:
            raise RuntimeError(f"IMDS did not issue a token: {body[:200]!r}")
        self.token_body = body
        self.imds = imds
        d = a.duration
        nginx = self.start_nginx(body)
        mp = lambda: m.pids()  # noqa: E731
        for conns in (32, 256):
            name = f"cached token -c{conns} vs nginx (req/s)"
            if not self.have("wrk"):
                self.fail(name, "skipped: wrk is not installed (apt-get install wrk)", error=False)
                continue
            self.cmd(f"misim -c{conns}", wrk_cmd(url, conns, d))
            if nginx is None:
                res = [wrk(url, conns, d, mp()) for _ in range(a.rounds)]
                self.row(name, f"{median(r['rps'] for r in res):.0f} req/s",
                         note=f"nginx skipped: {self.nginx_reason}")
                continue
            nurl = f"http://127.0.0.1:{self.nginx_port}/token"
            self.cmd(f"nginx -c{conns}", wrk_cmd(nurl, conns, d))
            ra, rb = self.interleaved(lambda: wrk(url, conns, d, mp()),
                                      lambda: wrk(nurl, conns, d, nginx.pids()))
            mr, nr = median(r["rps"] for r in ra), median(r["rps"] for r in rb)
            errs = sum(r["errors"] for r in ra)
            self.row(name, f"{mr:.0f} req/s", f"nginx {nr:.0f} req/s", mr / nr if nr else None,
                     "≥ 1.0×", bool(nr) and mr / nr >= 1.0,
                     f"errors {errs}" if errs else "")
            mc, nc = median(r["cpu_us"] for r in ra), median(r["cpu_us"] for r in rb)
            self.row(f"cached token -c{conns} vs nginx (CPU µs/req)", f"{mc:.1f} µs",
                     f"nginx {nc:.1f} µs", nc / mc if mc else None, "≥ 1.0× (nginx/misim)",
                     bool(mc) and nc / mc >= 1.0)
            if conns == 256:
                mp99, np99 = median(r["p99"] for r in ra), median(r["p99"] for r in rb)
                self.row("cached token -c256 p99 latency", f"{mp99:.2f} ms", f"nginx {np99:.2f} ms",
                         None, "reported")
            self.peak = max(getattr(self, "peak", 0.0), mr)

    def start_nginx(self, body):
        self.nginx_reason = ""
        if not self.have("nginx"):
            self.nginx_reason = "nginx is not installed (apt-get install nginx-light)"
            return None
        prefix = self.work / "nginx"
        (prefix / "tmp").mkdir(parents=True)
        (prefix / "logs").mkdir()
        (prefix / "token.json").write_bytes(body)
        for p in (prefix, prefix / "tmp", prefix / "logs"):
            p.chmod(0o755)
        (prefix / "token.json").chmod(0o644)
        self.nginx_port = free_port()
        conf = (BENCH / "nginx.conf.in").read_text()
        conf = conf.replace("@PREFIX@", str(prefix)).replace("@PORT@", str(self.nginx_port))
        (prefix / "nginx.conf").write_text(conf)
        argv = pin(SERVER_CORE) + [shutil.which("nginx"), "-p", str(prefix), "-c", "nginx.conf",
                                   "-e", str(prefix / "error.log")]
        self.cmd("nginx (peer, core 0)", argv)
        n = self.start(Server("nginx", argv, str(prefix / "stdout.log")))
        wait_http(f"http://127.0.0.1:{self.nginx_port}/token")
        return n

    def half_load_row(self):
        name = "cached token p99 at half the peak load"
        peak = getattr(self, "peak", None)
        if not peak:
            self.fail(name, "skipped: no peak from the -c32/-c256 rows", error=False)
            return
        rate = peak / 2
        args = ["bench", "token", "--vm", "vm1", "-g", "bench", "-c", "32",
                "--duration", f"{self.a.duration}s", "--rate", f"{rate:.0f}", "--json"]
        self.cmd("misim p99 at half load", pin(LOAD_CORE) + [self.a.misim, *args])
        r = json.loads(self.misim.cli(*args, core=LOAD_CORE, timeout=self.a.duration + 60).stdout)
        p99 = r["latencyMs"]["p99"]
        got = r["requestsPerSecond"]
        note = f"paced at {rate:.0f} req/s, achieved {got:.0f}"
        if got < 0.9 * rate:
            note += " (the generator fell short of the rate)"
        errs = r["errors"]["non2xx"] + r["errors"]["transport"]
        if errs:
            note += f", errors {errs}"
        self.row(name, f"{p99:.2f} ms", None, None, "≤ 2 ms", p99 <= 2.0, note)

    def moto_rows(self):
        name = "cached token vs moto EC2 credentials -c32 (req/s)"
        if not self.have("wrk"):
            self.fail(name, "skipped: wrk is not installed", error=False)
            return
        moto = self.moto_server()
        if isinstance(moto, str):
            self.fail(name, f"skipped: {moto}", error=False)
            return
        port = self.moto_port
        murl = f"http://127.0.0.1:{port}/latest/meta-data/iam/security-credentials/default-role"
        body = wait_http(murl, timeout=60)
        if b"AccessKeyId" not in body:
            raise RuntimeError(f"moto answered {body[:200]!r}")
        url = token_url(self.imds)
        d = self.a.duration
        self.cmd("moto -c32", wrk_cmd(murl, 32, d))
        ra, rb = self.interleaved(lambda: wrk(url, 32, d, self.misim.pids()),
                                  lambda: wrk(murl, 32, d, moto.pids()))
        mr, pr = median(r["rps"] for r in ra), median(r["rps"] for r in rb)
        self.row(name, f"{mr:.0f} req/s", f"moto {pr:.0f} req/s", mr / pr if pr else None, "reported")
        mc, pc = median(r["cpu_us"] for r in ra), median(r["cpu_us"] for r in rb)
        self.row("cached token vs moto EC2 credentials (CPU µs/req)", f"{mc:.1f} µs",
                 f"moto {pc:.1f} µs", pc / mc if mc else None, "reported (moto/misim)")

    def moto_server(self):
        venv = CACHE / "moto-venv"
        exe = venv / "bin" / "moto_server"
        if not exe.exists():
            if self.a.no_install:
                return "moto is not installed and --no-install was given"
            log("installing moto[server] from PyPI into target/bench/moto-venv (cached)")
            try:
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                               capture_output=True, timeout=120)
                subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "moto[server]"],
                               check=True, capture_output=True, timeout=300)
            except (subprocess.SubprocessError, OSError) as e:
                shutil.rmtree(venv, ignore_errors=True)
                return f"cannot install moto into {venv}: {e}"
        self.moto_port = free_port()
        argv = pin(SERVER_CORE) + [str(exe), "-H", "127.0.0.1", "-p", str(self.moto_port)]
        self.cmd("moto_server (peer, core 0)", argv)
        return self.start(Server("moto", argv, str(self.work / "moto.log")))

    def cold_row(self):
        name = "cold token (bypass_cache) vs openssl RSA-2048 ÷ 2"
        if not self.have("wrk"):
            self.fail(name, "skipped: wrk is not installed", error=False)
            return
        url = token_url(self.imds, bypass=True)
        d = self.a.duration
        self.cmd("misim cold -c8", wrk_cmd(url, 8, d))
        res = [wrk(url, 8, d, self.misim.pids()) for _ in range(self.a.rounds)]
        tps = median(r["rps"] for r in res)
        errs = sum(r["errors"] for r in res)
        sign = self.openssl_signs()
        bound = sign / 2
        self.row(name, f"{tps:.0f} tokens/s", f"openssl {sign:.0f} signs/s ÷ 2 = {bound:.0f}",
                 tps / bound, "≥ 0.6×", tps / bound >= 0.6,
                 (f"errors {errs}; " if errs else "") + f"server CPU {median(r['cpu_util'] for r in res):.2f} cores")

    def openssl_signs(self):
        if hasattr(self, "_signs"):
            return self._signs
        argv = pin(SERVER_CORE) + ["openssl", "speed", "-seconds", str(self.a.openssl_seconds),
                                   "rsa2048"]
        self.cmd("openssl RSA-2048 signs/s (core 0)", argv)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
        m = re.search(r"rsa\s+2048 bits\s+\S+\s+\S+\s+([\d.]+)", out)
        if not m:
            raise RuntimeError(f"cannot read openssl speed output: {out[-300:]}")
        self._signs = float(m.group(1))
        return self._signs

    def identity_rows(self):
        m = self.misim
        n = self.a.identities
        # One VM holding one user-assigned identity, one holding n: the same request to each.
        m.json("identity", "create", "-g", "bench", "-n", "one-id")
        one_cid = m.json("identity", "show", "-g", "bench", "-n", "one-id")["clientId"]
        one = m.vm_with_identity("bench", "vm-one", "one-id")
        m.json("vm", "create", "-g", "bench", "-n", "vm-many")
        rss0 = rss_kib(m.pid)
        sign_genrsa = self.genrsa_seconds()
        m.repin("0,1")  # creating identities may use both cores, like the openssl bound
        args = ["--identities", str(n), "--concurrency", "4", "--assign-to", "vm-many",
                "--batch", "100", "-g", "bench"]
        self.cmd(f"{n} identities created + assigned", [self.a.misim, "bench", "populate", *args])
        t0 = time.perf_counter()
        r = m.populate(*args, timeout=self.a.step_timeout)
        wall = time.perf_counter() - t0
        m.repin(SERVER_CORE)
        name = f"{n} identities created + assigned vs {n} × openssl genrsa ÷ 2 cores"
        if "timeout" in r:
            self.fail(name, f"NOT MET: did not finish within {r['timeout']} s", error=False)
            return
        err = (r.get("identityCreate") or {}).get("error") or (r.get("identityAssign") or {}).get("error")
        bound = n * sign_genrsa / 2
        self.row(name, f"{wall:.1f} s", f"genrsa {sign_genrsa * 1000:.0f} ms × {n} ÷ 2 = {bound:.1f} s",
                 wall / bound, "≤ 1.2×", wall / bound <= 1.2 and not err,
                 f"create {r['identityCreate']['wallSeconds']:.1f} s, assign "
                 f"{(r.get('identityAssign') or {}).get('wallSeconds', 0):.1f} s"
                 + (f"; error: {err}" if err else ""))
        rss1 = rss_kib(m.pid)
        self.row("memory per identity", f"{(rss1 - rss0) / n:.1f} KiB",
                 note=f"RSS {rss0 / 1024:.0f} → {rss1 / 1024:.0f} MiB over {n} identities")
        many_cid = r["identityCreate"].get("lastClientId")
        if not self.have("wrk") or not many_cid:
            self.fail(f"cached token, VM with {n} identities vs 1 (CPU/req)",
                      "skipped: wrk missing or no identity created", error=False)
            return
        u1 = token_url(one, client_id=one_cid)
        vm_many = m.json("vm", "show", "-g", "bench", "-n", "vm-many")["imdsEndpoint"]
        un = token_url(vm_many, client_id=many_cid)
        wait_http(u1, headers={"Metadata": "true"})
        wait_http(un, headers={"Metadata": "true"})
        d = self.a.duration
        self.cmd(f"VM with {n} identities -c32", wrk_cmd(un, 32, d))
        self.cmd("VM with 1 identity -c32", wrk_cmd(u1, 32, d))
        ra, rb = self.interleaved(lambda: wrk(un, 32, d, m.pids()), lambda: wrk(u1, 32, d, m.pids()))
        cn, c1 = median(r["cpu_us"] for r in ra), median(r["cpu_us"] for r in rb)
        self.row(f"cached token, VM with {n} identities vs 1 (CPU/req)", f"{cn / 1000:.4f} ms",
                 f"1 identity {c1 / 1000:.4f} ms", cn / c1 if c1 else None, "≤ 1.1×",
                 bool(c1) and cn / c1 <= 1.1,
                 f"req/s {median(r['rps'] for r in ra):.0f} vs {median(r['rps'] for r in rb):.0f}")

    def genrsa_seconds(self):
        argv = pin(SERVER_CORE) + ["openssl", "genrsa", "-out", "/dev/null", "2048"]
        self.cmd(f"openssl genrsa 2048 (× {self.a.genrsa_samples}, core 0)", argv)
        times = []
        for _ in range(self.a.genrsa_samples):
            t0 = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=True, timeout=60)
            times.append(time.perf_counter() - t0)
        return statistics.mean(times)

    def scale_rows(self):
        a = self.a
        m = self.start(Misim(a.misim, self.work / "scale"))
        self.cmd("misim for the VM-count rows", m.command)
        m.json("group", "create", "-n", "scale", "-l", "westeurope")
        probe = m.vm_with_identity("scale", "probe")
        url = token_url(probe)
        wait_http(url, headers={"Metadata": "true"})
        created = 1
        base = {"rss": rss_kib(m.pid), "fds": fds(m.pid), "listen": listening_sockets(m.pid), "vms": 1}
        points = []
        for size in a.sizes:
            sample = max(1, min(a.samples, size // 2))
            grow = size - sample - created
            if grow > 0:
                g = m.populate("-g", "scale", "--vms", str(grow), "--start", str(created),
                               "--concurrency", "4", timeout=a.step_timeout)
                if "timeout" in g or g["vmCreate"].get("error"):
                    why = g.get("vmCreate", {}).get("error") or f"timed out after {a.step_timeout} s"
                    self.fail(f"VM create at {size} VMs", f"NOT MET: growing failed: {why}", error=False)
                    break
                created += g["vmCreate"]["count"]
            args = ["-g", "scale", "--vms", str(sample), "--start", str(created),
                    "--concurrency", "1", "--show-samples", str(a.samples)]
            self.cmd(f"VM create + vm show sample at {size} VMs", [a.misim, "bench", "populate", *args])
            s = m.populate(*args, timeout=a.step_timeout)
            if "timeout" in s or s["vmCreate"].get("error"):
                why = s.get("vmCreate", {}).get("error") or f"timed out after {a.step_timeout} s"
                self.fail(f"VM create at {size} VMs", f"NOT MET: {why}", error=False)
                break
            created += s["vmCreate"]["count"]
            tok = wrk(url, 4, max(1, a.duration // 2), m.pids()) if self.have("wrk") else None
            points.append({
                "vms": created, "create": s["vmCreate"]["meanMs"], "show": s["vmShow"]["meanMs"],
                "token_p50": tok and tok["p50"], "token_p99": tok and tok["p99"],
                "rss": rss_kib(m.pid), "fds": fds(m.pid), "listen": listening_sockets(m.pid),
            })
            log(f"   {points[-1]}")
        if not points:
            return
        first, last = points[0], points[-1]

        def series(key, unit="ms", digits=2):
            return " / ".join(f"{p['vms']}: {p[key]:.{digits}f}" for p in points if p[key] is not None) + f" {unit}"

        def flat(key, name):
            if first[key] is None or last[key] is None:
                return
            ratio = last[key] / first[key] if first[key] else None
            self.row(name, series(key), None, ratio, "flat: ≤ 1.5× from first to last size",
                     ratio is not None and ratio <= 1.5 and last["vms"] >= a.sizes[-1],
                     "" if last["vms"] >= a.sizes[-1] else f"stopped at {last['vms']} VMs")

        flat("create", "VM create (ms each)")
        flat("show", "vm show (ms each)")
        flat("token_p50", "cached token p50 latency -c4")
        dv = last["vms"] - base["vms"]
        self.row("memory per VM", f"{(last['rss'] - base['rss']) / dv:.1f} KiB",
                 note=f"RSS {base['rss'] / 1024:.0f} → {last['rss'] / 1024:.0f} MiB over {dv} VMs")
        self.row("fds per VM", f"{(last['fds'] - base['fds']) / dv:.2f}",
                 note=f"{base['fds']} → {last['fds']} fds")
        self.row("listening ports per VM", f"{(last['listen'] - base['listen']) / dv:.2f}",
                 note=f"{base['listen']} → {last['listen']} listening sockets")
        m.stop()

    def fd_limit_row(self):
        a = self.a
        n, lim = a.fd_vms, a.fd_limit
        name = f"{n} VMs under ulimit -n {lim}"
        # One IMDS listener per host (misim up --imds-listener shared): per-VM ports need one fd per VM.
        m = self.start(Misim(a.misim, self.work / "fdlimit", nofile=lim,
                             extra=("--imds-listener", "shared")))
        self.cmd(name, f"(ulimit -n {lim}; exec {m.command}) &\n    MISIM_ARM=ARM_GRPC "
                 + shlex.join([a.misim, "bench", "populate", "-g", "many", "--vms", str(n),
                               "--concurrency", "4"]))
        r = m.populate("-g", "many", "--vms", str(n), "--concurrency", "4", timeout=a.step_timeout)
        if "timeout" in r:
            created = len(m.json("vm", "list", "-g", "many"))
            self.row(name, f"{created} created", None, None, f"all {n}", False,
                     f"timed out after {a.step_timeout} s")
        else:
            v = r["vmCreate"]
            err = v.get("error")
            alive = m.alive()
            self.row(name, f"{v['count']} created", None, None, f"all {n}",
                     v["count"] >= n and not err and alive,
                     (f"failed: {err}" if err else f"{v['meanMs']:.1f} ms each")
                     + ("" if alive else "; misim exited"))
        m.stop()

    def startup_rows(self):
        a = self.a
        fresh, restart, failed = [], [], []

        def up(d):
            try:
                m = Misim(a.misim, d, hosts=2, pinned=False)
            except RuntimeError as e:  # a start that fails is a result of this row, not a crash
                failed.append(str(e).splitlines()[-1][:300])
                return None
            self.last_up = m.command
            m.stop()
            return m.startup_s

        for i in range(max(a.rounds, 2)):
            d = self.work / f"up-{i}"
            f = up(d)
            if f is None:
                continue
            fresh.append(f)
            r = up(d)
            if r is not None:
                restart.append(r)
        if hasattr(self, "last_up"):
            self.cmd("misim up start → endpoints.json (twice on one data dir: fresh, then restart)",
                     self.last_up)
        note = f"{len(failed)} of {len(fresh) + len(restart) + len(failed)} starts failed: {failed[0]}" if failed else ""
        for name, got, goal in (("fresh state", fresh, 300), ("existing state", restart, 100)):
            if not got:
                self.row(f"misim up → endpoints.json, {name}", "—", None, None, f"≤ {goal} ms", False, note)
                continue
            ms = median(got) * 1000
            self.row(f"misim up → endpoints.json, {name}", f"{ms:.0f} ms", None, None, f"≤ {goal} ms",
                     ms <= goal and not failed, note)

    def cli_row(self):
        """`misim bench token` itself (the CLI load generator)."""
        args = ["bench", "token", "--vm", "vm1", "-g", "bench", "-c", "32", "--duration",
                f"{self.a.duration}s"]
        self.cmd("misim bench token (CLI load generator, core 1)", pin(LOAD_CORE) + [self.a.misim, *args])
        out = self.misim.cli(*args, core=LOAD_CORE, timeout=self.a.duration + 60).stdout
        m = re.search(r"\| req/s\s+\|\s+(\d+)", out)
        p99 = re.search(r"\| latency p99\s+\|\s+([\d.]+) ms", out)
        if not m:
            raise RuntimeError(f"misim bench token printed no req/s: {out[-300:]}")
        self.row("misim bench token -c32 (its own load generator)", f"{m.group(1)} req/s",
                 note=f"p99 {p99.group(1)} ms" if p99 else "")

    # -- main

    def run(self):
        a = self.a
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        t0 = time.time()
        try:
            self.section("cached tokens vs nginx", self.token_rows)
            if hasattr(self, "misim"):
                self.section("p99 at half load", self.half_load_row)
                self.section("misim bench token", self.cli_row)
                self.section("moto", self.moto_rows)
                self.section("cold tokens", self.cold_row)
                self.section("identities", self.identity_rows)
                self.misim.stop()
            self.section("VM counts", self.scale_rows)
            self.section("fd limit", self.fd_limit_row)
            self.section("misim up start", self.startup_rows)
        finally:
            self.cleanup()
        self.report(started, time.time() - t0)
        return 1 if self.errors else 0

    def report(self, started, took):
        a = self.a
        cpu = "?"
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        lo = [x[0] for x in self.loads]
        lines = [
            f"misim benchmark suite ({'smoke' if a.smoke else 'full'}), {started}, {took:.0f} s",
            f"machine: {os.cpu_count()} cores, {cpu}, Linux {platform.release()}; "
            f"server on core {SERVER_CORE}, load generators on core {LOAD_CORE}"
            + ("" if can_pin() else " (NOT pinned: taskset or a second core missing)"),
            f"load average (1 min) while it ran: min {min(lo):.2f}, max {max(lo):.2f}, "
            f"start {self.loads[0][0]:.2f}, end {self.loads[-1][0]:.2f} (column load: at each row's end; "
            f"above {os.cpu_count()} other work shared the cores)",
            f"rounds: {a.rounds} interleaved × {a.duration} s; misim: {a.misim}",
            "",
            "| row | misim | peer / bound | ratio | goal | met | load | note |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            met = {True: "met", False: "**not met**", None: ""}[r["met"]]
            lines.append(f"| {r['row']} | {r['misim']} | {r['peer']} | {fmt_ratio(r['ratio'])} | "
                         f"{r['goal']} | {met} | {r['load']:.1f} | {r['note']} |")
        lines += ["", "Commands to reproduce:", ""]
        lines.append(f"    bench/run {shlex.join(sys.argv[1:])}".rstrip())
        lines.append("    # client verbs below find ARM with MISIM_ARM=<arm_grpc of the data dir's endpoints.json>")
        for what, c in self.commands:
            lines.append(f"    # {what}\n    {c}")
        text = "\n".join(lines)
        print(text, flush=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (CACHE / f"results-{stamp}.md").write_text(text + "\n")
        (CACHE / f"results-{stamp}.json").write_text(json.dumps(
            {"started": started, "seconds": took, "loadavg": self.loads, "rows": self.rows,
             "commands": self.commands}, indent=2))
        log(f"written to {CACHE}/results-{stamp}.md and .json")


def fmt_ratio(r):
    return "" if r is None else f"{r:.2f}×"


# ---------------------------------------------------------------- setup


def install_tools(no_install):
    missing = [p for t, p in (("wrk", "wrk"), ("nginx", "nginx-light")) if shutil.which(t) is None]
    if not missing or no_install:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        log(f"not installing {missing}: needs root and apt-get; their rows are skipped")
        return
    log(f"installing {' '.join(missing)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                           env=env, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            log(f"apt-get install failed: {r.stderr.strip()[-300:]}")
    except (subprocess.SubprocessError, OSError) as e:
        log(f"apt-get failed: {e}")


def build(smoke):
    argv = ["cargo", "build", "--bin", "misim"] + ([] if smoke else ["--release"])
    log(" ".join(argv))
    subprocess.run(argv, cwd=ROOT, check=True)
    return str(ROOT / "target" / ("debug" if smoke else "release") / "misim")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="CI form: debug build, tiny sizes, 1 s rounds; checks it works, not the numbers")
    p.add_argument("--duration", type=int, help="seconds per wrk round (default 10; smoke 1)")
    p.add_argument("--rounds", type=int, help="interleaved A/B rounds (default 3; smoke 1)")
    p.add_argument("--sizes", help="VM counts, comma-separated (default 100,1000,5000,10000)")
    p.add_argument("--identities", type=int, help="identities created and assigned (default 1000)")
    p.add_argument("--fd-vms", type=int, help="VMs created under the fd limit (default 10000)")
    p.add_argument("--fd-limit", type=int, help="ulimit -n for that row (default 1024)")
    p.add_argument("--samples", type=int, help="timed VM creates / vm shows per size (default 50)")
    p.add_argument("--step-timeout", type=int, help="seconds one populate step may take (default 900)")
    p.add_argument("--misim", help="misim binary (default: build target/release/misim; smoke: debug)")
    p.add_argument("--no-build", action="store_true", help="use the binary as it is")
    p.add_argument("--no-install", action="store_true", help="do not apt-get / pip install tools")
    p.add_argument("--keep", action="store_true", help="keep the temporary data directories")
    a = p.parse_args()
    smoke = a.smoke
    defaults = {
        "duration": 1 if smoke else 10, "rounds": 1 if smoke else 3,
        "sizes": "20,60" if smoke else "100,1000,5000,10000",
        "identities": 10 if smoke else 1000, "fd_vms": 150 if smoke else 10000,
        "fd_limit": 128 if smoke else 1024, "samples": 10 if smoke else 50,
        "step_timeout": 120 if smoke else 900,
    }
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.sizes = [int(s) for s in str(a.sizes).split(",") if s]
    a.genrsa_samples = 2 if smoke else 40
    a.openssl_seconds = 1 if smoke else 3
    install_tools(a.no_install)
    if a.misim is None:
        a.misim = (str(ROOT / "target" / ("debug" if smoke else "release") / "misim") if a.no_build
                   else build(smoke))
    if not Path(a.misim).exists():
        sys.exit(f"bench: no misim binary at {a.misim}")
    suite = Suite(a)

    def interrupted(*_):
        suite.cleanup()
        sys.exit(130)

    signal.signal(signal.SIGTERM, interrupted)
    sys.exit(suite.run())


if __name__ == "__main__":
    main()
