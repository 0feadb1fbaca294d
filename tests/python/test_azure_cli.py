"""The unmodified Azure CLI (pinned below) against misim: custom cloud registration with endpoint
discovery (`GET /metadata/endpoints`), `az login --identity` through the VM's IMDS
(`AZURE_POD_IDENTITY_AUTHORITY_HOST`) with misim's CA trusted, then ARM and Key Vault commands.

The CLI is large, so it lives in its own venv, `.venv-azcli` at the repository root, created on first
use and reused (scripts/test.sh keeps it). If it cannot be installed (no network to PyPI), the suite
is skipped with the reason printed.

Safety: the CLI runs with `tests/python/loopback_guard` on PYTHONPATH, whose sitecustomize refuses
to resolve or connect to anything but loopback (no 169.254.169.254, no real Azure host); telemetry
and update checks are off."""
import json
import os
import pathlib
import subprocess
import sys
import uuid

import pytest

from conftest import ROOT

AZURE_CLI_VERSION = "2.91.0"
VENV = ROOT / ".venv-azcli"
AZ = VENV / "bin" / "az"
GUARD = pathlib.Path(__file__).resolve().parent / "loopback_guard"


def install_cli() -> str | None:
    """Installs the pinned CLI into VENV unless it is there; returns why it failed, or None."""
    marker = VENV / f".installed-{AZURE_CLI_VERSION}"
    if marker.exists() and AZ.exists():
        return None
    try:
        if not (VENV / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True, timeout=300)
        out = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
                              "--disable-pip-version-check", f"azure-cli=={AZURE_CLI_VERSION}"],
                             capture_output=True, text=True, timeout=1800)
    except (subprocess.SubprocessError, OSError) as e:
        return f"cannot create {VENV}: {e}"
    if out.returncode != 0 or not AZ.exists():
        return f"pip install azure-cli=={AZURE_CLI_VERSION} failed: {out.stderr.strip()[-500:]}"
    marker.touch()
    return None


class Az:
    def __init__(self, env: dict):
        self.env = env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run([str(AZ), *args, "--output", "json"], env=self.env, capture_output=True,
                             text=True, timeout=180)
        if check and out.returncode != 0:
            raise AssertionError(f"az {' '.join(args)} failed ({out.returncode}): {out.stderr}")
        return out

    def __call__(self, *args: str):
        out = self.run(*args)
        return json.loads(out.stdout) if out.stdout.strip() else None


@pytest.fixture(scope="module")
def az(client_world, tmp_path_factory):
    reason = install_cli()
    if reason:
        print(f"\nSKIP Azure CLI suite: {reason}")
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AZURE_", "IDENTITY_", "MSI_", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"))}
    env.update({
        "AZURE_CONFIG_DIR": str(tmp_path_factory.mktemp("azure-config")),
        "PYTHONPATH": str(GUARD),
        "REQUESTS_CA_BUNDLE": client_world["ca"],
        "SSL_CERT_FILE": client_world["ca"],
        "AZURE_POD_IDENTITY_AUTHORITY_HOST": client_world["imds"],
        "AZURE_CORE_COLLECT_TELEMETRY": "no",
        "AZURE_CORE_SURVEY_MESSAGE": "no",
        "AZURE_CORE_CHECK_VERSION": "no",
        "AZURE_CORE_NO_COLOR": "yes",
        "AZURE_EXTENSION_DIR": str(tmp_path_factory.mktemp("azure-extensions")),
        "NO_PROXY": "127.0.0.1,localhost",
    })
    cli = Az(env)
    cli.run("cloud", "register", "-n", "misim", "--endpoint-resource-manager", client_world["arm"])
    cli.run("cloud", "set", "-n", "misim")
    return cli


def test_cloud_registered_from_misims_metadata_document(az, client_world):
    cloud = az("cloud", "show", "-n", "misim")
    assert cloud["endpoints"]["resourceManager"].rstrip("/") == client_world["arm"]
    assert cloud["endpoints"]["activeDirectoryResourceId"] == "https://management.core.windows.net/"
    assert cloud["endpoints"]["activeDirectory"] == client_world["aad_https"]
    assert cloud["suffixes"]["keyvaultDns"] == ".vault.azure.net"


def test_login_with_system_assigned_identity_and_arm_commands(az, client_world):
    accounts = az("login", "--identity")
    assert [a["id"] for a in accounts] == [client_world["sub"]]
    account = az("account", "show")
    assert account["user"]["assignedIdentityInfo"] == "MSI"
    assert account["tenantId"] == client_world["system"]["tenantId"]
    assert az("account", "get-access-token")["tokenType"] == "Bearer"
    assert client_world["rg"] in [g["name"] for g in az("group", "list")]
    assert "py-clients-vm" in [v["name"] for v in az("vm", "list")]
    details = az("vm", "show", "-d", "-g", client_world["rg"], "-n", "py-clients-vm")
    assert details["privateIps"] == client_world["vm"]["privateIps"]
    assert details["powerState"] == "VM running"
    identity = az("vm", "identity", "show", "-g", client_world["rg"], "-n", "py-clients-vm")
    assert identity["principalId"] == client_world["system"]["principalId"]
    assert {"py-kv-reader", "py-kv-officer"} <= {i["name"] for i in az("identity", "list")}
    types = {r["type"] for r in az("resource", "list", "-g", client_world["rg"])}
    assert "Microsoft.Network/networkInterfaces" in types


def test_group_and_identity_create_and_delete(az, client_world):
    az("login", "--identity")
    name = f"py-cli-{uuid.uuid4().hex[:6]}"
    assert az("group", "create", "-n", name, "-l", "westeurope")["properties"]["provisioningState"] == "Succeeded"
    created = az("identity", "create", "-g", name, "-n", "cli-id")
    assert created["clientId"] and created["principalId"]
    az("identity", "delete", "-g", name, "-n", "cli-id")
    az("group", "delete", "-n", name, "--yes")  # 202 + Location, polled to completion
    assert name not in [g["name"] for g in az("group", "list")]
    missing = az.run("group", "show", "-n", name, check=False)
    assert missing.returncode != 0 and "ResourceGroupNotFound" in missing.stderr


def test_role_assignment_create_list_delete(az, client_world):
    az("login", "--identity")
    scope = f"/subscriptions/{client_world['sub']}/resourceGroups/{client_world['rg']}"
    created = az("role", "assignment", "create", "--assignee-object-id", client_world["reader"]["principalId"],
                 "--assignee-principal-type", "ServicePrincipal", "--role", "Reader", "--scope", scope)
    assert created["principalId"] == client_world["reader"]["principalId"]
    listed = az("role", "assignment", "list", "--all", "--fill-principal-name", "false")
    assert created["id"] in [a["id"] for a in listed]
    assert "Owner" in [a["roleDefinitionName"] for a in listed]
    az("role", "assignment", "delete", "--ids", created["id"])
    listed = az("role", "assignment", "list", "--all", "--fill-principal-name", "false")
    assert created["id"] not in [a["id"] for a in listed]


def test_login_with_user_assigned_identity_and_key_vault_secrets(az, client_world):
    accounts = az("login", "--identity", "--client-id", client_world["officer"]["clientId"],
                  "--allow-no-subscriptions")
    assert accounts[0]["tenantId"] == client_world["system"]["tenantId"]
    # `--vault-name` needs a vault host name (DNS); `--id` takes the vault's URL (its vaultUri).
    uri = ""
    for _ in range(50):
        uri = az("resource", "show", "--ids", client_world["vault"]["id"], "--api-version", "2023-07-01",
                 "--query", "properties.vaultUri")
        if uri.startswith("https://127.0.0.1:"):
            break
    base = uri.rstrip("/")
    shown = az("keyvault", "secret", "show", "--id", f"{base}/secrets/greeting")
    assert shown["value"] == "hello"
    assert shown["id"].startswith(f"{base}/secrets/greeting/")
    assert "greeting" in [s["name"] for s in az("keyvault", "secret", "list", "--id", base)]
    name = f"cli-{uuid.uuid4().hex[:6]}"
    out = az.run("keyvault", "secret", "set", "--id", f"{base}/secrets/{name}", "--value", "x", check=False)
    assert out.returncode != 0 and "--vault-name" in out.stderr  # `set` takes only --vault-name
