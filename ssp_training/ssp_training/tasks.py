"""Training tasks: turn a model's outputs and a batch into named losses (``loss`` is the total).

A task is a callable ``task(outputs, batch) -> dict[str, Tensor]``; ``outputs`` comes from the
model kind's ``forward`` (``out`` and, for video kinds, ``prev_logits``). The supervised tasks
live here; the distillation tasks live in :mod:`ssp_training.kd`. Flow for the TC loss comes
from :class:`BatchFlow`: the dataset's ground-truth flow or a provider run on the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .flow import batch_flow, create_flow_provider, FlowProvider, RAFTFlow
from .losses import cross_entropy, photometric_weight, temporal_consistency_loss
from .recipes import LossRecipe


@dataclass
class BatchFlow:
    """Optical flow between a batch's previous and current frames, from one source."""

    source: str
    """"gt" (read ``flow``/``occlusion`` from the batch) or a provider name."""
    provider: FlowProvider | None = None
    """The provider for non-"gt" sources."""

    @classmethod
    def create(cls, source: str, weights: str = "", iterations: int = 20,
               device: str = "cpu") -> BatchFlow:
        """Return the flow source a recipe names (providers are built once, here)."""
        if source == "gt":
            return cls("gt")
        return cls(source, create_flow_provider(source, weights or None, iterations=iterations,
                                                device=device))

    def backward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (flow current -> previous (B, 2, H, W), visible (B, 1, H, W) or None).

        ``visible`` is the ground truth's non-occlusion mask when the dataset has one.
        """
        if self.source == "gt":
            if "flow" not in batch:
                raise KeyError("flow source 'gt' but the batch has no 'flow': build the dataset "
                               "with with_flow=True (synthetic data has ground-truth flow)")
            visible = None
            if "occlusion" in batch:
                visible = (batch["occlusion"] < 0.5).unsqueeze(1) \
                    if batch["occlusion"].dim() == 3 else batch["occlusion"] < 0.5
            return batch["flow"].float(), visible
        return self._estimate(batch, "_flow_bwd", "image", "prev_image"), None

    def both(self, batch: dict, iterations: int | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (Fb current -> previous, Ff previous -> current), each (B, 2, H, W).

        With "gt" the batch must carry ``flow`` and ``flow_forward``; otherwise the provider
        runs both ways (RAFT with ``iterations`` refinements when given).
        """
        if self.source == "gt":
            for key in ("flow", "flow_forward"):
                if key not in batch:
                    raise KeyError(f"flow source 'gt' for the KD fusion needs {key!r} in the "
                                   "batch; use loss.flow: dis instead")
            fb, ff = batch["flow"].float(), batch["flow_forward"].float()
        else:
            fb = self._estimate(batch, "_flow_bwd", "image", "prev_image", iterations)
            ff = self._estimate(batch, "_flow_fwd", "prev_image", "image", iterations)
        return fb, ff

    def _estimate(self, batch: dict, key: str, a: str, b: str,
                  iterations: int | None = None) -> torch.Tensor:
        # Cached in the batch: the KD fusion and the TC loss share a flow when they ask for
        # the same iterations (only RAFT has any; the key says which).
        if not isinstance(self.provider, RAFTFlow):
            iterations = None
        key = f"{key}_{iterations or 0}"
        if key not in batch:
            batch[key] = batch_flow(self.provider, batch[a], batch[b], iterations)
        return batch[key]


def tc_loss_term(outputs: dict, batch: dict, flow: BatchFlow, weight_norm: str) -> torch.Tensor:
    """Return the TC loss of SSP_SPEC §4.4 for a batch (``out`` vs warped ``prev_logits``)."""
    if "prev_logits" not in outputs:
        raise KeyError("the TC loss needs 'prev_logits' from the model's forward_pair")
    fb, visible = flow.backward(batch)
    weight = photometric_weight(batch["image"], batch["prev_image"], fb, weight_norm)
    if visible is not None:
        # Decision: where the dataset knows the occlusion exactly, occluded pixels get weight 0
        # on top of the photometric weight (which only estimates it).
        weight = weight * visible.to(weight.dtype)
    return temporal_consistency_loss(outputs["out"], outputs["prev_logits"], fb, weight)


class SupervisedTask:
    """CE on the current frame's label, plus λ·TC loss for SSP (SSP_SPEC §4.1, §4.4)."""

    def __init__(self, loss: LossRecipe, flow: BatchFlow | None) -> None:
        """Use ``loss.kind`` "ce" or "ssp"; ``flow`` is needed when the TC weight is > 0."""
        if loss.kind not in ("ce", "ssp"):
            raise ValueError(f"SupervisedTask handles loss kinds ce and ssp, not {loss.kind!r}")
        self.cfg = loss
        self.use_tc = loss.kind == "ssp" and loss.tc_weight > 0
        if self.use_tc and flow is None:
            raise ValueError("the TC loss needs a flow source")
        self.flow = flow

    def __call__(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        """Return {"loss", "ce"[, "tc"]} for one batch."""
        ce = cross_entropy(outputs["out"], batch["label"])
        losses = {"ce": ce}
        total = ce
        if self.use_tc:
            tc = tc_loss_term(outputs, batch, self.flow, self.cfg.tc_weight_norm)
            losses["tc"] = tc
            total = total + self.cfg.tc_weight * tc
        losses["loss"] = total
        return losses
