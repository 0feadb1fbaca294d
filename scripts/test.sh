#!/usr/bin/env bash
# The project's test command (README): Rust unit + integration tests, then the Python tests that drive
# misim with real clients (azure-identity, msal, PyJWT), installed into .venv on first run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Seconds per phase, printed at the end (README "Timings").
phase() { echo "== $1"; PHASES+=("$1"); STARTS+=("$SECONDS"); }
PHASES=(); STARTS=()
summary() {
  local i end
  echo "== timings (seconds)"
  for i in "${!PHASES[@]}"; do
    end=${STARTS[$((i + 1))]:-$SECONDS}
    printf '   %-60s %5d\n' "${PHASES[$i]}" "$((end - STARTS[i]))"
  done
  printf '   %-60s %5d\n' "total" "$SECONDS"
  if [ -d target ]; then du -sh target | awk '{print "   target/ " $1}'; fi
}
trap summary EXIT

phase "cargo build (bins): what the quick start's cargo run builds"
cargo build --workspace --bins
phase "cargo test"
cargo test --workspace

# The second storage engine (issue #15, docs/storage.md): the store's own tests, MSRP's and the
# hosts' unit tests, and Azure AD's and ARM's whole suites (unit, integration, ARM REST) against redb.
phase "store tests on redb (MISIM_STORE_ENGINE=redb)"
MISIM_STORE_ENGINE=redb cargo test -p misim-core --lib store::
MISIM_STORE_ENGINE=redb cargo test -p misim-msrp --lib
MISIM_STORE_ENGINE=redb cargo test -p misim-imds --lib
MISIM_STORE_ENGINE=redb cargo test -p misim-aad
MISIM_STORE_ENGINE=redb cargo test -p misim-arm

# Crash soak, short form (issue #15, docs/reliability.md): real misim processes killed with SIGKILL
# while workers call ARM; at least 200 operations, 10 kills, and 0 violations.
phase "crash soak (short form)"
cargo test -p misim-tests --test soak -- --ops 200 --kills 10

phase "python tests (real Azure SDK clients)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
MISIM_BIN="$PWD/target/debug/misim" .venv/bin/python -m pytest -q tests/python

phase "scenarios: every scenarios/*.yaml on an embedded misim (JUnit in target/scenarios.xml)"
./target/debug/misim --log warn scenario run scenarios/*.yaml --embedded --junit target/scenarios.xml
# The deliberately failing scenario must fail, with a diff in its report.
if ./target/debug/misim --log warn scenario run scenarios/failing/*.yaml --embedded >target/failing-scenario.txt 2>&1; then
  echo "scenarios/failing passed but must fail"; exit 1
fi
grep -q -- "--- expected" target/failing-scenario.txt || { cat target/failing-scenario.txt; echo "no diff in the failure report"; exit 1; }

phase "pytest plugin (clients/python): its example test with azure-identity"
.venv/bin/python -m pip install --quiet --disable-pip-version-check ./clients/python
MISIM_BIN="$PWD/target/debug/misim" .venv/bin/python -m pytest -q -p no:cacheprovider clients/python/examples

phase "docs: every shell example of README.md and docs/*.md against a live misim"
MISIM_BIN="$PWD/target/debug/misim" .venv/bin/python scripts/run_docs.py
