#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls exactly this).
# Creates or reuses ./.venv, installs the project with its test extras, installs the Debian
# TTS voices used by the synthetic source domain, then runs ruff and pytest.
#
# Skips: without a shared folder (../shared or $MPOL_SHARED_FOLDER) the tests that need it
# skip, naming what is missing. WITH it (the CI run) every test must run: tests/conftest.py
# turns any skip into a failing exit status, except skips whose reason contains a fragment
# listed in $MPOL_ALLOWED_SKIPS. This script adds "flite" there only when the TTS voices are
# missing and cannot be installed (not root, or apt-get failed).
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

have_tts() { command -v flite >/dev/null 2>&1 && command -v text2wave >/dev/null 2>&1; }
if ! have_tts; then
  if [ "$(id -u)" = 0 ]; then
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        flite festival festvox-kallpc16k festvox-us-slt-hts; } >/dev/null || true
  fi
  if ! have_tts; then
    echo "warning: flite/festival missing and not installable here (as root: apt-get install" \
      "flite festival festvox-kallpc16k festvox-us-slt-hts); synthetic-voice tests will be" \
      "skipped, and those skips allowed" >&2
    export MPOL_ALLOWED_SKIPS="${MPOL_ALLOWED_SKIPS:+$MPOL_ALLOWED_SKIPS,}flite"
  fi
fi

.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
