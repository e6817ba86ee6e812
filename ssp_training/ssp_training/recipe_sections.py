"""The sections of a training recipe: one frozen dataclass each, validated on construction.

:mod:`ssp_training.recipes` assembles them into a :class:`~ssp_training.recipes.Recipe` and
reads them from YAML. Every field carries a one-line doc (the string under it); ``ssp_train
keys`` prints them with their types and defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ssp_perception.config import MAX_SIDE, ModelConfig, preset, PRESETS, SIZE_MULTIPLE
from ssp_perception.registration import RegistrationConfig
from ssp_perception.streaming import FAILURE_POLICIES

from .data.frames import LOGIT_UPSAMPLING
from .flow import FLOW_SOURCES
from .losses import KL_REDUCTIONS, WEIGHT_NORMS

LOSS_KINDS = ("ce", "ssp", "kd_image", "kd_ssp")
HOMOGRAPHY_SOURCES = ("dataset", "registrator", "identity")
AMP_MODES = ("auto", "off", "bf16", "fp16")
# Most previous frames of an unrolled SSP sample (data.unroll; T + 1 frames are loaded).
MAX_UNROLL = 8


class RecipeError(ValueError):
    """A recipe is malformed or inconsistent; the message says what to fix."""


def _fail(section: str, msg: str) -> None:
    raise RecipeError(f"recipe {section}: {msg}")


def _check_size(section: str, name: str, value: tuple[int, ...], allow_empty: bool) -> None:
    if allow_empty and not value:
        return
    if (len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                   and 0 < v <= MAX_SIDE for v in value)
            or any(v % SIZE_MULTIPLE for v in value)):
        _fail(section, f"{name} must be [H, W], positive multiples of {SIZE_MULTIPLE} up to "
                       f"{MAX_SIDE}{' (or [] for none)' if allow_empty else ''}, got "
                       f"{list(value)}")


@dataclass(frozen=True)
class ModelRecipe:
    """Which network to train and where its weights start."""

    kind: str = "image"
    """Model kind: "image", "ssp", or a baseline (``ssp_training.model_kinds.MODEL_KINDS``)."""
    preset: str = "lite"
    """``ssp_perception.config.PRESETS`` name ("hiera_s", "hiera_bplus", "lite")."""
    config: Mapping[str, Any] = field(default_factory=dict)
    """``ModelConfig`` overrides (e.g. ``sim_op: cosine``); num_classes comes from data."""
    init: str = ""
    """Artifact to start from: a trained image model for SSP (strict), or same-kind weights."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Settings of the model kind itself (baselines: ``BaselineConfig`` fields, e.g. flow)."""
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
    """Working size [H, W] every frame and mask is resized to on load (SSP_SPEC §6.4); sides
    are multiples of 32 up to 8192 (``ssp_perception.config.MAX_SIDE``)."""
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
    teacher_logits_upsample: str = "bilinear"
    """Teacher logits stored below the working size grow "bilinear" or "bicubic" (Ref, §4.5)."""
    kd_frame_step: int = 2
    """KD pairs use frames j = 1, 1+k, 1+2k, ... with j-1 (SSP_SPEC §6.4, k = 2)."""
    unroll: int = 1
    """SSP samples: 1 = frame pairs (SSP_SPEC §2.3, §6.4); T > 1 = T previous frames run
    through the recurrence, the last pair trained from the fused state (docs/TRAINING.md)."""

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
        if self.teacher_logits_upsample not in LOGIT_UPSAMPLING:
            _fail("data", f"teacher_logits_upsample {self.teacher_logits_upsample!r} is not one "
                          f"of {LOGIT_UPSAMPLING}")
        if self.kd_frame_step < 1:
            _fail("data", f"kd_frame_step must be >= 1, got {self.kd_frame_step}")
        if not 1 <= self.unroll <= MAX_UNROLL:
            _fail("data", f"unroll must be in 1..{MAX_UNROLL} (1 = frame pairs), got "
                          f"{self.unroll}")

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
    """RAFT refinement iterations of the TC-loss flow (20 in Ref, SSP_SPEC §4.4)."""
    kd_flow_iterations: int = 15
    """RAFT refinement iterations of the KD label-fusion flows (15 in Ref, SSP_SPEC §4.5)."""

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
        for name in ("flow_iterations", "kd_flow_iterations"):
            if getattr(self, name) < 1:
                _fail("loss", f"{name} must be >= 1, got {getattr(self, name)}")

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
    on_registration_failure: str = "identity"
    """SSP frames whose registration failed: "identity" (fuse unaligned; Ref and ``ssp_eval``'s
    default, SSP_SPEC §3.1 step 5) or "reset" (drop the state, as the node does)."""
    center_crop: bool = False
    """Validate on each frame's centre square crop of side min(H, W) (teacher, SSP_SPEC §1.2)."""

    def __post_init__(self) -> None:
        if self.on_registration_failure not in FAILURE_POLICIES:
            _fail("val", f"on_registration_failure {self.on_registration_failure!r} is not one "
                         f"of {FAILURE_POLICIES}")
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
    keep_resume_state: bool = False
    """Keep checkpoints/ (optimiser state for --resume) after the run finishes; else pruned."""

    def __post_init__(self) -> None:
        if self.log_every < 1:
            _fail("run", f"log_every must be >= 1, got {self.log_every}")
        if self.threads < 0:
            _fail("run", f"threads must be >= 0, got {self.threads}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            _fail("run", f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
