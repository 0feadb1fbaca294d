"""`misim token get --instance-id` reaches a scale-set instance's own IMDS through the CLI, and the token
belongs to the scale set's system-assigned identity (one identity shared by every instance)."""
import os
import subprocess

import jwt

from conftest import MISIM

MGMT = "https://management.azure.com/"


def test_token_get_reaches_each_scale_set_instance(misim):
    misim.cli("group", "create", "-n", "py-ss-rg", "-l", "westeurope")
    vmss = misim.cli("vmss", "create", "-g", "py-ss-rg", "-n", "py-ss", "--instance-count", "2")
    identity = misim.cli("vmss", "identity", "assign", "-g", "py-ss-rg", "-n", "py-ss", "--identities", "system")
    instances = misim.cli("vmss", "list-instances", "-g", "py-ss-rg", "-n", "py-ss")
    assert len(instances) == 2

    for instance in instances:
        body = misim.cli("token", "get", "-g", "py-ss-rg", "-n", "py-ss", "--instance-id", instance["instanceId"],
                         "--resource", MGMT)
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert claims["aud"] == MGMT
        assert claims["oid"] == identity["principalId"]
        assert claims["xms_mirid"].lower() == vmss["id"].lower()


def test_token_get_names_the_instances_when_the_instance_id_is_unknown(misim):
    misim.cli("group", "create", "-n", "py-ss-rg2", "-l", "westeurope")
    misim.cli("vmss", "create", "-g", "py-ss-rg2", "-n", "py-ss2", "--instance-count", "1")
    out = subprocess.run([MISIM, "token", "get", "-g", "py-ss-rg2", "-n", "py-ss2", "--instance-id", "7"],
                         env=dict(os.environ, MISIM_ARM=misim.endpoints["arm_grpc"]),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "has no instance \"7\"" in out.stderr, out.stderr
