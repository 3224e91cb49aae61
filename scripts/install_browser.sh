#!/usr/bin/env bash
# Install what the browser tests (tests/web/test_web_e2e.py) need: Debian's chromium and Playwright for
# Python in the project venv. Idempotent: each part is skipped when it is already there.
# Playwright drives /usr/bin/chromium (executable_path), so `playwright install` (which downloads
# its own browsers) is never run.
#
#   scripts/install_browser.sh
#   VENV=/path/to/venv scripts/install_browser.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
CHROMIUM="${CONCIERGE_CHROMIUM:-/usr/bin/chromium}"

if [[ -x "$CHROMIUM" ]]; then
  echo "chromium already installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
else
  SUDO=""
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || { echo "error: installing chromium needs root (or sudo)" >&2; exit 2; }
    SUDO="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y chromium
  echo "installed $("$CHROMIUM" --version)"
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "error: no virtualenv at $VENV (create it first, e.g. python3 -m venv .venv && pip install -e '.[dev]')" >&2
  exit 2
fi
have=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('playwright'))" 2>/dev/null || true)
if [[ -n "$have" ]]; then
  echo "playwright $have already installed in $VENV"
else
  "$VENV/bin/python" -m pip install --quiet playwright
  echo "installed playwright $("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('playwright'))")"
fi
