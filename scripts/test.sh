#!/usr/bin/env bash
# The project's test command (README): Rust unit + integration tests, then the Python tests that drive
# misim with real clients (azure-identity, msal, PyJWT), installed into .venv on first run.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo build (bins)"
cargo build --workspace --bins
echo "== cargo test"
cargo test --workspace

echo "== python tests (real Azure SDK clients)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
MISIM_BIN="$PWD/target/debug/misim" .venv/bin/python -m pytest -q tests/python

echo "== docs: every shell example of README.md and docs/*.md against a live misim"
MISIM_BIN="$PWD/target/debug/misim" .venv/bin/python scripts/run_docs.py
