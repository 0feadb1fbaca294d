"""Gets a token the way code in an AKS pod with workload identity does: azure-identity's
WorkloadIdentityCredential and DefaultAzureCredential with no arguments, configured only by the
variables the workload identity webhook sets (AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID,
AZURE_TENANT_ID, AZURE_AUTHORITY_HOST: https://learn.microsoft.com/en-us/azure/aks/workload-identity-overview)
and the CA bundle of Azure AD's HTTPS listener (REQUESTS_CA_BUNDLE).

Prints one JSON line per credential, {"credential": ..., "access_token": ..., "expires_on": ...};
exits 1 with the SDK's error otherwise. Runs inside the compose stack's pod (deploy/e2e.sh pipes it in):
    docker-compose exec -T pod python - --scope https://management.azure.com/.default < deploy/pod/check_workload_identity.py
"""

import argparse
import json
import os
import sys

# Variables that would make DefaultAzureCredential use another credential before workload identity.
OTHER_CREDENTIAL_ENV = ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME", "AZURE_TOKEN_CREDENTIALS")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scope", default="https://management.azure.com/.default")
    args = parser.parse_args()

    missing = [n for n in ("AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_AUTHORITY_HOST") if not os.environ.get(n)]
    if missing:
        print(f"check_workload_identity: the pod lacks {', '.join(missing)}", file=sys.stderr)
        return 1
    for name in OTHER_CREDENTIAL_ENV:
        os.environ.pop(name, None)

    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import DefaultAzureCredential, WorkloadIdentityCredential

    status = 0
    for name, make in (("WorkloadIdentityCredential", WorkloadIdentityCredential), ("DefaultAzureCredential", DefaultAzureCredential)):
        try:
            token = make().get_token(args.scope)
        except ClientAuthenticationError as err:
            print(f"check_workload_identity: {name}: {err.message}", file=sys.stderr)
            status = 1
            continue
        print(json.dumps({"credential": name, "access_token": token.token, "expires_on": token.expires_on}))
    return status


if __name__ == "__main__":
    sys.exit(main())
