"""Starts one `misim up` (ephemeral loopback ports, temporary data dir) for the Python test session.

The binary is MISIM_BIN (default target/debug/misim). Client-side setup goes through the misim CLI
against ARM's gRPC API, exactly as a user would drive it.
"""
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MISIM = os.environ.get("MISIM_BIN", str(ROOT / "target" / "debug" / "misim"))


class Misim:
    def __init__(self, data_dir: pathlib.Path, proc: subprocess.Popen, endpoints: dict):
        self.data_dir = data_dir
        self.proc = proc
        self.endpoints = endpoints

    def cli(self, *args: str, check: bool = True) -> dict:
        """Runs `misim <args>` against this system's ARM and returns its JSON output."""
        # The admin certificate `misim up` writes: internal gRPC (MSRP) is mutual TLS.
        env = dict(os.environ, MISIM_ARM=self.endpoints["arm_grpc"],
                   MISIM_ADMIN_CERT_DIR=str(self.data_dir / "ca" / "admin"))
        out = subprocess.run([MISIM, *args], env=env, capture_output=True, text=True, timeout=60)
        if check and out.returncode != 0:
            raise AssertionError(f"misim {' '.join(args)} failed: {out.stderr}")
        return json.loads(out.stdout) if out.stdout.strip() else {}


@pytest.fixture(scope="session")
def misim():
    if not os.path.exists(MISIM):
        pytest.fail(f"{MISIM} not found: build it first (cargo build --bins)")
    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="misim-py-"))
    log = open(data_dir / "misim.log", "w")
    proc = subprocess.Popen(
        [MISIM, "up", "--data-dir", str(data_dir), "--base-port", "0", "--hosts", "2"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoints_file = data_dir / "endpoints.json"
    deadline = time.time() + 60
    while not endpoints_file.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError("misim up did not start:\n" + (data_dir / "misim.log").read_text())
        time.sleep(0.1)
    endpoints = json.loads(endpoints_file.read_text())
    yield Misim(data_dir, proc, endpoints)
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def imds_env(monkeypatch):
    """Points azure-identity/msal at a VM's IMDS the supported way, with nothing else that would
    make ManagedIdentityCredential pick another source or a proxy."""
    for var in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET",
                "AZURE_FEDERATED_TOKEN_FILE", "IMDS_ENDPOINT", "AZURE_CLIENT_ID",
                "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")

    def point_at(imds_endpoint: str):
        assert imds_endpoint.startswith("http://127.0.0.1:"), imds_endpoint
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", imds_endpoint)

    return point_at


LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(scope="session")
def client_world(misim):
    """What the real-client suites (Azure CLI, management SDKs, Key Vault SDK) share: a group with a
    VM that has a system-assigned identity (Owner on the subscription) and two user-assigned ones
    (`reader`: Key Vault Secrets User on the vault; `officer`: Key Vault Secrets Officer), and a key
    vault with a secret (its data plane has its own https port: `properties.vaultUri`)."""
    rg = "py-clients-rg"
    misim.cli("group", "create", "-n", rg, "-l", "westeurope")
    vm = misim.cli("vm", "create", "-g", rg, "-n", "py-clients-vm")
    system = misim.cli("vm", "identity", "assign", "-g", rg, "-n", "py-clients-vm", "--identities", "system")
    reader = misim.cli("identity", "create", "-g", rg, "-n", "py-kv-reader")
    officer = misim.cli("identity", "create", "-g", rg, "-n", "py-kv-officer")
    misim.cli("vm", "identity", "assign", "-g", rg, "-n", "py-clients-vm", "--identities",
              "py-kv-reader", "py-kv-officer")
    sub = misim.cli("account", "show")["id"]
    misim.cli("role", "assignment", "create", "--assignee-object-id", system["principalId"],
              "--role", "Owner", "--scope", f"/subscriptions/{sub}")
    vault = misim.cli("keyvault", "create", "-g", rg, "-n", "pyclientskv")
    vault_scope = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/pyclientskv"
    misim.cli("role", "assignment", "create", "--assignee-object-id", reader["principalId"],
              "--role", "Key Vault Secrets User", "--scope", vault_scope)
    for principal in (officer["principalId"], system["principalId"]):
        misim.cli("role", "assignment", "create", "--assignee-object-id", principal,
                  "--role", "Key Vault Secrets Officer", "--scope", vault_scope)
    misim.cli("keyvault", "secret", "set", "--vault-name", "pyclientskv", "-n", "greeting", "--value", "hello")
    shown = misim.cli("vm", "show", "-g", rg, "-n", "py-clients-vm")
    return {
        "rg": rg, "vm": shown, "system": system, "reader": reader, "officer": officer, "sub": sub,
        "vault": vault, "vault_name": "pyclientskv", "imds": shown["imdsEndpoint"],
        "arm": misim.endpoints["arm_rest_https"], "ca": misim.endpoints["ca_file"],
        "aad_https": misim.endpoints["aad_https"],
    }
