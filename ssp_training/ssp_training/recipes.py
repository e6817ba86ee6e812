"""Typed training recipes: frozen dataclasses loaded from YAML, unknown keys are errors.

A recipe file holds the sections ``model``, ``data``, ``loss``, ``optim``, ``val`` and ``run``
plus a ``name``. ``extends: other.yaml`` (a path relative to the file) deep-merges the file over
another recipe, so an ablation states only what it changes. Command-line overrides use dotted
keys (``optim.lr=1e-4``, ``data.root=/data/uavid``) whose values are parsed as YAML scalars.

Only the shape and internal consistency of a recipe are checked here; whether the dataset,
checkpoints and teacher logits it names exist and agree with it is checked by
``ssp_training.train.preflight`` before any training starts.

Example::

    >>> r = load_recipe("ssp_training/configs/synth_lite_image.yaml",
    ...                 overrides=["optim.lr=1e-3"])        # doctest: +SKIP
    >>> r.optim.lr
    0.001
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
from dataclasses import dataclass, field
import math
from pathlib import Path
import typing
from typing import Any, Mapping

from ssp_perception.config import ModelConfig, preset, PRESETS
from ssp_perception.registration import RegistrationConfig
import yaml

from .flow import FLOW_SOURCES
from .losses import KL_REDUCTIONS, WEIGHT_NORMS
from .model_kinds import get_model_kind

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
LOSS_KINDS = ("ce", "ssp", "kd_image", "kd_ssp")
HOMOGRAPHY_SOURCES = ("dataset", "registrator", "identity")
AMP_MODES = ("auto", "off", "bf16", "fp16")
SIZE_MULTIPLE = 32


class RecipeError(ValueError):
    """A recipe is malformed or inconsistent; the message says what to fix."""


def _fail(section: str, msg: str) -> None:
    raise RecipeError(f"recipe {section}: {msg}")


def _check_size(section: str, name: str, value: tuple[int, ...], allow_empty: bool) -> None:
    if allow_empty and not value:
        return
    if (len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value)
            or any(v % SIZE_MULTIPLE for v in value)):
        _fail(section, f"{name} must be [H, W], positive multiples of {SIZE_MULTIPLE}"
                       f"{' (or [] for none)' if allow_empty else ''}, got {list(value)}")


@dataclass(frozen=True)
class ModelRecipe:
    """Which network to train and where its weights start."""

    kind: str = "image"
    """Model kind: "image", "ssp", or a kind registered by ``register_model_kind`` (baselines)."""
    preset: str = "lite"
    """``ssp_perception.config.PRESETS`` name ("hiera_s", "hiera_bplus", "lite")."""
    config: Mapping[str, Any] = field(default_factory=dict)
    """``ModelConfig`` overrides (e.g. ``sim_op: cosine``); num_classes comes from data."""
    init: str = ""
    """Artifact to start from: a trained image model for SSP (strict), or same-kind weights."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Settings of the model kind itself (e.g. a baseline's ``flow``); checked by the kind."""
    backbone_weights: str = ""
    """Pretrained backbone file (SAM2 ``sam2_hiera_small.pt`` or a timm state dict); "" = none."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            _fail("model", f"preset {self.preset!r} is not one of {sorted(PRESETS)}")
        if not isinstance(self.config, Mapping):
            _fail("model", f"config must be a mapping of ModelConfig overrides, "
                           f"got {self.config!r}")
        if "num_classes" in self.config:
            _fail("model", "config.num_classes is set from data.num_classes; remove it")
        object.__setattr__(self, "config", dict(self.config))
        object.__setattr__(self, "options", dict(self.options))
        if self.init and self.backbone_weights:
            _fail("model", "set either init (a trained artifact holding every weight) or "
                           "backbone_weights (pretrained backbone only), not both")

    def model_config(self, num_classes: int, input_size: tuple[int, int]) -> ModelConfig:
        """Return the resolved ``ModelConfig`` for ``num_classes`` classes at ``input_size``."""
        try:
            return preset(self.preset, num_classes=num_classes, input_size=tuple(input_size),
                          **self.config)
        except ValueError as err:
            raise RecipeError(f"recipe model.config: {err}") from None


@dataclass(frozen=True)
class DataRecipe:
    """Where the data is and how samples are made (dataset layout: docs/DATA_FORMAT.md)."""

    root: str = ""
    """Dataset root holding dataset.json, train.txt, val.txt and data/ (required)."""
    num_classes: int = 0
    """Number of classes C; must match the dataset's class set (required)."""
    class_set: str = ""
    """Expected class-set name in dataset.json ("uavid", "ruralscapes", ...); "" = any."""
    size: tuple[int, ...] = (736, 1280)
    """Working size [H, W] every frame and mask is resized to on load (SSP_SPEC §6.4)."""
    crop: tuple[int, ...] = ()
    """Random training crop [H, W]; [] trains on the whole frame."""
    square_crop: bool = False
    """Take a random square crop of side min(H, W) (video models and the teacher)."""
    augment: bool = True
    """Geometric + photometric augmentation of SSP_SPEC §5.4."""
    workers: int = 2
    """DataLoader worker processes per rank (0 = load in the training process)."""
    homography: str = "dataset"
    """Video pairs' homography: "dataset" (registration/*.npy), "registrator", "identity"."""
    registration: Mapping[str, Any] = field(default_factory=dict)
    """``RegistrationConfig`` overrides used when homography is "registrator"."""
    teacher_logits: str = ""
    """Folder of exported teacher logits (KD recipes; written by ``ssp_train export-logits``)."""
    kd_frame_step: int = 2
    """KD pairs use frames j = 1, 1+k, 1+2k, ... with j-1 (SSP_SPEC §6.4, k = 2)."""

    def __post_init__(self) -> None:
        for name in ("size", "crop"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.root:
            _fail("data", "root is required: the dataset folder with dataset.json "
                          "(e.g. data.root=datasets/synth)")
        if not isinstance(self.num_classes, int) or not 1 <= self.num_classes <= 254:
            _fail("data", f"num_classes must be an integer in 1..254, got {self.num_classes!r}")
        _check_size("data", "size", self.size, allow_empty=False)
        _check_size("data", "crop", self.crop, allow_empty=True)
        if self.crop and (self.crop[0] > self.size[0] or self.crop[1] > self.size[1]):
            _fail("data", f"crop {list(self.crop)} is larger than size {list(self.size)}")
        if self.crop and self.square_crop:
            _fail("data", "crop and square_crop are exclusive; use one of them")
        if self.workers < 0:
            _fail("data", f"workers must be >= 0, got {self.workers}")
        if self.homography not in HOMOGRAPHY_SOURCES:
            _fail("data", f"homography {self.homography!r} is not one of {HOMOGRAPHY_SOURCES}")
        try:
            RegistrationConfig(**dict(self.registration))
        except (TypeError, ValueError) as err:
            _fail("data", f"registration: {err}")
        object.__setattr__(self, "registration", dict(self.registration))
        if self.kd_frame_step < 1:
            _fail("data", f"kd_frame_step must be >= 1, got {self.kd_frame_step}")

    @property
    def train_size(self) -> tuple[int, int]:
        """Return the (H, W) of training samples after cropping."""
        if self.crop:
            return self.crop[0], self.crop[1]
        if self.square_crop:
            side = min(self.size)
            return side, side
        return self.size[0], self.size[1]


@dataclass(frozen=True)
class LossRecipe:
    """Which loss and its weights (SSP_SPEC §4)."""

    kind: str = "ce"
    """"ce" (image models, baselines), "ssp" (CE + λ·TC), "kd_image" (KL), "kd_ssp" (§4.5)."""
    tc_weight: float = 0.5
    """λ of the TC loss for "ssp"; for "kd_ssp" λ_KD (0.25 = Ref's 135000/736², per-pixel KL)."""
    tc_weight_norm: str = "l1"
    """Photometric weight of the TC loss: "l1" (ours) or "channel_sum" (Ref, SSP_SPEC §12.2)."""
    kd_temperature: float = 2.0
    """Distillation temperature T."""
    kd_reduction: str = "pixelmean"
    """KL reduction: "pixelmean" (ours) or "batchmean" (Ref, O(H·W); SSP_SPEC §12.5)."""
    kd_prev_weight: float = 1.0
    """Weight of the previous-frame KL term in KD-SSP (Ref ``last_out_loss_lb``)."""
    kd_consistent_labels: bool = True
    """Fuse teacher logits of the two frames with the forward-backward occlusion test."""
    kd_compose_flows: bool = True
    """Compose flows in the occlusion test (ours); False adds them at one pixel (Ref §12.3)."""
    flow: str = "dis"
    """Flow source for the TC loss and KD fusion: "gt" (dataset), "dis", "raft"."""
    flow_weights: str = ""
    """RAFT weights (path or "download") when flow is "raft"."""
    flow_iterations: int = 20
    """RAFT refinement iterations (20 for the TC loss in Ref, 15 for the KD fusion)."""

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            _fail("loss", f"kind {self.kind!r} is not one of {LOSS_KINDS}")
        if self.tc_weight < 0:
            _fail("loss", f"tc_weight must be >= 0, got {self.tc_weight}")
        if self.tc_weight_norm not in WEIGHT_NORMS:
            _fail("loss", f"tc_weight_norm {self.tc_weight_norm!r} is not one of {WEIGHT_NORMS}")
        if self.kd_temperature <= 0:
            _fail("loss", f"kd_temperature must be positive, got {self.kd_temperature}")
        if self.kd_reduction not in KL_REDUCTIONS:
            _fail("loss", f"kd_reduction {self.kd_reduction!r} is not one of {KL_REDUCTIONS}")
        if self.kd_prev_weight < 0:
            _fail("loss", f"kd_prev_weight must be >= 0, got {self.kd_prev_weight}")
        if self.flow not in FLOW_SOURCES:
            _fail("loss", f"flow {self.flow!r} is not one of {FLOW_SOURCES}")
        if self.flow == "raft" and not self.flow_weights:
            _fail("loss", "flow 'raft' needs flow_weights (a raft_large state dict or "
                          "'download'); use flow: dis to stay offline")
        if self.flow_iterations < 1:
            _fail("loss", f"flow_iterations must be >= 1, got {self.flow_iterations}")

    @property
    def uses_flow(self) -> bool:
        """Return whether this loss needs optical flow during training."""
        return ((self.kind == "ssp" and self.tc_weight > 0)
                or (self.kind == "kd_ssp" and (self.tc_weight > 0 or self.kd_consistent_labels)))

    @property
    def uses_teacher(self) -> bool:
        """Return whether this loss reads teacher logits."""
        return self.kind in ("kd_image", "kd_ssp")


@dataclass(frozen=True)
class OptimRecipe:
    """AdamW + warm-up/cosine schedule (SSP_SPEC §5.1) and the batch arithmetic."""

    lr: float = 2.5e-5
    """Base learning rate."""
    weight_decay: float = 0.05
    """AdamW weight decay (one parameter group, as in Ref)."""
    batch_size: int = 4
    """Global batch per optimiser step (all ranks × grad_accum × per-rank batch)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimiser step."""
    epochs: int = 250
    """Schedule length in epochs (Ref ``num_epochs``): where the cosine ends."""
    stop_epoch: int = 0
    """Stop training after this many epochs (Ref ``early_stopping``); 0 = ``epochs``."""
    warmup_epochs: float = 2.0
    """Linear warm-up length in epochs."""
    start_factor: float = 1e-4
    """LR multiplier at step 0."""
    final_factor: float = 1e-4
    """Floor of the cosine LR multiplier."""
    amp: str = "auto"
    """Mixed precision: "auto" (bf16 on GPUs that have it, else fp16; off on CPU), "off", ..."""
    clip_grad_norm: float = 0.0
    """Clip the gradient norm to this value; 0 = no clipping (Ref)."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            _fail("optim", f"lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            _fail("optim", f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.batch_size < 1 or self.grad_accum < 1:
            _fail("optim", f"batch_size and grad_accum must be >= 1, got {self.batch_size} "
                           f"and {self.grad_accum}")
        if self.batch_size % self.grad_accum:
            _fail("optim", f"batch_size {self.batch_size} is not divisible by grad_accum "
                           f"{self.grad_accum}")
        if self.epochs < 1:
            _fail("optim", f"epochs must be >= 1, got {self.epochs}")
        if not 0 <= self.stop_epoch <= self.epochs:
            _fail("optim", f"stop_epoch must be in 0..epochs ({self.epochs}), "
                           f"got {self.stop_epoch}")
        if not 0 <= self.warmup_epochs < self.epochs:
            _fail("optim", f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs}")
        if self.amp not in AMP_MODES:
            _fail("optim", f"amp {self.amp!r} is not one of {AMP_MODES}")
        if self.clip_grad_norm < 0:
            _fail("optim", f"clip_grad_norm must be >= 0, got {self.clip_grad_norm}")

    @property
    def last_epoch(self) -> int:
        """Return the number of epochs actually trained."""
        return self.stop_epoch or self.epochs


@dataclass(frozen=True)
class ValRecipe:
    """Validation during training: mIoU on labelled frames, TC over whole clips."""

    every: int = 1
    """Validate every N epochs (and always after the last one); 0 = only after the last one."""
    split: str = "val"
    """Split file name (val.txt)."""
    max_clips: int = 0
    """Validate on the first N clips only (0 = all)."""
    max_frames: int = 0
    """Use the first N frames of each clip (0 = all)."""
    tc: bool = True
    """Also compute TC (SSP_SPEC §7.3; out-of-view pixels ignored)."""
    flow: str = "gt"
    """Flow source for TC: "gt" (dataset flow, synthetic), "dis", "raft"."""
    flow_weights: str = ""
    """RAFT weights when flow is "raft"."""

    def __post_init__(self) -> None:
        if self.every < 0 or self.max_clips < 0 or self.max_frames < 0:
            _fail("val", "every, max_clips and max_frames must be >= 0")
        if not self.split:
            _fail("val", "split must name a split file (e.g. val)")
        if self.flow not in FLOW_SOURCES:
            _fail("val", f"flow {self.flow!r} is not one of {FLOW_SOURCES}")
        if self.flow == "raft" and not self.flow_weights:
            _fail("val", "flow 'raft' needs flow_weights; use 'dis' or 'gt' to stay offline")


@dataclass(frozen=True)
class RunRecipe:
    """Where outputs go and how the process runs."""

    out_dir: str = ""
    """Run folder; "" = runs/<recipe name>."""
    seed: int = 0
    """Seed of model init, sampling order and augmentation (runs are reproducible per seed)."""
    device: str = "auto"
    """"auto" (cuda when available), "cpu", "cuda", "cuda:1", ..."""
    log_every: int = 10
    """Write a metrics row every N optimiser steps."""
    threads: int = 0
    """torch CPU threads per process (0 = torch default)."""
    save_half: bool = False
    """Write the final artifact in fp16 (half the size; the demo checkpoint uses it)."""
    plot: bool = True
    """Plot the loss/LR/validation curves to curves.png at the end."""

    def __post_init__(self) -> None:
        if self.log_every < 1:
            _fail("run", f"log_every must be >= 1, got {self.log_every}")
        if self.threads < 0:
            _fail("run", f"threads must be >= 0, got {self.threads}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            _fail("run", f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass(frozen=True)
class Recipe:
    """One training run: model, data, loss, optimiser, validation and run settings."""

    name: str
    """Short name; the default run folder is runs/<name>."""
    data: DataRecipe
    """Dataset section (root and num_classes are required)."""
    model: ModelRecipe = field(default_factory=ModelRecipe)
    """Model section."""
    loss: LossRecipe = field(default_factory=LossRecipe)
    """Loss section."""
    optim: OptimRecipe = field(default_factory=OptimRecipe)
    """Optimiser and schedule section."""
    val: ValRecipe = field(default_factory=ValRecipe)
    """Validation section."""
    run: RunRecipe = field(default_factory=RunRecipe)
    """Run section."""
    description: str = ""
    """One line on what this recipe reproduces."""

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "._-" for c in self.name):
            _fail("name", f"name must be non-empty [A-Za-z0-9._-], got {self.name!r}")
        try:
            kind = get_model_kind(self.model.kind)
        except ValueError as err:
            raise RecipeError(f"recipe model.kind: {err}") from None
        if self.model.options:
            if kind.check_options is None:
                _fail("model", f"options: model kind {kind.name!r} takes none; remove "
                               f"model.options ({sorted(self.model.options)})")
            try:
                kind.check_options(self.model.options)
            except (TypeError, ValueError) as err:
                _fail("model", f"options for {kind.name!r}: {err}")
        video_loss = self.loss.kind in ("ssp", "kd_ssp")
        if video_loss and not kind.video:
            _fail("loss", f"loss {self.loss.kind!r} trains on frame pairs and needs a video "
                          f"model (e.g. model.kind: ssp), not {kind.name!r}; use loss.kind ce "
                          "or kd_image for an image model")
        if self.model.kind == "ssp" and self.loss.kind in ("ce", "kd_image"):
            _fail("loss", f"model.kind ssp is trained with loss.kind ssp or kd_ssp, not "
                          f"{self.loss.kind!r} (λ=0 gives CE only: loss.tc_weight: 0)")
        if self.loss.uses_teacher and not self.data.teacher_logits:
            _fail("data", f"loss {self.loss.kind!r} needs data.teacher_logits (the folder "
                          "written by 'ssp_train export-logits')")
        # Resolving the model config validates the preset overrides against the data.
        self.model_config()

    def model_config(self) -> ModelConfig:
        """Return the resolved ``ModelConfig`` (classes and input size from the data section)."""
        size = self.data.size
        return self.model.model_config(self.data.num_classes, (size[0], size[1]))

    @property
    def out_dir(self) -> Path:
        """Return the run folder."""
        return Path(self.run.out_dir or f"runs/{self.name}")

    def to_dict(self) -> dict[str, Any]:
        """Return the plain-YAML form (tuples as lists); ``recipe_from_dict`` inverts it."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, recursing into nested sections."""
    if not isinstance(data, Mapping):
        raise RecipeError(f"recipe {where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RecipeError(f"recipe {where}: unknown key(s) {unknown}; allowed: "
                          f"{sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}" if where else name)
    missing = [n for n, f in fields.items() if n not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise RecipeError(f"recipe {where or 'top level'}: missing required key(s) {missing}")
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise RecipeError(f"recipe {where}: {err}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Check ``value`` against the field type ``hint`` (YAML gives ints for floats etc.)."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    origin = typing.get_origin(hint)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"recipe {where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise RecipeError(f"recipe {where}: expected a finite number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"recipe {where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"recipe {where}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise RecipeError(f"recipe {where}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"recipe {where}: expected a list, got {value!r}")
        item = typing.get_args(hint)[0]
        return tuple(_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (collections.abc.Mapping, dict):
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise RecipeError(f"recipe {where}: expected a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"recipe field {where} has a type the loader does not handle: {hint}")


def recipe_from_dict(data: Mapping[str, Any]) -> Recipe:
    """Return a validated :class:`Recipe` from a plain mapping (unknown keys are errors)."""
    return _build(Recipe, data, "")


def _deep_merge(base: dict, over: Mapping) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_recipe_dict(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Return the raw mapping of a recipe file with its ``extends`` chain merged in."""
    path = Path(path).resolve()
    if not path.is_file():
        raise RecipeError(f"recipe file {path} not found (shipped recipes live in {CONFIG_DIR})")
    if path in _seen:
        raise RecipeError(f"recipe {path}: 'extends' loops back to itself")
    with path.open(encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise RecipeError(f"recipe {path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path}: expected a mapping at the top level")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise RecipeError(f"recipe {path}: extends must be a file name, got {parent!r}")
    base = read_recipe_dict(path.parent / parent, _seen + (path,))
    return _deep_merge(base, data)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return ``data`` with dotted ``key=value`` overrides applied (values parsed as YAML)."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {item!r} must look like section.key=value "
                              "(e.g. optim.lr=1e-4)")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as err:
            raise RecipeError(f"override {item!r}: value is not valid YAML: {err}") from None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return out


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Return the validated recipe in ``path`` with ``overrides`` applied."""
    data = apply_overrides(read_recipe_dict(path), list(overrides or []))
    return recipe_from_dict(data)


def shipped_recipes() -> list[Path]:
    """Return every recipe file shipped under ``ssp_training/configs``."""
    return sorted(CONFIG_DIR.glob("*.yaml"))


def dump_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the resolved recipe as YAML, atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False), encoding="utf-8")
    tmp.replace(path)
