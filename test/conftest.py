"""Fixtures shared by the ssp_perception tests: one torch thread, tiny models and inputs.

The model helpers are fixtures that return factories (``tiny_model(seed=4, sim_op="conv")``),
so a test asks for what it builds by name and no test module imports another.
"""

from collections.abc import Callable, Iterator

import pytest
from ssp_perception.config import ModelConfig, preset, PRESETS
from ssp_perception.models import create_model, SSPModel
import torch

TINY_SIZE = (64, 96)
# Every fusion mode the model supports, on the lite network at the tiny size: the spec's
# full-resolution fusion with the "conv" block, lite's stride-4 fusion with the "embed" block,
# and the two crossings. The SSP model tests run through all of them (``fusion`` fixture).
FUSION_MODES = {
    "spec": {"upsample_before_mixing": True, "sim_op": "conv", "sim_channels": 8},
    "lite": {},
    "stride4-conv": {"upsample_before_mixing": False, "sim_op": "conv", "sim_channels": 8},
    "full-embed": {"upsample_before_mixing": True, "sim_op": "embed"},
}


def _hiera_stand_in(name: str, head_channels: int) -> dict:
    """Return the overrides that turn the tiny lite model into preset ``name`` on Hiera-T.

    Everything but the backbone size and head width is the preset's own config (spec fusion,
    the "conv" block at d channels, stride-4..32 indices), so the base tester checks what the
    preset builds; Hiera-T at 64x96 keeps it to seconds on a CPU.
    """
    cfg = PRESETS[name].replace(backbone="sam2_hiera_tiny", head_channels=head_channels)
    return {k: v for k, v in cfg.to_dict().items() if k != "input_size"}   # tiny_model's


# Every preset through the same base tester: lite is the "lite" fusion mode above; the Hiera
# presets run on stand-ins (~1 s a test here: not slow-marked).
PRESET_MODELS = {
    "lite": {},
    "hiera_s": _hiera_stand_in("hiera_s", head_channels=16),
    "hiera_bplus": _hiera_stand_in("hiera_bplus", head_channels=32),
}


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread for a module's tests, then restore the setting.

    Tiny tensors gain nothing from threads, and on a shared 2-core machine OpenMP workers that
    spin at barriers while another process holds the other core made these tests ~40x slower.
    Modules use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _tiny_config(**overrides) -> ModelConfig:
    return preset("lite", input_size=TINY_SIZE, **overrides)


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., ModelConfig]:
    """Return a factory of the lite preset at a tiny input size (EfficientNet-Lite0, UperNet)."""
    return _tiny_config


@pytest.fixture(scope="session")
def tiny_model() -> Callable[..., SSPModel]:
    """Return a factory of seeded tiny SSP models in eval mode with non-trivial BatchNorm."""
    def make(seed: int = 0, **overrides) -> SSPModel:
        torch.manual_seed(seed)
        model = create_model(_tiny_config(**overrides))
        # Fresh BN layers are identities; random running statistics make eval mode non-trivial.
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
        return model.eval()
    return make


@pytest.fixture(scope="session")
def tiny_image() -> Callable[..., torch.Tensor]:
    """Return a factory of normalised-looking random image batches (B, 3, 64, 96)."""
    def make(batch: int = 1, seed: int = 1) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(batch, 3, *TINY_SIZE, generator=gen)
    return make


@pytest.fixture(scope="session")
def translation() -> Callable[..., torch.Tensor]:
    """Return a factory of (B, 3, 3) homographies translating by (dx, dy) pixels."""
    def make(dx: float, dy: float, batch: int = 1) -> torch.Tensor:
        h = torch.eye(3).repeat(batch, 1, 1)
        h[:, 0, 2], h[:, 1, 2] = dx, dy
        return h
    return make


_MODELS = {**FUSION_MODES, **PRESET_MODELS}


@pytest.fixture(params=list(_MODELS), scope="session")
def fusion(request) -> dict:
    """Yield the overrides of each fusion mode and preset (``tiny_model(**fusion)`` builds it)."""
    return _MODELS[request.param]


@pytest.fixture(scope="session")
def fusion_modes() -> dict[str, dict]:
    """Return every fusion mode by name (for tests that compare two of them)."""
    return FUSION_MODES
