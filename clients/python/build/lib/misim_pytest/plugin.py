"""pytest plugin for misim (registered through the ``pytest11`` entry point).

Fixtures:

``misim`` (session)
    One ``misim up`` on free loopback ports (``--base-port 0``) in a temporary data directory, with
    a manual clock. The binary is ``MISIM_BIN``, else ``misim`` on ``PATH``. Helpers:
    ``misim.cli(...)``, ``misim.create_vm(...)``, ``misim.fault(...)``, ``misim.clear_faults()``,
    ``misim.clock.advance("25h")``, ``misim.clock.now()``, ``misim.events(party=..., vm=...)``.

``misim_vm`` (function)
    A fresh VM with a system-assigned identity, a Reader role on the subscription, and
    ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` set to its IMDS endpoint for the test (the variable
    azure-identity's ``ManagedIdentityCredential`` reads for IMDS, see
    https://github.com/Azure/azure-sdk-for-python/blob/azure-identity_1.19.0/sdk/identity/azure-identity/azure/identity/_credentials/imds.py).
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest


def _binary() -> str:
    explicit = os.environ.get("MISIM_BIN")
    if explicit:
        return explicit
    found = shutil.which("misim")
    if not found:
        raise pytest.UsageError("misim not found: set MISIM_BIN or put misim on PATH")
    return found


class MisimError(AssertionError):
    """A misim command failed."""


class Clock:
    """The simulated clock (``misim clock ...``)."""

    def __init__(self, misim: "Misim"):
        self._m = misim

    def now(self) -> dict:
        return self._m.cli("clock", "show")

    def advance(self, duration: str) -> dict:
        """Moves the clock forward, e.g. ``"90s"``, ``"25h"``, ``"50d"``."""
        return self._m.cli("clock", "advance", duration)


@dataclass
class MisimVm:
    """A VM created for one test."""

    group: str
    name: str
    principal_id: str
    imds_endpoint: str
    resource_id: str


class Misim:
    """A running misim and helpers over its CLI (JSON output)."""

    _names = itertools.count(1)

    def __init__(self, binary: str, data_dir: Path, proc: subprocess.Popen, endpoints: dict):
        self.binary = binary
        self.data_dir = data_dir
        self.proc = proc
        self.endpoints = endpoints
        self.clock = Clock(self)

    @property
    def subscription_id(self) -> str:
        return self.endpoints["subscription_id"]

    @property
    def tenant_id(self) -> str:
        return self.endpoints["tenant_id"]

    def cli(self, *args: str, check: bool = True) -> Any:
        """Runs ``misim ARGS`` against this misim and returns its parsed JSON (or text)."""
        env = dict(os.environ, MISIM_ARM=self.endpoints["arm_grpc"], MISIM_DATA_DIR=str(self.data_dir))
        env.pop("MISIM_ARM_TOKEN", None)
        out = subprocess.run([self.binary, "--log", "warn", *args], env=env,
                             capture_output=True, text=True, timeout=120)
        if check and out.returncode != 0:
            raise MisimError(f"misim {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
        text = out.stdout.strip()
        if not text:
            return {}
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    def create_vm(self, name: Optional[str] = None, group: str = "rg-pytest",
                  identity: str = "system", role: Optional[str] = "Reader") -> MisimVm:
        """Creates a VM with ``identity`` (``system`` or a user-assigned identity's name) and,
        when ``role`` is set, that role on the subscription for its system identity."""
        name = name or f"vm{next(self._names)}"
        self.cli("group", "create", "-n", group, "-l", "westeurope")
        self.cli("vm", "create", "-g", group, "-n", name)
        ident = self.cli("vm", "identity", "assign", "-g", group, "-n", name, "--identities", identity)
        principal = ident.get("principalId", "")
        if role and principal:
            self.cli("role", "assignment", "create", "--assignee-object-id", principal,
                     "--role", role, "--scope", f"/subscriptions/{self.subscription_id}")
        vm = self.cli("vm", "show", "-g", group, "-n", name)
        return MisimVm(group=group, name=name, principal_id=principal,
                       imds_endpoint=vm["imdsEndpoint"], resource_id=vm["id"])

    def fault(self, **kwargs: Any) -> dict:
        """Adds a fault rule: keyword arguments are ``misim fault add`` flags
        (``party="aad", endpoint="aad-token", status=503, count=2``; ``close=True``)."""
        args: List[str] = ["fault", "add"]
        for key, value in kwargs.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                args.append(flag)
            elif value is not False and value is not None:
                args += [flag, str(value)]
        return self.cli(*args)

    def clear_faults(self) -> Any:
        return self.cli("fault", "clear")

    def events(self, party: Optional[str] = None, vm: Optional[str] = None,
               operation: Optional[str] = None, trace_id: Optional[str] = None) -> List[Dict[str, Any]]:
        """The recorded requests matching the filters (``misim events --json``), oldest first."""
        args = ["events", "--json"]
        for flag, value in (("--party", party), ("--vm", vm), ("--operation", operation),
                            ("--trace-id", trace_id)):
            if value:
                args += [flag, value]
        return self.cli(*args)


@pytest.fixture(scope="session")
def misim(tmp_path_factory):
    """A misim for the test session (ephemeral ports, manual clock)."""
    binary = _binary()
    data_dir = Path(tempfile.mkdtemp(prefix="misim-pytest-"))
    log = open(data_dir / "misim.log", "w")
    proc = subprocess.Popen(
        [binary, "up", "--data-dir", str(data_dir), "--base-port", "0", "--hosts", "1",
         "--clock", "manual"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    endpoints_file = data_dir / "endpoints.json"
    deadline = time.time() + 60
    while not endpoints_file.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise MisimError("misim up did not start:\n" + (data_dir / "misim.log").read_text())
        time.sleep(0.1)
    endpoints = json.loads(endpoints_file.read_text())
    try:
        yield Misim(binary, data_dir, proc, endpoints)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def misim_vm(misim, monkeypatch) -> MisimVm:
    """A new VM with a system-assigned identity (Reader on the subscription); the test's
    ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` points at its IMDS."""
    vm = misim.create_vm()
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", vm.imds_endpoint)
    for var in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET",
                "AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    yield vm
    misim.clear_faults()
