#!/usr/bin/env bash
# Run the test suite (offline: HF_HUB_OFFLINE=1). Extra arguments go to pytest, e.g.
#   bash scripts/test.sh -m "not slow"
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1
exec python -m pytest -q "$@"
