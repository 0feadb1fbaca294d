"""App registrations and app roles: unmodified azure-identity and msal, running "on a VM" (they find
its IMDS through AZURE_POD_IDENTITY_AUTHORITY_HOST), get tokens for the user's own API
`api://NAME`; once an app role is assigned to the identity (`misim ad app role-assignment create`,
Graph's appRoleAssignedTo), the token carries it in `roles`. Each token is validated with PyJWT like
the API would: discovery -> jwks_uri -> signature, issuer, audience, expiry.

Sources: assigning app roles to managed identities,
https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-assign-app-role-managed-identity ;
`aud` and `roles`: https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference ;
managed-identity tokens are cached and reflect assignment changes only once refreshed:
https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/managed-identity-best-practice-recommendations#limitation-of-using-managed-identities-for-authorization
"""
import uuid

import jwt
import msal
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ManagedIdentityCredential

NO_PROXY = {"http": None, "https": None}
API = "api://py-orders-api"


def verify(misim, token: str, audience: str) -> dict:
    """Validates like the API: discovery -> jwks_uri -> signature, issuer, audience and expiry."""
    tid = jwt.decode(token, options={"verify_signature": False})["tid"]
    discovery = requests.get(f"{misim.endpoints['aad']}/{tid}/.well-known/openid-configuration",
                             proxies=NO_PROXY, timeout=10).json()
    key = jwt.PyJWKClient(discovery["jwks_uri"]).get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=audience,
                      issuer=discovery["issuer"])


@pytest.fixture(scope="module")
def world(misim):
    """A VM with its system-assigned identity and a user-assigned one, and an app registration
    `api://py-orders-api` with two app roles; the system identity holds Orders.Read and Orders.Write."""
    rg = "py-approles-rg"
    misim.cli("group", "create", "-n", rg, "-l", "westeurope")
    vm = misim.cli("vm", "create", "-g", rg, "-n", "py-approles-vm", "--host", "host-1")
    uami = misim.cli("identity", "create", "-g", rg, "-n", "py-approles-id")
    system = misim.cli("vm", "identity", "assign", "-g", rg, "-n", "py-approles-vm",
                       "--identities", "system", uami["id"])
    app = misim.cli("ad", "app", "create", "--display-name", "py-orders-api",
                    "--identifier-uris", API, "--app-role", "Orders.Read", "--app-role", "Orders.Write")
    for role in ("Orders.Read", "Orders.Write"):
        misim.cli("ad", "app", "role-assignment", "create", "--principal-id", system["principalId"],
                  "--app", API, "--role", role)
    return {"vm": misim.cli("vm", "show", "-g", rg, "-n", "py-approles-vm"), "system": system,
            "uami": uami, "app": app}


def test_app_create_prints_graph_application_and_its_service_principal(misim, world):
    app = world["app"]
    assert uuid.UUID(app["appId"]) and uuid.UUID(app["id"])
    assert app["identifierUris"] == [API]
    assert app["api"] == {"requestedAccessTokenVersion": None}
    roles = {r["value"]: r for r in app["appRoles"]}
    assert set(roles) == {"Orders.Read", "Orders.Write"}
    for r in roles.values():
        assert r["allowedMemberTypes"] == ["Application"] and r["isEnabled"] is True
        assert uuid.UUID(r["id"])
    assert misim.cli("ad", "app", "show", "--id", app["appId"])["id"] == app["id"]
    assert any(a["appId"] == app["appId"] for a in misim.cli("ad", "app", "list"))
    sp = misim.cli("ad", "sp", "show", "--id", API)
    assert sp["servicePrincipalType"] == "Application" and sp["appId"] == app["appId"]
    granted = misim.cli("ad", "app", "role-assignment", "list", "--app", API)
    assert {g["principalId"] for g in granted} == {world["system"]["principalId"]}
    assert {g["resourceId"] for g in granted} == {sp["id"]}
    assert {g["appRoleId"] for g in granted} == {r["id"] for r in roles.values()}


def test_azure_identity_token_for_the_api_carries_the_assigned_roles(misim, world, imds_env):
    imds_env(world["vm"]["imdsEndpoint"])
    token = ManagedIdentityCredential().get_token(f"{API}/.default").token
    claims = verify(misim, token, API)
    assert sorted(claims["roles"]) == ["Orders.Read", "Orders.Write"]
    assert claims["oid"] == claims["sub"] == world["system"]["principalId"]
    assert (claims["ver"], claims["idtyp"]) == ("1.0", "app")
    assert claims["tid"] == misim.endpoints["tenant_id"]
    # Entra adds xms_mirid only for first-party resources (hashicorp/vault-plugin-auth-azure#237).
    assert "xms_mirid" not in claims


def test_msal_token_for_the_api_carries_the_assigned_roles(misim, world, imds_env):
    imds_env(world["vm"]["imdsEndpoint"])
    client = msal.ManagedIdentityClient(msal.SystemAssignedManagedIdentity(),
                                        http_client=requests.Session())
    # The trailing-slash form and the appId name the same application; aud is the form requested.
    for resource in (f"{API}/", world["app"]["appId"]):
        result = client.acquire_token_for_client(resource=resource)
        assert "access_token" in result, result
        claims = verify(misim, result["access_token"], resource)
        assert sorted(claims["roles"]) == ["Orders.Read", "Orders.Write"]


def test_roles_show_once_the_cached_token_is_refreshed(misim, world, imds_env):
    """IMDS caches a token per resource: an assignment made after it was issued shows only in a
    refreshed token (expiry, or bypass_cache=true), as in Azure."""
    uami = world["uami"]
    url = f"{world['vm']['imdsEndpoint']}/metadata/identity/oauth2/token"
    params = {"api-version": "2018-02-01", "resource": API, "client_id": uami["clientId"]}

    def imds(**extra) -> dict:
        r = requests.get(url, params={**params, **extra}, headers={"Metadata": "true"},
                         proxies=NO_PROXY, timeout=10)
        assert r.status_code == 200, r.text
        return verify(misim, r.json()["access_token"], API)

    imds_env(world["vm"]["imdsEndpoint"])
    first = verify(misim, ManagedIdentityCredential(client_id=uami["clientId"])
                   .get_token(f"{API}/.default").token, API)
    assert "roles" not in first and first["oid"] == uami["principalId"]

    misim.cli("ad", "app", "role-assignment", "create", "--principal-id", uami["principalId"],
              "--app", world["app"]["appId"], "--role", "Orders.Read")
    assert "roles" not in imds(), "IMDS still serves the cached token"
    assert imds(bypass_cache="true")["roles"] == ["Orders.Read"]


def test_unknown_api_is_aadsts500011(misim, world, imds_env):
    imds_env(world["vm"]["imdsEndpoint"])
    with pytest.raises(ClientAuthenticationError) as err:
        ManagedIdentityCredential().get_token("api://py-no-such-api/.default")
    assert "AADSTS500011" in str(err.value)


def test_deleting_the_app_removes_its_assignments_and_resource(misim, world, imds_env):
    app = misim.cli("ad", "app", "create", "--display-name", "py-temp-api",
                    "--identifier-uris", "api://py-temp-api", "--app-role", "Temp.Use")
    misim.cli("ad", "app", "role-assignment", "create", "--principal-id",
              world["system"]["principalId"], "--app", app["appId"], "--role", "Temp.Use")
    misim.cli("ad", "app", "delete", "--id", "api://py-temp-api")
    assert misim.cli("ad", "app", "role-assignment", "list", "--principal-id",
                     world["system"]["principalId"], "--app", API)  # other apps' grants stay
    out = misim.cli("ad", "app", "show", "--id", app["appId"], check=False)
    assert out == {}
    imds_env(world["vm"]["imdsEndpoint"])
    with pytest.raises(ClientAuthenticationError) as err:
        ManagedIdentityCredential().get_token("api://py-temp-api/.default")
    assert "AADSTS500011" in str(err.value)
