#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls exactly this).
# Creates or reuses ./.venv, installs the project with its test extras (no root, no apt), then
# runs ruff and pytest.
#
# Skips: without a shared folder (../shared or $MPOL_SHARED_FOLDER) the tests that need it
# skip, naming what is missing. WITH it (the CI run) every test must run: tests/conftest.py
# turns any skip into a failing exit status, except skips whose reason contains a fragment
# listed in $MPOL_ALLOWED_SKIPS (unset here).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  touch "$stamp"
fi

.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
