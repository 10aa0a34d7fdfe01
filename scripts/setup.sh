#!/usr/bin/env bash
# Creates .venv (Python 3.11) and installs this package with its pinned dependencies; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
# Re-install only when pyproject.toml changed since the last install.
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -e ".[test]" > .venv/install.log 2>&1 || { tail -40 .venv/install.log; exit 1; }
  rm -f .venv/.installed-* && touch "$stamp"
fi
