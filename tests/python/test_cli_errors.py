"""Every mistake a user can make with the CLI gets a message that names what was used and says what
to do next (and nothing panics)."""
import os
import socket
import subprocess
import tempfile

from conftest import MISIM


def run(*args, env_extra=None, timeout=60):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([MISIM, *args], env=env, capture_output=True, text=True, timeout=timeout)


def free_port_block(n=20):
    """A port N such that N..N+n-1 are free now (best effort)."""
    for _ in range(50):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
        s.close()
        if base + n > 65000:
            continue
        ok = True
        for p in range(base, base + n):
            t = socket.socket()
            try:
                t.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                t.close()
        if ok:
            return base
    raise RuntimeError("no free port block")


def test_a_busy_port_names_the_party_and_suggests_base_port():
    base = free_port_block()
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    busy.bind(("127.0.0.1", base))  # ARM gRPC's port in the block
    busy.listen()
    try:
        with tempfile.TemporaryDirectory() as d:
            out = run("up", "--data-dir", d, "--base-port", str(base), timeout=60)
        assert out.returncode != 0
        assert f"ARM gRPC on 127.0.0.1:{base}" in out.stderr, out.stderr
        assert "--base-port" in out.stderr and "in use" in out.stderr, out.stderr
    finally:
        busy.close()


def test_a_data_dir_in_use_says_which_and_what_to_do(misim):
    out = run("up", "--data-dir", str(misim.data_dir), "--base-port", "0", timeout=60)
    assert out.returncode != 0
    assert "is in use by another `misim up`" in out.stderr, out.stderr
    assert "--data-dir" in out.stderr
    assert "Os {" not in out.stderr and "WouldBlock" not in out.stderr


def test_token_get_on_a_scale_set_suggests_instance_id(misim):
    misim.cli("group", "create", "-n", "cli-err", "-l", "westeurope")
    misim.cli("vmss", "create", "-g", "cli-err", "-n", "ss1", "--instance-count", "2")
    out = run("token", "get", "-g", "cli-err", "-n", "ss1",
              env_extra={"MISIM_ARM": misim.endpoints["arm_grpc"]})
    assert out.returncode != 0
    assert "is a scale set" in out.stderr and "--instance-id" in out.stderr, out.stderr
    assert "instances: 0, 1" in out.stderr, out.stderr


def test_a_vm_without_identity_gets_imds_answer_and_a_hint(misim):
    misim.cli("group", "create", "-n", "cli-err2", "-l", "westeurope")
    misim.cli("vm", "create", "-g", "cli-err2", "-n", "bare")
    out = run("token", "get", "-g", "cli-err2", "-n", "bare",
              env_extra={"MISIM_ARM": misim.endpoints["arm_grpc"]})
    assert out.returncode != 0
    assert "Identity not found" in out.stdout  # IMDS's own answer, unchanged
    assert "misim vm identity assign -g cli-err2 -n bare --identities system" in out.stderr, out.stderr


def test_a_server_that_is_not_arm_is_named(misim):
    # Azure AD's plain HTTP listener is not ARM's gRPC API.
    aad = misim.endpoints["aad"]
    out = run("group", "list", env_extra={"MISIM_ARM": aad})
    assert out.returncode != 0
    assert aad in out.stderr and "is not misim's ARM" in out.stderr and "MISIM_ARM" in out.stderr, out.stderr


def test_creating_an_existing_vm_says_so(misim):
    misim.cli("group", "create", "-n", "cli-err3", "-l", "westeurope")
    misim.cli("vm", "create", "-g", "cli-err3", "-n", "twice")
    out = run("vm", "create", "-g", "cli-err3", "-n", "twice",
              env_extra={"MISIM_ARM": misim.endpoints["arm_grpc"]})
    assert out.returncode == 0, out.stderr
    assert "already exists" in out.stderr, out.stderr


def test_a_closed_pipe_is_not_a_panic(misim):
    misim.cli("group", "create", "-n", "cli-err4", "-l", "westeurope")
    env = dict(os.environ, MISIM_ARM=misim.endpoints["arm_grpc"])
    for _ in range(5):
        p = subprocess.Popen([MISIM, "account", "show"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        p.stdout.read(1)
        p.stdout.close()
        _, err = p.communicate(timeout=30)
        assert b"panicked" not in err and b"Broken pipe" not in err, err


def test_up_help_shows_only_what_up_takes():
    out = run("up", "--help")
    assert out.returncode == 0
    assert "--data-dir" in out.stdout and "--base-port" in out.stdout
    assert "--arm <" not in out.stdout and "--arm-token" not in out.stdout
