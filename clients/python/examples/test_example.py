"""A complete example: azure-identity's ManagedIdentityCredential on a misim VM, with the cache,
a fault, the clock and the recorded requests. Run: MISIM_BIN=target/debug/misim pytest clients/python/examples
"""
import base64
import json


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_managed_identity_credential_on_a_vm(misim, misim_vm):
    from azure.identity import ManagedIdentityCredential

    credential = ManagedIdentityCredential()
    token = credential.get_token("https://management.azure.com/.default")
    assert claims(token.token)["oid"] == misim_vm.principal_id

    # One request reached IMDS and one reached Azure AD's token endpoint, in the same flow.
    imds = misim.events(vm=misim_vm.name, operation="/metadata/identity/oauth2/token")
    aad = misim.events(party="aad", operation="/oauth2/")
    assert len(imds) == 1 and imds[0]["outcome"] == "200"
    assert any(e["trace_id"] == imds[0]["trace_id"] for e in aad)
    assert all(e["params"].get("client_assertion") in (None, "[redacted]") for e in aad)


def test_retry_through_a_transient_imds_failure(misim, misim_vm):
    from azure.identity import ManagedIdentityCredential

    # IMDS answers 503 twice; the SDK retries and gets its token.
    misim.fault(party=f"vm:{misim_vm.name}", endpoint="imds", status=503, count=2)
    token = ManagedIdentityCredential().get_token("https://vault.azure.net/.default")
    assert claims(token.token)["aud"].startswith("https://vault.azure.net")
    statuses = [e["outcome"] for e in misim.events(vm=misim_vm.name)]
    assert statuses.count("503") >= 2 and statuses[-1] == "200"


def test_tokens_after_fifty_days(misim, misim_vm):
    from azure.identity import ManagedIdentityCredential

    first = ManagedIdentityCredential().get_token("https://storage.azure.com/.default")
    misim.clock.advance("50d")
    later = ManagedIdentityCredential().get_token("https://storage.azure.com/.default")
    assert later.token != first.token
    assert claims(later.token)["iat"] >= claims(first.token)["iat"] + 50 * 86400
