"""The recipe search of few-shot round 2: fine-tune on a fixed CPFT support set and read the
valid accuracy of every head, with and without class names, at several steps of one run.

Each evaluation encodes the support, the class names and the valid split with the current
weights, then scores eq. 1 (matching), a logistic regression (C = 10, scikit-learn) and
their mean (ensemble), each without and with the class names as extra support examples
("+n"). Settings are chosen here, on valid, never on test. Results merge into
results/recipe_search.json (and .md) with the command, machine and date of each run.

  python scripts/recipe_search.py --dataset banking77 --k 10 --tag default --eval-at 50,100,150
  python scripts/recipe_search.py --dataset clinc150 --k 5 --tag names-train --model-config '{"label_names": true}'
  python scripts/recipe_search.py --dataset banking77 --k 10 --tag "meta-training start: clinc150" --pretrain clinc150 --eval-at 0,100,200
  python scripts/recipe_search.py --dataset banking77 --k 10 --tag "pretrained" --model DIR --eval-at 0
  python scripts/recipe_search.py --render-only

With --pretrain SOURCE[,SOURCE...] the run is meta-training instead (as `textmatch pretrain`:
episodes from each source's cpft/train.csv, never the target's texts), and each evaluation reads
the heads of the meta-trained start on the target's support and valid split, before any
fine-tuning: how the start grows with the number of sources and episodes. Step 0 is the
untrained model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import SHARED_DATA, command_line, load_average_text, machine_info, markdown_table, update_json, utc_date, write_text_atomic
from bench_fewshot import fit_logreg, matching_probs, read_split

ROOT = Path(__file__).resolve().parents[1]
HEADS = ("match", "match+n", "lr", "lr+n", "ens", "ens+n")


def accuracy(classes: list[str], probs: np.ndarray, gold: list[str]) -> float:
    return round(100 * float(np.mean([classes[i] == g for i, g in zip(probs.argmax(1), gold)])), 2)


def head_accuracies(model: Any, support: Any, valid: Any) -> dict[str, float]:
    """Valid accuracy of each head, with and without the class names, on the model's current weights."""
    import torch

    from textmatch.core.label_names import label_examples

    classes = sorted(set(support.labels))
    names, name_ids = label_examples(classes)
    with torch.inference_mode():
        s, v, n = (model.encode(t, batch_size=128) for t in (support.texts, valid.texts, names))
    tau = float(model.temperature)
    s_n, y_n = np.concatenate([s, n]), support.labels + [classes[j] for j in name_ids]
    probs = {
        "match": matching_probs(v, s, support.labels, "none", tau)[1],
        "match+n": matching_probs(v, s_n, y_n, "none", tau)[1],
        "lr": fit_logreg(s, support.labels).predict_proba(v),
        "lr+n": fit_logreg(s_n, y_n).predict_proba(v),
    }
    probs["ens"] = (probs["match"] + probs["lr"]) / 2
    probs["ens+n"] = (probs["match+n"] + probs["lr+n"]) / 2
    return {h: accuracy(classes, probs[h], valid.labels) for h in HEADS}


def pretrain_sources(value: str, target: str) -> list[str]:
    """The --pretrain list; the target's own texts (banking77_oos is BANKING77 text) are refused."""
    sources = [s.strip() for s in value.split(",") if s.strip()]
    own = {"banking77", "banking77_oos"} if target == "banking77" else {target}
    if own & set(sources):
        raise SystemExit(f"--pretrain {value}: {', '.join(sorted(own & set(sources)))} holds the target {target}'s texts")
    return sources


def run(args: argparse.Namespace) -> None:
    import torch
    from transformers import TrainerCallback

    from textmatch import ContrastiveArguments, ContrastiveTrainer, MatchingNetwork, Trainer, TrainingArguments

    torch.set_num_threads(args.threads)
    cpft = Path(args.data_dir) / args.dataset / "cpft"
    support, valid = read_split(cpft / f"train_{args.k}.csv"), read_split(cpft / "valid.csv")
    model = MatchingNetwork.from_pretrained(args.model, **json.loads(args.model_config))
    command = command_line(__file__, sys.argv[1:])
    base = {"tag": args.tag, "dataset": args.dataset, "k": args.k, "command": command, "date": utc_date(),
            "machine": {**machine_info(), "torch_threads": torch.get_num_threads()}}
    clock = {"start": time.perf_counter(), "excluded": 0.0}

    def evaluate(step: int) -> None:
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        heads = head_accuracies(model, support, valid)
        model.train(was_training)
        clock["excluded"] += time.perf_counter() - t0
        train_s = round(time.perf_counter() - clock["start"] - clock["excluded"], 1)
        record = {**base, "step": step, "train_s": train_s, "load": load_average_text(), **heads}
        print(json.dumps({k: v for k, v in record.items() if k not in ("command", "machine")}), flush=True)
        update_json(args.output, lambda data: data["records"].append(record), empty=lambda: {"records": []}, indent=1)

    if args.unlabeled_steps:  # the contrastive stage on the train split's texts, without labels
        texts = read_split(cpft / "train.csv").texts
        ContrastiveTrainer(model, ContrastiveArguments(max_steps=args.unlabeled_steps, seed=args.seed, show_progress_bar=False),
                           train_dataset=texts).train()
        evaluate(0)
    steps = [int(s) for s in args.eval_at.split(",")]

    class Evaluate(TrainerCallback):
        def on_step_end(self, targs: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step in steps:
                evaluate(state.global_step)

    if 0 in steps:
        evaluate(0)
    if max(steps) == 0:  # only the model as given (e.g. one `textmatch pretrain` wrote)
        return
    overrides = {"num_episodes": max(steps), "seed": args.seed, "show_progress_bar": False, **json.loads(args.training)}
    if args.pretrain:  # meta-training on other datasets' train splits; the target's texts are in none of them
        sources = pretrain_sources(args.pretrain, args.dataset)
        splits = {name: read_split(Path(args.data_dir) / name / "cpft" / "train.csv") for name in sources}
        train_dataset: Any = {name: (split.texts, split.labels) for name, split in splits.items()}
    else:
        train_dataset = (support.texts, support.labels)
    Trainer(model, TrainingArguments(**overrides), train_dataset=train_dataset, callbacks=[Evaluate()]).train()


def render(path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    runs = list(dict.fromkeys((r["dataset"], r["k"], r["tag"]) for r in data["records"]))
    ordered = sorted(data["records"], key=lambda r: (r["dataset"], r["k"], runs.index((r["dataset"], r["k"], r["tag"])), r["step"]))
    rows = [[r["dataset"], str(r["k"]), r["tag"], str(r["step"]), f"{r['train_s']:.1f}", *[f"{r[h]:.2f}" for h in HEADS]]
            for r in ordered]
    lines = ["# Recipe search, few-shot round 2 (valid accuracy %)", "",
             "Valid accuracy of each head on one fine-tuning run, read at several steps: match = eq. 1, lr = logistic "
             "regression (C = 10), ens = their mean; +n = the class names as extra support examples. train s excludes the "
             "evaluations; the runs shared the machine's 2 CPUs with 2-4 other benchmark processes (load in the JSON). A run "
             "trains for its largest step; a missing step is a run stopped early.", ""]
    lines += markdown_table(["dataset", "K", "run", "step", "train s", *HEADS], rows) + [""]
    commands = list(dict.fromkeys(f"{r['date'][:10]}: `{r['command']}`" for r in data["records"]))
    lines += ["Runs:", ""] + [f"- {c}" for c in commands] + [""]
    notes = list(dict.fromkeys(r["note"] for r in data["records"] if r.get("note")))
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    write_text_atomic(path.with_suffix(".md"), "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=("banking77", "clinc150"), default="banking77")
    p.add_argument("--k", type=int, choices=(5, 10), default=10)
    p.add_argument("--tag", default="default", help="the run's name in the table")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--model-config", default="{}", help='MatchingNetworkConfig fields as JSON, e.g. \'{"label_names": true}\'')
    p.add_argument("--training", default="{}", help="TrainingArguments fields as JSON")
    p.add_argument("--eval-at", default="50,100,150", help="steps to evaluate at (the run trains for the largest)")
    p.add_argument("--pretrain", default="", help="meta-train on these datasets (comma-separated) instead, evaluating the start")
    p.add_argument("--unlabeled-steps", type=int, default=0, help="a contrastive stage of N steps on the train split's texts first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=str(SHARED_DATA))
    p.add_argument("--output", type=Path, default=ROOT / "results" / "recipe_search.json")
    p.add_argument("--render-only", action="store_true")
    args = p.parse_args(argv)
    if args.pretrain:
        pretrain_sources(args.pretrain, args.dataset)  # refuse a leaking pool before any work
    if not args.render_only:
        run(args)
    render(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
