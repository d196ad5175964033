"""Few-shot intent benchmark: textmatch against frozen baselines and SetFit (DESIGN.md section 5).

Sections (run any subset; results merge into <output-dir>/fewshot.json, keyed by section,
dataset, K, method, seed and fold, so sections can run in separate processes):

  generalised   the fixed CPFT splits (K = 5, 10 examples of every class), accuracy on the
                full test set (and on valid, where hyperparameters are chosen)
  drawn         K examples per class drawn from the full train split with seeds 0-4
                (K = 1, 2, 5, 10 on BANKING77, 5 and 10 on CLINC150): mean +- sd, and the
                accuracy-against-K plot
  episodic      5-way 1-shot and 5-shot on the ProtAugment folds of BANKING77 (600 episodes
                of the test classes, 5 queries per class, 95% CI)
  oos           CLINC150 out-of-scope: threshold chosen on valid + oos_valid, in-scope
                accuracy and OOS precision / recall / F1 on test + oos_test; computed with
                the models of the generalised CLINC150 10-shot cell (run with generalised)
  intent-matcher
                meta-train the intent matchers with the documented `textmatch train` command:
                on CLINC150 (for BANKING77) and on BANKING77 (for CLINC150)

Methods: cosine (frozen MiniLM, eq. 1 over all supports), prototype (frozen, class means),
logreg (logistic regression on frozen embeddings), setfit (SetFit 1.2, 20 iterations),
mn (MatchingNetwork fine-tuned on the support set with `textmatch train` defaults),
mn-fce (the same with Full Context Embeddings), mn-prototype (prototype aggregation),
intent-matcher (meta-trained on the other dataset, then fine-tuned on the support set),
intent-matcher-0 (meta-trained, no fine-tuning: the support set is only indexed).

  python scripts/bench_fewshot.py --sections generalised --datasets banking77 --methods cosine,logreg,mn
  python scripts/bench_fewshot.py --quick --output-dir runs/fewshot-quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common, report_fewshot

import torch
from bench_common import SHARED_DATA, atomic_path, command_line, cpu_model, update_json, utc_date

from textmatch import BiLSTMEncoder, ContrastiveArguments, ContrastiveTrainer, MatchingNetwork, Trainer, TrainingArguments
from textmatch.classification.training import RECIPE_MODEL_SETTINGS
from textmatch.core.heads import HEADS
from textmatch.core import matching
from textmatch.data.loading import load_text_dataset
from textmatch.data.sampling import sample_dataset
from textmatch.classification.metrics import classification_report
from textmatch.classification.fewshot import choose_threshold, evaluate_episodes, oos_report
from textmatch.hub.resolution import DEFAULT_MODEL, resolve_model

DATASETS = ("banking77", "clinc150")
OTHER = {"banking77": "clinc150", "clinc150": "banking77"}
FROZEN = ("cosine", "prototype", "logreg")
# the round-2 recipe (`textmatch train` defaults): from MiniLM, from a model meta-trained on the
# other intent sets (`textmatch pretrain`), after a contrastive stage on the train split's texts
# without labels (`--unlabeled`), and with a BiLSTM encoder (from scratch / MiniLM's embeddings)
RECIPE = ("textmatch", "textmatch-meta", "textmatch-unlabeled", "bilstm", "bilstm-init")
TRAINED = ("mn", "mn-fce", "mn-prototype", "intent-matcher", "intent-matcher-0") + RECIPE
ALL_METHODS = FROZEN + ("setfit",) + TRAINED
SECTIONS = ("intent-matcher", "pretrain", "generalised", "drawn", "episodic", "oos", "cli")
# leave-one-dataset-out pools for `textmatch pretrain`: never the target's texts (banking77_oos
# is BANKING77 text, so it is in no pool: for CLINC150 it would only repeat banking77)
PRETRAIN_POOLS = {"banking77": ("clinc150", "snips", "atis"), "clinc150": ("banking77", "snips", "atis")}
BILSTM_LR = 1e-3  # the BiLSTM trains from (near) scratch: 3e-5, the transformers' rate, barely moves it
TAU = 0.05  # the library's default temperature, used by every matching method
LOGREG_C = 10.0  # chosen on valid, see logreg_probs


# -- data -------------------------------------------------------------------------------------


@dataclass
class Split:
    texts: list[str]
    labels: list[str]


def read_split(path: Path, quick_classes: set[str] | None = None, per_class: int | None = None) -> Split:
    """A text,label CSV or a ProtAugment JSONL ({"sentence","label"}) as lists, read with datasets."""
    mapping = {"sentence": "text"} if path.suffix == ".jsonl" else None
    ds = load_text_dataset(str(path), column_mapping=mapping)
    texts, labels = [str(t) for t in ds["text"]], [str(y) for y in ds["label"]]
    if quick_classes is not None:
        keep = [i for i, y in enumerate(labels) if y in quick_classes or y == "oos"]
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    if per_class is not None:  # --quick: the first rows of each class
        seen: dict[str, int] = {}
        keep = []
        for i, y in enumerate(labels):
            seen[y] = seen.get(y, 0) + 1
            if seen[y] <= per_class:
                keep.append(i)
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    return Split(texts, labels)


def draw_k(train: Split, k: int, seed: int) -> Split:
    """K examples of every class from the full train split (textmatch.data.sampling.sample_dataset)."""
    import datasets

    ds = sample_dataset(datasets.Dataset.from_dict({"text": train.texts, "label": train.labels}), num_samples=k, seed=seed)
    return Split(list(ds["text"]), list(ds["label"]))


# -- frozen embeddings (one pass over each dataset, cached on disk) ----------------------------


class FrozenEmbeddings:
    """Untrained all-MiniLM-L6-v2 embeddings of any text, computed once and kept in an .npz."""

    def __init__(self, model: MatchingNetwork, cache_file: Path) -> None:
        self.model = model
        self.cache_file = cache_file
        self.table: dict[str, np.ndarray] = {}
        if cache_file.is_file():
            data = np.load(cache_file, allow_pickle=False)
            self.table = dict(zip(data["texts"].tolist(), data["embeddings"]))

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.table))
        if missing:
            with torch.inference_mode():
                emb = self.model.encode(missing, batch_size=128, convert_to_numpy=True)
            self.table.update(zip(missing, emb))
            self.save()
        return np.stack([self.table[t] for t in texts])  # (n, dim)

    def save(self) -> None:
        texts = list(self.table)
        with atomic_path(self.cache_file) as tmp:
            np.savez(tmp, texts=np.asarray(texts), embeddings=np.stack([self.table[t] for t in texts]))


# -- classifiers: each returns class names and an (n, classes) probability matrix -------------


def matching_probs(query: np.ndarray, support: np.ndarray, labels: list[str], aggregation: str, temperature: float = TAU) -> tuple[list[str], np.ndarray]:
    """P(y | x, S) of eq. 1 (or the prototype variant) on precomputed embeddings."""
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[c] for c in labels])
    with torch.inference_mode():
        lp = matching.matching_log_probs(
            torch.from_numpy(query), torch.from_numpy(support), y, len(classes), temperature=temperature, aggregation=aggregation
        )  # (n, classes)
    return classes, lp.exp().numpy()


def fit_logreg(train_x: np.ndarray, train_y: list[str]) -> Any:
    """scikit-learn's LogisticRegression (SetFit's default head) with C = 10, the best of
    1 / 10 / 100 / 1000 on the valid splits of both datasets at 5 and 10 shots (the
    embeddings are unit vectors, so the default C = 1 over-regularises: 5-10 points lower)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=LOGREG_C, max_iter=3000).fit(train_x, train_y)


def logreg_probs(train_x: np.ndarray, train_y: list[str], xs: list[np.ndarray]) -> tuple[list[str], list[np.ndarray]]:
    clf = fit_logreg(train_x, train_y)
    return [str(c) for c in clf.classes_], [clf.predict_proba(x) for x in xs]


def scores_from_probs(classes: list[str], probs: np.ndarray, gold: list[str]) -> dict[str, float]:
    predicted = [classes[i] for i in probs.argmax(1)]
    report = classification_report(gold, predicted)
    return {"accuracy": round(100 * report["accuracy"], 2), "macro_f1": round(100 * report["macro_f1"], 2)}


# -- one method on one support set -------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    frozen: FrozenEmbeddings
    cache_dir: Path
    quick: bool


def training_args(ctx: Context, seed: int, **overrides: Any) -> TrainingArguments:
    kwargs: dict[str, Any] = {"seed": seed, "show_progress_bar": False}
    if ctx.args.episodes is not None:
        kwargs["num_episodes"] = ctx.args.episodes
    kwargs.update(ctx.args.train_overrides)
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def intent_matcher_dir(ctx: Context, source: str) -> Path:
    return ctx.cache_dir / f"intent-matcher-{source}"


def run_method(
    ctx: Context, method: str, dataset: str, support: Split, evals: dict[str, list[str]], seed: int
) -> tuple[list[str], dict[str, np.ndarray], dict[str, Any]]:
    """Train (if the method trains) on `support`, then class probabilities for each eval text list.

    Returns (classes, {eval name: (n, classes) probabilities}, info with train_s / predict_s
    (seconds, predicting the "test" list) and the config)."""
    info: dict[str, Any] = {"train_s": 0.0}
    if method in FROZEN:
        s_emb = ctx.frozen(support.texts)
        q_embs = {name: ctx.frozen(texts) for name, texts in evals.items()}
        out: dict[str, np.ndarray] = {}
        if method == "logreg":
            t0 = time.perf_counter()
            clf = fit_logreg(s_emb, support.labels)
            info["train_s"] = round(time.perf_counter() - t0, 2)
            classes = [str(c) for c in clf.classes_]
            for name, q in q_embs.items():
                t0 = time.perf_counter()
                out[name] = clf.predict_proba(q)
                if name == "test":
                    info["predict_s"] = round(time.perf_counter() - t0, 3)
            info["config"] = {"C": LOGREG_C, "max_iter": 3000, "embeddings": DEFAULT_MODEL}
        else:
            aggregation = "prototype" if method == "prototype" else "none"
            for name, q in q_embs.items():
                t0 = time.perf_counter()
                classes, out[name] = matching_probs(q, s_emb, support.labels, aggregation)
                if name == "test":
                    info["predict_s"] = round(time.perf_counter() - t0, 3)
            info["config"] = {"temperature": TAU, "aggregation": aggregation}
        info["note"] = "frozen embeddings are computed once per text and cached; times exclude encoding"
        return classes, out, info
    if method == "setfit":
        return run_setfit(ctx, support, evals, seed)
    if method in RECIPE:
        return run_recipe(ctx, method, dataset, support, evals, seed)
    # trained Matching Networks
    base = DEFAULT_MODEL
    config: dict[str, Any] = {}
    if method == "mn-fce":
        config["fce"] = True
    if method == "mn-prototype":
        config["aggregation"] = "prototype"
    if method.startswith("intent-matcher"):
        folder = intent_matcher_dir(ctx, OTHER[dataset])
        if not (folder / "config.json").is_file():
            raise RuntimeError(f"{folder} is missing: run the intent-matcher section first")
        base = str(folder)
    model = MatchingNetwork.from_pretrained(base, **config)
    t0 = time.perf_counter()
    if method == "intent-matcher-0":
        model.fit(support.texts, support.labels)
    else:
        targs = training_args(ctx, seed)
        Trainer(model, targs, train_dataset=(support.texts, support.labels)).train()
        info["config"] = {"base": base, **config, **{k: v for k, v in targs.to_dict().items() if k in (
            "num_episodes", "learning_rate", "label_smoothing_factor", "seed", "n_way", "k_shot", "q_query")}}
    info["train_s"] = round(time.perf_counter() - t0, 2)
    out = {}
    classes = [str(c) for c in model.classes_]
    if model.config.fce:
        for name, texts in evals.items():
            t0 = time.perf_counter()
            out[name] = model.predict_proba(texts, batch_size=128)
            if name == "test":
                info["predict_s"] = round(time.perf_counter() - t0, 2)
    else:
        # without FCE, predict_proba is eq. 1 on f'(x) and the stored g'(x_i): the same
        # embeddings also feed the other heads compared in the ablation table
        aggregation = model.config.aggregation
        # g'(x_i) as stored by fit (Trainer.train ends with fit on the same support, in order)
        assert model.support_texts == support.texts
        s_emb = model.support_base_embeddings_.cpu().numpy()  # (n_support, dim)
        embs = {}
        for name, texts in evals.items():
            t0 = time.perf_counter()
            embs[name] = model.encode(texts, batch_size=128)
            c, out[name] = matching_probs(embs[name], s_emb, support.labels, aggregation, float(model.temperature))
            assert c == classes
            if name == "test":
                info["predict_s"] = round(time.perf_counter() - t0, 2)
        info["heads"] = other_heads(embs, s_emb, support.labels, out, classes)
    info.setdefault("config", {"base": base, **config})
    return classes, out, info


def pretrained_dir(ctx: Context, target: str) -> Path:
    return ctx.cache_dir / f"pretrain-for-{target}"


def recipe_model(ctx: Context, method: str, dataset: str) -> MatchingNetwork:
    """The starting model of a recipe method, with the recipe's model settings."""
    if method == "textmatch-meta":
        folder = pretrained_dir(ctx, dataset)
        if not (folder / "config.json").is_file():
            raise RuntimeError(f"{folder} is missing: run the pretrain section first")
        return MatchingNetwork.from_pretrained(str(folder), **RECIPE_MODEL_SETTINGS)
    if method.startswith("bilstm"):
        from transformers import AutoModel

        path = str(resolve_model(DEFAULT_MODEL))
        init = AutoModel.from_pretrained(path).get_input_embeddings().weight.detach() if method == "bilstm-init" else None
        torch.manual_seed(0)
        encoder = BiLSTMEncoder.from_tokenizer(path, embedding_dim=128, hidden_size=192, dropout=0.1, max_length=64, init_embeddings=init)
        model = MatchingNetwork(encoder)
        for field, value in RECIPE_MODEL_SETTINGS.items():
            setattr(model.config, field, value)
        return model
    return MatchingNetwork.from_pretrained(DEFAULT_MODEL, **RECIPE_MODEL_SETTINGS)


def unlabeled_texts(ctx: Context, dataset: str) -> list[str]:
    """The target's train split without labels (as CPFT used it)."""
    return read_split(data_paths(ctx.args, dataset) / "cpft" / "train.csv", quick_classes(ctx.args, dataset), 12 if ctx.quick else None).texts


def run_recipe(ctx: Context, method: str, dataset: str, support: Split, evals: dict[str, list[str]], seed: int):
    """`textmatch train` with its defaults (RECIPE_MODEL_SETTINGS and TrainingArguments'), from
    the method's starting point; class probabilities from the saved head; and, as ablation, the
    other heads with and without class names on the same fine-tuned encoder."""
    model = recipe_model(ctx, method, dataset)
    info: dict[str, Any] = {}
    t0 = time.perf_counter()
    if method == "textmatch-unlabeled":
        texts = unlabeled_texts(ctx, dataset)
        cargs = ContrastiveArguments(seed=seed, show_progress_bar=False, **({"max_steps": 2} if ctx.quick else {}))
        ContrastiveTrainer(model, cargs, train_dataset=texts).train()
        info["contrastive_s"] = round(time.perf_counter() - t0, 2)
        info["unlabeled_texts"] = len(set(texts))
    targs = training_args(ctx, seed, **({"learning_rate": BILSTM_LR} if method.startswith("bilstm") else {}))
    result = Trainer(model, targs, train_dataset=(support.texts, support.labels)).train()
    info["train_s"] = round(time.perf_counter() - t0, 2)
    info["config"] = {**{k: v for k, v in model.config.to_dict().items() if k in ("head", "label_names", "temperature")},
                      "encoder": model.query_encoder.encoder_type, "episodes": result.global_step,
                      **{k: v for k, v in targs.to_dict().items() if k in ("learning_rate", "seed", "n_way", "k_shot", "q_query")}}
    classes = [str(c) for c in model.classes_]
    queries = {}
    for name, texts in evals.items():
        t1 = time.perf_counter()
        queries[name] = model.encode(texts, batch_size=128, normalize_embeddings=False, convert_to_tensor=True)
        if name == "test":
            info["predict_s"] = round(time.perf_counter() - t1, 2)
    out = {name: model.score_embeddings(q)[0].numpy() for name, q in queries.items()}
    own = (model.config.head, model.config.label_names)
    heads: dict[str, dict[str, np.ndarray]] = {}
    for head in HEADS:
        for names in (True, False):
            if (head, names) == own:
                continue
            model.config.head, model.config.label_names = head, names
            heads[f"head={head}, class names {'on' if names else 'off'}"] = {n: model.score_embeddings(q)[0].numpy() for n, q in queries.items()}
    model.config.head, model.config.label_names = own
    info["heads"] = heads
    return classes, out, info


def other_heads(embs: dict[str, np.ndarray], s_emb: np.ndarray, labels: list[str], matching_out: dict[str, np.ndarray], classes: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Class probabilities of other heads on the same fine-tuned embeddings (ablation): eq. 1
    with another temperature at prediction, prototypes, logistic regression, and the mean of
    matching and logistic regression."""
    names = list(embs)
    _, proto = zip(*(matching_probs(embs[n], s_emb, labels, "prototype") for n in names))
    lr_classes, lr = logreg_probs(s_emb, labels, [embs[n] for n in names])
    assert lr_classes == classes
    tau = {t: dict(zip(names, (matching_probs(embs[n], s_emb, labels, "none", t)[1] for n in names))) for t in (0.02, 0.1)}
    return {
        "head=matching, tau 0.02 at prediction": tau[0.02],
        "head=matching, tau 0.1 at prediction": tau[0.1],
        "head=prototype": dict(zip(names, proto)),
        "head=logreg": dict(zip(names, lr)),
        "head=matching+logreg": {n: (matching_out[n] + p) / 2 for n, p in zip(names, lr)},
    }


def run_setfit(ctx: Context, support: Split, evals: dict[str, list[str]], seed: int):
    """SetFit 1.2 with the same backbone: contrastive pairs, 20 iterations, batch 16, one epoch,
    logistic-regression head (its defaults, as in its paper)."""
    try:
        import setfit
    except ImportError as exc:
        raise SkipMethod(f"setfit is not installed ({exc}); pip install setfit==1.2.0") from None
    import datasets

    iterations = 1 if ctx.quick else 20
    model = setfit.SetFitModel.from_pretrained(str(resolve_model(DEFAULT_MODEL)))
    args = setfit.TrainingArguments(
        batch_size=16, num_iterations=iterations, num_epochs=1, seed=seed, show_progress_bar=False, report_to="none",
        output_dir=str(ctx.cache_dir / "setfit-checkpoints"),
    )
    train_ds = datasets.Dataset.from_dict({"text": support.texts, "label": support.labels})
    trainer = setfit.Trainer(model=model, args=args, train_dataset=train_ds, metric=lambda p, r: {"accuracy": float(np.mean(np.asarray(p) == np.asarray(r)))})
    t0 = time.perf_counter()
    trainer.train()
    info: dict[str, Any] = {"train_s": round(time.perf_counter() - t0, 2)}
    info["config"] = {"version": setfit.__version__, "num_iterations": iterations, "batch_size": 16, "num_epochs": 1}
    out = {}
    classes = [str(c) for c in model.model_head.classes_]
    for name, texts in evals.items():
        t0 = time.perf_counter()
        out[name] = np.asarray(model.predict_proba(texts, batch_size=128, as_numpy=True))
        if name == "test":
            info["predict_s"] = round(time.perf_counter() - t0, 2)
    return classes, out, info


class SkipMethod(Exception):
    pass


# -- results file ---------------------------------------------------------------------------


KEY_FIELDS = ("section", "dataset", "k", "method", "seed", "fold", "variant")


class Results:
    """fewshot.json, shared by concurrent runs: every change re-reads the file under a lock,
    replaces the records with the same key and writes a temp file that is renamed over it."""

    def __init__(self, output_dir: Path, command: str) -> None:
        self.path = output_dir / "fewshot.json"
        self.command = command
        self.run = {"command": command, "date": utc_date(), "machine": machine()}
        self.update(lambda data: data["runs"].append(self.run))

    def update(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Apply `change` to the file's data under its lock (bench_common.update_json)."""
        update_json(self.path, change, empty=lambda: {"runs": [], "records": []}, indent=1)

    def add(self, record: dict[str, Any]) -> None:
        record = {**{k: None for k in KEY_FIELDS}, **record, "command": self.command}
        key = tuple(record[k] for k in KEY_FIELDS)

        def change(data: dict[str, Any]) -> None:
            data["records"] = [r for r in data["records"] if tuple(r.get(k) for k in KEY_FIELDS) != key]
            data["records"].append(record)

        self.update(change)
        shown = {k: v for k, v in record.items() if k not in ("command", "config", "episode_accuracies")}
        print(json.dumps(shown), flush=True)

    def finish(self, wall_s: float) -> None:
        def change(data: dict[str, Any]) -> None:
            for run in data["runs"]:
                if run["command"] == self.run["command"] and run["date"] == self.run["date"]:
                    run["wall_s"] = round(wall_s, 1)

        self.update(change)


def machine() -> dict[str, Any]:
    """The machine as fewshot.json's runs record it (report_fewshot.machine_line shows it)."""
    return {"cpus": os.cpu_count(), "cpu": cpu_model() or platform.processor(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


# -- sections ---------------------------------------------------------------------------------


def data_paths(args: argparse.Namespace, dataset: str) -> Path:
    return Path(args.data_dir) / dataset


def quick_classes(args: argparse.Namespace, dataset: str) -> set[str] | None:
    if not args.quick:
        return None
    labels = read_split(data_paths(args, dataset) / "cpft" / "train_5.csv").labels
    return set(sorted(set(labels))[:8])


def eval_sets(args: argparse.Namespace, dataset: str) -> dict[str, Split]:
    qc = quick_classes(args, dataset)
    per = 6 if args.quick else None
    cpft = data_paths(args, dataset) / "cpft"
    return {"valid": read_split(cpft / "valid.csv", qc, per), "test": read_split(cpft / "test.csv", qc, per)}


def run_cell(ctx: Context, results: Results, section: str, dataset: str, k: int, seed: int, support: Split, evals: dict[str, Split], methods: list[str]) -> None:
    for method in methods:
        if method.startswith("mn") or method == "intent-matcher":
            if k < 2:
                results.add({"section": section, "dataset": dataset, "k": k, "method": method, "seed": seed,
                             "skipped": "fine-tuning needs 2 examples per class (one support, one query)"})
                continue
        try:
            classes, probs, info = run_method(ctx, method, dataset, support, {n: s.texts for n, s in evals.items()}, seed)
        except SkipMethod as exc:
            results.add({"section": section, "dataset": dataset, "k": k, "method": method, "seed": seed, "skipped": str(exc)})
            continue
        variant = ctx.args.variant
        record = {"section": "ablation" if variant else section, "dataset": dataset, "k": k, "method": method, "seed": seed}
        if variant:
            record.update(variant=variant, note=f"{section} cell, training overrides {json.dumps(ctx.args.train_overrides)}")
        scored = {n: sp for n, sp in evals.items() if not n.startswith("oos_")}
        for name, split in scored.items():
            for metric, value in scores_from_probs(classes, probs[name], split.labels).items():
                record[f"{name}_{metric}"] = value
        heads = info.pop("heads", {})
        results.add({**record, **info})
        for head, head_probs in heads.items():
            ablation = {"section": "ablation", "dataset": dataset, "k": k, "method": method, "seed": seed,
                        "variant": f"{variant}, {head}" if variant else head,
                        "note": f"same fine-tuned encoder as the {record['section']} row", "train_s": info.get("train_s")}
            for name, split in scored.items():
                ablation[f"{name}_accuracy"] = scores_from_probs(classes, head_probs[name], split.labels)["accuracy"]
            results.add(ablation)
        if "oos_valid" in evals and not variant:
            oos_set = "banking77_oos" if dataset == "banking77_oos" else "clinc150"
            results.add(oos_record(oos_set, k, seed, method, classes, probs, evals["test"].labels, len(evals["oos_test"].texts), info))


def section_generalised(ctx: Context, results: Results, datasets: list[str], methods: list[str]) -> None:
    for dataset in datasets:
        evals = eval_sets(ctx.args, dataset)
        qc = quick_classes(ctx.args, dataset)
        for k in [k for k in (ctx.args.k_values or (5, 10)) if k in (5, 10)] or (5, 10):
            support = read_split(data_paths(ctx.args, dataset) / "cpft" / f"train_{k}.csv", qc)
            cell_evals = dict(evals)
            if dataset == "clinc150" and k == 10 and "oos" in ctx.args.sections:
                cell_evals.update(oos_evals(ctx.args))  # the OOS section reuses this cell's models
            for seed in ctx.args.train_seeds:
                run_cell(ctx, results, "generalised", dataset, k, seed, support, cell_evals, methods)


def section_drawn(ctx: Context, results: Results, datasets: list[str], methods: list[str]) -> None:
    for dataset in datasets:
        evals = eval_sets(ctx.args, dataset)
        evals = {"test": evals["test"]}
        qc = quick_classes(ctx.args, dataset)
        train = read_split(data_paths(ctx.args, dataset) / "cpft" / "train.csv", qc)
        ks = ctx.args.k_values or ((1, 2, 5, 10) if dataset == "banking77" else (5, 10))
        if ctx.args.quick:
            ks = (2,)
        if ctx.args.quick:  # the trained methods already ran in the generalised section
            methods = [m for m in methods if m in FROZEN or m == "intent-matcher-0"]
        for k in ks:
            for seed in ctx.args.seeds:
                run_cell(ctx, results, "drawn", dataset, k, seed, draw_k(train, k, seed), evals, methods)


def section_episodic(ctx: Context, results: Results, methods: list[str]) -> None:
    """BANKING77 ProtAugment folds: meta-train on the fold's train classes (early stopping on
    its valid classes), test on 600 episodes of its test classes."""
    root = data_paths(ctx.args, "banking77") / "protaugment" / "few_shot"
    n_episodes = 20 if ctx.args.quick else 600
    for fold in ctx.args.folds:
        folder = root / fold

        def fold_split(name: str) -> Split:
            if not ctx.args.quick:
                return read_split(folder / f"{name}.jsonl")
            classes = set(sorted(Path(folder / f"labels.{name}.txt").read_text(encoding="utf-8").split("\n"))[1:7])
            return read_split(folder / f"{name}.jsonl", classes, 12)

        test = fold_split("test")
        for method in methods:
            t0 = time.perf_counter()
            train_s = 0.0
            config: dict[str, Any] = {}
            if method in ("cosine", "prototype"):
                model = MatchingNetwork.from_pretrained(DEFAULT_MODEL, aggregation="prototype" if method == "prototype" else "none")
            elif method in ("mn", "mn-prototype", "mn-fce"):
                extra = {"aggregation": "prototype"} if method == "mn-prototype" else ({"fce": True} if method == "mn-fce" else {})
                model = MatchingNetwork.from_pretrained(DEFAULT_MODEL, **extra)
                train, valid = fold_split("train"), fold_split("valid")
                targs = training_args(ctx, 0, num_episodes=ctx.args.meta_episodes, eval_steps=max(1, ctx.args.meta_episodes // 4),
                                      eval_episodes=3 if ctx.args.quick else 20, fit_support_at_end=False)
                t0 = time.perf_counter()
                Trainer(model, targs, train_dataset=(train.texts, train.labels), eval_dataset=(valid.texts, valid.labels)).train()
                train_s = time.perf_counter() - t0
                config = {**extra, "meta_train": f"fold {fold} train classes", **{k: v for k, v in targs.to_dict().items() if k in (
                    "num_episodes", "learning_rate", "eval_steps", "eval_episodes", "seed")}}
            elif method == "intent-matcher-0":
                model = MatchingNetwork.from_pretrained(str(intent_matcher_dir(ctx, "clinc150")))
                config = {"meta_train": "CLINC150 (no BANKING77 data)"}
            elif method == "textmatch-meta":  # the fold's train classes and the other intent sets, as sources
                model = MatchingNetwork.from_pretrained(DEFAULT_MODEL)
                train, valid = fold_split("train"), fold_split("valid")
                sources = {"banking77-fold-train": (train.texts, train.labels)}
                for source in PRETRAIN_POOLS["banking77"]:  # never banking77_oos: it is BANKING77 text
                    path = data_paths(ctx.args, source) / "cpft" / "train.csv"
                    pool = read_split(quick_file(ctx, source, path) if ctx.quick else path)
                    sources[source] = (pool.texts, pool.labels)
                targs = training_args(ctx, 0, num_episodes=ctx.args.meta_episodes, eval_steps=max(1, ctx.args.meta_episodes // 4),
                                      eval_episodes=3 if ctx.args.quick else 20, fit_support_at_end=False)
                t0 = time.perf_counter()
                Trainer(model, targs, train_dataset=sources, eval_dataset=(valid.texts, valid.labels)).train()
                train_s = time.perf_counter() - t0
                config = {"meta_train": f"fold {fold} train classes + {' + '.join(PRETRAIN_POOLS['banking77'])}",
                          **{k: v for k, v in targs.to_dict().items() if k in ("num_episodes", "learning_rate", "eval_steps", "seed")}}
            else:
                continue
            for k in (1, 5):
                t1 = time.perf_counter()
                r = evaluate_episodes(model, (test.texts, test.labels), n_way=5, k_shot=k, q_query=5, num_episodes=n_episodes, seed=0)
                results.add({
                    "section": "episodic", "dataset": "banking77", "k": k, "method": method, "seed": 0, "fold": fold,
                    "accuracy": round(100 * r.accuracy, 2), "ci95": round(100 * r.ci95, 2), "episodes": r.num_episodes,
                    "train_s": round(train_s, 1), "predict_s": round(time.perf_counter() - t1, 1), "config": config,
                })


def oos_evals(args: argparse.Namespace) -> dict[str, Split]:
    """CLINC150's out-of-scope valid / test texts (label "oos")."""
    root = data_paths(args, "clinc150")
    per = 6 if args.quick else None
    return {"oos_valid": read_split(root / "oos_valid.csv", None, per), "oos_test": read_split(root / "oos_test.csv", None, 30 if args.quick else None)}


def oos_record(dataset: str, k: int, seed: int, method: str, classes: list[str], probs: dict[str, np.ndarray], test_labels: list[str], n_oos: int, info: dict[str, Any]) -> dict[str, Any]:
    """Out-of-scope: a text whose best class probability is below the threshold is
    out-of-scope; the threshold maximises OOS F1 on valid + oos_valid
    (textmatch.classification.fewshot.choose_threshold). CLINC150: the cpft train_10 support;
    BANKING77-OOS: K examples per in-scope class drawn from its train split."""
    threshold = choose_threshold(probs["valid"].max(1), probs["oos_valid"].max(1))
    p = np.concatenate([probs["test"], probs["oos_test"]])
    gold = list(test_labels) + ["oos"] * n_oos
    predicted = [classes[i] if row.max() >= threshold else "oos" for i, row in zip(p.argmax(1), p)]
    report = {k: (round(100 * v, 2) if isinstance(v, float) else v) for k, v in oos_report(gold, predicted).items()}
    no_threshold = scores_from_probs(classes, probs["test"], list(test_labels))["accuracy"]
    return {"section": "oos", "dataset": dataset, "k": k, "method": method, "seed": seed, "threshold": round(float(threshold), 5),
            "in_scope_accuracy_no_threshold": no_threshold, **report, "train_s": info.get("train_s"), "config": info.get("config")}


def section_oos_banking(ctx: Context, results: Results, methods: list[str]) -> None:
    """BANKING77-OOS (Zhang et al. 2021): 50 in-scope intents, in-domain out-of-scope queries
    from the other 27. Support: 10 examples per in-scope class drawn from its train split with
    each seed; threshold on valid + id-oos_valid; scored on test + id-oos_test."""
    root = data_paths(ctx.args, "banking77_oos") / "cpft"
    per = 6 if ctx.args.quick else None
    qc = set(sorted(set(read_split(root / "valid.csv").labels))[:8]) if ctx.args.quick else None
    evals = {"valid": read_split(root / "valid.csv", qc, per), "test": read_split(root / "test.csv", qc, per),
             "oos_valid": read_split(root / "id-oos_valid.csv", None, per), "oos_test": read_split(root / "id-oos_test.csv", None, 30 if ctx.args.quick else None)}
    train = read_split(root / "train.csv", qc)
    for seed in ctx.args.oos_seeds:
        support = draw_k(train, 10, seed)
        for method in methods:
            try:
                classes, probs, info = run_method(ctx, method, "banking77", support, {n: s.texts for n, s in evals.items()}, seed)
            except SkipMethod as exc:
                results.add({"section": "oos", "dataset": "banking77_oos", "k": 10, "method": method, "seed": seed, "skipped": str(exc)})
                continue
            results.add(oos_record("banking77_oos", 10, seed, method, classes, probs, evals["test"].labels, len(evals["oos_test"].texts), info))


def section_pretrain(ctx: Context, results: Results, datasets: list[str]) -> None:
    """Meta-train one model per target with the documented `textmatch pretrain` command on the
    other intent sets' train splits (PRETRAIN_POOLS: never the target's texts), with the
    recipe's defaults; `textmatch-meta` fine-tunes it on the target's support set."""
    for target in datasets:
        out = pretrained_dir(ctx, target)
        cmd = [sys.executable, "-m", "textmatch.cli", "pretrain"]
        for source in PRETRAIN_POOLS[target]:
            path = data_paths(ctx.args, source) / "cpft" / "train.csv"
            if ctx.args.quick:
                path = quick_file(ctx, source, path)
            cmd += ["--data", f"{source}={path}"]
        cmd += ["--output", str(out), "--episodes", str(3 if ctx.args.quick else ctx.args.pretrain_episodes), "--no-progress", "--json"]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
        summary = json.loads(done.stdout)
        shown = " ".join(shlex.quote(c) for c in ["textmatch"] + cmd[3:])
        results.add({"section": "pretrain", "dataset": target, "method": "textmatch-meta", "variant": f"for {target}",
                     "train_s": round(time.perf_counter() - t0, 1), "episodes": summary["episodes"],
                     "sources": summary["sources"], "cli": shown})


def quick_file(ctx: Context, source: str, path: Path) -> Path:
    """--quick: a small copy of a source's first classes (12 rows each) in the cache folder."""
    import csv

    rows = read_split(path)
    keep = set(sorted(set(rows.labels))[:6])
    s = read_split(path, keep, 12)
    small = ctx.cache_dir / f"quick-{source}.csv"
    small.parent.mkdir(parents=True, exist_ok=True)
    with open(small, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(zip(s.texts, s.labels))
    return small


def section_cli(ctx: Context, results: Results) -> None:
    """`textmatch train` with its defaults, as a user runs it (the CLI, all torch threads the
    machine gives), on the demo's 120 examples and on BANKING77 10-shot: training seconds, and
    test accuracy against the untrained model (`textmatch evaluate`)."""
    demo = ROOT / "data"
    cells = [("demo", demo / "intents_support.csv", demo / "intents_test.csv")]
    if not ctx.quick:
        b77 = data_paths(ctx.args, "banking77") / "cpft"
        cells.append(("banking77-10", b77 / "train_10.csv", b77 / "test.csv"))
    for name, support, test in cells:
        out = ctx.cache_dir / f"cli-{name}"
        train = [sys.executable, "-m", "textmatch.cli", "train", "--train", str(support), "--output", str(out), "--no-progress", "--json"]
        if ctx.quick:
            train += ["--episodes", "2"]
        t0 = time.perf_counter()
        summary = json.loads(subprocess.run(train, check=True, cwd=ROOT, capture_output=True, text=True).stdout)
        wall = time.perf_counter() - t0
        evaluate = [sys.executable, "-m", "textmatch.cli", "evaluate", "--test", str(test), "--json"]
        trained = json.loads(subprocess.run(evaluate + ["--model", str(out)], check=True, cwd=ROOT, capture_output=True, text=True).stdout)
        untrained = json.loads(subprocess.run(evaluate + ["--support", str(support)], check=True, cwd=ROOT, capture_output=True, text=True).stdout)
        results.add({"section": "cli", "dataset": name, "method": "textmatch", "k": None,
                     "train_s": summary["train_seconds"], "wall_s": round(wall, 1), "episodes": summary["episodes"],
                     "test_accuracy": round(100 * trained["accuracy"], 2), "untrained_test_accuracy": round(100 * untrained["accuracy"], 2),
                     "cli": " ".join(shlex.quote(c) for c in ["textmatch"] + train[3:]), "arguments": summary["arguments"]})


def section_intent_matcher(ctx: Context, results: Results, datasets: list[str]) -> None:
    """Meta-train one intent matcher per target dataset on the *other* dataset's train split
    (early stopping on its valid split) with the documented CLI command."""
    for target in datasets:
        source = OTHER[target]
        root = data_paths(ctx.args, source)
        out = intent_matcher_dir(ctx, source)
        cmd = [sys.executable, "-m", "textmatch.cli", "train", "--train", str(root / "cpft" / "train.csv"),
               "--valid", str(root / "cpft" / "valid.csv"), "--output", str(out),
               "--episodes", str(3 if ctx.args.quick else ctx.args.intent_episodes), "--eval-steps", str(1 if ctx.args.quick else 50),
               "--eval-episodes", str(2 if ctx.args.quick else 20), "--no-progress"]
        if not ctx.args.quick:
            # the shape the intent matchers in results/ were meta-trained with (16-way episodes
            # of 5 + 5 texts, the default of textmatch train at the time)
            cmd[-1:-1] = ["--n-way", "16", "--k-shot", "5", "--q-query", "5"]
        if ctx.args.quick:
            # the quick run meta-trains on a few classes only: a small file of the source's first classes
            qc = quick_classes(ctx.args, source)
            small = ctx.cache_dir / f"quick-{source}"
            small.mkdir(parents=True, exist_ok=True)
            for name in ("train", "valid"):
                s = read_split(root / "cpft" / f"{name}.csv", qc, 12)
                import csv

                with open(small / f"{name}.csv", "w", newline="", encoding="utf-8") as fh:
                    w = csv.writer(fh)
                    w.writerow(["text", "label"])
                    w.writerows(zip(s.texts, s.labels))
            cmd[cmd.index("--train") + 1] = str(small / "train.csv")
            cmd[cmd.index("--valid") + 1] = str(small / "valid.csv")
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        shown = " ".join(shlex.quote(c) for c in ["textmatch"] + cmd[3:])
        results.add({"section": "intent-matcher", "dataset": source, "method": "intent-matcher", "variant": f"for {target}",
                     "train_s": round(time.perf_counter() - t0, 1), "cli": shown})


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(SHARED_DATA))
    p.add_argument("--output-dir", default=None, help="where fewshot.json/.md/_vs_k.png go (default results/, or runs/fewshot-quick with --quick)")
    p.add_argument("--cache-dir", default=None, help="frozen embeddings and intent matchers (default .cache/bench_fewshot)")
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--methods", default=",".join(m for m in ALL_METHODS if m not in ("mn-fce", "mn-prototype")))
    p.add_argument("--k-values", default=None, help="comma-separated K (default: section's own)")
    p.add_argument("--seeds", default="0,1,2,3,4", help="drawn section: the seeds drawing the supports")
    p.add_argument("--train-seeds", default="0", help="generalised section: training seeds on the fixed supports")
    p.add_argument("--oos-seeds", default="0", help="BANKING77-OOS: seeds drawing its 10-shot supports")
    p.add_argument("--pretrain-episodes", type=int, default=400, help="episodes of textmatch pretrain (pretrain section)")
    p.add_argument("--folds", default="01,02,03,04,05")
    p.add_argument("--episodes", type=int, default=None, help="fine-tuning episodes (default: textmatch train's)")
    p.add_argument("--meta-episodes", type=int, default=100, help="episodic meta-training episodes per fold")
    p.add_argument("--intent-episodes", type=int, default=200, help="intent-matcher meta-training episodes")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--variant", default=None, help="name an ablation: the trained methods' records go to the ablation table under it")
    p.add_argument("--train-overrides", default="{}", help='JSON of TrainingArguments fields for the trained methods, e.g. \'{"n_way": 64}\'')
    p.add_argument("--quick", action="store_true", help="a reduced run (8 classes, few episodes) in a few minutes")
    p.add_argument("--render-only", action="store_true", help="rewrite fewshot.md and the plot from fewshot.json")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds = "0,1"
        args.folds = "01"
        args.meta_episodes = 3
        args.episodes = args.episodes or 3
    args.train_overrides = json.loads(args.train_overrides)
    args.sections = [s for s in args.sections.split(",") if s]
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.methods = [m for m in args.methods.split(",") if m]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.train_seeds = [int(s) for s in args.train_seeds.split(",")]
    args.oos_seeds = [int(s) for s in args.oos_seeds.split(",")]
    args.folds = args.folds.split(",")
    args.k_values = tuple(int(k) for k in args.k_values.split(",")) if args.k_values else None
    for name, values, allowed in (("section", args.sections, SECTIONS), ("dataset", args.datasets, DATASETS), ("method", args.methods, ALL_METHODS)):
        bad = [v for v in values if v not in allowed]
        if bad:
            p.error(f"unknown {name} {bad[0]!r}; choose from {', '.join(allowed)}")
    args.output_dir = Path(args.output_dir or (ROOT / ("runs/fewshot-quick" if args.quick else "results")))
    args.cache_dir = Path(args.cache_dir or (ROOT / ".cache" / ("bench_fewshot_quick" if args.quick else "bench_fewshot")))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from report_fewshot import render  # scripts/report_fewshot.py

    if args.render_only:
        render(args.output_dir)
        return 0
    if not Path(args.data_dir).is_dir():
        print(f"error: {args.data_dir} not found: the benchmark reads ../shared/data (see DESIGN.md)", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    command = command_line(__file__, argv if argv is not None else sys.argv[1:])
    results = Results(args.output_dir, command)
    frozen_model = MatchingNetwork.from_pretrained(DEFAULT_MODEL)
    ctx = Context(args, FrozenEmbeddings(frozen_model, args.cache_dir / "frozen.npz"), args.cache_dir, args.quick)
    started = time.perf_counter()
    for section in args.sections:
        if section == "intent-matcher":
            if any(m.startswith("intent-matcher") for m in args.methods):
                section_intent_matcher(ctx, results, args.datasets)
        elif section == "pretrain":
            if "textmatch-meta" in args.methods:
                section_pretrain(ctx, results, args.datasets)
        elif section == "generalised":
            section_generalised(ctx, results, args.datasets, args.methods)
        elif section == "drawn":
            section_drawn(ctx, results, args.datasets, args.methods)
        elif section == "oos" and "banking77" in args.datasets:
            section_oos_banking(ctx, results, [m for m in args.methods if m in ("logreg", "cosine") or m in RECIPE])
        elif section == "cli":
            section_cli(ctx, results)
        elif section == "episodic" and "banking77" in args.datasets:
            section_episodic(ctx, results, [m for m in args.methods if m not in ("logreg", "setfit", "intent-matcher")])
    results.finish(time.perf_counter() - started)
    render(args.output_dir)
    print(f"wrote {results.path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
