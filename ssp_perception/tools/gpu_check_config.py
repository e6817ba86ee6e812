"""The configuration of ``ssp_gpu_check``: what runs, how long, at which sizes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

DTYPES = ("float32", "bfloat16", "float16")
MODES = ("eager", "compile", "cuda_graphs")
KINDS = ("inference", "training", "registration", "onnxruntime")


@dataclass(frozen=True)
class CheckConfig:
    """Configure one GPU check (what runs, how long, at which sizes)."""

    device: str = "cuda"
    """Torch device of the models ("cuda" or "cpu")."""
    sizes: tuple[tuple[str, tuple[int, int]], ...] = (("hiera_s", (736, 1280)),
                                                      ("lite", (384, 640)))
    """(preset, network (H, W)) pairs of the inference parts; frames have the same size."""
    kinds: tuple[str, ...] = KINDS
    """Which kinds of part run (see the module docstring)."""
    dtypes: tuple[str, ...] = DTYPES
    """Compute precisions of the inference parts."""
    modes: tuple[str, ...] = MODES
    """Execution modes of the inference parts."""
    warmup: int = 10
    """Untimed iterations first (allocator, cuDNN, compilation, graph capture)."""
    iters: int = 50
    """Timed iterations (steps, stream frames, registrations); fewer if a budget runs out."""
    train_preset: str = "hiera_s"
    """Preset of the training part."""
    train_size: tuple[int, int] = (736, 736)
    """Training crop (H, W): the SSP UAVid recipe's square crops of 736x1280 frames."""
    train_batch: int = 4
    """Training batch size (the SSP UAVid recipe's)."""
    train_steps: int = 100
    """Timed AMP training steps."""
    train_warmup: int = 3
    """Untimed AMP training steps first."""
    part_budget_s: float = 45.0
    """Time budget of each part except compiled inference and training."""
    compile_budget_s: float = 100.0
    """Time budget of a ``torch.compile`` inference part (compilation included)."""
    train_budget_s: float = 90.0
    """Time budget of the training part (its subprocess start included)."""
    time_limit_s: float = 420.0
    """Time limit of the whole run; parts that would start after it are skipped."""
    quick: bool = False
    """CPU smoke mode: skips torch.compile (minutes on a CPU), everything else runs."""
    disk_weights: str = ""
    """DISK checkpoint for the kornia registrator; empty = random weights (timing only)."""
    lightglue_weights: str = ""
    """LightGlue-for-DISK checkpoint; empty = random weights (timing only)."""
    seed: int = 0
    """Seed of the random models and the synthetic camera."""

    def __post_init__(self) -> None:
        def fail(msg: str) -> None:
            raise ValueError(f"CheckConfig: {msg}")

        if torch.device(self.device).type not in ("cpu", "cuda"):
            fail(f"device must be cpu or cuda[:N], got {self.device!r}")
        for name, size in self.sizes:
            if len(size) != 2 or min(size) < 1:
                fail(f"size of {name} must be (H, W) with positive sides, got {size!r}")
        bad = ([d for d in self.dtypes if d not in DTYPES]
               + [m for m in self.modes if m not in MODES]
               + [k for k in self.kinds if k not in KINDS])
        if bad:
            fail(f"unknown precisions, modes or parts {bad}; known: {DTYPES}, {MODES} and "
                 f"{KINDS}")
        if min(self.warmup, self.train_batch - 1, self.iters - 1, self.train_steps - 1) < 0:
            fail("need warmup >= 0, iters >= 1, train_batch >= 1 and train_steps >= 1")

    @classmethod
    def quick_cpu(cls, **overrides: Any) -> CheckConfig:
        """Return the CPU smoke configuration: tiny sizes, few iterations, well under a minute."""
        # One preset: the parts run the same code for every preset, and a shared 2-core
        # machine takes seconds per tiny step.
        base = cls(device="cpu", sizes=(("lite", (64, 96)),), warmup=1, iters=2,
                   train_preset="lite", train_size=(64, 64), train_batch=2, train_steps=2,
                   train_warmup=1,
                   part_budget_s=40.0, compile_budget_s=40.0, train_budget_s=90.0,
                   time_limit_s=240.0, quick=True)
        return replace(base, **overrides)
