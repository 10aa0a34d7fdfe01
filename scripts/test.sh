#!/usr/bin/env bash
# README command 2: set up and run the test suite. Pass pytest flags through, e.g. -m "not slow" for the quick subset.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
bash scripts/install_chromium.sh
.venv/bin/python -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests for this selection"
  status=0
fi
exit "$status"
