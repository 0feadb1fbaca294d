"""The unmodified azure-identity ManagedIdentityCredential gets tokens through a VM's IMDS for several
Microsoft first-party resources; each verifies with PyJWT against Azure AD's discovered JWKS and
carries the managed-identity claim set in Entra's shapes (access-token claims reference:
https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference; a real VM token's
claims are tabled in docs/azure-ad.md)."""
import base64
import re
import uuid

import jwt
import requests
from azure.identity import ManagedIdentityCredential

NO_PROXY = {"http": None, "https": None}

# scope azure-identity is given -> resource it sends IMDS (scope minus "/.default") = v1 `aud`,
# and the resource application's ID that `rh` packs.
RESOURCES = {
    "https://management.azure.com/.default": ("https://management.azure.com",
                                              "797f4846-ba00-4fd7-ba43-dac1f8f63013"),
    "https://vault.azure.net/.default": ("https://vault.azure.net",
                                         "cfa8b339-82a2-471a-a3c9-0fc0be7a4093"),
    "https://storage.azure.com/.default": ("https://storage.azure.com",
                                           "e406a681-f3d4-42a8-90b6-c2b029497af1"),
    "https://cognitiveservices.azure.com/.default": ("https://cognitiveservices.azure.com",
                                                     "7d312290-28c8-473c-a0ed-8e53749b6d6d"),
    "https://graph.microsoft.com/.default": ("https://graph.microsoft.com",
                                             "00000003-0000-0000-c000-000000000000"),
    "https://database.windows.net//.default": ("https://database.windows.net/",
                                               "022907d3-0f1b-48f7-badc-1ba6abab6d66"),
}

CLAIMS = {"aud", "iss", "iat", "nbf", "exp", "aio", "appid", "appidacr", "idp", "idtyp", "oid", "rh",
          "sub", "tid", "uti", "ver", "xms_act_fct", "xms_ftd", "xms_idrel", "xms_mirid", "xms_rd",
          "xms_sub_fct", "xms_tcdt",
          # user-assigned identities only: the resource (VM) using the identity
          "xms_az_rid"}


def b64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def verify(misim, token: str, audience: str) -> dict:
    """Validates like a relying party: discovery -> jwks_uri -> signature, issuer, audience, expiry."""
    tid = jwt.decode(token, options={"verify_signature": False})["tid"]
    discovery = requests.get(f"{misim.endpoints['aad']}/{tid}/.well-known/openid-configuration",
                             proxies=NO_PROXY, timeout=10).json()
    key = jwt.PyJWKClient(discovery["jwks_uri"]).get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=audience,
                      issuer=discovery["issuer"])


def test_first_party_tokens_carry_the_managed_identity_claim_set(misim, imds_env):
    rg = "py-claims-RG"
    misim.cli("group", "create", "-n", rg, "-l", "westeurope")
    vm = misim.cli("vm", "create", "-g", rg, "-n", "py-claims-VM", "--host", "host-1")
    uami = misim.cli("identity", "create", "-g", rg, "-n", "py-claims-ID")
    misim.cli("vm", "identity", "assign", "-g", rg, "-n", "py-claims-VM", "--identities", uami["id"])
    tenant = misim.endpoints["tenant_id"]

    imds_env(vm["imdsEndpoint"])
    credential = ManagedIdentityCredential(client_id=uami["clientId"])
    seen = {}
    for scope, (audience, resource_app_id) in RESOURCES.items():
        claims = verify(misim, credential.get_token(scope).token, audience)
        assert set(claims) == CLAIMS, sorted(set(claims) ^ CLAIMS)
        assert claims["aud"] == audience
        assert claims["iss"] == claims["idp"] == f"https://sts.windows.net/{tenant}/"
        assert (claims["ver"], claims["idtyp"]) == ("1.0", "app")
        assert (claims["appid"], claims["appidacr"]) == (uami["clientId"], "2")
        assert claims["oid"] == claims["sub"] == uami["principalId"]
        assert claims["tid"] == tenant

        # xms_mirid: /resourcegroups/ in lower case, the rest of the resource ID as created.
        rg_at = uami["id"].lower().index("/resourcegroups/")
        expected = (uami["id"][:rg_at] + "/resourcegroups/"
                    + uami["id"][rg_at + len("/resourceGroups/"):])
        assert claims["xms_mirid"] == expected
        assert f"/resourcegroups/{rg}/" in claims["xms_mirid"]
        assert claims["xms_mirid"].endswith("/userAssignedIdentities/py-claims-ID")
        assert claims["xms_az_rid"].lower() == vm["id"].lower()

        # aio: standard base64, ~140 chars; uti: 22-char base64url of 16 bytes.
        assert len(claims["aio"]) == 140 and base64.b64decode(claims["aio"], validate=True)
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", claims["uti"]) and len(b64url(claims["uti"])) == 16
        # rh: "1." + base64url(prefix, tenant ID, resource app ID, suffix) + ".".
        m = re.fullmatch(r"1\.([A-Za-z0-9_-]+)\.", claims["rh"])
        assert m, claims["rh"]
        rh = b64url(m.group(1))
        assert str(uuid.UUID(bytes_le=rh[3:19])) == tenant
        assert str(uuid.UUID(bytes_le=rh[19:35])) == resource_app_id

        # xms_tcdt: the tenant's creation time, an integer no later than the token.
        assert isinstance(claims["xms_tcdt"], int) and 0 < claims["xms_tcdt"] <= claims["exp"]
        assert claims["xms_rd"].startswith("0.42Lj")
        assert b64url(claims["xms_ftd"])[32] == 1
        assert re.fullmatch(r"7 \d+", claims["xms_idrel"])
        assert (claims["xms_act_fct"], claims["xms_sub_fct"]) == ("3 9", "9 3")
        seen[audience] = claims

    # One tenant, one creation time; opaque claims differ per token.
    assert len({c["xms_tcdt"] for c in seen.values()}) == 1
    assert len({c["uti"] for c in seen.values()}) == len(seen)
    assert len({c["aio"] for c in seen.values()}) == len(seen)
