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
  # pip compiles every installed file to bytecode in one process (35 s of a 54 s install on 2 cores); compileall
  # does the same on every core (19 s). Its status is ignored, as pip ignores the same errors: a few files inside
  # the packages are written for newer Pythons (e.g. torch/testing/_internal/py312_intrinsics.py).
  .venv/bin/python -m pip install --no-compile -e ".[test]" > .venv/install.log 2>&1 \
    || { tail -40 .venv/install.log; exit 1; }
  packages=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  .venv/bin/python -m compileall -q -j 0 "$packages" > .venv/compile.log 2>&1 || true
  rm -f .venv/.installed-* && touch "$stamp"
fi
