"""Azure SDK certificate credentials against misim's Azure AD over HTTPS (the SDKs refuse http
authorities: https://github.com/AzureAD/microsoft-authentication-library-for-python/blob/1.39.0/msal/authority.py).

azure-identity `CertificateCredential` and msal `ConfidentialClientApplication` refuse non-https
authorities, discover the tenant's v2 OpenID configuration and post a client assertion signed with the
certificate's key to the discovered token endpoint. misim serves that over TLS with a certificate from
its own CA (`endpoints.json` -> `ca_file`), trusted here through REQUESTS_CA_BUNDLE / SSL_CERT_FILE.
The credential is a user-assigned identity's certificate exported from MSRP (a test-only verb).

Safety: instance discovery is disabled in every MSAL use, and a guard fails the test if anything
resolves a host other than loopback (login.microsoftonline.com must never be called).
"""
import socket
import ssl

import jwt
import msal
import pytest
from azure.identity import CertificateCredential
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

SCOPE = "https://management.azure.com/.default"
AUDIENCE = "https://management.azure.com"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture
def loopback_only(monkeypatch):
    """Fails any name resolution that is not loopback, so no request can leave the machine."""
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        if host not in LOOPBACK:
            raise AssertionError(f"attempted to resolve non-loopback host {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


@pytest.fixture
def https_env(misim, monkeypatch, loopback_only):
    """Trust misim's CA the way a user would, with no proxy and no ambient Azure settings."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "AZURE_AUTHORITY_HOST",
                "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_CERTIFICATE_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    ca = misim.endpoints["ca_file"]
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)
    monkeypatch.setenv("SSL_CERT_FILE", ca)
    assert misim.endpoints["aad_https"].startswith("https://127.0.0.1:")
    return misim.endpoints["aad_https"]


@pytest.fixture(scope="module")
def exported(misim, tmp_path_factory):
    """A user-assigned identity and its certificate + key as one PEM file."""
    misim.cli("group", "create", "-n", "py-cert-rg", "-l", "westeurope")
    uami = misim.cli("identity", "create", "-g", "py-cert-rg", "-n", "py-cert-id")
    out = tmp_path_factory.mktemp("cred") / "py-cert-id.pem"
    info = misim.cli("identity", "credential", "export", "-g", "py-cert-rg", "-n", "py-cert-id",
                     "--out", str(out), "--msrp", misim.endpoints["msrp_grpc"])
    assert info["clientId"] == uami["clientId"]
    return {"uami": uami, "info": info, "path": out}


def verify_arm_token(authority: str, ca_file: str, tenant: str, token: str) -> dict:
    """Validates like ARM: discovery over HTTPS -> jwks_uri -> signature, issuer, audience and expiry.
    ARM's application accepts v1 tokens only, so Entra issues v1-shaped tokens for it from the v2
    endpoint too: the issuer is the v1 discovery document's."""
    import requests

    doc = requests.get(f"{authority}/{tenant}/.well-known/openid-configuration",
                       verify=ca_file, timeout=10).json()
    assert doc["jwks_uri"].startswith("https://127.0.0.1:")
    client = jwt.PyJWKClient(doc["jwks_uri"], ssl_context=ssl.create_default_context(cafile=ca_file))
    key = client.get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=AUDIENCE, issuer=doc["issuer"])


def assert_identity_claims(claims: dict, exported: dict, tenant: str):
    uami = exported["uami"]
    assert claims["tid"] == tenant
    assert claims["iss"] == f"https://sts.windows.net/{tenant}/"
    assert claims["appid"] == uami["clientId"]
    assert claims["appidacr"] == "2"  # certificate authentication
    assert "azp" not in claims
    assert claims["oid"] == uami["principalId"]
    assert claims["sub"] == uami["principalId"]
    assert claims["idtyp"] == "app"
    assert claims["ver"] == "1.0"
    assert claims["xms_mirid"].lower() == uami["id"].lower()


def test_azure_identity_certificate_credential_gets_a_verifiable_token(misim, https_env, exported):
    tenant = exported["info"]["tenantId"]
    credential = CertificateCredential(
        tenant, exported["info"]["clientId"], certificate_path=str(exported["path"]),
        authority=https_env, disable_instance_discovery=True)
    token = credential.get_token(SCOPE)
    assert token.expires_on > 0
    claims = verify_arm_token(https_env, misim.endpoints["ca_file"], tenant, token.token)
    assert_identity_claims(claims, exported, tenant)
    # misim's ARM accepts it (the identity has no role: an empty subscription list, not a 401).
    import requests

    resp = requests.get(f"{misim.endpoints['arm_rest_https']}/subscriptions?api-version=2022-12-01",
                        headers={"Authorization": f"Bearer {token.token}"},
                        verify=misim.endpoints["ca_file"], timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json()["value"] == []


def key_and_cert(path) -> tuple[str, str]:
    pem = path.read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    cert = x509.load_pem_x509_certificate(pem)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize("variant", ["thumbprint", "public_certificate"])
def test_msal_confidential_client_gets_a_verifiable_token(misim, https_env, exported, variant):
    """`thumbprint` makes msal sign RS256 with a SHA-1 `x5t`; `public_certificate` makes it sign PS256
    with `x5t#S256` and send the chain in `x5c`
    (https://github.com/AzureAD/microsoft-authentication-library-for-python/blob/1.39.0/msal/application.py)."""
    tenant = exported["info"]["tenantId"]
    key_pem, cert_pem = key_and_cert(exported["path"])
    if variant == "thumbprint":
        thumbprint = x509.load_pem_x509_certificate(cert_pem.encode()).fingerprint(hashes.SHA1()).hex()
        assert thumbprint.upper() == exported["info"]["thumbprint"]
        credential = {"private_key": key_pem, "thumbprint": thumbprint}
    else:
        credential = {"private_key": key_pem, "public_certificate": cert_pem}
    app = msal.ConfidentialClientApplication(
        exported["info"]["clientId"], client_credential=credential,
        authority=f"{https_env}/{tenant}", instance_discovery=False)
    result = app.acquire_token_for_client(scopes=[SCOPE])
    assert "access_token" in result, result
    assert result["token_type"] == "Bearer"
    claims = verify_arm_token(https_env, misim.endpoints["ca_file"], tenant, result["access_token"])
    assert_identity_claims(claims, exported, tenant)


def test_plain_http_authority_is_refused_by_the_sdk(misim, https_env, exported):
    """Why misim serves HTTPS: certificate credentials reject an http authority up front."""
    with pytest.raises(ValueError, match="https"):
        CertificateCredential(exported["info"]["tenantId"], exported["info"]["clientId"],
                              certificate_path=str(exported["path"]),
                              authority=misim.endpoints["aad"], disable_instance_discovery=True)
