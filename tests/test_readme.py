"""The README stays true: its Python quickstart prints what the README says, and its other
snippets and command-line examples run (with fewer training episodes, to stay fast)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")

pytestmark = pytest.mark.slow  # the pretrained all-MiniLM-L6-v2


def _block_after(marker: str, lang: str) -> str:
    match = re.search(re.escape(marker) + r"[^\n]*\n```" + lang + r"\n(.*?)```", README, re.S)
    assert match, f"README has no ```{lang} block after {marker!r}"
    return match.group(1)


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.S)


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)


def test_quickstart_prints_what_the_readme_shows(tmp_path):
    code = _block_after("<!-- quickstart:", "python")
    expected = _block_after("<!-- quickstart-output", "text")
    result = _run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected


def test_data_snippet_prints_what_the_readme_says(tmp_path):
    code = _block_after("<!-- data-example:", "python")
    expected = re.search(r"prints `([^`]*)`", README.split("<!-- data-example:")[1]).group(1)
    result = _run_python(code, _copy_data(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_fast_inference_snippet_runs(tmp_path):
    code = next(b for b in _python_blocks() if 'backend="onnx-int8"' in b)
    check = (
        "\nmodel.fit(['wake me at 7', 'set an alarm', 'will it rain', 'weather today'], "
        "['alarm', 'alarm', 'weather', 'weather'])\n"
        "assert model.predict(['alarm at noon please', 'is it going to snow']) == ['alarm', 'weather']\n"
    )
    env_code = "import os; os.environ['TEXTMATCH_CACHE'] = %r\nfrom textmatch import MatchingNetwork\n" % str(tmp_path / "c")
    result = _run_python(env_code + code + check, tmp_path)
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "c" / "onnx").glob("*/encoder-int8.onnx"))


def test_fine_tuning_snippet_runs(tmp_path):
    code = next(b for b in _python_blocks() if "Trainer(" in b)
    assert 'head="ensemble", label_names=True' in code and 'TrainingArguments(output_dir="runs/intents")' in code
    # keep the test fast
    code = code.replace('output_dir="runs/intents")', 'output_dir="runs/intents", num_episodes=2, show_progress_bar=False)')
    result = _run_python(code, _copy_data(tmp_path))
    assert result.returncode == 0, result.stderr
    saved = tmp_path / "runs" / "intents" / "model"
    assert (saved / "model.safetensors").is_file() and (saved / "support_set.json").is_file()
    assert (tmp_path / "runs" / "intents" / "training_log.jsonl").is_file()  # output_dir: the run folder


def test_sklearn_snippet_runs(tmp_path):
    code = next(b for b in _python_blocks() if "cross_val_score" in b)
    setup = (
        "import csv\n"
        "rows = list(csv.DictReader(open('data/intents_support.csv', encoding='utf-8')))\n"
        "texts = [r['text'] for r in rows]; labels = [r['label'] for r in rows]\n"
    )
    check = "\nassert len(scores) == 5 and all(0.7 <= s <= 1.0 for s in scores), scores\n"
    result = _run_python(setup + code + check, _copy_data(tmp_path))
    assert result.returncode == 0, result.stderr


def test_cli_examples_run(tmp_path):
    lines = [ln for ln in _block_after("<!-- cli-examples", "bash").splitlines() if ln.startswith("textmatch ")]
    assert len(lines) == 4
    cwd = _copy_data(tmp_path)
    outputs = []
    for line in lines:
        cmd = re.sub(r"\s+#.*$", "", line)
        result = subprocess.run(cmd, shell=True, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{cmd}\n{result.stderr}"
        outputs.append(result.stdout)
    first = outputs[0].splitlines()
    assert first[0].split("\t")[0] == "set_alarm" and first[1].split("\t")[0] == "play_music"
    assert '"accuracy"' in outputs[1] and '"per_label"' in outputs[1]
    assert (cwd / "runs" / "intents" / "model.safetensors").is_file()
    assert outputs[3].startswith("accuracy ")


def test_checkpoint_examples_run(tmp_path):
    """--save-steps writes checkpoints into the run folder next to the model folder; --resume
    continues from the last one (here after the run lost its last checkpoint and its model)."""
    lines = [ln for ln in _block_after("<!-- checkpoint-examples", "bash").splitlines() if ln.startswith("textmatch ")]
    assert len(lines) == 2 and "--resume" in lines[1]
    cwd = _copy_data(tmp_path)
    fast = [re.sub(r"\s+#.*$", "", ln).replace("--save-steps 50", "--save-steps 2 --episodes 4 --no-progress") for ln in lines]
    result = subprocess.run(fast[0], shell=True, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{fast[0]}\n{result.stderr}"
    run_dir = cwd / "runs" / "intents.run"
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-2", "checkpoint-4"]
    assert not any(p.name.startswith("checkpoint-") for p in (cwd / "runs" / "intents").iterdir())
    assert not list((cwd / "runs" / "intents").rglob("*.bin")) and not list((cwd / "runs" / "intents").rglob("*.pt*"))
    whole = (cwd / "runs" / "intents" / "model.safetensors").read_bytes()
    log = (run_dir / "training_log.jsonl").read_text(encoding="utf-8")
    shutil.rmtree(run_dir / "checkpoint-4")
    shutil.rmtree(cwd / "runs" / "intents")
    result = subprocess.run(fast[1], shell=True, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{fast[1]}\n{result.stderr}"
    assert (run_dir / "training_log.jsonl").read_text(encoding="utf-8") == log
    resumed = (cwd / "runs" / "intents" / "model.safetensors").read_bytes()
    assert resumed == whole  # the same weights as the uninterrupted run


def test_retrieval_examples_run(tmp_path):
    lines = [ln for ln in _block_after("<!-- retrieval-examples", "bash").splitlines() if ln.startswith("textmatch ")]
    assert len(lines) == 3
    cwd = _copy_data(tmp_path)
    outputs = []
    for cmd in lines:
        result = subprocess.run(cmd, shell=True, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{cmd}\n{result.stderr}"
        outputs.append(result.stdout)
    table = outputs[1].splitlines()  # "# query", the column header, a rule, then one row per hit
    assert table[0].startswith("# how do I upload") and table[1].split()[:3] == ["rank", "id", "score"]
    assert table[3].split()[:2] == ["1", "sharing.md"]
    hits = json.loads(outputs[2])["results"][0]["hits"]
    assert hits[0]["id"] == "speed.md"


def _copy_data(tmp_path: Path) -> Path:
    """A working folder with the demo data at data/ (the snippets use relative paths)."""
    data = tmp_path / "data"
    if not data.exists():
        data.mkdir()
        for f in (REPO / "data").glob("*.csv"):
            (data / f.name).write_bytes(f.read_bytes())
        shutil.copytree(REPO / "data" / "docs", data / "docs")
    return tmp_path


def test_stage_examples_run(tmp_path):
    """`pretrain` on two labelled sources, `train --model` from it, and `train --unlabeled`:
    the README's commands on small files (the demo's intents split in two sources, its texts
    as the unlabelled pool), two episodes / steps each."""
    import csv

    lines = [ln for ln in _block_after("<!-- stage-examples", "bash").splitlines() if ln.startswith("textmatch ")]
    assert len(lines) == 3 and "--unlabeled" in lines[2]
    cwd = _copy_data(tmp_path)
    rows = list(csv.DictReader(open(cwd / "data" / "intents_support.csv", encoding="utf-8")))
    classes = sorted({r["label"] for r in rows})
    for name, part in (("banking.csv", classes[:6]), ("more_intents.csv", classes[6:])):
        with open(cwd / name, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "label"])
            writer.writerows((r["text"], r["label"]) for r in rows if r["label"] in part)
    (cwd / "utterances.txt").write_text("\n".join(r["text"] for r in rows) + "\n", encoding="utf-8")
    fast = [ln.replace("--episodes 400", "--episodes 2") + " --no-progress" for ln in lines]
    fast[1] += " --episodes 2"
    fast[2] += " --episodes 2 --unlabeled-max-steps 2"
    for cmd in fast:
        result = subprocess.run(cmd, shell=True, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{cmd}\n{result.stderr}"
    meta = json.loads((cwd / "runs" / "meta" / "config.json").read_text(encoding="utf-8"))
    assert meta["model_card_data"]["training_args"]["sources"] == ["banking", "travel"]
    assert not (cwd / "runs" / "meta" / "support_set.json").exists()
    for folder, objective in (("intents-meta", "meta-training"), ("intents-simcse", "contrastive")):
        card = (cwd / "runs" / folder / "README.md").read_text(encoding="utf-8")
        assert "### Earlier training" in card and objective in card, folder


def _command_after(marker: str) -> str:
    lines = [ln for ln in _block_after(marker, "bash").splitlines() if ln.startswith("textmatch ")]
    assert len(lines) == 1, lines
    return lines[0]


def _text_after_command(marker: str) -> str:
    """The ```text block that follows the command block after `marker`."""
    match = re.search(re.escape(marker) + r"[^\n]*\n```bash\n.*?```\s*\n```text\n(.*?)```", README, re.S)
    assert match, f"README has no ```text block after the command of {marker!r}"
    return match.group(1)


def test_explain_example_prints_what_the_readme_shows(tmp_path):
    cmd = _command_after("<!-- explain-example")
    result = subprocess.run(cmd, shell=True, cwd=_copy_data(tmp_path), env={**_env(), "COLUMNS": "100"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout == _text_after_command("<!-- explain-example")


def test_inspect_example_prints_the_lines_the_readme_shows(tmp_path):
    cmd = _command_after("<!-- inspect-example")
    result = subprocess.run(cmd, shell=True, cwd=_copy_data(tmp_path), env={**_env(), "COLUMNS": "100"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    shown = [ln for ln in _text_after_command("<!-- inspect-example").splitlines() if ln.strip() != "..."]
    assert len(shown) >= 5
    for line in shown:
        assert line in result.stdout.splitlines(), line
