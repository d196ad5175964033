#!/usr/bin/env bash
# Classify the demo test sentences against the demo support set with the default pretrained
# encoder (sentence-transformers/all-MiniLM-L6-v2, no training) and print every prediction and
# the accuracy.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
exec python scripts/demo.py "$@"
