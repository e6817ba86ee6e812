"""One streaming step: the node's Stream, ssp_eval's predictor and training validation agree.

All three run ``ssp_perception.streaming.advance``; on the same synthetic clip (with a blank
frame spliced in, so registration fails and the reset policy runs) they must give the same
labels, and a NaN model is an error in evaluation and validation, never a score.
"""

from dataclasses import replace

import numpy as np
import pytest
from ssp_perception.artifact import read_meta, save_artifact
from ssp_perception.config import preset
from ssp_perception.models import create_model
from ssp_perception.registration import RegistrationConfig
from ssp_perception.stream import Segmenter, StreamConfig
from ssp_perception.streaming import NonFiniteOutputError
from ssp_training.data.dataset import SequenceDataset
from ssp_training.data.synth import generate_dataset, SynthConfig
from ssp_training.eval.predictors import SSPPredictor
from ssp_training.eval.runner import _labels
from ssp_training.evaluate import _normaliser, main as eval_main
from ssp_training.model_kinds import get_model_kind
from ssp_training.validate import predict_sequence
import torch

SIZE = (128, 192)
BLANK = 3  # index of the spliced-in blank frame


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run torch on one thread (tiny tensors; a shared 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synth"
    generate_dataset(root, SynthConfig(size=SIZE, frames=7, sequences=2, seed=3),
                     progress=False, workers=1)
    return root


@pytest.fixture(scope="module")
def clip(synth):
    data = SequenceDataset(synth, "val", size=SIZE)
    seq = next(iter(data))
    frames = [seq.frame(i) for i in range(len(seq))]
    blank = np.full(SIZE + (3,), 128, np.uint8)  # no texture: registration fails
    frames[BLANK] = replace(frames[BLANK], image=blank, homography=None)
    return data.info, frames


def _model(info, **fusion):
    torch.manual_seed(0)
    return create_model(preset("lite", num_classes=info.class_set.num_classes,
                               input_size=SIZE, head_channels=16, **fusion)).eval()


def _node_labels(model, info, frames):
    stream = Segmenter(model, info.class_set).new_stream(
        StreamConfig(compute_confidence=True, compute_similarity=True), RegistrationConfig())
    results = [stream.process(f.image, stamp=0.05 * i, frame_id="cam")
               for i, f in enumerate(frames)]
    return [r.labels for r in results], results, stream


def _eval_labels(model, info, frames, path):
    predictor = SSPPredictor(model, "registrator", RegistrationConfig())
    to_frame = _normaliser(read_meta(path), torch.device("cpu"))
    return [_labels(predictor.step(to_frame(f))) for f in frames], predictor


def _validation_labels(model, frames):
    pairs = predict_sequence(model, get_model_kind("ssp"), iter(frames), torch.device("cpu"),
                             homography="registrator", registration={})
    return [pred for _, pred in pairs]


@pytest.mark.parametrize("fusion", [{"upsample_before_mixing": True, "sim_op": "conv"}, {}],
                         ids=["spec", "lite"])
def test_node_eval_and_validation_give_identical_labels(clip, tmp_path, fusion):
    info, frames = clip
    model = _model(info, **fusion)
    path = tmp_path / "model.safetensors"
    save_artifact(path, model, info.class_set)
    node, results, stream = _node_labels(model, info, frames)
    # The clip exercises propagation and the registration-failure reset.
    reasons = [r.reset_reason for r in results]
    assert reasons[0] == "first_frame" and "registration_failed" in reasons
    assert sum(r.used_state for r in results) >= 3
    evaluation, predictor = _eval_labels(model, info, frames, path)
    validation = _validation_labels(model, frames)
    # One loop: the fused state after the clip is bit for bit the same.
    assert torch.equal(stream.state.prev_logits, predictor.state.prev_logits)
    assert len(node) == len(evaluation) == len(validation) == len(frames)
    for i, (a, b, c) in enumerate(zip(node, evaluation, validation)):
        np.testing.assert_array_equal(b, c, err_msg=f"eval vs validation, frame {i}")
        if not fusion:
            # Stride-4 logits: the node upsamples with two MatMuls (SeparableResize), evaluation
            # with F.interpolate (~1e-6 apart), so only a near-tie pixel may differ.
            assert (a != b).mean() < 1e-3, f"node vs eval, frame {i}"
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"node vs eval, frame {i}")


def _nan_model(info):
    model = _model(info)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    return model


def test_nan_model_is_an_error_in_validation(clip):
    info, frames = clip
    with pytest.raises(NonFiniteOutputError, match="non-finite logits") as err:
        _validation_labels(_nan_model(info), frames)
    assert "\n" not in str(err.value) and "frame" in str(err.value)


def test_ssp_eval_refuses_to_score_a_nan_model(synth, tmp_path, capsys):
    info = SequenceDataset(synth, "val", size=SIZE).info
    path = tmp_path / "nan.safetensors"
    save_artifact(path, _nan_model(info), info.class_set)
    code = eval_main(["--checkpoint", str(path), "--data", str(synth), "--split", "val",
                      "--device", "cpu", "--out", str(tmp_path / "eval"), "--no-progress",
                      "--no-plots", "--flow", "gt", "--max-frames", "3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("ssp_eval: error: ") and str(path) in err and "non-finite" in err
    assert not (tmp_path / "eval" / "eval.json").exists()


def test_the_node_stream_rejects_nonfinite_output_and_resets(clip):
    info, frames = clip
    stream = Segmenter(_nan_model(info), info.class_set).new_stream(StreamConfig())
    first = stream.process(frames[0].image, stamp=0.0)
    assert not first.finite and np.isnan(first.mean_confidence)
    assert stream.state.prev_logits is None  # the poison is never kept
    second = stream.process(frames[1].image, stamp=0.05)
    assert second.reset_reason == "manual" and "non-finite" in second.reset_detail
    assert not second.used_state
