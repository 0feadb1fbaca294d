"""Gets a token the way code on an Azure VM does: azure-identity's ManagedIdentityCredential with no
endpoint overrides, so it calls IMDS at 169.254.169.254 (routed to this VM's host by vm-entrypoint.sh).

Prints one JSON line {"access_token": ..., "expires_on": ...}; exits 1 with the SDK's error otherwise.
Runs inside a VM container (local/misim-vm), e.g.
    docker-compose exec -T vm-1a python /opt/misim/check_token.py --scope https://management.azure.com/.default
The token is verified outside the VM (deploy/verify_token.py): a VM's internal network cannot reach Azure AD.
"""

import argparse
import json
import os
import sys

# Variables that would point the SDK somewhere other than IMDS (App Service, Arc, Cloud Shell, pod
# identity, workload identity, credential selection): a VM has none of them.
REDIRECTING_ENV = (
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_TOKEN_CREDENTIALS",
    "AZURE_CLIENT_ID",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scope", default="https://management.azure.com/.default")
    parser.add_argument("--client-id", help="user-assigned identity to use (clientId)")
    args = parser.parse_args()

    for name in REDIRECTING_ENV:
        os.environ.pop(name, None)

    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import ManagedIdentityCredential

    credential = (
        ManagedIdentityCredential(client_id=args.client_id)
        if args.client_id
        else ManagedIdentityCredential()
    )
    try:
        token = credential.get_token(args.scope)
    except ClientAuthenticationError as err:
        print(f"check_token: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"access_token": token.token, "expires_on": token.expires_on}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
