"""Unmodified Microsoft clients against a misim web app's App Service identity endpoint: with only
IDENTITY_ENDPOINT and IDENTITY_HEADER set (as App Service and Functions set them), azure-identity's
ManagedIdentityCredential and msal's ManagedIdentityClient detect App Service and get tokens for the
site's system-assigned identity and a user-assigned one, which PyJWT validates against Azure AD's
discovery/JWKS (https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference)."""
import jwt
import msal
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CredentialUnavailableError, ManagedIdentityCredential

VAULT = "https://vault.azure.net"
NO_PROXY = {"http": None, "https": None}


def verify(misim, token: str, resource: str) -> dict:
    """Validates like a relying party: discovery -> jwks_uri -> signature, issuer, audience, expiry."""
    unverified = jwt.decode(token, options={"verify_signature": False})
    assert unverified["aud"].rstrip("/") == resource.rstrip("/"), unverified["aud"]
    discovery = requests.get(f"{misim.endpoints['aad']}/{unverified['tid']}/.well-known/openid-configuration",
                             proxies=NO_PROXY, timeout=10).json()
    key = jwt.PyJWKClient(discovery["jwks_uri"]).get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=unverified["aud"],
                      issuer=discovery["issuer"])


@pytest.fixture(scope="module")
def site(misim):
    """A web app with a system-assigned and a user-assigned identity."""
    misim.cli("group", "create", "-n", "py-web", "-l", "westeurope")
    misim.cli("webapp", "create", "-g", "py-web", "-n", "py-web-1")
    uami = misim.cli("identity", "create", "-g", "py-web", "-n", "py-web-id")
    identity = misim.cli("webapp", "identity", "assign", "-g", "py-web", "-n", "py-web-1",
                         "--identities", "[system]", uami["id"])
    web = misim.cli("webapp", "show", "-g", "py-web", "-n", "py-web-1")
    return {"web": web, "identity": identity, "uami": uami}


@pytest.fixture
def app_service_env(monkeypatch, site):
    """Only what App Service puts in the app's environment: IDENTITY_ENDPOINT and IDENTITY_HEADER."""
    for var in ("MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT",
                "AZURE_POD_IDENTITY_AUTHORITY_HOST", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID",
                "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    env = site["web"]["environment"]
    assert env["IDENTITY_ENDPOINT"].startswith("http://127.0.0.1:"), env
    monkeypatch.setenv("IDENTITY_ENDPOINT", env["IDENTITY_ENDPOINT"])
    monkeypatch.setenv("IDENTITY_HEADER", env["IDENTITY_HEADER"])
    return site


def test_webapp_show_has_the_platform_environment_and_identity_block(app_service_env):
    web, identity = app_service_env["web"], app_service_env["identity"]
    assert web["type"] == "Microsoft.Web/sites"
    assert web["environment"]["IDENTITY_ENDPOINT"].endswith("/msi/token")
    assert len(web["environment"]["IDENTITY_HEADER"]) == 64
    assert identity["type"] == "SystemAssigned, UserAssigned"
    assert web["identity"]["principalId"] == identity["principalId"]
    assert msal.managed_identity.get_managed_identity_source() is msal.managed_identity.APP_SERVICE


def test_azure_identity_system_and_user_assigned(misim, app_service_env):
    web, identity, uami = app_service_env["web"], app_service_env["identity"], app_service_env["uami"]
    token = ManagedIdentityCredential().get_token(f"{VAULT}/.default")
    claims = verify(misim, token.token, VAULT)
    assert claims["oid"] == identity["principalId"]
    assert claims["xms_mirid"].lower() == web["id"].lower()

    token = ManagedIdentityCredential(client_id=uami["clientId"]).get_token(f"{VAULT}/.default")
    claims = verify(misim, token.token, VAULT)
    assert claims["appid"] == uami["clientId"]
    assert claims["oid"] == uami["principalId"]
    assert claims["xms_mirid"].lower() == uami["id"].lower()
    assert claims["xms_az_rid"].lower() == web["id"].lower()


def test_msal_system_and_user_assigned(misim, app_service_env):
    web, identity, uami = app_service_env["web"], app_service_env["identity"], app_service_env["uami"]
    system = msal.ManagedIdentityClient(msal.SystemAssignedManagedIdentity(), http_client=requests.Session())
    result = system.acquire_token_for_client(resource=VAULT)
    assert "access_token" in result, result
    assert verify(misim, result["access_token"], VAULT)["oid"] == identity["principalId"]

    for chosen in (msal.UserAssignedManagedIdentity(client_id=uami["clientId"]),
                   msal.UserAssignedManagedIdentity(object_id=uami["principalId"]),
                   msal.UserAssignedManagedIdentity(resource_id=uami["id"])):
        client = msal.ManagedIdentityClient(chosen, http_client=requests.Session())
        result = client.acquire_token_for_client(resource=VAULT)
        assert "access_token" in result, (chosen, result)
        claims = verify(misim, result["access_token"], VAULT)
        assert claims["appid"] == uami["clientId"]
        assert claims["xms_az_rid"].lower() == web["id"].lower()


def test_unknown_identity_and_wrong_secret_fail_in_the_clients(app_service_env, monkeypatch):
    unknown = msal.ManagedIdentityClient(
        msal.UserAssignedManagedIdentity(client_id="00000000-0000-0000-0000-0000000000ff"),
        http_client=requests.Session())
    result = unknown.acquire_token_for_client(resource=VAULT)
    assert "access_token" not in result
    assert "No User Assigned or Delegated Managed Identity found" in result["error_description"], result

    monkeypatch.setenv("IDENTITY_HEADER", "not-the-site-secret")
    with pytest.raises((ClientAuthenticationError, CredentialUnavailableError)):
        ManagedIdentityCredential().get_token(f"{VAULT}/.default")


def test_default_azure_credential_uses_the_app_service_endpoint(misim, app_service_env):
    from azure.identity import DefaultAzureCredential
    credential = DefaultAzureCredential(exclude_cli_credential=True, exclude_powershell_credential=True,
                                        exclude_developer_cli_credential=True,
                                        exclude_shared_token_cache_credential=True,
                                        exclude_visual_studio_code_credential=True)
    token = credential.get_token(f"{VAULT}/.default")
    claims = verify(misim, token.token, VAULT)
    assert claims["oid"] == app_service_env["identity"]["principalId"]
