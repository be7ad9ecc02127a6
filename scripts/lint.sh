#!/usr/bin/env bash
# Static checks, the same locally and in CI: ruff (lint + format) and the import layers.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check .
ruff format --check .
lint-imports
