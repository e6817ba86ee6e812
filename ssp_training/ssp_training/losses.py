"""Training losses as pure functions (SSP_SPEC §4): CE, TC loss, KL distillation, KD fusion.

Every function takes tensors and returns a scalar tensor (or tensors), with no state and no
flow estimation inside: flows come from :mod:`ssp_training.flow` and are passed in.

Decisions on the Ref quirks of SSP_SPEC §12 that live here (each is also noted at its code).
The defaults below are ours; the paper recipes select Ref's behaviour wherever it is
selectable (``ssp_training.parity``, docs/TRAINING.md "The reference-parity profile"):

- §12.2 TC-loss occlusion weight: Ref uses ``|Σ_c diff_c|``. We default to the L1 norm
  ``Σ_c |diff_c|`` because a channel *sum* lets opposite colour changes cancel and trusts
  pixels that changed; ``weight_norm="channel_sum"`` reproduces Ref. The loss stays on logits
  with a nearest warp, as in Ref. New: pixels whose flow target leaves the image get weight 0
  (Ref compares them with zero-padded logits, which pulls border logits towards 0).
- §12.3 forward-backward test: composed flows by default (see ``flow.forward_backward_occlusion``).
- §12.4 one training step on the *raw* previous output while inference recurs on the *fused*
  one: kept as in Ref (the TC loss compares ``out_t`` with the warped raw ``y_{t-1}``), because
  the paper's numbers come from it; recurrent training would need sequences of frames.
- §12.5 KD loss scale: Ref's ``batchmean`` KL is a *sum* over pixels (O(H·W)), hence its
  λ_KD = 135000. We default to a per-pixel mean (``reduction="pixelmean"``), which makes the
  weights resolution independent: Ref's 135000 at its 736×736 crops equals
  135000 / 736² ≈ 0.249 here. ``reduction="batchmean"`` reproduces Ref.

Example::

    >>> import torch
    >>> logits = torch.zeros(1, 3, 4, 4); target = torch.zeros(1, 4, 4, dtype=torch.long)
    >>> round(float(cross_entropy(logits, target)), 4)   # log(3)
    1.0986
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .flow import in_view_mask, warp_with_flow

IGNORE_INDEX = 255
KD_TEMPERATURE = 2.0
WEIGHT_NORMS = ("l1", "channel_sum")
KL_REDUCTIONS = ("pixelmean", "batchmean")


def cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                  ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Return the mean cross-entropy over labelled pixels (SSP_SPEC §4.1).

    ``logits`` (B, C, H, W) full resolution, ``target`` (B, H, W) int64 with ``ignore_index``
    for unlabelled pixels. A batch with no labelled pixel gives 0 (with a graph), not NaN, so a
    fully-ignored crop cannot poison the weights.
    """
    if logits.dim() != 4 or target.shape != (logits.shape[0],) + logits.shape[2:]:
        raise ValueError(f"expected logits (B,C,H,W) and target (B,H,W), got "
                         f"{tuple(logits.shape)} and {tuple(target.shape)}")
    valid = target != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target, ignore_index=ignore_index)


def photometric_weight(image: torch.Tensor, prev_image: torch.Tensor, flow: torch.Tensor,
                       weight_norm: str = "l1") -> torch.Tensor:
    """Return the (B, 1, H, W) TC-loss weight ``exp(-|I_t - warp(I_{t-1}, F)|)``.

    Images are ImageNet-normalised (B, 3, H, W); ``flow`` (B, 2, H, W) maps the current frame to
    the previous one. ``weight_norm`` picks ``Σ_c |d_c|`` ("l1", ours) or ``|Σ_c d_c|``
    ("channel_sum", Ref; SSP_SPEC §12.2). Out-of-view pixels get weight 0 (our choice).
    """
    if weight_norm not in WEIGHT_NORMS:
        raise ValueError(f"weight_norm must be one of {WEIGHT_NORMS}, got {weight_norm!r}")
    with torch.no_grad():
        diff = image - warp_with_flow(prev_image, flow, mode="nearest")  # (B, 3, H, W)
        if weight_norm == "l1":
            err = diff.abs().sum(1, keepdim=True)
        else:
            err = diff.sum(1, keepdim=True).abs()
        return torch.exp(-err) * in_view_mask(flow).to(err.dtype)


def temporal_consistency_loss(out: torch.Tensor, prev_logits: torch.Tensor,
                              flow: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Return the TC loss ``mean_{B,C,H,W} W · (out_t - warp(y_{t-1}, F))²`` (SSP_SPEC §4.4).

    ``out`` (B, C, H, W) fused current logits, ``prev_logits`` (B, C, H, W) the raw previous
    image-model logits, ``flow`` (B, 2, H, W) current -> previous, ``weight`` (B, 1, H, W) from
    :func:`photometric_weight` (optionally times a ground-truth visibility mask). Squared L2 on
    logits, nearest warp; gradients reach both terms, as in Ref.
    """
    warped = warp_with_flow(prev_logits.float(), flow, mode="nearest")
    return (weight * (out.float() - warped).pow(2)).mean()


def kl_distillation(student: torch.Tensor, teacher: torch.Tensor,
                    temperature: float = KD_TEMPERATURE,
                    reduction: str = "pixelmean") -> torch.Tensor:
    """Return ``T² · KL(softmax(teacher/T) ‖ softmax(student/T))`` (SSP_SPEC §4.5).

    Both (B, C, H, W) logits. ``reduction="pixelmean"`` (ours) divides the sum over classes and
    pixels by B·H·W; ``"batchmean"`` divides by B only, like Ref's KLDivLoss (SSP_SPEC §12.5).
    The teacher gets no gradient.
    """
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"reduction must be one of {KL_REDUCTIONS}, got {reduction!r}")
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
                         "logits differ in shape")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    t = temperature
    log_p_t = F.log_softmax(teacher.detach().float() / t, dim=1)
    log_p_s = F.log_softmax(student.float() / t, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum()  # sum over B, C, H, W
    b, _, h, w = student.shape
    denom = b * h * w if reduction == "pixelmean" else b
    return kl * (t * t) / denom


def consistent_soft_labels(z_cur: torch.Tensor, z_prev: torch.Tensor,
                           flow_cur_to_prev: torch.Tensor, flow_prev_to_cur: torch.Tensor,
                           occ_cur: torch.Tensor, occ_prev: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return flow-consistent teacher logits ``(z̃_t, z̃_{t-1})`` (SSP_SPEC §4.5).

    ``z_cur``/``z_prev`` (B, C, H, W) teacher logits of frames t and t-1;
    ``flow_cur_to_prev`` (Fb) and ``flow_prev_to_cur`` (Ff) (B, 2, H, W); ``occ_cur`` and
    ``occ_prev`` (B, 1, H, W) bool occlusion masks of frame t's and frame t-1's pixels (from
    ``flow.forward_backward_occlusion``). At visible pixels the two frames' logits are averaged
    after a nearest warp; occluded pixels keep their own logits.

    Decision: Ref uses one mask for both frames (it tests ``Fb(p) + Ff(p)`` at the same pixel).
    We take each frame's own mask; passing the same mask twice reproduces Ref.
    """
    z_cur, z_prev = z_cur.detach().float(), z_prev.detach().float()
    prev_in_cur = warp_with_flow(z_prev, flow_cur_to_prev, mode="nearest")
    cur_in_prev = warp_with_flow(z_cur, flow_prev_to_cur, mode="nearest")
    fused_cur = torch.where(occ_cur, z_cur, 0.5 * (z_cur + prev_in_cur))
    fused_prev = torch.where(occ_prev, z_prev, 0.5 * (z_prev + cur_in_prev))
    return fused_cur, fused_prev
