#!/usr/bin/env bash
# Creates .venv in the checkout (once) and installs simclr-tf into it with the given extras.
# Usage: bash scripts/setup_env.sh [extras]   e.g. "test"
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python_bin="${PYTHON:-python3}"
if [ ! -x "$repo/.venv/bin/python" ]; then
  "$python_bin" -m venv "$repo/.venv"
fi
"$repo/.venv/bin/python" -m pip install --quiet --upgrade pip
extras="${1:-}"
"$repo/.venv/bin/python" -m pip install --quiet -e "$repo${extras:+[$extras]}"
