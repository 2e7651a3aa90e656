#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls exactly this).
# Creates or reuses ./.venv, installs the project with its test extras, installs the Debian
# TTS voices used by the synthetic source domain, then runs ruff and pytest.
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

if ! command -v flite >/dev/null 2>&1 || ! command -v text2wave >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      flite festival festvox-kallpc16k festvox-us-slt-hts >/dev/null
  else
    echo "warning: flite/festival missing (sudo apt-get install flite festival" \
      "festvox-kallpc16k festvox-us-slt-hts); synthetic-voice tests will be skipped" >&2
  fi
fi

.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
