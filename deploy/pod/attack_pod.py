"""Attacks from the compose stack's pod (AKS workload identity), piped in by deploy/e2e.sh:
    docker-compose exec -T pod python - CONFIG_JSON < deploy/pod/attack_pod.py
CONFIG_JSON: {"control": {party: address}, "hosts": [addresses], "machine": [addresses],
"tenant": ..., "client_id": ..., "other_token": a service-account token of another service account}. The pod's own projected token,
re-signed with a key the cluster does not have, is the forged one.
Prints one "PASS <attempt> -- <what happened>" (refused) or "FAIL ..." line per attempt. Standard
library + requests and PyJWT[crypto] (in the pod image).
"""

import json
import socket
import sys

import requests

TOKEN_FILE = "/var/run/secrets/azure/tokens/azure-identity-token"


def out(ok, what, detail):
    print(f"{'PASS' if ok else 'FAIL'} pod: {what} -- {detail}", flush=True)


def connect(addr, port):
    """None when a TCP connection to addr:port is refused or times out, else 'connected'."""
    try:
        with socket.create_connection((addr, port), timeout=3):
            return "connected"
    except OSError:
        return None


def exchange(cfg, assertion):
    url = f"https://aad:7705/{cfg['tenant']}/oauth2/v2.0/token"
    form = {
        "grant_type": "client_credentials",
        "client_id": cfg["client_id"],
        "scope": "https://management.azure.com/.default",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }
    r = requests.post(url, data=form, timeout=10)
    try:
        body = r.json()
    except ValueError:
        body = {}
    return r.status_code, body


def forged():
    """The pod's projected token with the same header (kid) and claims, signed by a fresh RSA key."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    with open(TOKEN_FILE, encoding="utf-8") as f:
        real = f.read().strip()
    header = jwt.get_unverified_header(real)
    claims = jwt.decode(real, options={"verify_signature": False})
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": header.get("kid")})


def main():
    cfg = json.loads(sys.argv[1])
    targets = [(f"{name} gRPC at {addr}:{port}", addr, port) for name, (addr, port) in cfg["control"].items()]
    targets += [(f"host IMDS at {h}:80", h, 80) for h in cfg["hosts"]]
    targets += [(f"the machine at {m}:{p}", m, p) for m in cfg["machine"] for p in (22, 7700, 7701, 7702)]
    targets += [("169.254.169.254:80 (no IMDS in this pod)", "169.254.169.254", 80)]
    # controls: the probe does connect where the pod may go, and the raw exchange works with its own token
    got = connect("aad", 7705)
    out(got is not None, "control: TCP to Azure AD's HTTPS endpoint (aad:7705 through edge) connects", got or "no connection")
    for what, addr, port in targets:
        got = connect(addr, port)
        out(got is None, f"TCP {what} unreachable", got or "no connection")

    with open(TOKEN_FILE, encoding="utf-8") as f:
        status, body = exchange(cfg, f.read().strip())
    out(status == 200 and "access_token" in body,
        "control: the pod's own projected token in the same request -> 200 with a token", f"HTTP {status} {body.get('error', '')}")

    status, body = exchange(cfg, cfg["other_token"])
    codes = body.get("error_codes") or []
    out(status == 400 and 70021 in codes and "access_token" not in body,
        "another service account's token for this identity refused (AADSTS70021)",
        f"HTTP {status} {body.get('error')} {codes}")
    status, body = exchange(cfg, forged())
    codes = body.get("error_codes") or []
    out(status == 401 and "access_token" not in body,
        "a token for this service account signed with another key refused",
        f"HTTP {status} {body.get('error')} {codes}")
    try:
        with open(TOKEN_FILE, "a", encoding="utf-8"):
            pass
        out(False, "the projected token volume is read-only", "opened for writing")
    except OSError as err:
        out(True, "the projected token volume is read-only", type(err).__name__)


if __name__ == "__main__":
    main()
