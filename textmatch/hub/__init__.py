"""The Hugging Face Hub: where a model comes from (local folder, bundled default, Hub; the
safetensors policy), pushing a folder, and the model card (`textmatch.hub.model_card`, which
stands above the core and is not imported here)."""

from .push import push_folder_to_hub
from .resolution import DEFAULT_MODEL, require_safetensors, resolve_model

__all__ = ["DEFAULT_MODEL", "push_folder_to_hub", "require_safetensors", "resolve_model"]
