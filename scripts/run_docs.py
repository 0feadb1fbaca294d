#!/usr/bin/env python3
"""Runs the shell examples of README.md and docs/*.md against a live misim, so docs that drift fail.

For each file with examples, a fresh `misim up` (default ports, data dir `misim-data` in a temporary
working directory) runs, and the file's examples run in order in ONE bash process (variables carry
from one block to the next), with `set -euo pipefail`:

- a ```sh block runs as written;
- a ```console block is a transcript: each line starting with `$ ` is a command (lines ending with
  `\\` continue it); the other lines are its output and are not compared. A command whose output
  shows a line starting with `error:` must fail (non-zero exit); every other command must succeed;
- when the default ports are taken (another misim), misim runs on a free port block and the docs'
  `127.0.0.1:77NN` addresses are rewritten to it;
- a block right after a line `<!-- docs-runner: skip (reason) -->` is not run (the reason is
  printed): examples that need Docker, a cluster, or tools the tests do not install.

PATH starts with the debug build's directory and the test venv's bin (python3 with azure-identity).
Prints `PASS`/`FAIL` per file and a closing `N passed, N failed`; exits 1 on any failure.

Usage: scripts/run_docs.py [FILE.md ...]     (default: README.md docs/*.md)
"""
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
MISIM = os.environ.get("MISIM_BIN", str(ROOT / "target" / "debug" / "misim"))
SKIP = re.compile(r"<!--\s*docs-runner:\s*skip\b(.*?)-->")
DEFAULT_PORTS = [7700, 7701, 7702, 7703, 7704, 7705, 7706, 7711, 7712]
VM_PORTS_SPAN = 1100  # the VMs' IMDS ports follow the block (base + 100 ... base + 1099)


def blocks(path: pathlib.Path):
    """Yields (line number, kind, text, skip reason or None) for each sh/console block."""
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(sh|bash|shell|console)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start = i + 1
        j = start
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        prev = lines[i - 1] if i > 0 else ""
        m = SKIP.search(prev)
        kind = "console" if fence.group(1) == "console" else "sh"
        yield start, kind, "\n".join(lines[start:j]), (m.group(1).strip(" ():") if m else None)
        i = j + 1


def console_to_sh(text: str) -> str:
    """Turns a transcript into commands, each checked for success or (when its output shows
    `error:`) for failure."""
    out, cmd, outputs = [], None, []

    def flush():
        if cmd is None:
            return
        expect_fail = any(o.lstrip().startswith("error:") for o in outputs)
        if expect_fail:
            out.append(f"if {cmd}\nthen echo 'docs: expected this command to fail' >&2; false; fi")
        else:
            out.append(cmd)

    lines = text.splitlines()
    k = 0
    while k < len(lines):
        line = lines[k]
        if line.startswith("$ "):
            flush()
            parts = [line[2:]]
            while parts[-1].rstrip().endswith("\\") and k + 1 < len(lines):
                k += 1
                parts.append(lines[k])
            cmd, outputs = "\n".join(parts), []
        elif cmd is not None:
            outputs.append(line)
        k += 1
    flush()
    return "\n".join(out)


def block_free(base: int) -> bool:
    """Whether misim's port block at `base` (the default block's offsets) is free."""
    for p in DEFAULT_PORTS:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p - 7700 + base))
        except OSError:
            return False
        finally:
            s.close()
    return True


def pick_base() -> int:
    """7700 when free; otherwise another free block, and the docs' port numbers are rewritten."""
    if block_free(7700):
        return 7700
    for base in range(20000, 60000, 100):
        if block_free(base):
            return base
    raise RuntimeError("no free port block for misim")


def rebase(text: str, base: int) -> str:
    """Rewrites the default ports (127.0.0.1:77NN, localhost:77NN) to the block at `base`."""
    if base == 7700:
        return text
    return re.sub(r"(127\.0\.0\.1|localhost):(77[01]\d)\b",
                  lambda m: f"{m.group(1)}:{int(m.group(2)) - 7700 + base}", text)


def run_file(path: pathlib.Path):
    """Runs the file's examples: True (passed), False (failed) or None (nothing to run)."""
    todo = []
    for line, kind, text, skip in blocks(path):
        where = f"{path.relative_to(ROOT)}:{line}"
        if skip is not None:
            print(f"  skip {where}: {skip or 'marked skip'}")
            continue
        todo.append((where, text if kind == "sh" else console_to_sh(text)))
    if not todo:
        return None
    base = pick_base()
    work = pathlib.Path(tempfile.mkdtemp(prefix="misim-docs-"))
    log = open(work / "misim.log", "w")
    proc = subprocess.Popen([MISIM, "up", "--data-dir", "misim-data", "--base-port", str(base)],
                            cwd=work, stdout=log, stderr=subprocess.STDOUT)
    try:
        endpoints = work / "misim-data" / "endpoints.json"
        deadline = time.time() + 60
        while not endpoints.exists():
            if proc.poll() is not None or time.time() > deadline:
                print(f"FAIL {path.relative_to(ROOT)}: misim up did not start:\n"
                      + (work / "misim.log").read_text())
                return False
            time.sleep(0.05)
        script = ["set -euo pipefail", "trap 'echo \"docs: failed in $DOCS_BLOCK\" >&2' ERR"]
        for where, text in todo:
            script.append(f"DOCS_BLOCK={where!r}")
            script.append(f"echo '--- {where}'")
            script.append(rebase(text, base))
        env = dict(os.environ)
        env["MISIM_ARM"] = json.loads(endpoints.read_text())["arm_grpc"]
        env["PATH"] = os.pathsep.join([str(pathlib.Path(MISIM).parent), str(ROOT / ".venv" / "bin"),
                                       env.get("PATH", "")])
        env["NO_PROXY"] = "127.0.0.1,localhost"
        res = subprocess.run(["bash", "-c", "\n".join(script)], cwd=work, env=env,
                             capture_output=True, text=True, timeout=600)
        name = path.relative_to(ROOT)
        if res.returncode != 0:
            print(f"FAIL {name} ({len(todo)} blocks)\n--- stdout\n{res.stdout[-6000:]}\n"
                  f"--- stderr\n{res.stderr[-4000:]}")
            return False
        print(f"PASS {name} ({len(todo)} blocks)")
        return True
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    files = [pathlib.Path(a).resolve() for a in sys.argv[1:]] or \
        [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    if not os.path.exists(MISIM):
        print(f"{MISIM} not found: build it first (cargo build --bins)")
        return 1
    passed = failed = 0
    for f in files:
        ran = run_file(f)
        if ran is True:
            passed += 1
        elif ran is False:
            failed += 1
    print(f"docs: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
