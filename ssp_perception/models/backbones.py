"""timm backbones through ``features_only`` (pretrained weights: ``models/pretrained.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
from torch import nn

STRIDES = (4, 8, 16, 32)


class Backbone(nn.Module):
    """Wrap a timm ``features_only`` model that returns 4 maps at strides 4, 8, 16 and 32."""

    def __init__(self, name: str, out_indices: Sequence[int]) -> None:
        super().__init__()
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
