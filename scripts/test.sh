#!/usr/bin/env bash
# Installs simclr-tf with its test dependencies into .venv and runs the whole test suite.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup_env.sh" test
cd "$repo"
exec .venv/bin/python -m pytest -q "$@"
