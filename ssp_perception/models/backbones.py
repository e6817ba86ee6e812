"""timm backbones through ``features_only`` (pretrained weights: ``models/pretrained.py``)."""

from __future__ import annotations

from collections.abc import Sequence
import functools

import timm
import torch
from torch import nn

STRIDES = (4, 8, 16, 32)


@functools.lru_cache(maxsize=None)
def stage_strides(name: str) -> tuple[int, ...] | None:
    """Return the stride of each feature stage timm's ``name`` offers (None if it says not).

    The network is built on the meta device: no memory, no weights, milliseconds.
    """
    try:
        with torch.device("meta"):
            net = timm.create_model(name, pretrained=False)
    except RuntimeError as err:  # timm raises RuntimeError("Unknown model ...")
        raise ValueError(f"cannot build timm backbone {name!r}: {err}") from None
    info = getattr(net, "feature_info", None)
    try:
        return tuple(int(f["reduction"]) for f in info)
    except (TypeError, KeyError, ValueError):
        return None


def check_feature_indices(name: str, indices: Sequence[int]) -> None:
    """Raise ``ValueError`` unless ``indices`` pick four stages of strides 4..32 of ``name``."""
    strides = stage_strides(name)
    if strides is None:
        return   # no feature_info to check against: the build itself decides
    indices = tuple(indices)
    fits = [strides.index(s) for s in STRIDES if s in strides]
    hint = (f"; the stages of strides {', '.join(map(str, STRIDES))} are feature_indices "
            f"{fits}" if len(fits) == len(STRIDES) else "")
    if any(not 0 <= i < len(strides) for i in indices):
        raise ValueError(f"feature_indices {list(indices)} do not fit backbone {name!r}: it has "
                         f"{len(strides)} feature stages (indices 0..{len(strides) - 1}, strides "
                         f"{', '.join(map(str, strides))}){hint}")
    picked = tuple(strides[i] for i in indices)
    if picked != STRIDES:
        raise ValueError(f"backbone {name!r} with feature_indices {list(indices)} gives strides "
                         f"{picked}; the UperNet head needs {STRIDES}{hint}")


class Backbone(nn.Module):
    """Wrap a timm ``features_only`` model that returns 4 maps at strides 4, 8, 16 and 32."""

    def __init__(self, name: str, out_indices: Sequence[int]) -> None:
        super().__init__()
        check_feature_indices(name, out_indices)   # before timm indexes its stages with them
        try:
            # pretrained=False always: weights come only from a user-given file (no downloads).
            self.body = timm.create_model(name, pretrained=False, features_only=True,
                                          out_indices=tuple(out_indices))
        except RuntimeError as err:  # timm raises RuntimeError("Unknown model ...")
            raise ValueError(f"cannot build timm backbone {name!r}: {err}") from err
        strides = tuple(self.body.feature_info.reduction())
        if strides != STRIDES:
            raise ValueError(
                f"backbone {name!r} with feature_indices {tuple(out_indices)} gives strides "
                f"{strides}; the UperNet head needs {STRIDES} (pick other feature_indices)")
        self.name = name
        self.channels: tuple[int, ...] = tuple(self.body.feature_info.channels())
        self.strides = STRIDES

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the 4 feature maps [(B, c_i, H/s_i, W/s_i) for s_i in 4, 8, 16, 32]."""
        return list(self.body(x))

    def trunk(self) -> nn.Module:
        """Return the wrapped timm network whose state dict matches the timm checkpoint keys."""
        # Hiera uses timm's FeatureGetterNet, which keeps the original model under ``.model``;
        # other families (e.g. MobileNet) are rebuilt in place and need no prefix.
        return getattr(self.body, "model", self.body)


def is_sam2_hiera(name: str) -> bool:
    """Return True if ``name`` is one of timm's SAM2 Hiera (HieraDet) backbones."""
    return name.startswith("sam2_hiera")
