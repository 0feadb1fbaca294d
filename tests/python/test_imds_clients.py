"""Unmodified Microsoft clients against misim's IMDS and legacy VM extension: msal's
ManagedIdentityClient, azure-identity's retry through an IMDS 429, and the documented migration from
the VM extension to IMDS (same request code, only the URL changes)."""
import os
import stat
import time

import jwt
import msal
import requests
from azure.core.pipeline.transport import RequestsTransport
from azure.identity import ManagedIdentityCredential

MGMT = "https://management.azure.com/"
NO_PROXY = {"http": None, "https": None}


def verify(misim, token: str, audience: str) -> dict:
    """Validates like a relying party: discovery -> jwks_uri -> signature, issuer, audience, expiry."""
    tid = jwt.decode(token, options={"verify_signature": False})["tid"]
    discovery = requests.get(f"{misim.endpoints['aad']}/{tid}/.well-known/openid-configuration",
                             proxies=NO_PROXY, timeout=10).json()
    key = jwt.PyJWKClient(discovery["jwks_uri"]).get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=discovery["issuer"])


def vm_with_identities(misim, rg: str, vm_name: str, uami_name: str | None = None) -> tuple[dict, dict, dict]:
    misim.cli("group", "create", "-n", rg, "-l", "westeurope")
    vm = misim.cli("vm", "create", "-g", rg, "-n", vm_name, "--host", "host-1")
    uami = misim.cli("identity", "create", "-g", rg, "-n", uami_name) if uami_name else {}
    ids = ["system"] + ([uami["id"]] if uami else [])
    identity = misim.cli("vm", "identity", "assign", "-g", rg, "-n", vm_name, "--identities", *ids)
    return vm, identity, uami


def test_msal_managed_identity_client_gets_system_and_user_assigned_tokens(misim, imds_env):
    vm, identity, uami = vm_with_identities(misim, "py-msal", "py-msal-vm", "py-msal-id")
    imds_env(vm["imdsEndpoint"])

    system = msal.ManagedIdentityClient(msal.SystemAssignedManagedIdentity(), http_client=requests.Session())
    result = system.acquire_token_for_client(resource=MGMT)
    assert "access_token" in result, result
    claims = verify(misim, result["access_token"], MGMT)
    assert claims["oid"] == identity["principalId"]
    assert claims["xms_mirid"].lower() == vm["id"].lower()

    user = msal.ManagedIdentityClient(msal.UserAssignedManagedIdentity(client_id=uami["clientId"]),
                                      http_client=requests.Session())
    result = user.acquire_token_for_client(resource=MGMT)
    assert "access_token" in result, result
    claims = verify(misim, result["access_token"], MGMT)
    assert claims["appid"] == uami["clientId"]
    assert claims["xms_mirid"].lower() == uami["id"].lower()
    assert claims["xms_az_rid"].lower() == vm["id"].lower()


def test_azure_identity_retries_through_an_imds_429(misim, imds_env):
    vm, identity, _ = vm_with_identities(misim, "py-thr", "py-thr-vm")
    imds_env(vm["imdsEndpoint"])
    url = f"{vm['imdsEndpoint']}/metadata/identity/oauth2/token"
    params = {"api-version": "2018-02-01", "resource": "https://storage.azure.com"}

    seen = []
    session = requests.Session()
    session.hooks["response"].append(lambda r, *a, **k: seen.append(r.status_code))
    credential = ManagedIdentityCredential(transport=RequestsTransport(session=session, session_owner=False))

    # Use up this second's 20 identity requests of the VM (IMDS: 20/s per VM), early enough in the
    # wall-clock second that the credential's first request lands in the same second and gets 429.
    burst = requests.Session()
    while True:
        started = int(time.time())
        statuses = [burst.get(url, params=params, headers={"Metadata": "true"}, proxies=NO_PROXY,
                              timeout=10).status_code for _ in range(25)]
        now = time.time()
        if int(now) == started and statuses[-1] == 429 and now % 1.0 < 0.7:
            break
    token = credential.get_token("https://storage.azure.com/.default")

    assert seen[0] == 429, seen
    assert seen[-1] == 200, seen
    claims = verify(misim, token.token, "https://storage.azure.com")
    assert claims["oid"] == identity["principalId"]


def test_extension_to_imds_migration_changes_only_the_url(misim):
    vm, identity, _ = vm_with_identities(misim, "py-mig", "py-mig-vm")
    ext = misim.cli("vm", "extension", "set", "-g", "py-mig", "--vm-name", "py-mig-vm",
                    "-n", "ManagedIdentityExtensionForLinux", "--settings", '{"port":50342}')
    assert ext["settings"]["port"] == 50342
    assert ext["endpoint"].startswith("http://127.0.0.1:"), ext

    # The extension keeps the credential on the VM, readable by anyone there (the reason to migrate).
    cred_dir = ext["credentialPath"]
    pems = [f for f in os.listdir(cred_dir) if f.endswith(".pem")]
    assert pems, os.listdir(cred_dir)
    mode = os.stat(os.path.join(cred_dir, pems[0])).st_mode
    assert mode & stat.S_IROTH, oct(mode)

    def get_token(url: str) -> str:
        """The workload's code: unchanged between the two endpoints except for the URL."""
        resp = requests.get(url, headers={"Metadata": "true"}, proxies=NO_PROXY, timeout=10)
        resp.raise_for_status()
        return resp.json()["access_token"]

    before = get_token(f"{ext['endpoint']}/oauth2/token?resource={MGMT}")
    after = get_token(f"{vm['imdsEndpoint']}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={MGMT}")
    for token in (before, after):
        assert verify(misim, token, MGMT)["oid"] == identity["principalId"]

    misim.cli("vm", "extension", "delete", "-g", "py-mig", "--vm-name", "py-mig-vm",
              "-n", "ManagedIdentityExtensionForLinux")
    assert not os.path.exists(cred_dir)
    assert get_token(f"{vm['imdsEndpoint']}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={MGMT}")
