#!/usr/bin/env bash
# Retrieval example: index a folder of text files (data/docs, Markdown notes) and search it.
#   bash scripts/search_folder.sh [FOLDER] [QUERY...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
FOLDER="${1:-data/docs}"
shift || true
INDEX="runs/$(basename "$FOLDER")-index"
textmatch index --corpus "$FOLDER" --output "$INDEX" --no-progress
if [ "$#" -eq 0 ]; then
  set -- "how do I upload my model for others" "the classifier should refuse unrelated questions"
fi
textmatch search --index "$INDEX" --top-k 3 "$@"  # hybrid: the default search
