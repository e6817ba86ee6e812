"""Evaluation building blocks: FLOP counting, reports and tables, predictors' state handling."""

import math

import numpy as np
import pytest
from ssp_perception.config import preset
from ssp_perception.models import create_model
from ssp_training.eval.efficiency import count_flops, count_parameters
from ssp_training.eval.predictors import Frame, ImagePredictor, SSPPredictor
from ssp_training.eval.report import ModelResult, read_report, write_report
from ssp_training.eval.runner import measure_gflops, ping_pong
from ssp_training.eval.tables import format_gflops, format_params, results_table
import torch
from torch import nn


pytestmark = pytest.mark.usefixtures("one_thread")


def result(name: str, **kw) -> ModelResult:
    base = {"name": name, "checkpoint": f"{name}.safetensors", "kind": "ssp", "miou": 71.234,
            "per_class_iou": {"road": 80.0, "water": None}, "tc": 92.5,
            "tc_per_clip": {"a": 92.5}, "tc_curves": {"a": [90.0, 95.0]},
            "params": 43_380_000, "gflops": 322.84, "fps": 95.04, "latency_ms": 10.5,
            "latency_p90_ms": 11.0, "cpu_ms": 20.0, "frames": 3, "labelled_frames": 1}
    return ModelResult(**{**base, **kw})


def test_flop_counter_counts_a_multiply_add_as_two():
    linear = nn.Linear(10, 20, bias=False)
    x = torch.randn(4, 10)
    assert count_flops(lambda: linear(x)) == 2 * 4 * 10 * 20
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    img = torch.randn(1, 3, 16, 16)
    assert count_flops(lambda: conv(img)) == 2 * 16 * 16 * 8 * 3 * 3 * 3


def test_parameters_shared_between_modules_are_counted_once():
    shared = nn.Linear(4, 4)
    both = nn.ModuleList([shared, nn.Sequential(shared)])
    assert count_parameters(both) == 4 * 4 + 4


def test_report_round_trip_writes_nan_as_null(tmp_path):
    r = result("SSP", tc=float("nan"), fps=math.inf)
    write_report(tmp_path / "eval.json", [r], {"dataset": {"split": "val"}})
    text = (tmp_path / "eval.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    (back,), info = read_report(tmp_path / "eval.json")
    assert info["dataset"]["split"] == "val"
    assert math.isnan(back.tc) and math.isnan(back.fps)
    assert back.per_class_iou == {"road": 80.0, "water": None}


def test_table_has_the_papers_columns_and_formats():
    table = results_table([result("SSP"), result("DFF", gflops=float("nan"), tc=float("nan"))],
                          device="A100")
    lines = table.splitlines()
    assert lines[0] == "| method | params | GFLOPs | FPS (A100) | mIoU | TC |"
    assert lines[2] == "| SSP | 43.38 M | 322.8 | 95.0 | 71.23 | 92.50 |"
    assert lines[3] == "| DFF | 43.38 M | – | 95.0 | 71.23 | – |"
    assert format_params(2_480_232) == "2.48 M"
    assert format_gflops(0.062595) == "0.0626"


def translation(dx: float) -> np.ndarray:
    return np.array([[1.0, 0, dx], [0, 1, 0], [0, 0, 1]])


def test_ping_pong_inverts_homographies_on_the_way_back():
    frames = [Frame(image=torch.zeros(1), rgb=np.zeros(1), homography=None if i == 0
                    else translation(i)) for i in range(3)]
    seq = ping_pong(frames, 6)            # frame order 0 1 2 1 0 1
    assert seq[0].homography is None
    shifts = [f.homography[0, 2] for f in seq[1:]]
    assert shifts == pytest.approx([1.0, 2.0, -2.0, -1.0, 1.0])


def tiny_model(**overrides):
    torch.manual_seed(0)
    return create_model(preset("lite", num_classes=4, input_size=(64, 96),
                               head_channels=16, **overrides)).eval()


def blank_frames(n: int):
    rgb = np.full((64, 96, 3), 128, np.uint8)
    image = torch.zeros(1, 3, 64, 96)
    return [Frame(image=image, rgb=rgb, homography=None) for _ in range(n)]


def test_ssp_resets_when_registration_fails_and_fuses_unaligned_when_told():
    model = tiny_model()
    frames = blank_frames(3)  # no texture: ORB finds nothing, registration fails
    reset = SSPPredictor(model, "registrator", on_registration_failure="reset")
    outs = [reset.step(f) for f in frames]
    assert reset.failures == 2 and all(o.similarity is None for o in outs)
    image = ImagePredictor(model.image_model).step(frames[0]).logits
    torch.testing.assert_close(outs[2].logits, image)
    identity = SSPPredictor(model, "registrator", on_registration_failure="identity")
    outs = [identity.step(f) for f in frames]
    assert outs[0].similarity is None and outs[2].similarity is not None
    identity.reset()
    assert identity.step(frames[0]).similarity is None  # a new clip starts without state


@pytest.mark.parametrize("fusion", [{"upsample_before_mixing": True, "sim_op": "conv"}, {}],
                         ids=["spec", "lite"])
def test_ssp_gflops_exceed_the_image_model_by_the_similarity_block(fusion):
    model = tiny_model(**fusion)
    frames = [Frame(image=torch.randn(1, 3, 64, 96), rgb=np.zeros((64, 96, 3), np.uint8),
                    homography=translation(1.0)) for _ in range(3)]
    image = measure_gflops(ImagePredictor(model.image_model), frames, skip=1, count=2)
    ssp = measure_gflops(SSPPredictor(model, "dataset"), frames, skip=1, count=2)
    feat = torch.randn(1, 24, 16, 24)  # EfficientNet-Lite0 stage 1
    emb = model.similarity.embed(feat)  # the feature itself for "conv"
    sim = count_flops(lambda: model.similarity.embed(feat)) / 1e9
    sim += count_flops(lambda: model.similarity(emb, emb)) / 1e9
    assert ssp == pytest.approx(image + sim, rel=1e-3)
