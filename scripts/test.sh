#!/usr/bin/env bash
# The test suite, the same locally and in CI. GPU tests are reported as skipped without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export TRITON_INTERPRET="${TRITON_INTERPRET:-$(nvidia-smi -L >/dev/null 2>&1 && echo 0 || echo 1)}"
exec python -m pytest "$@"
