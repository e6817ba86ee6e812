"""Knowledge-distillation tasks (SSP_SPEC §4.5): KD image model and KD-SSP.

The teacher is not run here: its logits were exported once (``ssp_train export-logits``) and
arrive in the batch as ``teacher_logits`` (current frame) and ``prev_teacher_logits``
(previous frame), (B, C, H, W), already resized and augmented with the frames by the dataset.
Ground-truth labels are not used by either task (validation still uses them).

Returned named losses: ``kd`` (current frame), ``kd_prev`` (previous frame, KD-SSP), ``tc``
(TC loss, KD-SSP) and the weighted total ``loss``.
"""

from __future__ import annotations

import torch

from .flow import forward_backward_occlusion
from .losses import consistent_soft_labels, kl_distillation
from .recipes import LossRecipe
from .tasks import BatchFlow, tc_loss_term


def _teacher(batch: dict, key: str, like: torch.Tensor) -> torch.Tensor:
    if key not in batch:
        raise KeyError(f"KD batch has no {key!r}: the dataset must load teacher logits "
                       "(data.teacher_logits)")
    z = batch[key].to(like.device, torch.float32)
    if z.shape != like.shape:
        raise ValueError(f"teacher logits {tuple(z.shape)} do not match the student's "
                         f"{tuple(like.shape)}; were the logits exported for another class set?")
    return z


class KDImageTask:
    """KL(T) between the image model and the teacher on single frames ("KD Base Image Model")."""

    def __init__(self, loss: LossRecipe) -> None:
        """Use ``loss.kind`` "kd_image"."""
        if loss.kind != "kd_image":
            raise ValueError(f"KDImageTask handles loss kind kd_image, not {loss.kind!r}")
        self.cfg = loss

    def __call__(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        """Return {"loss", "kd"} for one batch."""
        out = outputs["out"]
        kd = kl_distillation(out, _teacher(batch, "teacher_logits", out),
                             self.cfg.kd_temperature, self.cfg.kd_reduction)
        return {"kd": kd, "loss": kd}


class KDSSPTask:
    """KD-SSP: KL to flow-consistent teacher logits on both frames + λ_KD·TC loss."""

    def __init__(self, loss: LossRecipe, flow: BatchFlow | None) -> None:
        """Use ``loss.kind`` "kd_ssp"; ``flow`` feeds the label fusion and the TC loss."""
        if loss.kind != "kd_ssp":
            raise ValueError(f"KDSSPTask handles loss kind kd_ssp, not {loss.kind!r}")
        if loss.uses_flow and flow is None:
            raise ValueError("KD-SSP with consistent labels or a TC loss needs a flow source")
        self.cfg = loss
        self.flow = flow

    def soft_labels(self, batch: dict, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the (current, previous) teacher targets, fused when configured."""
        z_cur = _teacher(batch, "teacher_logits", like)
        z_prev = _teacher(batch, "prev_teacher_logits", like)
        if not self.cfg.kd_consistent_labels:
            return z_cur, z_prev
        # Ref runs RAFT with 15 iterations here and 20 for the TC loss (SSP_SPEC §4.3).
        fb, ff = self.flow.both(batch, self.cfg.kd_flow_iterations)
        compose = self.cfg.kd_compose_flows
        occ_cur = forward_backward_occlusion(fb, ff, compose=compose)
        # Ref tests one mask for both frames; with composed flows each frame has its own.
        occ_prev = forward_backward_occlusion(ff, fb, compose=compose) if compose else occ_cur
        return consistent_soft_labels(z_cur, z_prev, fb, ff, occ_cur, occ_prev)

    def __call__(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        """Return {"loss", "kd", "kd_prev"[, "tc"]} for one batch."""
        out, prev = outputs["out"], outputs["prev_logits"]
        target_cur, target_prev = self.soft_labels(batch, out)
        t, red = self.cfg.kd_temperature, self.cfg.kd_reduction
        kd = kl_distillation(out, target_cur, t, red)
        kd_prev = kl_distillation(prev, target_prev, t, red)
        losses = {"kd": kd, "kd_prev": kd_prev}
        total = kd + self.cfg.kd_prev_weight * kd_prev
        if self.cfg.tc_weight > 0:
            tc = tc_loss_term(outputs, batch, self.flow, self.cfg.tc_weight_norm)
            losses["tc"] = tc
            total = total + self.cfg.tc_weight * tc
        losses["loss"] = total
        return losses
