"""The training loop both textmatch trainers run: Hugging Face's `transformers.Trainer`.

What the subclasses supply: a map-style dataset whose item i depends only on (seed, i), and a
collator that tokenises and names the objective; the model's forward turns one collated batch
into {"loss", "logits", "targets"} (textmatch.core.objectives), one forward per step, so DDP
averages the gradients. What this class adds to Hugging Face's Trainer:

- the optimizer's parameter groups (encoders at `learning_rate`, the rest at
  `head_learning_rate`; `args.optim` picks the optimizer class);
- a sequential sampler: item i is trained at step i // (batch * accumulation * processes), and
  under torchrun / accelerate launch process r takes batches r, r + W, ... (Accelerate's
  sharding), so every process trains on its own items and a resumed run sees the items an
  uninterrupted one would;
- per-step accuracy and temperature in the logs, the JSONL log, a progress bar, the model card;
- safe files: `save_model(folder)` writes a textmatch model folder (safetensors only); a
  checkpoint's weights are one safetensors file beside Hugging Face's resume state, and a
  resume loads them strictly into the model.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
import transformers
from torch import nn
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import get_last_checkpoint

from ..errors import TextMatchError
from ..hub.resolution import is_in_hub_cache
from .callbacks import JsonlLogCallback, ModelCardCallback, ProgressBarCallback
from .freezing import blocks_to_freeze, frozen
from .modeling import WEIGHTS_NAME, MatchingNetwork
from .optimization import OptimizationArguments, TrainOutput, parameter_groups

TRAINER_STATE_NAME = "trainer_state.json"


class MatchingTrainerBase(transformers.Trainer):
    """Hugging Face's Trainer for a MatchingNetwork (see the module docstring)."""

    log_order: ClassVar[tuple[str, ...]] = ("loss", "accuracy", "learning_rate", "grad_norm", "temperature")
    progress_unit: ClassVar[str] = "step"

    def __init__(
        self,
        model: MatchingNetwork,
        args: OptimizationArguments,
        train_dataset: Any,
        data_collator: Any,
        card_args: dict[str, Any],
        eval_dataset: Any = None,
        dataset_name: str | None = None,
        callbacks: list[transformers.TrainerCallback] | None = None,
    ) -> None:
        self.matching_model = model
        self._accuracy_sum = 0.0
        self._accuracy_count = 0
        self.log_callback = JsonlLogCallback(self.log_order)
        if args.n_gpu > 1:  # Hugging Face would wrap the model in nn.DataParallel, which cannot split episodes
            raise TextMatchError(
                f"{args.n_gpu} GPUs are visible to one process: run one process per GPU with torchrun or accelerate "
                "launch (see the README), or pick one GPU with CUDA_VISIBLE_DEVICES=0"
            )
        blocks_to_freeze(model, args.frozen_layers, args.freeze_embeddings)  # an impossible freeze fails now
        run_folder = Path(args.output_dir)
        existed = run_folder.exists()
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            callbacks=[
                *(callbacks or []),
                self.log_callback,
                # processes: a step's batch is per_device_train_batch_size x accumulation x processes
                ModelCardCallback(model.model_card_data, {**card_args, "processes": args.world_size}, dataset_name),
            ],
        )
        if not args.writes_log and not existed and run_folder.is_dir() and not any(run_folder.iterdir()):
            run_folder.rmdir()  # no output_dir given: Hugging Face made its default folder, which stays unused
        self.model_accepts_loss_kwargs = False  # the loss is a per-batch mean: HF divides it by the accumulation
        self.remove_callback(ProgressCallback)  # it prints every log dict; ours shows loss and accuracy
        self.remove_callback(PrinterCallback)
        self.add_callback(ProgressBarCallback(self.progress_unit))

    @staticmethod
    def own_copy(args: OptimizationArguments, **changes: Any) -> OptimizationArguments:
        """A shallow copy of the user's arguments with the fields the trainer sets (max_steps,
        eval_strategy): the user's object stays as given, for another trainer."""
        out = copy.copy(args)
        for name, value in changes.items():
            setattr(out, name, value)
        return out

    # -- optimizer and data order -----------------------------------------------------------
    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.matching_model)
            groups = parameter_groups(
                self.matching_model, self.args.learning_rate, self.args.head_learning_rate, self.args.weight_decay
            )
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler:
        return torch.utils.data.SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    # -- the loss and the logs --------------------------------------------------------------
    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        outputs = model(**inputs)  # through the DDP wrapper when distributed: one forward per step
        with torch.no_grad():
            self._accuracy_sum += float((outputs["logits"].argmax(-1) == outputs["targets"]).float().mean())
            self._accuracy_count += 1
            self.note_batch(inputs, outputs)
        return (outputs["loss"], outputs) if return_outputs else outputs["loss"]

    def note_batch(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        """Hook: remember what the subclass logs of this batch (see `step_extras`)."""

    def step_extras(self) -> dict[str, Any]:
        """Hook: extra keys of a step's log record (an "epoch" here is the record's epoch, also
        in the trainer state's log history that a resumed run replays)."""
        return {}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and "train_runtime" not in logs:  # a step's record (every process logs it)
            totals = torch.tensor([self._accuracy_sum, float(self._accuracy_count)], device=self.args.device)
            if self.accelerator.num_processes > 1:
                totals = self.accelerator.reduce(totals, reduction="sum")
            self._accuracy_sum, self._accuracy_count = 0.0, 0
            logs["loss"] = round(float(logs["loss"]), 6)
            logs["accuracy"] = round(float(totals[0] / max(1.0, float(totals[1]))), 6)
            if "grad_norm" in logs:
                logs["grad_norm"] = round(float(logs["grad_norm"]), 6)
            logs["temperature"] = round(float(self.matching_model.temperature.detach()), 6)
            extras = self.step_extras()
            logs.update(extras)
            if "epoch" in extras:  # a trainer's own epoch replaces the fraction Hugging Face's log writes
                hf_epoch, self.state.epoch = self.state.epoch, extras["epoch"]
                try:
                    return super().log(logs, start_time)
                finally:
                    self.state.epoch = hf_epoch
        super().log(logs, start_time)

    # -- files -------------------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`trainer.save_model(folder)`: the model as `model.save_pretrained(folder)` writes it
        (safetensors, atomic; main process only). Inside a checkpoint (Hugging Face's internal
        call) only the weights are written, as one safetensors file."""
        if not self.args.should_save:
            return
        folder = Path(output_dir if output_dir is not None else self.args.output_dir)
        if _internal_call:
            self.matching_model.save_weights(folder / WEIGHTS_NAME)
        else:
            self.matching_model.save_pretrained(folder)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:  # type: ignore[override]
        """Upload the trained model (with its model card) to the Hub: MatchingNetwork.push_to_hub,
        from the main process only (other processes of a distributed run return None)."""
        if not self.is_world_process_zero():
            return None
        return self.matching_model.push_to_hub(repo_id, **kwargs)

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:  # any other HF path
        self.save_model(output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        weights = Path(resume_from_checkpoint) / WEIGHTS_NAME
        if not weights.is_file():
            raise TextMatchError(
                f"{resume_from_checkpoint} has no {WEIGHTS_NAME}: it is not a checkpoint written by textmatch's trainer"
            )
        self.matching_model.load_weights(weights)

    # -- running ---------------------------------------------------------------------------
    def resolve_checkpoint(self, resume_from_checkpoint: str | bool | None) -> str | None:
        """True: the last `checkpoint-N` of output_dir; a path: that folder, which must be a
        local checkpoint holding trainer_state.json; None/False: start afresh."""
        if resume_from_checkpoint in (None, False):
            return None
        folder = Path(self.args.output_dir if resume_from_checkpoint is True else resume_from_checkpoint)  # type: ignore[arg-type]
        if is_in_hub_cache(folder):
            raise TextMatchError(
                f"{folder} is in the Hugging Face download cache: resume state (pickled by torch) is loaded only "
                "from checkpoints this machine wrote"
            )
        if resume_from_checkpoint is True:
            last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
            if last is None:
                raise TextMatchError(
                    f"nothing to resume: {folder} holds no checkpoint-N folder (checkpoints are written only with "
                    "save_strategy='steps' and save_steps, i.e. textmatch train --save-steps N)"
                )
            return last
        if not (folder / TRAINER_STATE_NAME).is_file():
            raise TextMatchError(f"{folder} is not a training checkpoint (it has no {TRAINER_STATE_NAME})")
        return str(folder)

    def run(self, resume_from_checkpoint: str | bool | None = None) -> tuple[Any, float]:
        """Hugging Face's train(), with `args.frozen_layers` / `freeze_embeddings` frozen for
        its length; the JSONL log is committed only when it completes."""
        checkpoint = self.resolve_checkpoint(resume_from_checkpoint)
        start = time.perf_counter()
        self._accuracy_sum, self._accuracy_count = 0.0, 0
        try:
            with frozen(self.matching_model, self.args.frozen_layers, self.args.freeze_embeddings):
                output = super().train(resume_from_checkpoint=checkpoint)
        except BaseException:
            self.log_callback.discard()
            raise
        finally:
            self.matching_model.eval()
            self.matching_model.reset_backend()  # the weights changed: ONNX exports are redone on next use
        return output, time.perf_counter() - start

    @property
    def log_history(self) -> list[dict[str, Any]]:
        """The records of the last training run (those of training_log.jsonl)."""
        return self.log_callback.records

    def train_output(self, output: Any, runtime: float, best_metric: float | None = None, best_step: int | None = None) -> TrainOutput:
        history = self.log_callback.records  # the JSONL log's records (the main process's)
        return TrainOutput(
            global_step=output.global_step,
            training_loss=float(output.training_loss),
            best_metric=best_metric,
            best_step=best_step,
            train_runtime=runtime,
            log_history=copy.deepcopy(history),
        )


class EpochBatchDataset(torch.utils.data.Dataset):
    """Item i = batch i of a run unrolled over epochs: the (i % steps_per_epoch)-th batch of
    epoch i // steps_per_epoch + 1, whose batches `draw(epoch)` returns (a shuffle seeded by
    (seed, epoch), so item i depends only on the seed and i). The last epoch drawn is kept."""

    def __init__(self, draw: Callable[[int], list[Any]], steps_per_epoch: int, length: int) -> None:
        self.draw = draw
        self.steps_per_epoch = steps_per_epoch
        self.length = length
        self._epoch: int | None = None
        self._batches: list[Any] = []

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.length:
            raise IndexError(f"batch {index} of a run of {self.length}")
        epoch = index // self.steps_per_epoch + 1
        if epoch != self._epoch:
            self._batches, self._epoch = self.draw(epoch), epoch
        return self._batches[index % self.steps_per_epoch]


class EpochBatchTrainer(MatchingTrainerBase):
    """A trainer whose items are whole batches drawn per epoch (`EpochBatchDataset`: retrieval
    pairs, contrastive texts): one item per dataloader batch, each logged step's epoch, and a
    stored support set re-encoded after training. Subclasses give `steps_per_epoch`,
    `note_batch` and `batch_extras`."""

    steps_per_epoch: int

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        """One item (one whole batch) per dataloader batch; Hugging Face's bookkeeping keeps
        per_device_train_batch_size (queries or texts) as its batch size."""
        if self.train_dataset is None:
            raise TextMatchError(f"{type(self).__name__} has no training batches")
        return self._get_dataloader(
            dataset=self.train_dataset,
            description="Training",
            batch_size=1,
            sampler_fn=torch.utils.data.SequentialSampler,  # batch i trained at step i // (processes * accumulation)
            is_training=True,
        )

    def batch_extras(self) -> dict[str, Any]:
        """What the last step's batch adds to the log (e.g. its size); {} by default."""
        return {}

    def step_extras(self) -> dict[str, Any]:
        """epoch: that of the main process's last batch of the step, batch index
        (step - 1) * processes * accumulation + (accumulation - 1) * processes; then
        `batch_extras`."""
        args = self.args
        last = (self.state.global_step - 1) * args.world_size * args.gradient_accumulation_steps
        last += (args.gradient_accumulation_steps - 1) * args.world_size
        return {"epoch": last // self.steps_per_epoch + 1, **self.batch_extras()}

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any) -> TrainOutput:  # type: ignore[override]
        """Train; resume_from_checkpoint: True for the last checkpoint-N of output_dir, or a
        checkpoint folder (trusted local state: never one you downloaded). A support set the
        model stores is re-encoded with the trained g' at the end."""
        if kwargs:
            raise TextMatchError(f"{type(self).__name__}.train takes resume_from_checkpoint only, got {sorted(kwargs)}")
        model = self.matching_model
        model.train()
        output, runtime = self.run(resume_from_checkpoint)
        if model.support_embeddings_ is not None:  # a stored support set: re-encode it with the new g'
            model.fit(model.support_texts, model.support_labels, batch_size=self.args.encode_batch_size)
        return self.train_output(output, runtime)

