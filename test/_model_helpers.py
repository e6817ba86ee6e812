"""Shared fixtures for the model tests: tiny configs and inputs that run fast on a CPU."""

from collections.abc import Iterator
import contextlib

from ssp_perception.config import ModelConfig, preset
from ssp_perception.models import create_model, SSPModel
import torch

TINY_SIZE = (64, 96)


def tiny_config(**overrides) -> ModelConfig:
    """Return the lite preset at a tiny input size (EfficientNet-Lite0 + UperNet-32)."""
    return preset("lite", input_size=TINY_SIZE, **overrides)


def tiny_model(seed: int = 0, **overrides) -> SSPModel:
    """Return a seeded tiny SSP model in eval mode with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = create_model(tiny_config(**overrides))
    # Fresh BN layers are identities; random running statistics make eval mode non-trivial.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def tiny_image(batch: int = 1, seed: int = 1) -> torch.Tensor:
    """Return a normalised-looking random image batch (B, 3, 64, 96)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *TINY_SIZE, generator=gen)


def translation(dx: float, dy: float, batch: int = 1) -> torch.Tensor:
    """Return (B, 3, 3) homographies translating by (dx, dy) pixels."""
    h = torch.eye(3).repeat(batch, 1, 1)
    h[:, 0, 2], h[:, 1, 2] = dx, dy
    return h


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the previous setting.

    Tiny tensors gain nothing from threads, and on a shared 2-core machine OpenMP workers that
    spin at barriers while another process holds the other core made these tests ~40x slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
