"""The unmodified azure-identity package gets managed-identity tokens from misim's IMDS and uses them
against ARM's REST surface; tokens verify with PyJWT against the JWKS from Azure AD's discovery."""
import jwt
import requests
from azure.identity import ManagedIdentityCredential

# azure-identity strips "/.default" from the scope, so IMDS is asked for (and `aud` is) the resource
# without a trailing slash; Azure echoes the resource as requested.
MGMT = "https://management.azure.com"
SCOPE = "https://management.azure.com/.default"
NO_PROXY = {"http": None, "https": None}


def verify(misim, token: str) -> dict:
    """Validates like a relying party: discovery -> jwks_uri -> signature, issuer, audience, expiry."""
    tid = jwt.decode(token, options={"verify_signature": False})["tid"]
    discovery = requests.get(f"{misim.endpoints['aad']}/{tid}/.well-known/openid-configuration",
                             proxies=NO_PROXY, timeout=10).json()
    key = jwt.PyJWKClient(discovery["jwks_uri"]).get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=MGMT, issuer=discovery["issuer"])


def arm_get(misim, path: str, token: str) -> requests.Response:
    return requests.get(f"{misim.endpoints['arm_rest']}{path}?api-version=2024-07-01",
                        headers={"Authorization": f"Bearer {token}"}, proxies=NO_PROXY, timeout=10)


def test_system_assigned_token_from_azure_identity_verifies_and_reads_the_vm_with_a_role(misim, imds_env):
    misim.cli("group", "create", "-n", "py-rg", "-l", "westeurope")
    vm = misim.cli("vm", "create", "-g", "py-rg", "-n", "py-vm1", "--host", "host-1")
    identity = misim.cli("vm", "identity", "assign", "-g", "py-rg", "-n", "py-vm1", "--identities", "system")
    assert identity["type"] == "SystemAssigned"

    imds_env(vm["imdsEndpoint"])
    token = ManagedIdentityCredential().get_token(SCOPE).token
    claims = verify(misim, token)
    assert claims["oid"] == identity["principalId"]
    assert claims["tid"] == misim.endpoints["tenant_id"]
    assert claims["xms_mirid"].lower() == vm["id"].lower()

    assert arm_get(misim, vm["id"], token).status_code == 403
    misim.cli("role", "assignment", "create", "--assignee-object-id", identity["principalId"],
              "--role", "Reader", "--scope", f"/subscriptions/{misim.endpoints['subscription_id']}/resourceGroups/py-rg")
    resp = arm_get(misim, vm["id"], token)
    assert resp.status_code == 200, resp.text
    assert resp.json()["identity"]["principalId"] == identity["principalId"]


def test_user_assigned_token_selected_by_client_id(misim, imds_env):
    misim.cli("group", "create", "-n", "py-rg2", "-l", "westeurope")
    vm = misim.cli("vm", "create", "-g", "py-rg2", "-n", "py-vm2", "--host", "host-2")
    uami = misim.cli("identity", "create", "-g", "py-rg2", "-n", "py-id1")
    misim.cli("vm", "identity", "assign", "-g", "py-rg2", "-n", "py-vm2", "--identities", "system", uami["id"])

    imds_env(vm["imdsEndpoint"])
    token = ManagedIdentityCredential(client_id=uami["clientId"]).get_token(SCOPE).token
    claims = verify(misim, token)
    assert claims["oid"] == uami["principalId"]
    assert claims["appid"] == uami["clientId"]
    assert claims["xms_mirid"].lower() == uami["id"].lower()

    # Without a selector the VM's system-assigned identity answers (IMDS selection rule).
    system_token = ManagedIdentityCredential().get_token(SCOPE).token
    assert verify(misim, system_token)["oid"] != uami["principalId"]

    misim.cli("role", "assignment", "create", "--assignee-object-id", uami["principalId"],
              "--role", "Reader", "--scope", vm["id"])
    resp = arm_get(misim, vm["id"], token)
    assert resp.status_code == 200, resp.text
