"""Verifies a misim access token on the machine: RS256 signature against Azure AD's JWKS (reached at
its published loopback port), issuer, audience, expiry, and the identity claims the e2e expects.

Reads JSON with `access_token` (IMDS answer, check_token.py output) on stdin; the keys come from
--jwks URL or --jwks-file (a JWKS document fetched before). Exits 0 and prints the
checked claims when every check holds, 1 with the failed checks otherwise. Needs PyJWT[crypto].
Example:
    ... | python3 deploy/verify_token.py --jwks http://127.0.0.1:7702/common/discovery/keys \\
          --tenant $TID --aud https://management.azure.com/ --mirid $VM_ID --oid $PRINCIPAL_ID
"""

import argparse
import json
import sys
import time

import jwt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--jwks", help="JWKS URL (loopback)")
    source.add_argument("--jwks-file", help="JWKS document already fetched (deploy/e2e.sh: the verifier runs with no network)")
    parser.add_argument("--tenant", required=True, help="expected tid")
    parser.add_argument("--aud", required=True, help="expected aud")
    parser.add_argument("--mirid", help="expected xms_mirid (identity resource id)")
    parser.add_argument("--oid", help="expected oid (principal id)")
    parser.add_argument("--appid", help="expected appid (client id)")
    parser.add_argument("--az-rid", help="expected xms_az_rid (VM resource id)")
    args = parser.parse_args()

    raw = sys.stdin.read()
    try:
        token = json.loads(raw)["access_token"]
    except (ValueError, KeyError, TypeError):
        print(f"verify_token: no access_token in input: {raw[:200]!r}", file=sys.stderr)
        return 1

    try:
        if args.jwks_file:
            with open(args.jwks_file, encoding="utf-8") as f:
                keys = jwt.PyJWKSet.from_dict(json.load(f))
            key = keys[jwt.get_unverified_header(token)["kid"]]
        else:
            key = jwt.PyJWKClient(args.jwks).get_signing_key_from_jwt(token)
    except (OSError, ValueError, KeyError, jwt.PyJWTError) as err:
        print(f"verify_token: no signing key for the token: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    issuer = f"https://sts.windows.net/{args.tenant}/"
    try:
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["RS256"],
            audience=args.aud,
            issuer=issuer,
            options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub"]},
        )
    except jwt.PyJWTError as err:
        print(f"verify_token: signature/standard claims rejected: {err}", file=sys.stderr)
        return 1

    def same(a, b):
        return isinstance(a, str) and a.lower() == b.lower()

    failures = []
    if claims.get("tid") != args.tenant:
        failures.append(f"tid {claims.get('tid')!r} != {args.tenant!r}")
    if claims.get("idtyp") != "app":
        failures.append(f"idtyp {claims.get('idtyp')!r} != 'app'")
    if claims.get("sub") != claims.get("oid"):
        failures.append("sub != oid")
    if claims["exp"] <= time.time():
        failures.append("token expired")
    if args.mirid and not same(claims.get("xms_mirid"), args.mirid):
        failures.append(f"xms_mirid {claims.get('xms_mirid')!r} != {args.mirid!r}")
    if args.oid and claims.get("oid") != args.oid:
        failures.append(f"oid {claims.get('oid')!r} != {args.oid!r}")
    if args.appid and claims.get("appid") != args.appid:
        failures.append(f"appid {claims.get('appid')!r} != {args.appid!r}")
    if args.az_rid and not same(claims.get("xms_az_rid"), args.az_rid):
        failures.append(f"xms_az_rid {claims.get('xms_az_rid')!r} != {args.az_rid!r}")
    if failures:
        print("verify_token: " + "; ".join(failures), file=sys.stderr)
        return 1
    shown = {k: claims.get(k) for k in ("aud", "iss", "oid", "appid", "xms_mirid", "xms_az_rid") if k in claims}
    print(json.dumps(shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
