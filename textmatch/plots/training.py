"""Training curves from the JSON-lines log a textmatch trainer writes (training_log.jsonl):
loss, episode accuracy, validation accuracy and learning rate against the step."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TextMatchError
from .common import new_figure, note, save_figure

CURVES_NAME = "training_curves.png"


def read_training_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a training_log.jsonl, one dict per line (blank lines skipped); each has a
    "step" and some of "loss", "accuracy", "learning_rate", "grad_norm", "temperature", and at
    validation steps "eval_accuracy" and other "eval_*" keys."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TextMatchError(f"{path} does not exist; pass the training_log.jsonl of a training run's output folder") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TextMatchError(f"cannot read {path} ({exc}); pass a training_log.jsonl written by textmatch") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TextMatchError(
                f"{path}, line {number} is not JSON ({exc.msg}); the log is damaged: remove that line or train again"
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), (int, float)) or isinstance(record.get("step"), bool):
            raise TextMatchError(
                f"{path}, line {number} is not a training record (a JSON object with a numeric \"step\"); "
                "pass a training_log.jsonl written by textmatch"
            )
        records.append(record)
    return records


def series(records: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the records that hold a finite number under `key`, by step."""
    pairs = sorted(
        (float(r["step"]), float(r[key]))
        for r in records
        if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) and math.isfinite(r[key])
    )
    if not pairs:
        return np.empty(0), np.empty(0)
    steps, values = zip(*pairs)
    return np.asarray(steps), np.asarray(values)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """The trailing mean over `window` values (fewer at the start)."""
    window = max(1, int(window))
    sums = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, values.size + 1)
    start = np.maximum(0, idx - window)
    return (sums[idx] - sums[start]) / (idx - start)


def smoothed_panel(ax: Any, steps: np.ndarray, values: np.ndarray, colour: str, name: str) -> None:
    """Raw values faint, their moving average over ~5% of the records bold."""
    window = max(1, round(0.05 * values.size))
    ax.plot(steps, values, color=colour, alpha=0.3, linewidth=0.8, label=f"{name} (raw)")
    if window > 1:
        ax.plot(steps, moving_average(values, window), color=colour, linewidth=2.0, label=f"moving average ({window} records)")
    ax.legend(fontsize=8, loc="best")


def training_curves_figure(records: list[dict[str, Any]], title: str = "Training curves") -> Any:
    """A 2 x 2 figure of a training log's records (read_training_log): training loss and episode
    accuracy (raw and smoothed), validation accuracy, learning rate; a panel whose metric the log
    lacks says so instead of staying empty."""
    fig = new_figure(11.0, 7.5)  # raises first when matplotlib is missing
    axes = fig.subplots(2, 2).ravel()
    panels = [
        ("loss", "training loss", "loss", "tab:blue"),
        ("accuracy", "episode accuracy", "accuracy", "tab:green"),
        ("eval_accuracy", "validation accuracy", "accuracy", "tab:purple"),
        ("learning_rate", "learning rate", "learning rate", "tab:red"),
    ]
    for ax, (key, name, ylabel, colour) in zip(axes, panels):
        ax.set_title(name, fontsize=10)
        steps, values = series(records, key)
        if values.size == 0:
            message = "no validation set (pass --valid)" if key == "eval_accuracy" else f"no {name} in the log"
            note(ax, message)
            ax.set_xlabel("step")
            continue
        if key in ("loss", "accuracy"):
            smoothed_panel(ax, steps, values, colour, name)
        elif key == "eval_accuracy":
            ax.plot(steps, values, marker="o", markersize=4, color=colour, linewidth=1.5)
            best = int(np.argmax(values))
            right = steps[best] > steps.min() + 0.7 * (steps.max() - steps.min())  # keep the note inside the axes
            ax.annotate(f"best {values[best]:.3f} (step {steps[best]:g})", (steps[best], values[best]),
                        xytext=(0, 8), textcoords="offset points", ha="right" if right else "center", fontsize=8)
        else:
            ax.plot(steps, values, color=colour, linewidth=1.5)
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if key in ("accuracy", "eval_accuracy"):
            low = float(min(values.min(), 1.0))
            ax.set_ylim(max(0.0, low - 0.05), 1.02)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(color="0.92")
    steps_all = [r["step"] for r in records]
    detail = f"{len(records)} records, steps {min(steps_all):g}-{max(steps_all):g}" if records else "empty log"
    fig.suptitle(f"{title} ({detail})", fontsize=11)
    return fig


def plot_training_log(log_path: str | os.PathLike, png_path: str | os.PathLike | None = None) -> Path:
    """Read a training_log.jsonl and write its training curves as a PNG (by default
    training_curves.png next to the log); returns the PNG's path."""
    log_path = Path(log_path).expanduser()
    records = read_training_log(log_path)
    target = Path(png_path).expanduser() if png_path is not None else log_path.with_name(CURVES_NAME)
    fig = training_curves_figure(records, title=f"Training curves: {log_path.parent.name or log_path.name}")
    return save_figure(fig, target)
