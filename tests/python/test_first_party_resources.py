"""Every Microsoft first-party resource misim knows (crates/misim-aad/src/resources.rs), in each form
SDKs send it, gets a token that PyJWT validates with the `aud` Entra writes for that form.

- through a VM's IMDS with the unmodified azure-identity ManagedIdentityCredential: scope
  `<uri>/.default` (resource `<uri>`) and `<uri>//.default` (resource `<uri>/`), for every
  application ID URI and a per-account host of each service that has them; v1 tokens, `aud` = the
  resource as sent;
- through IMDS with msal's ManagedIdentityClient and `resource=<application ID>`: `aud` = that ID;
- against Azure AD's v2 endpoint over HTTPS with azure-identity's CertificateCredential (the
  identity's exported certificate) and scope `<uri>/.default`: v2 tokens with `aud` = the resource's
  application ID (where no public source gives one, the URI), except ARM, which accepts v1 tokens
  only and gets a v1 token with `aud` = the URI.

`aud`: https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference#payload-claims ;
token formats: https://learn.microsoft.com/entra/identity-platform/access-tokens#token-formats ;
application IDs: https://learn.microsoft.com/troubleshoot/entra/entra-id/governance/verify-first-party-apps-sign-in .
test_claims.py checks the full claim set for six of these; this file covers the rest of the table.
"""
import pathlib
import re
import socket
import ssl
import time

import jwt
import msal
import pytest
import requests
from azure.identity import CertificateCredential, ManagedIdentityCredential

ROOT = pathlib.Path(__file__).resolve().parents[2]
NO_PROXY = {"http": None, "https": None}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
ARM_APP_ID = "797f4846-ba00-4fd7-ba43-dac1f8f63013"

# (application ID or None, application ID URIs, an example per-account host URI per host suffix)
FIRST_PARTY = {
    "Azure Resource Manager": (ARM_APP_ID, ["https://management.azure.com",
                                            "https://management.core.windows.net"], []),
    "Azure Key Vault": ("cfa8b339-82a2-471a-a3c9-0fc0be7a4093", ["https://vault.azure.net"], []),
    "Azure Key Vault Managed HSM": (None, ["https://managedhsm.azure.net"], []),
    "Azure Storage": ("e406a681-f3d4-42a8-90b6-c2b029497af1", ["https://storage.azure.com"],
                      ["https://acct.blob.core.windows.net", "https://acct.queue.core.windows.net",
                       "https://acct.table.core.windows.net", "https://acct.file.core.windows.net",
                       "https://acct.dfs.core.windows.net"]),
    "Azure SQL Database": ("022907d3-0f1b-48f7-badc-1ba6abab6d66", ["https://database.windows.net"], []),
    "Azure Database for PostgreSQL and MySQL": (None, ["https://ossrdbms-aad.database.windows.net"], []),
    "Azure Service Bus": ("80a10ef9-8168-493d-abf9-3297c4ef6e3c", ["https://servicebus.azure.net"], []),
    "Azure Event Hubs": ("80369ed6-5f11-4dd9-bef3-692475845e77", ["https://eventhubs.azure.net"], []),
    "Azure Cosmos DB": ("a232010e-820c-4083-83bb-3ace5fc29d0b", ["https://cosmos.azure.com"],
                        ["https://acct.documents.azure.com"]),
    "Azure AI services": ("7d312290-28c8-473c-a0ed-8e53749b6d6d",
                          ["https://cognitiveservices.azure.com"], []),
    "Azure Machine Learning": ("18a66f5f-dbdf-4c17-9dd7-1634712a9cbe", ["https://ml.azure.com"], []),
    "Microsoft Graph": ("00000003-0000-0000-c000-000000000000", ["https://graph.microsoft.com"], []),
    "Log Analytics": ("ca7f3f0b-7d91-482c-8e09-c5d840d0eac5",
                      ["https://api.loganalytics.io", "https://api.loganalytics.azure.com"], []),
    "Azure Monitor": (None, ["https://monitor.azure.com"], []),
    "Azure Data Explorer": ("2746ea77-4702-4b45-80ca-3c97e680e8b7",
                            ["https://kusto.kusto.windows.net", "https://help.kusto.windows.net"],
                            ["https://mycluster.westeurope.kusto.windows.net"]),
    "Azure Container Registry": (None, ["https://containerregistry.azure.net"], []),
    "Azure App Configuration": (None, ["https://azconfig.io", "https://appconfig.azure.com"],
                                ["https://mystore.azconfig.io"]),
    "Azure Data Lake": ("e9f49c6b-5ce5-44c8-925d-015017e9f7ad", ["https://datalake.azure.net"], []),
    "Azure Batch": ("ddbf3205-c6bd-46ae-8127-60eb93363864", ["https://batch.core.windows.net"], []),
    "Azure Synapse Analytics": (None, ["https://dev.azuresynapse.net"], []),
    "Azure Digital Twins": ("0b07f429-9f4b-4714-9392-cc5e8e80c8b0", ["https://digitaltwins.azure.net"], []),
    "Azure SignalR Service and Web PubSub": (None, ["https://signalr.azure.com",
                                                    "https://webpubsub.azure.com"], []),
    "Azure Event Grid": (None, ["https://eventgrid.azure.net"], []),
    "Azure Relay": (None, ["https://relay.azure.net"], []),
    "Azure Maps": (None, ["https://atlas.microsoft.com"], []),
    "Power BI": ("00000009-0000-0000-c000-000000000000", ["https://analysis.windows.net/powerbi/api"], []),
    "Azure DevOps": ("499b84ac-1321-427f-aa17-267ca6975798", ["https://app.vssps.visualstudio.com"], []),
}


def uris():
    for app_id, names, hosts in FIRST_PARTY.values():
        for uri in names + hosts:
            yield app_id, uri


def verify(misim, token: str, audience: str, v2: bool = False) -> dict:
    """Validates like the resource: discovery -> jwks_uri -> signature, issuer, audience, expiry."""
    tid = jwt.decode(token, options={"verify_signature": False})["tid"]
    doc = "v2.0/.well-known/openid-configuration" if v2 else ".well-known/openid-configuration"
    discovery = requests.get(f"{misim.endpoints['aad']}/{tid}/{doc}", proxies=NO_PROXY,
                             timeout=10).json()
    key = jwt.PyJWKClient(discovery["jwks_uri"]).get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=audience,
                      issuer=discovery["issuer"])


def test_the_table_matches_resources_rs():
    """Every URI, host suffix and application ID of resources.rs is swept here (and nothing else)."""
    source = (ROOT / "crates/misim-aad/src/resources.rs").read_text()
    table = source[source.index("pub const FIRST_PARTY"):source.index("fn bare_https_host")]
    rust_uris = set(re.findall(r'"(https://[^"]+)"', table))
    rust_suffixes = set(re.findall(r'"(\.[a-z.]+)"', table))
    rust_ids = set(re.findall(r'Some\("([0-9a-f-]{36})"\)', table))
    ours = {u for _, names, _ in FIRST_PARTY.values() for u in names}
    hosts = [h for _, _, hs in FIRST_PARTY.values() for h in hs]
    assert ours == rust_uris, sorted(ours ^ rust_uris)
    assert {s for s in rust_suffixes if any(h.endswith(s) for h in hosts)} == rust_suffixes
    assert {a for a, _, _ in FIRST_PARTY.values() if a} == rust_ids


@pytest.fixture(scope="module")
def vm(misim):
    misim.cli("group", "create", "-n", "py-fp-rg", "-l", "westeurope")
    vm = misim.cli("vm", "create", "-g", "py-fp-rg", "-n", "py-fp-vm", "--host", "host-2")
    identity = misim.cli("vm", "identity", "assign", "-g", "py-fp-rg", "-n", "py-fp-vm",
                         "--identities", "system")
    return {"imds": vm["imdsEndpoint"], "principalId": identity["principalId"]}


def paced(n_per_second: int = 15):
    """Keeps below IMDS's 20 identity requests per second per VM."""
    time.sleep(1.0 / n_per_second)


def test_every_resource_uri_and_host_through_imds_with_azure_identity(misim, vm, imds_env):
    imds_env(vm["imds"])
    credential = ManagedIdentityCredential()
    for _, uri in uris():
        for scope, aud in ((f"{uri}/.default", uri), (f"{uri}//.default", f"{uri}/")):
            paced()
            claims = verify(misim, credential.get_token(scope).token, aud)
            assert claims["aud"] == aud and claims["ver"] == "1.0", scope
            assert claims["oid"] == vm["principalId"]


def test_every_resource_application_id_through_imds_with_msal(misim, vm, imds_env):
    imds_env(vm["imds"])
    client = msal.ManagedIdentityClient(msal.SystemAssignedManagedIdentity(),
                                        http_client=requests.Session())
    for app_id, _, _ in FIRST_PARTY.values():
        if app_id is None:
            continue
        paced()
        result = client.acquire_token_for_client(resource=app_id)
        assert "access_token" in result, result
        assert verify(misim, result["access_token"], app_id)["aud"] == app_id


@pytest.fixture
def https_env(misim, monkeypatch):
    """misim's CA trusted the way a user would; any non-loopback name resolution fails the test."""
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        if host not in LOOPBACK:
            raise AssertionError(f"attempted to resolve non-loopback host {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "AZURE_AUTHORITY_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", misim.endpoints["ca_file"])
    monkeypatch.setenv("SSL_CERT_FILE", misim.endpoints["ca_file"])
    return misim.endpoints["aad_https"]


def test_every_resource_scope_on_the_v2_endpoint(misim, https_env, tmp_path):
    misim.cli("group", "create", "-n", "py-fp-rg", "-l", "westeurope")
    uami = misim.cli("identity", "create", "-g", "py-fp-rg", "-n", "py-fp-cert-id")
    pem = tmp_path / "id.pem"
    misim.cli("identity", "credential", "export", "-g", "py-fp-rg", "-n", "py-fp-cert-id",
              "--out", str(pem), "--msrp", misim.endpoints["msrp_grpc"])
    tenant = misim.endpoints["tenant_id"]
    ctx = ssl.create_default_context(cafile=misim.endpoints["ca_file"])
    for app_id, uri in uris():
        credential = CertificateCredential(tenant, uami["clientId"], certificate_path=str(pem),
                                           authority=https_env, disable_instance_discovery=True)
        token = credential.get_token(f"{uri}/.default").token
        v1_only = app_id == ARM_APP_ID
        aud = uri if v1_only or app_id is None else app_id
        doc = ".well-known/openid-configuration" if v1_only else "v2.0/.well-known/openid-configuration"
        discovery = requests.get(f"{https_env}/{tenant}/{doc}", timeout=10).json()
        key = jwt.PyJWKClient(discovery["jwks_uri"], ssl_context=ctx).get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=aud,
                            issuer=discovery["issuer"])
        assert claims["ver"] == ("1.0" if v1_only else "2.0"), uri
        assert claims["oid"] == uami["principalId"]
