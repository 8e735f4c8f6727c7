#!/usr/bin/env bash
# The dashboard's page tests drive a real browser: Debian's headless Chromium through
# ChromeDriver. Installs both (packages chromium, chromium-driver) when missing.
set -euo pipefail

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if command -v chromedriver >/dev/null 2>&1 && [ -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  printf '==> %s\n' "Chromium and ChromeDriver are here"
else
  printf '==> %s\n' "installing chromium and chromium-driver (for the dashboard's browser tests)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium chromium-driver >/dev/null
fi
