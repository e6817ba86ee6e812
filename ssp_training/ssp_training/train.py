"""``ssp_train``: train image, SSP, KD and baseline models from a recipe; export teacher logits.

Usage::

    ssp_train fit --recipe ssp_training/configs/synth_lite_image.yaml [--resume] [key=value ...]
    ssp_train check --recipe R [key=value ...]          # preflight only, trains nothing
    ssp_train keys          # every recipe key; ssp_train pipeline: docs/TRAINING.md
    ssp_train export-logits --teacher runs/teacher/model.safetensors --data datasets/synth
        --out runs/teacher/train_logits
    torchrun --nproc_per_node 4 -m ssp_training.train fit --recipe R     # DDP, same command

A run folder (``run.out_dir``, default ``runs/<name>``) receives ``recipe.yaml`` (the resolved
recipe), ``train.csv``/``val.csv``, ``tensorboard/``, ``checkpoints/`` (one crash-safe
checkpoint per epoch, see :mod:`ssp_training.checkpoint`), and at the end ``model.safetensors``
(the last epoch's artifact, as the paper reports), ``summary.json`` and ``curves.png``; the
resume state in ``checkpoints/`` is then removed unless ``run.keep_resume_state`` is true.
Validation scores (``val.csv``, ``summary.json``, the console) are in %, as ``ssp_eval``'s.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from dataclasses import dataclass, field
import json
import os
from pathlib import Path
import sys
import time
from typing import Any

from safetensors.torch import load_file
from ssp_perception.artifact import read_meta
from ssp_perception.classes import ClassSet
from ssp_perception.cli import run_main
from ssp_perception.models import pretrained
from ssp_perception.progress import progress_bar
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from .checkpoint import (CheckpointError, latest_checkpoint, load_model_state,
                         load_optimizer_state, load_train_state, optimizer_state,
                         prune_checkpoints, rng_state, save_checkpoint, set_rng_state,
                         unreadable)
from .distributed import (all_ranks, barrier, broadcast_buffers, DistInfo, gather_fingerprints,
                          init_distributed, mean_over_ranks, shutdown)
from .kd import KDImageTask, KDSSPTask
from .model_kinds import get_model_kind, ModelKind
from .preflight import preflight, PreflightResult
from .recipes import load_recipe, Recipe, RecipeError
from .run_folder import run_folder, start_run_dir
from .runlog import plot_curves, RunLog
from .schedule import build_scheduler, WarmupCosine
from .tasks import BatchFlow, SupervisedTask
from .train_args import build_parser, interrupted_note
from .train_data import BatchHomography, build_train_dataset
from .validate import validate

FINAL_MODEL = "model.safetensors"
SUMMARY = "summary.json"
REPLICAS = "replicas.json"


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite: a runtime error (exit 1), said in one line."""


@dataclass
class TrainState:
    """Progress of a run: what a checkpoint restores besides weights and optimiser."""

    epoch: int = 0
    """Epochs completed."""
    step: int = 0
    """Optimiser steps completed (the schedule's step)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """Validation results so far, one dict per validation."""
    train_seconds: float = 0.0
    """Wall time spent in training epochs so far (across resumes)."""


class _StepModule(nn.Module):
    """Wrap the trainable module so that DDP sees one ``forward(batch) -> dict``."""

    def __init__(self, kind: ModelKind, trainable: nn.Module) -> None:
        super().__init__()
        self.kind = kind
        self.net = trainable

    def forward(self, batch: dict) -> dict:
        return self.kind.forward(self.net, batch)


def build_task(recipe: Recipe, device: torch.device):
    """Return the loss task of ``recipe`` (a callable ``(outputs, batch) -> named losses``)."""
    loss = recipe.loss
    flow = None
    if loss.uses_flow:
        flow = BatchFlow.create(loss.flow, loss.flow_weights, loss.flow_iterations, str(device))
    if loss.kind in ("ce", "ssp"):
        return SupervisedTask(loss, flow)
    if loss.kind == "kd_image":
        return KDImageTask(loss)
    return KDSSPTask(loss, flow)


def _amp(recipe: Recipe, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """Return (autocast dtype or None, whether a GradScaler is needed)."""
    mode = recipe.optim.amp
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None, False
    if mode == "auto":
        mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    return dtype, dtype == torch.float16 and device.type == "cuda"


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


def init_weights(model: nn.Module, recipe: Recipe, kind: ModelKind,
                 pre: PreflightResult) -> tuple[str, dict[str, Any] | None]:
    """Load ``model.init`` or ``model.backbone_weights`` into ``model``.

    Return what was done and the record of where the backbone weights came from (an ``init``
    artifact passes its own record on), or None for a random backbone.
    """
    if recipe.model.backbone_weights:
        source = recipe.model.backbone_weights
        report = pretrained.load_backbone_weights(model.image_model, source)
        return f"backbone from {report.source} ({report.loaded} tensors)", report.provenance()
    if not recipe.model.init:
        return "random initialisation", None
    tensors = load_file(recipe.model.init)
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise RecipeError(f"model.init {recipe.model.init} holds non-finite weights (NaN or "
                          f"inf in {len(bad)} tensor{'s' if len(bad) > 1 else ''}, e.g. "
                          f"{bad[0]}); point model.init at a healthy artifact")
    origin = read_meta(recipe.model.init).provenance.get(pretrained.PROVENANCE_KEY)
    if pre.init_kind == kind.name:
        model.load_state_dict(tensors, strict=True)
        return f"all weights from {recipe.model.init}", origin
    # A different kind (an image model under SSP or a baseline): take its image model, strictly.
    prefix = "image_model."
    image = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    model.image_model.load_state_dict(image, strict=True)
    return f"image model from {recipe.model.init} ({pre.init_kind} artifact)", origin


class Trainer:
    """One training run: builds everything from the recipe, then ``run()``s the epochs."""

    def __init__(self, recipe: Recipe, info: DistInfo, pre: PreflightResult,
                 resume: bool) -> None:
        """Build model, data, optimiser and logs; restore a checkpoint when resuming."""
        self.recipe, self.info, self.pre = recipe, info, pre
        self.run_dir = recipe.out_dir
        self.kind = get_model_kind(recipe.model.kind)
        self.class_set: ClassSet = pre.class_set
        torch.manual_seed(recipe.run.seed)
        self.model = self.kind.create(recipe.model_config(), recipe.model.options)
        self.init_note, self.backbone_origin = init_weights(self.model, recipe, self.kind,
                                                            pre)
        self.model.to(info.device)
        self.trainable = self.kind.trainable(self.model)
        self.step_module: nn.Module = _StepModule(self.kind, self.trainable)
        if info.distributed:
            self.step_module = DistributedDataParallel(
                self.step_module, device_ids=[info.device.index] if info.device.type == "cuda"
                else None)
        self.task = build_task(recipe, info.device)
        self.homography = BatchHomography(recipe.data) if self.kind.needs_homography else None
        self.dataset = build_train_dataset(recipe, self.kind)
        self.micro_batch = recipe.optim.batch_size // (recipe.optim.grad_accum * info.world_size)
        self.sampler = DistributedSampler(self.dataset, num_replicas=info.world_size,
                                          rank=info.rank, shuffle=True, seed=recipe.run.seed,
                                          drop_last=True)
        batches = len(self.sampler) // self.micro_batch
        self.steps_per_epoch = batches // recipe.optim.grad_accum
        if self.steps_per_epoch < 1:
            raise RecipeError(
                f"recipe optim: {len(self.dataset)} training samples give no full optimiser "
                f"step at batch_size {recipe.optim.batch_size} on {info.world_size} rank(s); "
                "lower optim.batch_size or add data")
        o = recipe.optim
        self.optimizer = torch.optim.AdamW(self.trainable.parameters(), lr=o.lr,
                                           weight_decay=o.weight_decay)
        self.schedule = WarmupCosine(
            warmup_steps=round(o.warmup_epochs * self.steps_per_epoch),
            total_steps=o.epochs * self.steps_per_epoch, start=o.start_factor,
            final=o.final_factor)
        self.scheduler = build_scheduler(self.optimizer, self.schedule)
        self.amp_dtype, use_scaler = _amp(recipe, info.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.state = TrainState()
        if resume:
            self._restore()
        self.log: RunLog | None = None

    def open_log(self) -> None:
        """Open the CSV and TensorBoard logs (rank 0), once the run folder is set up."""
        if self.info.is_main:
            self.log = RunLog(self.run_dir, self.state.step)

    def close_log(self) -> None:
        """Flush and close the logs (again harmless), before the run folder may be removed."""
        if self.log is not None:
            self.log.close()
            self.log = None

    # ----------------------------------------------------------------------------- state
    def _restore(self) -> None:
        folder = latest_checkpoint(self.run_dir)
        if folder is None:
            return  # killed before the first checkpoint: start from scratch
        tensors, values = load_train_state(folder)
        model_state = load_model_state(folder)
        try:
            self.model.load_state_dict(model_state, strict=True)
        except RuntimeError as err:
            raise unreadable(folder, "its model does not match this recipe's "
                             f"({' '.join(str(err).split())[:300]})") from None
        try:
            load_optimizer_state(self.optimizer, tensors, values["optimizer"])
            self.scheduler.load_state_dict(values["scheduler"])
            if values.get("scaler"):
                self.scaler.load_state_dict(values["scaler"])
            set_rng_state(tensors, values["rng"])
            self.state = TrainState(epoch=int(values["epoch"]), step=int(values["step"]),
                                    history=list(values["history"]),
                                    train_seconds=float(values.get("train_seconds", 0.0)))
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise unreadable(folder, f"its training state is incomplete or malformed "
                             f"({type(err).__name__}: {err})") from None
        if self.state.step != self.state.epoch * self.steps_per_epoch:
            raise CheckpointError(
                f"checkpoint {folder} is at step {self.state.step} after {self.state.epoch} "
                f"epochs, but this recipe makes {self.steps_per_epoch} steps per epoch; the "
                "data or batch size changed since the run started")

    def _provenance(self) -> dict[str, Any]:
        last = self.state.history[-1] if self.state.history else {}
        return {"model_kind": self.kind.name, "recipe": self.recipe.to_dict(),
                "dataset": str(self.recipe.data.root), "epochs": self.state.epoch,
                "steps": self.state.step, "init": self.init_note,
                "val": {k: last[k] for k in ("miou", "tc", "epoch") if k in last},
                **({pretrained.PROVENANCE_KEY: self.backbone_origin}
                   if self.backbone_origin else {})}

    def _save(self, path: Path, half: bool = False) -> None:
        self.kind.save(path, self.model, self.class_set, self._provenance(), half=half)

    def _checkpoint(self) -> None:
        t_opt, v_opt = optimizer_state(self.optimizer)
        t_rng, v_rng = rng_state()
        values = {"step": self.state.step, "history": self.state.history,
                  "train_seconds": self.state.train_seconds, "optimizer": v_opt,
                  "scheduler": self.scheduler.state_dict(), "rng": v_rng,
                  "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {}}
        save_checkpoint(self.run_dir, self.state.epoch, self._save, {**t_opt, **t_rng}, values)

    # ----------------------------------------------------------------------------- loop
    def _loader(self, epoch: int) -> DataLoader:
        self.sampler.set_epoch(epoch)
        # The generator fixes the workers' base seed per epoch, so augmentation is the same
        # after a resume as in an uninterrupted run.
        gen = torch.Generator().manual_seed(self.recipe.run.seed * 100003 + epoch)
        return DataLoader(self.dataset, batch_size=self.micro_batch, sampler=self.sampler,
                          num_workers=self.recipe.data.workers,
                          drop_last=True, generator=gen,
                          pin_memory=self.info.device.type == "cuda",
                          persistent_workers=False)

    def _micro_step(self, batch: dict, sync: bool) -> dict[str, torch.Tensor]:
        batch = _to_device(batch, self.info.device)
        if self.homography is not None and self.recipe.data.unroll > 1:
            batch["chain_homographies"] = self.homography.chain(batch)
            batch["homography"] = batch["chain_homographies"][:, -1]
        elif self.homography is not None:
            batch["homography"] = self.homography(batch)
        no_sync = (self.step_module.no_sync() if self.info.distributed and not sync
                   else nullcontext())
        autocast = (torch.autocast(self.info.device.type, dtype=self.amp_dtype)
                    if self.amp_dtype is not None else nullcontext())
        with no_sync:
            with autocast:
                outputs = self.step_module(batch)
            losses = self.task(outputs, batch)
            finite = bool(torch.isfinite(losses["loss"]))
            # Decided together: a rank that stopped alone would leave the others waiting in
            # the gradient all-reduce until the process group timed out.
            if not all_ranks(self.info, finite):
                value = (f"{float(losses['loss'].detach())}" if not finite else
                         "non-finite on another rank")
                self._diverged(f"the training loss became {value} at step {self.state.step + 1}"
                               f" (epoch {self.state.epoch + 1})")
            self.scaler.scale(losses["loss"] / self.recipe.optim.grad_accum).backward()
        return {k: v.detach() for k, v in losses.items()}

    def _diverged(self, what: str) -> None:
        o, m = self.recipe.optim, self.recipe.model
        weights = (f"model.init {m.init}" if m.init else
                   f"model.backbone_weights {m.backbone_weights}" if m.backbone_weights else "")
        raise DivergedError(f"{what} with optim.lr {o.lr:g}: lower optim.lr"
                            + (f", check the weights of {weights}" if weights else "")
                            + " and check the data")

    def _check_finite_weights(self, epoch: int) -> None:
        """Refuse to validate or checkpoint weights that hold NaN or inf (a checkpoint is good)."""
        bad = [k for k, v in self.model.state_dict().items()
               if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            self._diverged(f"the model's weights became non-finite during epoch {epoch} "
                           f"({len(bad)} tensor{'s' if len(bad) > 1 else ''}, e.g. {bad[0]}; "
                           "not checkpointed)")

    def _optimizer_step(self) -> None:
        if self.recipe.optim.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.trainable.parameters(), self.recipe.optim.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.state.step += 1

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Run one epoch of optimiser steps; return the epoch's mean losses (all ranks)."""
        self.step_module.train()
        accum = self.recipe.optim.grad_accum
        loader = self._loader(epoch)
        total = self.steps_per_epoch
        bar = progress_bar(total=total, desc=f"epoch {epoch + 1}/{self.recipe.optim.last_epoch}",
                           disable=not self.info.is_main, dynamic_ncols=True, leave=False)
        sums: dict[str, float] = {}
        window: dict[str, float] = {}
        t0 = t_win = time.perf_counter()
        seen = n_win = 0
        it = iter(loader)
        for _ in range(total):
            step_losses: dict[str, float] = {}
            for micro in range(accum):
                losses = self._micro_step(next(it), sync=micro == accum - 1)
                for k, v in losses.items():
                    step_losses[k] = step_losses.get(k, 0.0) + float(v) / accum
            lr = self.optimizer.param_groups[0]["lr"]
            self._optimizer_step()
            seen += self.micro_batch * accum * self.info.world_size
            n_win += 1
            for k, v in step_losses.items():
                sums[k] = sums.get(k, 0.0) + v
                window[k] = window.get(k, 0.0) + v
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{step_losses['loss']:.4f}", lr=f"{lr:.2e}",
                            img_s=f"{rate:.1f}", refresh=False)   # drawn by update()
            bar.update()
            if self.state.step % self.recipe.run.log_every == 0:
                means = mean_over_ranks(self.info, {k: v / n_win for k, v in window.items()})
                if self.log is not None:
                    dt = time.perf_counter() - t_win
                    self.log.log_train({"step": self.state.step, "epoch": epoch + 1, "lr": lr,
                                        **means, "samples_per_s": n_win * self.micro_batch
                                        * accum * self.info.world_size / max(dt, 1e-9)})
                window, n_win, t_win = {}, 0, time.perf_counter()
        bar.close()
        self.state.train_seconds += time.perf_counter() - t0
        return mean_over_ranks(self.info, {k: v / total for k, v in sums.items()})

    def _validate(self, epoch: int) -> dict[str, Any]:
        self.model.eval()
        result = _percent(validate(self.model, self.kind, self.recipe, self.pre.val_clips,
                                   self.info.device))
        self.model.train()
        row = {"epoch": epoch, "step": self.state.step, **result}
        self.state.history.append(row)
        if self.log is not None:
            self.log.log_val({k: v for k, v in row.items() if not isinstance(v, list)})
        return row

    def _check_replicas(self) -> None:
        broadcast_buffers(self.info, self.model)
        prints = gather_fingerprints(self.info, self.model)
        if self.info.is_main:
            same = all(torch.equal(prints[0], p) for p in prints[1:])
            path = self.run_dir / REPLICAS
            path.write_text(json.dumps({"world_size": self.info.world_size,
                                        "epoch": self.state.epoch, "identical": same,
                                        "fingerprints": [p.tolist() for p in prints]}))
            if not same:
                raise RuntimeError(f"DDP replicas diverged after epoch {self.state.epoch} "
                                   f"(see {path})")

    def _unroll_note(self) -> str:
        unroll = self.recipe.data.unroll
        return f" (unrolled over {unroll} previous frames)" if unroll > 1 else ""

    def run(self) -> dict[str, Any]:
        """Train the remaining epochs; write checkpoints, logs, the final artifact, plots."""
        last = self.recipe.optim.last_epoch
        every = self.recipe.val.every
        if self.info.is_main:
            print(f"[ssp_train] {self.recipe.name}: {self.kind.name} model, "
                  f"{sum(p.numel() for p in self.trainable.parameters()) / 1e6:.2f} M params, "
                  f"{len(self.dataset)} samples{self._unroll_note()}, "
                  f"{self.steps_per_epoch} steps/epoch, "
                  f"epochs {self.state.epoch + 1}..{last}, {self.init_note}, "
                  f"device {self.info.device} x{self.info.world_size}", flush=True)
        for epoch in range(self.state.epoch, last):
            means = self.train_epoch(epoch)
            self._check_finite_weights(epoch + 1)
            self.state.epoch = epoch + 1
            if self.info.distributed:
                self._check_replicas()
            val = {}
            due = (every and self.state.epoch % every == 0) or self.state.epoch == last
            if due and self.info.is_main:
                val = self._validate(self.state.epoch)
            if self.info.is_main:
                self._checkpoint()
                shown = {**{k: round(v, 4) for k, v in means.items()},
                         **{f"val_{k}": round(v, 4) for k, v in val.items()
                            if k in ("miou", "tc")}}
                print(f"[ssp_train] epoch {self.state.epoch}/{last} {shown}", flush=True)
            barrier(self.info)
        return self.finish()

    def finish(self) -> dict[str, Any]:
        """Write the final artifact, summary and plots (rank 0); return the summary."""
        summary = {"recipe": self.recipe.name, "epochs": self.state.epoch,
                   "steps": self.state.step, "train_seconds": round(self.state.train_seconds, 1),
                   "world_size": self.info.world_size,
                   "final_val": self.state.history[-1] if self.state.history else {}}
        if self.info.is_main:
            self._save(self.run_dir / FINAL_MODEL, half=self.recipe.run.save_half)
            tmp = self.run_dir / f".{SUMMARY}.tmp"
            tmp.write_text(json.dumps(summary, indent=1))
            os.replace(tmp, self.run_dir / SUMMARY)
            if self.recipe.run.plot:
                plot_curves(self.run_dir)
            if not self.recipe.run.keep_resume_state:
                prune_checkpoints(self.run_dir)  # the artifact is all a finished run needs
            self.close_log()
        barrier(self.info)
        return summary


def _percent(result: dict[str, Any]) -> dict[str, Any]:
    """Return validation scores in % (as ssp_eval and the paper print them)."""
    out = dict(result)
    for key in ("miou", "tc"):
        out[key] = 100.0 * result[key]
    out["per_class_iou"] = [None if v is None else 100.0 * v
                            for v in result.get("per_class_iou", [])]
    return out


def fit(recipe_path: str, overrides: list[str], resume: bool) -> dict[str, Any]:
    """Train the recipe at ``recipe_path`` (with ``overrides``); return the run summary."""
    recipe = load_recipe(recipe_path, overrides)
    # The preflight checks (a missing CUDA device included) before joining a process group.
    pre = preflight(recipe, world_size=int(os.environ.get("WORLD_SIZE", "1")))
    info = init_distributed(recipe.run.device)
    try:
        if recipe.run.threads:
            torch.set_num_threads(recipe.run.threads)
        try:
            return _fit_in_folder(recipe, info, pre, resume)
        except DivergedError as err:
            raise DivergedError(_after_divergence(str(err), recipe.out_dir,
                                                  getattr(err, "note", None))) from None
    finally:
        shutdown(info)


def _after_divergence(message: str, run_dir: Path, note: str | None) -> str:
    """Return the diverged run's line with what its run folder kept (set by run_folder)."""
    folder = latest_checkpoint(run_dir) if run_dir.is_dir() else None
    if folder is None:
        return f"{message}; {note or 'nothing was kept'}"
    # A --resume must use the same recipe (optim.lr included): start anew from the checkpoint.
    return (f"{message}; the last good checkpoint ({folder.name}) is kept in {folder.parent}: "
            f"to go on from it with another optim.lr, train into a new run.out_dir with "
            f"model.init={folder / 'model.safetensors'}")


def _fit_in_folder(recipe: Recipe, info: DistInfo, pre: PreflightResult,
                   resume: bool) -> dict[str, Any]:
    """Train ``recipe`` inside its locked run folder (see :func:`fit`)."""
    with run_folder(recipe, resume, info):
        done = recipe.out_dir / SUMMARY
        if resume and done.is_file() and latest_checkpoint(recipe.out_dir) is None:
            # Finished, resume state pruned: nothing to train, the artifact is there.
            return json.loads(done.read_text(encoding="utf-8"))
        # Every data-dependent check runs while building the trainer, before any write.
        trainer = Trainer(recipe, info, pre, resume)
        start_run_dir(recipe, info)
        try:
            trainer.open_log()
            if trainer.state.epoch >= recipe.optim.last_epoch:
                return trainer.finish()
            return trainer.run()
        finally:
            # Before run_folder removes a failed new run: TensorBoard's writer thread
            # would otherwise write into the deleted folder and print a traceback.
            trainer.close_log()


def _run(args: argparse.Namespace) -> int:
    if args.command == "fit":
        summary = fit(args.recipe, args.overrides, args.resume)
        if int(os.environ.get("RANK", "0")) != 0:
            return 0
        final = summary.get("final_val", {})
        shown = {k: final[k] for k in ("miou", "tc") if k in final}
        print(f"[ssp_train] done: {summary['epochs']} epochs, {summary['steps']} steps, "
              f"val {shown}", flush=True)
    elif args.command == "check":
        recipe = load_recipe(args.recipe, args.overrides)
        pre = preflight(recipe, world_size=int(os.environ.get("WORLD_SIZE", "1")))
        print(f"[ssp_train] {recipe.name}: OK ({pre.describe()})")
    elif args.command == "keys":
        from .recipe_keys import format_keys, recipe_keys
        print(format_keys(recipe_keys()), end="")
    elif args.command == "pipeline":
        from .pipeline import pipeline_from_args
        pipeline_from_args(args, fit)
    else:
        from .logits import export_from_args
        export_from_args(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``ssp_train`` command line; return the process exit code."""
    args = build_parser().parse_args(argv)
    # RecipeError and ArtifactError are ValueErrors: bad input, explained, no traceback.
    return run_main(lambda: _run(args), "ssp_train",
                    usage_errors=(ValueError, OSError, CheckpointError),
                    runtime_errors=(DivergedError,),
                    interrupted=interrupted_note(args.command))


__all__ = ["DivergedError", "Trainer", "TrainState", "build_task", "fit", "init_weights", "main"]

if __name__ == "__main__":
    sys.exit(main())
