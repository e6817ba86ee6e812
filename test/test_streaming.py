"""The streaming step: pure (state in, state out), supplied homographies, policies, NaN flag."""

import numpy as np
import pytest
from ssp_perception.backends import create_backend
from ssp_perception.config import preset
from ssp_perception.models import create_model
from ssp_perception.streaming import advance, all_finite, StepConfig, StepState
import torch

NET = (64, 96)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield create_backend("torch", create_model(preset("lite", input_size=NET)))
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(1, 3, *NET, generator=g) for _ in range(3)]


def test_the_step_is_pure(net, images):
    cfg = StepConfig()
    s0 = StepState()
    s1, first = advance(net, cfg, s0, images[0], homography=None, stamp=0.0)
    assert s0 == StepState() and first.reset_reason == "first_frame" and not first.used_state
    a_state, a = advance(net, cfg, s1, images[1], homography=np.eye(3), stamp=0.05)
    b_state, b = advance(net, cfg, s1, images[1], homography=np.eye(3), stamp=0.05)
    assert a.used_state and torch.equal(a.logits, b.logits)
    assert a_state.frame_index == b_state.frame_index == 2 and s1.frame_index == 1
    with pytest.raises(AttributeError):
        s1.prev_logits = None  # frozen: a step never edits the state it was given


@pytest.mark.parametrize("policy", ["reset", "identity"])
def test_a_missing_supplied_homography_is_a_registration_failure(net, images, policy):
    cfg = StepConfig(on_registration_failure=policy)
    state, _ = advance(net, cfg, StepState(), images[0])
    state, res = advance(net, cfg, state, images[1], homography=None)
    assert not res.registration.success and "no homography supplied" in res.registration.reason
    if policy == "reset":
        assert res.reset_reason == "registration_failed" and not res.used_state
        assert res.frames_since_reset == 0 and state.frames_since_reset == 1
    else:
        assert res.used_state and res.reset_reason == ""
        np.testing.assert_array_equal(res.homography, np.eye(3))


def test_time_gap_and_manual_reset(net, images):
    cfg = StepConfig(max_gap_s=0.5)
    state, _ = advance(net, cfg, StepState(), images[0], stamp=0.0)
    state, gap = advance(net, cfg, state, images[1], homography=np.eye(3), stamp=2.0)
    assert gap.reset_reason == "time_gap" and not gap.used_state
    state, _ = advance(net, cfg, state.reset("manual", "asked"), images[2], stamp=2.05)
    assert state.pending_reset == ""
    with pytest.raises(ValueError, match="non-empty"):
        state.reset("")


def test_nonfinite_output_is_flagged_and_never_kept(net, images):
    state, res = advance(net, StepConfig(), StepState(),
                         torch.full((1, 3, *NET), float("nan")))
    assert not res.finite and state.prev_logits is None
    assert state.pending_reset == "manual" and "non-finite" in state.pending_detail
    assert all_finite(res.logits.nan_to_num()) and not all_finite(torch.tensor([1.0, np.inf]))
