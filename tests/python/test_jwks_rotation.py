"""PyJWT's `PyJWKClient`, pointed at the `jwks_uri` of misim's OpenID discovery, validates misim's
tokens over HTTP and HTTPS, and keeps validating across a signing-key rotation: it re-fetches the key
set when it meets an unknown `kid`, and the retired key stays published until its tokens expire.

Key-rotation timing itself (retired key dropped exactly after token lifetime + skew) is tested in Rust
with a manual clock (tests/tests/aad_rotation.rs); here a separate `misim up` rotates every second of
wall-clock time and the test only needs *a* rotation to have happened.
"""
import json
import os
import pathlib
import shutil
import ssl
import subprocess
import tempfile
import time

import jwt
import msal
import pytest
import requests
from azure.identity import ManagedIdentityCredential

from test_certificate_credential import key_and_cert, loopback_only  # noqa: F401 (fixture)

ROOT = pathlib.Path(__file__).resolve().parents[2]
MISIM = os.environ.get("MISIM_BIN", str(ROOT / "target" / "debug" / "misim"))
SCOPE = "https://management.azure.com/.default"
MGMT = "https://management.azure.com"


def jwks_client(jwks_uri: str, ca_file: str, **kwargs) -> jwt.PyJWKClient:
    context = ssl.create_default_context(cafile=ca_file) if jwks_uri.startswith("https:") else None
    return jwt.PyJWKClient(jwks_uri, ssl_context=context, **kwargs)


def discovery(base: str, tenant: str, ca_file: str, v2: bool = False) -> dict:
    path = "v2.0/.well-known/openid-configuration" if v2 else ".well-known/openid-configuration"
    return requests.get(f"{base}/{tenant}/{path}", verify=ca_file, timeout=10,
                        proxies={"http": None, "https": None}).json()


def test_pyjwkclient_validates_an_imds_token_over_http_and_https(misim, imds_env):
    misim.cli("group", "create", "-n", "py-jwks-rg", "-l", "westeurope")
    vm = misim.cli("vm", "create", "-g", "py-jwks-rg", "-n", "py-jwks-vm", "--host", "host-1")
    identity = misim.cli("vm", "identity", "assign", "-g", "py-jwks-rg", "-n", "py-jwks-vm",
                         "--identities", "system")
    imds_env(vm["imdsEndpoint"])
    token = ManagedIdentityCredential().get_token(SCOPE).token
    tenant, ca = misim.endpoints["tenant_id"], misim.endpoints["ca_file"]
    for base in (misim.endpoints["aad"], misim.endpoints["aad_https"]):
        doc = discovery(base, tenant, ca)
        assert doc["jwks_uri"] == f"{base}/common/discovery/keys"
        key = jwks_client(doc["jwks_uri"], ca).get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=MGMT, issuer=doc["issuer"])
        assert claims["oid"] == identity["principalId"]
        assert claims["ver"] == "1.0"

    # Entra's key-set shape: v2 keys carry the tenant's v2 issuer.
    doc = discovery(misim.endpoints["aad_https"], tenant, ca, v2=True)
    keys = requests.get(doc["jwks_uri"], verify=ca, timeout=10).json()["keys"]
    assert keys, "at least the current key is published"
    for k in keys:
        assert k["kty"] == "RSA" and k["use"] == "sig" and k["e"] == "AQAB"
        assert k["kid"] == k["x5t"] and len(k["kid"]) == 27
        assert k["x5c"] and k["issuer"] == f"https://login.microsoftonline.com/{tenant}/v2.0"


class RotatingMisim:
    """A separate `misim up` whose signing key rotates every second."""

    def __init__(self):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="misim-rot-"))
        self.log = open(self.dir / "misim.log", "w")
        self.proc = subprocess.Popen(
            [MISIM, "up", "--data-dir", str(self.dir), "--base-port", "0", "--hosts", "1",
             "--signing-key-rotation", "1"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while not (self.dir / "endpoints.json").exists():
            if self.proc.poll() is not None or time.time() > deadline:
                self.proc.kill()
                raise AssertionError("misim up did not start:\n" + (self.dir / "misim.log").read_text())
            time.sleep(0.1)
        self.endpoints = json.loads((self.dir / "endpoints.json").read_text())

    def cli(self, *args: str) -> dict:
        # The admin certificate `misim up` writes: internal gRPC (MSRP) is mutual TLS.
        env = dict(os.environ, MISIM_ARM=self.endpoints["arm_grpc"],
                   MISIM_ADMIN_CERT_DIR=str(self.dir / "ca" / "admin"))
        out = subprocess.run([MISIM, *args], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else {}

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def rotating(loopback_only):  # noqa: F811 (fixture)
    m = RotatingMisim()
    yield m
    m.stop()


def test_pyjwkclient_keeps_validating_across_a_rotation(rotating, tmp_path, monkeypatch):
    ca, base = rotating.endpoints["ca_file"], rotating.endpoints["aad_https"]
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    rotating.cli("group", "create", "-n", "rg", "-l", "westeurope")
    rotating.cli("identity", "create", "-g", "rg", "-n", "id")
    pem = tmp_path / "id.pem"
    info = rotating.cli("identity", "credential", "export", "-g", "rg", "-n", "id", "--out", str(pem),
                        "--msrp", rotating.endpoints["msrp_grpc"])
    tenant = info["tenantId"]
    key_pem, cert_pem = key_and_cert(pem)

    def fresh_token() -> str:
        # A new application each time, so msal's own token cache never answers.
        app = msal.ConfidentialClientApplication(
            info["clientId"], client_credential={"private_key": key_pem, "public_certificate": cert_pem},
            authority=f"{base}/{tenant}", instance_discovery=False)
        result = app.acquire_token_for_client(scopes=[SCOPE])
        assert "access_token" in result, result
        return result["access_token"]

    # ARM's tokens are v1-shaped from either endpoint (as Entra issues them for ARM), so a relying
    # party validates them with the v1 discovery document's issuer and keys.
    doc = discovery(base, tenant, ca, v2=False)
    # PyJWT re-fetches on an unknown kid at most every `cooldown_duration` (30 s by default); real
    # rotations are weeks apart, this one a second after the first fetch, so no cooldown here.
    client = jwks_client(doc["jwks_uri"], ca, cooldown_duration=0)

    def validate(token: str) -> dict:
        key = client.get_signing_key_from_jwt(token)
        return jwt.decode(token, key.key, algorithms=["RS256"], audience=MGMT, issuer=doc["issuer"])

    a = fresh_token()
    validate(a)  # the client now caches a key set holding only A's key
    kid_a = jwt.get_unverified_header(a)["kid"]
    b, deadline = a, time.time() + 30
    while jwt.get_unverified_header(b)["kid"] == kid_a:
        assert time.time() < deadline, "the signing key never rotated"
        time.sleep(0.2)  # the rotation period is one wall-clock second
        b = fresh_token()
    kid_b = jwt.get_unverified_header(b)["kid"]

    assert validate(b)["appid"] == info["clientId"]  # v1 claims; unknown kid -> the client re-fetches the key set
    assert validate(a)["appid"] == info["clientId"]  # the retired key is still published
    kids = [k["kid"] for k in requests.get(doc["jwks_uri"], verify=ca, timeout=10).json()["keys"]]
    assert kids[0] != kid_a and kid_a in kids and kid_b in kids
