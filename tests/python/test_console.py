"""ARM's web console (/console) in headless Chromium: a screenshot of each page saved under the test
output directory (paths printed) and assertions on the rendered DOM. Skipped, with the reason
printed, only where no Chromium is installed (.ci/run installs Debian's `chromium`)."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import urllib.request

import pytest

from conftest import ROOT

OUT = pathlib.Path(os.environ.get("MISIM_TEST_OUTPUT", ROOT / "target" / "test-output")) / "console"
PAGES = ["resources", "hosts", "events", "flows"]


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    reason = "SKIPPED console browser test: no chromium on this machine (apt-get install chromium)"
    print(reason, file=sys.__stdout__)
    pytest.skip(reason)


def run_chromium(browser, url, *args):
    profile = tempfile.mkdtemp(prefix="misim-chromium-")
    try:
        out = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-proxy-server", f"--user-data-dir={profile}",
             "--hide-scrollbars", "--window-size=1400,1000", "--virtual-time-budget=8000",
             *args, url],
            capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.fixture(scope="module")
def console_world(misim):
    misim.cli("group", "create", "-n", "rg-console", "-l", "westeurope")
    misim.cli("vm", "create", "-g", "rg-console", "-n", "console-vm1", "--host", "host-1")
    identity = misim.cli("vm", "identity", "assign", "-g", "rg-console", "-n", "console-vm1",
                         "--identities", "system")
    misim.cli("identity", "create", "-g", "rg-console", "-n", "console-id1")
    sub = misim.cli("account", "show")["id"]
    misim.cli("role", "assignment", "create", "--assignee-object-id", identity["principalId"],
              "--role", "Reader", "--scope", f"/subscriptions/{sub}/resourceGroups/rg-console")
    token = misim.cli("token", "get", "-g", "rg-console", "-n", "console-vm1")
    assert token["access_token"]
    vm = misim.cli("vm", "show", "-g", "rg-console", "-n", "console-vm1")
    return {"base": misim.endpoints["arm_rest"], "principal": identity["principalId"], "vm": vm}


def test_console_apis_are_json(console_world):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(console_world["base"] + "/console/api/state", timeout=10) as r:
        state = json.load(r)
    assert any(v["name"] == "console-vm1" for v in state["vms"])
    with opener.open(console_world["base"] + "/console/api/diagram.svg?trace=last", timeout=10) as r:
        assert r.headers["Content-Type"] == "image/svg+xml"
        assert b"<svg" in r.read()


@pytest.mark.parametrize("page", PAGES)
def test_console_page_renders(console_world, page, capsys):
    browser = chromium()
    OUT.mkdir(parents=True, exist_ok=True)
    url = f"{console_world['base']}/console/{page}"
    shot = OUT / f"console-{page}.png"
    if shot.exists():
        shot.unlink()
    run_chromium(browser, url, f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 10_000, f"screenshot {shot}"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with capsys.disabled():
        print(f"\nconsole screenshot ({page}): {shot}")
    dom = run_chromium(browser, url, "--dump-dom")
    (OUT / f"console-{page}.html").write_text(dom)
    assert "Loading…" not in dom, "the page rendered its data"
    assert 'class="active"' in dom and f'data-page="{page}"' in dom
    vm = console_world["vm"]
    if page == "resources":
        assert "console-vm1" in dom and "console-id1" in dom
        assert console_world["principal"] in dom
        assert "Reader" in dom and "/resourceGroups/rg-console" in dom
    elif page == "hosts":
        assert "host-1" in dom and "host-2" in dom
        assert vm["imdsEndpoint"] in dom and "console-vm1" in dom and "Succeeded" in dom
    elif page == "events":
        assert "step 5: token request to IMDS" in dom
        assert "step 1: enable identity (ARM)" in dom
    elif page == "flows":
        assert "<svg" in dom and "The last token" in dom
        assert "5. token request: GET /metadata/identity/oauth2/token" in dom
        assert "6. token from Azure AD" in dom
