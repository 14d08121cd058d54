#!/usr/bin/env bash
# Installs simclr-tf with its test dependencies into .venv and runs the whole test suite.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup_env.sh" test
cd "$repo"
# Two processes, whole files each (their module fixtures are built once): most of the suite's time is
# TensorFlow start-up in subprocesses, which one core does not share. TEST_WORKERS=0: one process.
exec .venv/bin/python -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
