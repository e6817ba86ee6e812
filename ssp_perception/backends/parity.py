"""Numerical parity of two backends over a short recurrent sequence (export checks, tests).

The sequence is what a stream does: frame 0 through ``image_step`` and through ``ssp_step``
with zero state and ``use_prev = 0``; frames 1.. through ``ssp_step`` with the real
previous -> current homography, ``use_prev = 1`` and each backend's **own** state from the step
before (errors that compound through the state are part of what is measured). Frames are the
synthetic moving-camera views of ``ssp_bench``, so the warp moves real texture.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .base import Backend
from ..synthetic import synthetic_frames


@dataclass(frozen=True)
class StepParity:
    """Compare one step's outputs: the largest absolute differences and the label agreement."""

    step: str
    """Which call: "image" (image_step), "ssp0" (first frame, use_prev = 0), "ssp<k>" (k >= 1)."""
    max_abs_diff: dict[str, float]
    """Output name -> max |reference - candidate| over all elements."""
    label_agreement: float
    """Share of pixels whose argmax class is the same in both (1.0 = identical labels)."""
    reference_nonfinite: dict[str, int] = field(default_factory=dict)
    """Output name -> count of NaN/inf values in the reference's output (only those > 0)."""
    candidate_nonfinite: dict[str, int] = field(default_factory=dict)
    """Output name -> count of NaN/inf values in the candidate's output (only those > 0)."""

    def passed(self, atol: float, min_agreement: float) -> bool:
        """Return whether every difference is <= ``atol`` and labels agree >= ``min_agreement``."""
        return (not self.reference_nonfinite and not self.candidate_nonfinite
                and all(v <= atol for v in self.max_abs_diff.values())
                and self.label_agreement >= min_agreement)

    def to_dict(self) -> dict:
        """Return plain JSON."""
        return asdict(self)


def normalise_frame(frame: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """Return the (1, 3, H, W) float32 network input of an (H, W, 3) uint8 RGB frame."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).unsqueeze(0).float()
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    return ((x / 255.0 - mean_t) / std_t).to(device)


def compare_backends(reference: Backend, candidate: Backend, input_size: tuple[int, int],
                     mean: tuple[float, ...], std: tuple[float, ...], steps: int = 2,
                     seed: int = 0) -> list[StepParity]:
    """Run both backends over ``steps`` synthetic frames; return the per-step comparison."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    frames = list(synthetic_frames(tuple(input_size), steps, seed=seed, speed=2.0))
    report = []
    states: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for k, (frame, homography) in enumerate(frames):
        outs = {}
        for i, backend in enumerate((reference, candidate)):
            x = normalise_frame(frame, mean, std, backend.device)
            h = torch.from_numpy(homography).float().unsqueeze(0).to(backend.device)
            with torch.inference_mode():
                if k == 0:
                    outs.setdefault("image", []).append(backend.image_step(x))
                    logits, feat = outs["image"][-1]
                    prev_l, prev_f = torch.zeros_like(logits), torch.zeros_like(feat)
                    use = torch.zeros(1, device=backend.device)
                else:
                    (prev_l, prev_f), use = states[i], torch.ones(1, device=backend.device)
                result = backend.ssp_step(x, prev_l, prev_f, h, use)
            backend.synchronize()
            outs.setdefault(f"ssp{k}", []).append(result)
            states[i] = (result[0], result[1])
        for step, (ref, cand) in outs.items():
            report.append(_compare(step, ref, cand))
    return report


def _compare(step: str, ref: tuple[torch.Tensor, ...],
             cand: tuple[torch.Tensor, ...]) -> StepParity:
    names = ("logits", "feat", "sim")
    diffs, bad_ref, bad_cand = {}, {}, {}
    for name, r, c in zip(names, ref, cand):
        r64, c64 = r.detach().double().cpu(), c.detach().double().cpu()
        if r64.shape != c64.shape:
            raise ValueError(f"{step}: {name} shapes differ: {tuple(r64.shape)} vs "
                             f"{tuple(c64.shape)}")
        diffs[name] = float((r64 - c64).abs().max())
        # NaN compares unequal to everything, so a NaN model must not pass on its labels.
        for bad, t in ((bad_ref, r64), (bad_cand, c64)):
            n = int((~torch.isfinite(t)).sum())
            if n:
                bad[name] = n
    agree = (ref[0].argmax(1).cpu() == cand[0].argmax(1).cpu()).double().mean()
    return StepParity(step=step, max_abs_diff=diffs, label_agreement=float(agree),
                      reference_nonfinite=bad_ref, candidate_nonfinite=bad_cand)


__all__ = ["StepParity", "compare_backends", "normalise_frame"]
