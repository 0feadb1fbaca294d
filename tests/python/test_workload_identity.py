"""AKS workload identity with unmodified azure-identity: a pod's projected service-account token
(`misim aks get-token --out FILE`, as the kubelet writes it) exchanged at misim's Azure AD by
`WorkloadIdentityCredential` and `DefaultAzureCredential`, configured only through the environment
the AKS workload identity webhook injects: AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID,
AZURE_TENANT_ID, AZURE_AUTHORITY_HOST
(https://learn.microsoft.com/en-us/azure/aks/workload-identity-overview#service-account-labels-and-annotations).

azure-identity requires an https authority host, so AZURE_AUTHORITY_HOST is Azure AD's HTTPS
listener with misim's CA trusted through REQUESTS_CA_BUNDLE / SSL_CERT_FILE (as in
test_certificate_credential.py). The tokens are validated with PyJWT against the discovered JWKS.

Safety: a guard fails the test if anything resolves a host other than loopback.
"""
import socket
import ssl

import jwt
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import DefaultAzureCredential, WorkloadIdentityCredential

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
ARM_SCOPE = "https://management.azure.com/.default"
VAULT_SCOPE = "https://vault.azure.net/.default"
SUBJECT = "system:serviceaccount:default:app"


@pytest.fixture
def loopback_only(monkeypatch):
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        if host not in LOOPBACK:
            raise AssertionError(f"attempted to resolve non-loopback host {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


@pytest.fixture(scope="module")
def cluster(misim, tmp_path_factory):
    """A user-assigned identity federated with service account default/app of cluster aks1, and
    that pod's projected token file."""
    misim.cli("group", "create", "-n", "py-wi-rg", "-l", "westeurope")
    uami = misim.cli("identity", "create", "-g", "py-wi-rg", "-n", "py-wi-id")
    aks = misim.cli("aks", "create", "-g", "py-wi-rg", "-n", "aks1")
    issuer = aks["oidcIssuerProfile"]["issuerUrl"]
    assert aks["oidcIssuerProfile"]["enabled"] is True
    assert aks["securityProfile"]["workloadIdentity"]["enabled"] is True
    fic = misim.cli("identity", "federated-credential", "create", "-g", "py-wi-rg",
                    "--identity-name", "py-wi-id", "-n", "aks1-app", "--issuer", issuer,
                    "--subject", SUBJECT)
    assert fic["audiences"] == ["api://AzureADTokenExchange"]
    token_file = tmp_path_factory.mktemp("pod") / "azure-identity-token"
    written = misim.cli("aks", "get-token", "-g", "py-wi-rg", "-n", "aks1", "--namespace", "default",
                        "--service-account", "app", "--pod", "app-0", "--out", str(token_file))
    assert written["issuer"] == issuer
    return {"uami": uami, "issuer": issuer, "token_file": token_file}


@pytest.fixture
def pod_env(misim, cluster, monkeypatch, loopback_only):
    """The environment the workload identity webhook gives a pod, and misim's CA trusted."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "AZURE_CLIENT_SECRET",
                "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME", "IDENTITY_ENDPOINT",
                "IDENTITY_HEADER", "MSI_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                "AZURE_TOKEN_CREDENTIALS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    ca = misim.endpoints["ca_file"]
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)
    monkeypatch.setenv("SSL_CERT_FILE", ca)
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", misim.endpoints["aad_https"])
    monkeypatch.setenv("AZURE_TENANT_ID", cluster["uami"]["tenantId"])
    monkeypatch.setenv("AZURE_CLIENT_ID", cluster["uami"]["clientId"])
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(cluster["token_file"]))
    return misim.endpoints["aad_https"]


def verify(authority: str, ca_file: str, tenant: str, token: str) -> dict:
    """PyJWT validation as a resource does: discovery (v1 or v2 by the token's `ver`) -> jwks_uri ->
    RS256 signature, issuer, audience, expiry."""
    import requests

    unverified = jwt.decode(token, options={"verify_signature": False})
    path = ".well-known/openid-configuration" if unverified["ver"] == "1.0" \
        else "v2.0/.well-known/openid-configuration"
    doc = requests.get(f"{authority}/{tenant}/{path}", verify=ca_file, timeout=10).json()
    client = jwt.PyJWKClient(doc["jwks_uri"], ssl_context=ssl.create_default_context(cafile=ca_file))
    key = client.get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=unverified["aud"],
                      issuer=doc["issuer"].replace("{tenantid}", tenant))


def assert_identity(claims: dict, uami: dict):
    assert claims["tid"] == uami["tenantId"]
    assert claims["oid"] == uami["principalId"]
    assert claims["sub"] == uami["principalId"]
    assert claims.get("appid", claims.get("azp")) == uami["clientId"]
    assert claims["idtyp"] == "app"
    assert claims["xms_mirid"].lower() == uami["id"].lower()


def test_projected_token_has_the_kubernetes_shape(cluster):
    sa = jwt.decode(cluster["token_file"].read_text(), options={"verify_signature": False})
    assert sa["iss"] == cluster["issuer"]
    assert sa["sub"] == SUBJECT
    assert sa["aud"] == ["api://AzureADTokenExchange"]
    assert sa["exp"] - sa["iat"] == 3600
    assert sa["kubernetes.io"]["namespace"] == "default"
    assert sa["kubernetes.io"]["serviceaccount"]["name"] == "app"
    assert sa["kubernetes.io"]["pod"]["name"] == "app-0"


def test_workload_identity_credential_gets_the_identitys_token(misim, cluster, pod_env):
    credential = WorkloadIdentityCredential()
    token = credential.get_token(ARM_SCOPE)
    assert token.expires_on > 0
    claims = verify(pod_env, misim.endpoints["ca_file"], cluster["uami"]["tenantId"], token.token)
    assert claims["aud"].rstrip("/") == "https://management.azure.com"
    assert_identity(claims, cluster["uami"])
    # ARM accepts it (the identity has no role: an empty subscription list, not a 401).
    import requests

    resp = requests.get(f"{misim.endpoints['arm_rest_https']}/subscriptions?api-version=2022-12-01",
                        headers={"Authorization": f"Bearer {token.token}"},
                        verify=misim.endpoints["ca_file"], timeout=10)
    assert resp.status_code == 200, resp.text


def test_default_azure_credential_uses_the_federated_token_file(misim, cluster, pod_env):
    credential = DefaultAzureCredential()
    token = credential.get_token(VAULT_SCOPE)
    claims = verify(pod_env, misim.endpoints["ca_file"], cluster["uami"]["tenantId"], token.token)
    assert_identity(claims, cluster["uami"])
    assert claims["aud"] in ("https://vault.azure.net", "cfa8b339-82a2-471a-a3c9-0fc0be7a4093")


def test_a_token_of_another_service_account_is_refused_with_aadsts70021(misim, cluster, pod_env,
                                                                       tmp_path, monkeypatch):
    other = tmp_path / "other-token"
    misim.cli("aks", "get-token", "-g", "py-wi-rg", "-n", "aks1", "--service-account", "other",
              "--out", str(other))
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(other))
    with pytest.raises(ClientAuthenticationError) as err:
        WorkloadIdentityCredential().get_token(ARM_SCOPE)
    assert "AADSTS70021" in str(err.value)


def test_a_rotated_token_file_keeps_working(misim, cluster, pod_env):
    before = cluster["token_file"].read_text()
    misim.cli("aks", "get-token", "-g", "py-wi-rg", "-n", "aks1", "--service-account", "app",
              "--out", str(cluster["token_file"]))
    after = cluster["token_file"].read_text()
    assert after != before
    token = WorkloadIdentityCredential().get_token(ARM_SCOPE)
    claims = verify(pod_env, misim.endpoints["ca_file"], cluster["uami"]["tenantId"], token.token)
    assert_identity(claims, cluster["uami"])


def test_misim_token_get_aks_prints_the_exchanged_token(misim, cluster, pod_env):
    body = misim.cli("token", "get", "-g", "py-wi-rg", "--aks", "aks1", "--namespace", "default",
                     "--service-account", "app", "--resource", "https://vault.azure.net",
                     "--aad-url", misim.endpoints["aad"])
    assert body["token_type"] == "Bearer"
    claims = verify(pod_env, misim.endpoints["ca_file"], cluster["uami"]["tenantId"],
                    body["access_token"])
    assert_identity(claims, cluster["uami"])


@pytest.fixture
def mgmt_world(client_world, monkeypatch, loopback_only):
    """The management SDK setup of test_mgmt_sdks.py: a VM's system-assigned identity (Owner on the
    subscription) through its IMDS, ARM's REST surface over HTTPS with misim's CA."""
    for var in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET", "AZURE_CLIENT_ID",
                "AZURE_TENANT_ID", "AZURE_AUTHORITY_HOST", "AZURE_FEDERATED_TOKEN_FILE",
                "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", client_world["imds"])
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", client_world["ca"])
    monkeypatch.setenv("SSL_CERT_FILE", client_world["ca"])
    return client_world


def test_azure_mgmt_msi_manages_federated_credentials_and_rest_serves_clusters(misim, mgmt_world):
    """azure-mgmt-msi's federated_identity_credentials operations, unmodified, against ARM's REST
    surface; managedClusters PUT/GET/DELETE in AKS's shape (`oidcIssuerProfile.issuerURL`)."""
    import requests
    from azure.identity import ManagedIdentityCredential
    from azure.mgmt.msi import ManagedServiceIdentityClient

    w = mgmt_world
    credential = ManagedIdentityCredential()
    base = f"{w['arm']}/subscriptions/{w['sub']}/resourceGroups/{w['rg']}"
    headers = {"Authorization": f"Bearer {credential.get_token(ARM_SCOPE).token}"}
    cluster_url = f"{base}/providers/Microsoft.ContainerService/managedClusters/py-sdk-aks?api-version=2024-09-01"
    resp = requests.put(cluster_url, json={"location": "westeurope"}, headers=headers,
                        verify=w["ca"], timeout=30)
    assert resp.status_code == 201, resp.text
    issuer = resp.json()["properties"]["oidcIssuerProfile"]["issuerURL"]
    assert requests.get(cluster_url, headers=headers, verify=w["ca"], timeout=10).json()[
        "properties"]["oidcIssuerProfile"] == {"enabled": True, "issuerURL": issuer}

    client = ManagedServiceIdentityClient(credential, w["sub"], base_url=w["arm"])
    created = client.federated_identity_credentials.create_or_update(
        w["rg"], "py-kv-reader", "py-sdk-fic",
        {"issuer": issuer, "subject": "system:serviceaccount:ns1:sa1",
         "audiences": ["api://AzureADTokenExchange"]})
    assert created.name == "py-sdk-fic"
    assert created.issuer == issuer and created.subject == "system:serviceaccount:ns1:sa1"
    assert created.type == "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"
    listed = list(client.federated_identity_credentials.list(w["rg"], "py-kv-reader"))
    assert [f.name for f in listed] == ["py-sdk-fic"]
    got = client.federated_identity_credentials.get(w["rg"], "py-kv-reader", "py-sdk-fic")
    assert got.audiences == ["api://AzureADTokenExchange"]
    client.federated_identity_credentials.delete(w["rg"], "py-kv-reader", "py-sdk-fic")
    assert list(client.federated_identity_credentials.list(w["rg"], "py-kv-reader")) == []

    resp = requests.delete(cluster_url, headers=headers, verify=w["ca"], timeout=30)
    assert resp.status_code == 200, resp.text
    assert requests.get(cluster_url, headers=headers, verify=w["ca"], timeout=10).status_code == 404
