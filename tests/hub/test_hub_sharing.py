"""Hub sharing up to the network boundary.

Loading: repo ids resolve through a local Hugging Face cache laid out as the Hub's
(models--owner--name/snapshots/<commit>/, refs/main) with HF_HUB_OFFLINE=1, so the real
huggingface_hub resolution code runs. Pushing: the real HfApi code runs with only the HTTP
transport replaced, and the test reads the exact commit it would send.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from textmatch import MatchingNetwork, TextMatchError, cli

SUPPORT = (
    ["rain forecast today", "sunny and windy", "play my playlist", "a song by the band", "pizza for dinner", "noodles lunch"],
    ["weather", "weather", "music", "music", "food", "food"],
)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def put_in_cache(cache: Path, repo_id: str, folder: Path, commit: str = COMMIT) -> Path:
    """Lay `folder` out in `cache` as huggingface_hub stores a downloaded model repo."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def trained_folder(tiny_bert_model, tmp_path):
    tiny_bert_model.fit(*SUPPORT)
    return tiny_bert_model, tiny_bert_model.save_pretrained(tmp_path / "saved")


def test_from_pretrained_by_repo_id_through_the_cache(hub_cache, trained_folder):
    model, folder = trained_folder
    put_in_cache(hub_cache, "tester/tiny-intents", folder)
    loaded = MatchingNetwork.from_pretrained("tester/tiny-intents")
    queries = ["snow and rain", "play a track", "burger"]
    np.testing.assert_allclose(loaded.predict_proba(queries), model.predict_proba(queries), atol=1e-6)
    assert loaded.predict(queries) == model.predict(queries)
    # a pinned revision resolves to the same snapshot
    pinned = MatchingNetwork.from_pretrained("tester/tiny-intents", revision=COMMIT)
    assert pinned.classes_ == model.classes_


def test_cache_dir_argument(tmp_path, trained_folder, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _, folder = trained_folder
    put_in_cache(tmp_path / "elsewhere", "tester/tiny-intents", folder)
    loaded = MatchingNetwork.from_pretrained("tester/tiny-intents", cache_dir=tmp_path / "elsewhere")
    assert loaded.classes_ == ["food", "music", "weather"]


def test_plain_transformers_repo_by_id_is_a_base_encoder(hub_cache, tiny_bert_dir):
    put_in_cache(hub_cache, "tester/tiny-bert", tiny_bert_dir)
    model = MatchingNetwork.from_pretrained("tester/tiny-bert")
    assert model.base_model == "tester/tiny-bert"
    model.fit(*SUPPORT)
    assert model.predict_proba(["rain"]).shape == (1, 3)


def test_repo_missing_from_cache_offline(hub_cache):
    with pytest.raises(TextMatchError, match="tester/not-there"):
        MatchingNetwork.from_pretrained("tester/not-there")


def _pickle_only_folder(tmp_path, tiny_bert_dir) -> Path:
    from transformers import BertModel

    folder = tmp_path / "pickled"
    folder.mkdir()
    for f in tiny_bert_dir.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, folder / f.name)
    state = BertModel.from_pretrained(str(tiny_bert_dir)).state_dict()
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def test_pickle_only_repo_refused_unless_opted_in(hub_cache, tmp_path, tiny_bert_dir):
    put_in_cache(hub_cache, "tester/pickled", _pickle_only_folder(tmp_path, tiny_bert_dir))
    with pytest.raises(TextMatchError, match="pickle"):
        MatchingNetwork.from_pretrained("tester/pickled")
    with pytest.warns(UserWarning, match="allow_pickle"):
        try:
            model = MatchingNetwork.from_pretrained("tester/pickled", allow_pickle=True)
        except TextMatchError as exc:  # a transformers release that can no longer read .bin at all
            pytest.skip(f"this transformers cannot load pickle checkpoints: {exc}")
    assert model.query_encoder.dim == 32


def test_trust_remote_code_stays_off(tiny_bert_dir, monkeypatch):
    import transformers

    seen = {}
    real = transformers.AutoModel.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", spy)
    MatchingNetwork.from_pretrained(str(tiny_bert_dir))
    assert seen["trust_remote_code"] is False and seen["use_safetensors"] is True


# -- pushing -------------------------------------------------------------------------------------
class FakeHub:
    """An HTTP transport standing in for huggingface.co: records requests, answers like the Hub.

    The preupload answer asks for every file inline ("regular"), so the commit request carries
    each file's bytes and the test can compare them with the saved model."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []

    def __call__(self, request):
        import httpx2

        url, body = str(request.url), request.content
        self.requests.append((request.method, url, body))
        if url.endswith("/api/repos/create"):
            return httpx2.Response(200, json={"url": "https://huggingface.co/tester/pushed", "name": "tester/pushed"})
        if url.endswith("/api/validate-yaml"):  # the Hub checks a model card's metadata before a commit
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if "/preupload/" in url:
            files = json.loads(body)["files"]
            return httpx2.Response(200, json={"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
        if "/commit/" in url:
            return httpx2.Response(200, json={"commitUrl": f"https://huggingface.co/tester/pushed/commit/{COMMIT}",
                                              "commitOid": COMMIT})
        return httpx2.Response(404, json={"error": "not part of this fake"})

    def commit(self) -> tuple[str, dict, dict[str, bytes]]:
        """(url, header, {path: bytes}) of the one commit request."""
        commits = [(u, b) for m, u, b in self.requests if m == "POST" and "/commit/" in u]
        assert len(commits) == 1, [u for _, u, _ in self.requests]
        url, body = commits[0]
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(x["value"] for x in lines if x["key"] == "header")
        files = {x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines if x["key"] == "file"}
        return url, header, files


@pytest.fixture
def fake_hub(monkeypatch):
    pytest.importorskip("httpx2", reason="this huggingface_hub does not use httpx2")
    import httpx2
    import huggingface_hub
    import huggingface_hub.constants as constants
    from huggingface_hub.utils import _http

    hub = FakeHub()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    huggingface_hub.set_client_factory(lambda: httpx2.Client(
        transport=httpx2.MockTransport(hub), event_hooks={"request": [_http.hf_request_event_hook]}))
    yield hub
    huggingface_hub.set_client_factory(_http.default_client_factory)


def _files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_push_to_hub_sends_exactly_the_saved_files(fake_hub, trained_folder, tmp_path):
    model, _ = trained_folder
    info = model.push_to_hub("tester/pushed", token="hf_fake_token", commit_message="first model")
    assert COMMIT in str(info)
    url, header, files = fake_hub.commit()
    assert url.endswith("/api/models/tester/pushed/commit/main")
    assert header["summary"] == "first model"
    creates = [json.loads(b) for m, u, b in fake_hub.requests if u.endswith("/api/repos/create")]
    assert creates and creates[0]["name"] == "pushed" and creates[0]["organization"] == "tester"
    expected = _files_of(model.save_pretrained(tmp_path / "again"))
    assert set(files) == set(expected)
    for name in ("model.safetensors", "support_set.json", "support_embeddings.safetensors"):
        assert files[name] == expected[name], name
    assert json.loads(files["config.json"]) == json.loads(expected["config.json"])
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    assert {"config.json", "model.safetensors", "support_set.json"} <= set(files)
    assert any(name.startswith("query_encoder/tokenizer") for name in files)


def test_cli_push(fake_hub, trained_folder, capsys):
    _, folder = trained_folder
    code = cli.main(["push", "--model", str(folder), "--repo-id", "tester/pushed", "--token", "hf_fake",
                     "--commit-message", "from the cli", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["repo_id"] == "tester/pushed"
    _, header, files = fake_hub.commit()
    assert header["summary"] == "from the cli"
    assert files["model.safetensors"] == (folder / "model.safetensors").read_bytes()


def test_cli_push_refuses_a_folder_not_saved_by_textmatch(tiny_bert_dir, capsys):
    code = cli.main(["push", "--model", str(tiny_bert_dir), "--repo-id", "tester/x"])
    assert code == 2 and "not a model folder saved by textmatch" in capsys.readouterr().err


def test_push_refuses_a_bad_repo_id(trained_folder):
    model, _ = trained_folder
    with pytest.raises(TextMatchError, match="repo_id"):
        model.push_to_hub("a/b/c")


# -- the README's Hub instructions, run against the cache and the fake Hub ------------------------
def _readme_block(lang: str, needle: str) -> str:
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(rf"```{lang}\n(.*?)```", readme, re.S) if needle in b]
    assert blocks, f"README has no {lang} block with {needle!r}"
    return blocks[0]


def test_readme_push_command(fake_hub, trained_folder, capsys):
    import shlex

    line = next(ln for ln in _readme_block("bash", "textmatch push").splitlines() if ln.startswith("textmatch push"))
    argv = shlex.split(line.split("#")[0].replace("[--private]", "--private"))[1:]
    _, folder = trained_folder
    argv[argv.index("--model") + 1] = str(folder)
    assert cli.main(argv + ["--token", "hf_fake"]) == 0, capsys.readouterr().err
    creates = [json.loads(b) for m, u, b in fake_hub.requests if u.endswith("/api/repos/create")]
    assert creates[0]["organization"] == "your-name"
    assert creates[0].get("visibility") == "private" or creates[0].get("private") is True
    assert "model.safetensors" in fake_hub.commit()[2]


def test_readme_load_by_id_snippet(hub_cache, trained_folder, capsys):
    _, folder = trained_folder
    put_in_cache(hub_cache, "your-name/my-intents", folder)
    code = _readme_block("python", 'from_pretrained("your-name/my-intents"')
    exec(compile("from textmatch import MatchingNetwork\n" + code, "README", "exec"), {})
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("[") and any(label in printed for label in ("weather", "music", "food"))


def test_trained_with_cli_card_rendered_reloaded_by_repo_id(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    """The issue's end-to-end path: `textmatch train` -> saved folder with a model card ->
    `evaluate --record` -> loaded by repo id from a Hub-layout cache -> identical predictions."""
    import csv

    import huggingface_hub.constants as constants
    import yaml

    from conftest import make_sentences

    def write(path, texts, labels):
        with open(path, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([("text", "label"), *zip(texts, labels)])
        return str(path)

    train = write(tmp_path / "train.csv", *make_sentences(6, seed=5))
    test = write(tmp_path / "test.csv", *make_sentences(3, seed=6))
    out = tmp_path / "trained"
    assert cli.main(["train", "--model", str(tiny_bert_dir), "--train", train, "--output", str(out),
                     "--episodes", "3", "--lr", "1e-3", "--no-progress"]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", str(out), "--test", test, "--record", "--json"]) == 0
    accuracy = json.loads(capsys.readouterr().out)["accuracy"]
    card = (out / "README.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "textmatch" and "few-shot" in meta["tags"]
    results = meta["model-index"][0]["results"][0]
    assert results["dataset"]["name"] == "test.csv"
    assert {m["type"]: m["value"] for m in results["metrics"]}["accuracy"] == pytest.approx(accuracy)
    assert "| `num_episodes` | 3 |" in card

    cache = tmp_path / "cache"
    put_in_cache(cache, "tester/trained-intents", out)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    local = MatchingNetwork.from_pretrained(str(out))
    by_id = MatchingNetwork.from_pretrained("tester/trained-intents")
    queries = make_sentences(2, seed=7)[0]
    assert by_id.predict(queries) == local.predict(queries)
    np.testing.assert_allclose(by_id.predict_proba(queries), local.predict_proba(queries), atol=1e-6)
    assert by_id.model_card_data.eval_results == local.model_card_data.eval_results


def test_trainer_push_to_hub_sends_card_with_training_arguments(fake_hub, tiny_bert_model):
    from conftest import make_sentences
    from textmatch import Trainer, TrainingArguments

    trainer = Trainer(tiny_bert_model, TrainingArguments(num_episodes=2, show_progress_bar=False),
                      train_dataset=make_sentences(4, seed=3))
    trainer.train()
    trainer.push_to_hub("tester/pushed", token="hf_fake")
    files = fake_hub.commit()[2]
    card = files["README.md"].decode("utf-8")
    assert "library_name: textmatch" in card and "| `num_episodes` | 2 |" in card
    assert 'MatchingNetwork.from_pretrained("tester/pushed")' in card
