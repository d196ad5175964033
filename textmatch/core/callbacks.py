"""Callbacks both textmatch trainers add to the Hugging Face Trainer: the JSONL training log,
the progress bar, and the model-card record. (Early stopping on episodic validation accuracy
lives with the episodic trainer, in textmatch.classification.training.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..files import AtomicFile

LOG_NAME = "training_log.jsonl"
# Hugging Face's own summary keys, logged once at the end of training: not a step's record.
_SUMMARY_KEYS = ("train_runtime", "train_loss", "total_flos")


def _is_step_record(logs: dict[str, Any]) -> bool:
    return "loss" in logs and not any(k in logs for k in _SUMMARY_KEYS)


def _is_eval_record(logs: dict[str, Any]) -> bool:
    return any(k.startswith("eval_") for k in logs)


class JsonlLogCallback(TrainerCallback):
    """One JSON line per logged step in `output_dir/training_log.jsonl` (main process only):
    step, loss, accuracy, learning_rate (the rate the step used), grad_norm, temperature and the
    trainer's extra keys; a step with a validation also carries its eval_* metrics (and
    early_stopped when training stops there). The file replaces the previous run's only when
    this run completes (textmatch.files.AtomicFile); a resumed run first rewrites the records of
    the steps its checkpoint already holds, so its log equals an uninterrupted run's."""

    def __init__(self, order: tuple[str, ...]) -> None:
        self.order = order  # keys first, in this order; the rest after
        self.file: AtomicFile | None = None
        self.active = False  # the main process logs
        self.pending: dict[str, Any] | None = None
        self.records: list[dict[str, Any]] = []  # what the file holds, also without a file

    def _record(self, step: int, logs: dict[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {"step": step}
        for key in self.order:
            if key in logs:
                record[key] = logs[key]
        for key, value in logs.items():  # Hugging Face's fractional epoch only where the trainer orders it
            if key not in record and key != "epoch":
                record[key] = value
        return record

    def _write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def _flush(self) -> None:
        if self.pending is not None:
            self._write(self.pending)
            self.pending = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.records, self.pending = [], None
        self.active = state.is_world_process_zero
        if not self.active:
            return
        if getattr(args, "writes_log", True):
            self.file = AtomicFile(Path(args.output_dir) / LOG_NAME)
        replay: dict[int, dict[str, Any]] = {}  # a resumed run's earlier steps, from its checkpoint
        for entry in state.log_history:
            step = entry.get("step", 0)
            if _is_step_record(entry):
                replay[step] = self._record(step, entry)
            elif _is_eval_record(entry) and step in replay:
                replay[step].update({k: v for k, v in entry.items() if k not in ("step", "epoch")})
        for step in sorted(replay):
            self._write(replay[step])

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not self.active or not logs or not _is_step_record(logs):
            return
        self._flush()
        self.pending = self._record(state.global_step, logs)
        if not control.should_evaluate:  # no validation at this step: nothing to wait for
            self._flush()

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not self.active or not metrics:
            return
        record = self.pending if self.pending is not None and self.pending["step"] == state.global_step else {"step": state.global_step}
        record.update({k: v for k, v in metrics.items() if k != "epoch"})
        if control.should_training_stop and state.global_step < state.max_steps:  # stopped before the last step
            record["early_stopped"] = True
        self.pending = record
        self._flush()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._flush()
        if self.file is not None:
            self.file.commit()
            self.file = None

    def discard(self) -> None:
        """Training failed or was interrupted: leave the previous log as it was."""
        if self.file is not None:
            self.file.discard()
            self.file = None


class ModelCardCallback(TrainerCallback):
    """At the start of training, records on the model card how the model is trained (the
    recipe arguments, as used) and on what data (`ModelCardData.start_training`: an earlier
    run moves to `earlier_training`); evaluation results of the weights before training no
    longer hold, so they are cleared."""

    def __init__(self, card: Any, training_args: dict[str, Any], dataset_name: str | None = None) -> None:
        self.card = card
        self.training_args = training_args
        self.dataset_name = dataset_name

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.card.start_training(self.training_args, self.dataset_name)


class ProgressBarCallback(TrainerCallback):
    """A tqdm bar on stderr over the optimizer steps, its postfix the smoothed loss and accuracy
    (an exponential moving average, beta 0.9); validations are written above it in one line.
    Replaces Hugging Face's ProgressCallback, which prints every log dict."""

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.bar: Any = None
        self.smoothed: dict[str, float] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero and not args.disable_tqdm:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="Training", unit=self.unit, file=sys.stderr)
        self.smoothed = {}

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self.bar is None or not logs or not _is_step_record(logs):
            return
        for key in ("loss", "accuracy"):
            if key in logs:
                old = self.smoothed.get(key)
                self.smoothed[key] = logs[key] if old is None else 0.9 * old + 0.1 * logs[key]
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in self.smoothed.items()}, refresh=False)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self.bar is not None and metrics and "eval_accuracy" in metrics:
            ci = metrics.get("eval_accuracy_ci95")
            self.bar.write(
                f"step {state.global_step}: eval_accuracy {metrics['eval_accuracy']:.4f}"
                + (f" (± {ci:.4f})" if ci is not None else "")
                + (f", eval_loss {metrics['eval_loss']:.4f}" if "eval_loss" in metrics else ""),
                file=sys.stderr,
            )

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
