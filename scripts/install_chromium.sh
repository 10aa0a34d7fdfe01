#!/usr/bin/env bash
# The MLflow UI test drives Debian's chromium (Playwright's own browser downloads cannot reach this network).
# Installs it with apt when it is missing and apt is usable; otherwise that test skips and says why.
set -uo pipefail
[ -x /usr/bin/chromium ] && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's chromium for the MLflow UI test"
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } > /tmp/dcgan-apt-chromium.log 2>&1 \
    || { tail -20 /tmp/dcgan-apt-chromium.log; echo "chromium install failed: the MLflow UI test will skip"; }
else
  echo "no /usr/bin/chromium and no root apt-get: the MLflow UI test will skip (apt-get install chromium)"
fi
exit 0
