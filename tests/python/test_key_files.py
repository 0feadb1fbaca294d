"""Key material at rest is private to the user whatever the umask.

misim keeps identity private keys (MSRP's store, each host's store), Azure AD's token-signing key,
the CA key and the control-plane admin key below its data directory. Another local user must not read
any of them: every directory is 0700 and every file 0600 even when misim is started with umask 022
(the default of most shells), after identities were created and written to disk.
"""
import json
import os
import pathlib
import shutil
import stat
import subprocess
import tempfile
import time

import pytest

from conftest import MISIM


def _start(data_dir: pathlib.Path) -> tuple[subprocess.Popen, dict]:
    log = open(data_dir.parent / "misim-umask.log", "w")
    proc = subprocess.Popen(
        [MISIM, "up", "--data-dir", str(data_dir), "--base-port", "0", "--hosts", "1"],
        stdout=log, stderr=subprocess.STDOUT, preexec_fn=lambda: os.umask(0o022),
    )
    endpoints_file = data_dir / "endpoints.json"
    deadline = time.time() + 60
    while not endpoints_file.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError("misim up did not start: " + (data_dir.parent / "misim-umask.log").read_text())
        time.sleep(0.1)
    return proc, json.loads(endpoints_file.read_text())


def _cli(endpoints: dict, *args: str) -> dict:
    env = dict(os.environ, MISIM_ARM=endpoints["arm_grpc"])
    out = subprocess.run([MISIM, *args], env=env, capture_output=True, text=True, timeout=60,
                         preexec_fn=lambda: os.umask(0o022))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip() else {}


def test_every_file_below_the_data_dir_is_private_under_umask_022():
    if not os.path.exists(MISIM):
        pytest.fail(f"{MISIM} not found: build it first (cargo build --bins)")
    root = pathlib.Path(tempfile.mkdtemp(prefix="misim-umask-"))
    data_dir = root / "data"
    proc, endpoints = _start(data_dir)
    try:
        _cli(endpoints, "group", "create", "-n", "rg", "-l", "westeurope")
        _cli(endpoints, "vm", "create", "-g", "rg", "-n", "vm1")
        _cli(endpoints, "vm", "identity", "assign", "-g", "rg", "-n", "vm1", "--identities", "system")
        _cli(endpoints, "identity", "create", "-g", "rg", "-n", "id1")
        # The legacy VM extension writes its credentials on the VM's (simulated) disk, readable by
        # anyone on that VM as in Azure; on the machine they sit below the host's private store.
        _cli(endpoints, "vm", "extension", "set", "-g", "rg", "--vm-name", "vm1",
             "-n", "ManagedIdentityExtensionForLinux", "--publisher", "Microsoft.ManagedIdentity",
             "--version", "1.0", "--settings", '{"port":50342}')
        pem = root / "id1.pem"
        _cli(endpoints, "identity", "credential", "export", "-g", "rg", "-n", "id1", "--out", str(pem),
             "--msrp", endpoints["msrp_grpc"], "--cert-dir", str(data_dir / "ca" / "admin"))
        # Let sled write its background flush and snapshots.
        time.sleep(1.5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    try:
        loose, vm_side = [], []
        for path in [data_dir, *data_dir.rglob("*")]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            if "vm-disks" in path.relative_to(data_dir).parts:
                vm_side.append(path)
                continue
            if path.is_dir() and mode & 0o077:
                loose.append(f"{path} dir {oct(mode)}")
            elif path.is_file() and mode & 0o077:
                loose.append(f"{path} file {oct(mode)}")
        # The VM-side files are the one deliberate exception (readable on the VM), and no other user
        # of the machine can reach them: a directory above them is private.
        assert any(p.name.endswith(".pem") for p in vm_side), "the extension wrote its credentials"
        for p in vm_side:
            above = [a for a in p.parents if data_dir in a.parents or a == data_dir]
            assert any(not stat.S_IMODE(a.lstat().st_mode) & 0o001 for a in above), p
        # The stores that hold private keys and the key files themselves must exist to be checked.
        for must in ["msrp/db", "aad/db", "hosts/host-1/db", "ca/ca.key", "ca/admin/key.pem"]:
            assert (data_dir / must).exists(), must
        assert not loose, "readable by others:\n" + "\n".join(loose)
        assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    finally:
        shutil.rmtree(root, ignore_errors=True)
