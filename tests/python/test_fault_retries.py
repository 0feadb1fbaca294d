"""SDK retry behavior against injected IMDS faults (`misim fault add`, docs/faults-and-time.md).

azure-identity 1.27's ManagedIdentityCredential talks to IMDS through ImdsCredential, whose pipeline
retries 404, 410, 429 and 5xx up to 5 times with backoff factor 0.8 (2.5 for 410), i.e. sleeps of
0, 1.6, 3.2 s ... and honors Retry-After
(https://github.com/Azure/azure-sdk-for-python/blob/azure-identity_1.27.0/sdk/identity/azure-identity/azure/identity/_credentials/imds.py,
azure-core's RetryPolicy.get_backoff_time); other codes fail at once (400: CredentialUnavailableError,
others: ClientAuthenticationError).

msal 1.39's ManagedIdentityClient does not retry ("Retry is the http_client or caller's
responsibility"); it throttles a 429/5xx answer for its Retry-After, 5 s by default, answering again
from that cache without a request
(https://github.com/AzureAD/microsoft-authentication-library-for-python/blob/1.39.0/msal/managed_identity.py).

Each test targets its own VM's IMDS (`--party vm:NAME`), so the session's other tests are unaffected.
The recorded hits (`misim fault hits`) give the attempt count and times.
"""
import time

import msal
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.core.pipeline.transport import RequestsTransport
from azure.identity import CredentialUnavailableError, ManagedIdentityCredential

MGMT = "https://management.azure.com/"


def vm_with_system_identity(misim, rg: str, name: str) -> dict:
    misim.cli("group", "create", "-n", rg, "-l", "westeurope")
    vm = misim.cli("vm", "create", "-g", rg, "-n", name, "--host", "host-1")
    misim.cli("vm", "identity", "assign", "-g", rg, "-n", name, "--identities", "system")
    return vm


def add_fault(misim, vm: str, *args: str) -> str:
    return misim.cli("fault", "add", "--party", f"vm:{vm}", "--endpoint", "imds", *args)["id"]


def hits(misim, rule: str) -> list[dict]:
    return misim.cli("fault", "hits", "--id", rule)


def recording_credential():
    """A ManagedIdentityCredential whose every IMDS answer is recorded as (status, monotonic time)."""
    seen = []
    session = requests.Session()
    session.hooks["response"].append(lambda r, *a, **k: seen.append((r.status_code, time.monotonic())))
    credential = ManagedIdentityCredential(transport=RequestsTransport(session=session, session_owner=False))
    return credential, seen


@pytest.mark.parametrize(
    "status,count,extra,min_gaps",
    [
        # Two 404s: retried at once, then after 1.6 s (0.8 * 2).
        (404, 2, [], [0.0, 1.5]),
        # 410 ("IMDS is updating"): the first retry is immediate.
        (410, 1, [], [0.0]),
        # 429 with Retry-After: 1 -> the retry waits for it.
        (429, 1, ["--retry-after", "1"], [0.95]),
        (500, 1, [], [0.0]),
        (503, 1, [], [0.0]),
    ],
)
def test_azure_identity_recovers_from_the_codes_it_retries(misim, imds_env, status, count, extra, min_gaps):
    name = f"py-fault-{status}"
    vm = vm_with_system_identity(misim, f"rg-{name}", name)
    imds_env(vm["imdsEndpoint"])
    rule = add_fault(misim, name, "--status", str(status), "--count", str(count), *extra)
    credential, seen = recording_credential()

    token = credential.get_token(MGMT + ".default")

    assert token.token
    statuses = [s for s, _ in seen]
    assert statuses == [status] * count + [200], statuses
    gaps = [b - a for (_, a), (_, b) in zip(seen, seen[1:])]
    for gap, minimum in zip(gaps, min_gaps):
        assert gap >= minimum, (gaps, min_gaps)
    # Exponential, not more: the last gap stays under the next step (3.2 s).
    assert all(g < 3.2 for g in gaps), gaps
    recorded = hits(misim, rule)
    assert len(recorded) == count
    assert all(h["fault"] == f"http {status}" and h["party"] == f"host-1/vm:{name}" for h in recorded)


def test_azure_identity_fails_fast_on_codes_it_does_not_retry(misim, imds_env):
    vm = vm_with_system_identity(misim, "rg-py-fault-fast", "py-fault-fast")
    imds_env(vm["imdsEndpoint"])

    rule = add_fault(misim, "py-fault-fast", "--status", "401", "--count", "5")
    credential, seen = recording_credential()
    started = time.monotonic()
    with pytest.raises(ClientAuthenticationError):
        credential.get_token(MGMT + ".default")
    assert [s for s, _ in seen] == [401]
    assert time.monotonic() - started < 1.5
    assert len(hits(misim, rule)) == 1
    misim.cli("fault", "clear", "--id", rule)

    # 400 means "no such identity here" to azure-identity: unavailable, one attempt.
    rule = add_fault(misim, "py-fault-fast", "--status", "400", "--count", "5",
                     "--message", "Identity not found")
    credential, seen = recording_credential()
    with pytest.raises(CredentialUnavailableError):
        credential.get_token(MGMT + ".default")
    assert [s for s, _ in seen] == [400]
    assert len(hits(misim, rule)) == 1
    misim.cli("fault", "clear", "--id", rule)


def test_msal_does_not_retry_and_holds_a_5xx_for_its_retry_after(misim, imds_env):
    vm = vm_with_system_identity(misim, "rg-py-fault-msal", "py-fault-msal")
    imds_env(vm["imdsEndpoint"])
    rule = add_fault(misim, "py-fault-msal", "--status", "503", "--count", "1", "--retry-after", "1")
    seen = []
    session = requests.Session()
    session.hooks["response"].append(lambda r, *a, **k: seen.append(r.status_code))
    client = msal.ManagedIdentityClient(msal.SystemAssignedManagedIdentity(), http_client=session)

    result = client.acquire_token_for_client(resource=MGMT)
    assert "access_token" not in result, result
    assert result.get("error"), result
    assert seen == [503], "msal made one attempt"

    # Within Retry-After msal answers from its throttle cache: no request reaches IMDS.
    again = client.acquire_token_for_client(resource=MGMT)
    assert "access_token" not in again, again
    assert seen == [503]
    assert len(hits(misim, rule)) == 1

    # After it, the caller's next attempt goes out and succeeds.
    time.sleep(1.1)
    result = client.acquire_token_for_client(resource=MGMT)
    assert "access_token" in result, result
    assert seen == [503, 200]


@pytest.mark.parametrize("status", [404, 410, 429, 500])
def test_msal_surfaces_each_imds_error_after_one_attempt(misim, imds_env, status):
    name = f"py-msal-{status}"
    vm = vm_with_system_identity(misim, f"rg-{name}", name)
    imds_env(vm["imdsEndpoint"])
    rule = add_fault(misim, name, "--status", str(status), "--count", "1")
    seen = []
    session = requests.Session()
    session.hooks["response"].append(lambda r, *a, **k: seen.append(r.status_code))
    client = msal.ManagedIdentityClient(msal.SystemAssignedManagedIdentity(), http_client=session)
    result = client.acquire_token_for_client(resource=MGMT)
    assert "access_token" not in result, result
    assert seen == [status]
    assert len(hits(misim, rule)) == 1
    # A new client (no throttle cache) succeeds: the fault was bounded to one request.
    fresh = msal.ManagedIdentityClient(msal.SystemAssignedManagedIdentity(), http_client=requests.Session())
    assert "access_token" in fresh.acquire_token_for_client(resource=MGMT)
