"""Seconds per training episode of `textmatch train`, this checkout against a baseline checkout
(e.g. the commit before the trainer moved onto Hugging Face's Trainer), side by side.

Each tree trains all-MiniLM-L6-v2 on BANKING77 10-shot (`cpft/train_10.csv`, the default
recipe: 64-way 1 + 1 episodes) for a short and a long run; seconds per episode is the slope
(wall time of the long run - wall time of the short run) / (episode difference), so loading the
model, fitting the support set and saving cancel out. Runs alternate between the trees
(baseline, this, baseline, this, ...) on one thread each, so both see the same machine.

  git worktree add ../textmatch-baseline 5efc600
  python scripts/bench_trainer.py --baseline ../textmatch-baseline

The two sides may also be one tree with different `textmatch train` flags, e.g. frozen layers:

  python scripts/bench_trainer.py --baseline . --this-args "--frozen-layers 3" --name trainer_frozen_layers

Writes results/trainer.json and results/trainer.md. With --fewshot BASELINE_JSON THIS_JSON (the
results/fewshot.json of each tree after `python scripts/bench_fewshot.py --threads 1 --sections
generalised --methods mn --datasets banking77 --k-values 10` ran in it, the two side by side)
the accuracy of that cell is added: the new trainer must reproduce the baseline's. With
--render-only the timing runs are skipped and the existing results/trainer.json is updated.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import (  # noqa: E402
    REPO,
    code,
    command_line,
    header_lines,
    machine_info,
    markdown_table,
    utc_date,
    versions,
    write_results,
)

DATA = REPO.parent / "shared" / "data" / "banking77" / "cpft" / "train_10.csv"


def timed_train(tree: Path, episodes: int, output: Path, extra: list[str] | None = None) -> dict[str, Any]:
    """Wall seconds of one `textmatch train` run of `tree`'s code (its folder first on the path),
    with the `extra` flags."""
    env = dict(os.environ, PYTHONPATH=str(tree), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "textmatch.cli", "train", "--train", str(DATA), "--output", str(output),
           "--episodes", str(episodes), "--no-progress", "--json", *(extra or [])]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    return {"episodes": episodes, "wall_s": round(wall, 2), "training_loss": summary["training_loss"]}


def render(data: dict[str, Any]) -> str:
    lines = header_lines([
        ("Command", code(data["command"])),
        ("Date", data["date"]),
        ("Machine", f"{data['machine']['cores']} CPUs ({data['machine']['cpu_model']}), one thread per run"),
        ("Versions", ", ".join(f"{k} {v}" for k, v in data["versions"].items())),
        ("Baseline", f"{data['baseline']} ({data['baseline_commit']})"),
        *([("Flags", ", ".join(f"{name}: {code(flags)}" for name, flags in data["flags"].items() if flags))]
          if any(data.get("flags", {}).values()) else []),
    ], title=data.get("title", "Training speed: the trainer on Hugging Face's Trainer against the hand-written loop"))
    lines += [
        "Seconds per episode = (wall of the long run - wall of the short run) / episode difference, so loading,",
        "the final fit of the support set and saving cancel out; all-MiniLM-L6-v2 on BANKING77 10-shot",
        "(64-way 1 + 1 episodes), runs alternating between the trees.",
        "",
    ]
    rows = []
    for name in ("baseline", "this"):
        r = data["results"][name]
        rows.append([name, ", ".join(f"{x['wall_s']:.1f}" for x in r["short"]), ", ".join(f"{x['wall_s']:.1f}" for x in r["long"]),
                     f"{r['seconds_per_episode']:.3f}"])
    lines += markdown_table(["tree", f"wall s, {data['short']} episodes", f"wall s, {data['long']} episodes", "s / episode"], rows)
    ratio = data["results"]["this"]["seconds_per_episode"] / data["results"]["baseline"]["seconds_per_episode"]
    lines += ["", f"this / baseline: {ratio:.3f} (seconds per episode)", ""]
    if data.get("fewshot"):
        lines += ["## BANKING77 10-shot, the default recipe (bench_fewshot, generalised cell, seed 0)", ""]
        rows = []
        for name in ("baseline", "this"):
            f = data["fewshot"][name]
            rows.append([name, f"{f['valid_accuracy']:.2f}", f"{f['test_accuracy']:.2f}", f"{f['train_s']:.1f}",
                         f"{f['train_s'] / f['num_episodes']:.2f}", f"{f['date']}", code(f["command"])])
        lines += markdown_table(["tree", "valid acc", "test acc", "train s (150 episodes + fit)", "s / episode",
                                 "run started", "command (in the tree)"], rows)
        delta = data["fewshot"]["this"]["test_accuracy"] - data["fewshot"]["baseline"]["test_accuracy"]
        lines += ["", f"test accuracy, this - baseline: {delta:+.2f} points. " + data["fewshot"]["note"], ""]
        if data["fewshot"].get("added_by"):
            lines += [f"Added to this file by {code(data['fewshot']['added_by'])} on {data['fewshot']['added_on']}.", ""]
    return "\n".join(lines)


def fewshot_cell(path: Path) -> dict[str, Any]:
    """The generalised BANKING77 10-shot 'mn' record of a results/fewshot.json, with its run."""
    data = json.loads(path.read_text(encoding="utf-8"))
    records = [r for r in data["records"] if r["section"] == "generalised" and r["dataset"] == "banking77"
               and r["k"] == 10 and r["method"] == "mn" and r.get("variant") is None]
    if not records:
        raise SystemExit(f"{path} has no generalised banking77 10-shot mn record")
    record = records[-1]
    run = data["runs"][-1]
    return {"valid_accuracy": record["valid_accuracy"], "test_accuracy": record["test_accuracy"],
            "train_s": record["train_s"], "num_episodes": record.get("config", {}).get("num_episodes") or 150,
            "date": run["date"], "command": run["command"], "source": str(path)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", required=True, help="a checkout of the baseline commit (git worktree add ...)")
    p.add_argument("--short", type=int, default=5, help="episodes of the short run (default 5)")
    p.add_argument("--long", type=int, default=25, help="episodes of the long run (default 25)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each length per tree (default 2)")
    p.add_argument("--output-dir", default=str(REPO / "results"))
    p.add_argument("--baseline-args", default="", help="extra `textmatch train` flags of the baseline runs")
    p.add_argument("--this-args", default="", help="extra `textmatch train` flags of this tree's runs")
    p.add_argument("--name", default="trainer", help="results file stem (default: trainer)")
    p.add_argument("--title", default=None, help="the results file's title")
    p.add_argument("--fewshot", nargs=2, metavar=("BASELINE_JSON", "THIS_JSON"),
                   help="each tree's results/fewshot.json after the same bench_fewshot run (see above)")
    p.add_argument("--fewshot-note", default="", help="a sentence on how the two accuracy runs were made")
    p.add_argument("--render-only", action="store_true", help="update results/trainer.json/.md without timing")
    args = p.parse_args(argv)
    if args.render_only:
        path = Path(args.output_dir) / "trainer.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        if args.fewshot:
            data["fewshot"] = {"baseline": fewshot_cell(Path(args.fewshot[0])), "this": fewshot_cell(Path(args.fewshot[1])),
                               "note": args.fewshot_note,
                               "added_by": command_line(__file__, argv if argv is not None else sys.argv[1:]),
                               "added_on": utc_date()}
        write_results(args.output_dir, args.name, data, render)
        return 0
    if not DATA.is_file():
        raise SystemExit(f"{DATA} is missing: this benchmark reads ../shared/data")
    baseline = Path(args.baseline).resolve()
    trees = {"baseline": baseline, "this": REPO}
    flags = {"baseline": shlex.split(args.baseline_args), "this": shlex.split(args.this_args)}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {name: {"short": [], "long": []} for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for length, episodes in (("short", args.short), ("long", args.long)):
                for name, tree in trees.items():
                    run = timed_train(tree, episodes, Path(tmp) / f"{name}-{length}-{repeat}", flags[name])
                    results[name][length].append(run)
                    print(name, length, run, flush=True)
    out: dict[str, Any] = {}
    for name in trees:
        short = sum(x["wall_s"] for x in results[name]["short"]) / args.repeats
        long = sum(x["wall_s"] for x in results[name]["long"]) / args.repeats
        out[name] = {**results[name], "seconds_per_episode": round((long - short) / (args.long - args.short), 4)}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=baseline, capture_output=True, text=True).stdout.strip()
    data = {
        "command": command_line(__file__, argv if argv is not None else sys.argv[1:]),
        "date": utc_date(),
        "machine": machine_info(),
        "versions": versions(["torch", "transformers", "accelerate"]),
        "baseline": str(args.baseline),
        "baseline_commit": commit,
        "short": args.short,
        "long": args.long,
        "results": out,
        "flags": {name: " ".join(shlex.quote(f) for f in f_) for name, f_ in flags.items()},
        **({"title": args.title} if args.title else {}),
    }
    json_path, md_path = write_results(args.output_dir, args.name, data, render)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
