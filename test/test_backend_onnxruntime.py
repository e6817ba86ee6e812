"""onnxruntime backend: parity with eager PyTorch through the Backend interface and the stream."""

import copy

import numpy as np
import pytest
from ssp_perception.backends import Backend, create_backend
from ssp_perception.backends.onnx_graphs import (example_inputs, export_onnx, GRAPHS,
                                                 OnnxExportConfig, read_metadata)
from ssp_perception.backends.onnxruntime_backend import make_session, OrtConfig
from ssp_perception.backends.parity import compare_backends
from ssp_perception.classes import UAVID
from ssp_perception.config import preset
from ssp_perception.models import create_model
from ssp_perception.stream import Segmenter, StreamConfig
from ssp_perception.synthetic import synthetic_frames
from ssp_perception.tools.compare_backends import compare
import torch

NET = (64, 96)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = create_model(preset("lite", input_size=NET)).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="module")
def ort_backend(model, cache_dir):
    return create_backend("onnxruntime", model, cache_dir=cache_dir, threads=1)


def test_backend_interface(ort_backend):
    assert isinstance(ort_backend, Backend)
    assert ort_backend.name == "onnxruntime" and ort_backend.input_size == NET
    assert ort_backend.num_classes == UAVID.num_classes
    assert ort_backend.metadata["graph"] == "ssp"


def test_parity_with_eager_over_a_recurrent_sequence(model, ort_backend):
    reference = create_backend("torch", copy.deepcopy(model))
    steps = compare_backends(reference, ort_backend, NET, model.cfg.mean, model.cfg.std, steps=3)
    assert [s.step for s in steps] == ["image", "ssp0", "ssp1", "ssp2"]
    for step in steps:
        assert step.passed(1e-3, 0.999), step
    # use_prev = 0 must give exactly the image step; use_prev = 1 must actually propagate.
    assert steps[1].max_abs_diff["sim"] == 0.0


def test_parity_check_detects_a_different_model(model, ort_backend):
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.image_model.decoder.classifier.bias.add_(0.05)
    steps = compare_backends(create_backend("torch", other), ort_backend, NET, model.cfg.mean,
                             model.cfg.std)
    assert not any(s.passed(1e-3, 0.999) for s in steps)


def test_second_backend_reuses_the_cached_export(model, cache_dir, ort_backend):
    before = {p: p.stat().st_mtime_ns for p in cache_dir.glob("*.onnx")}
    assert len(before) == len(GRAPHS)
    again = create_backend("onnxruntime", model, cache_dir=cache_dir, threads=1)
    assert {p: p.stat().st_mtime_ns for p in cache_dir.glob("*.onnx")} == before
    assert again.sources.graphs == ort_backend.sources.graphs


def test_stream_labels_match_the_torch_backend(model, ort_backend):
    frames = [f for f, _ in synthetic_frames((96, 160), 3, seed=2, speed=2.0)]
    results = {}
    for name, backend in (("torch", create_backend("torch", copy.deepcopy(model))),
                          ("onnxruntime", ort_backend)):
        stream = Segmenter(backend, UAVID).new_stream(StreamConfig(input_size=NET))
        results[name] = [stream.process(f, stamp=0.05 * i) for i, f in enumerate(frames)]
    used = [r.used_state for r in results["torch"]]
    assert any(used) and used == [r.used_state for r in results["onnxruntime"]]
    for a, b in zip(results["torch"], results["onnxruntime"]):
        assert (a.labels == b.labels).mean() >= 0.999


def test_rejects_inputs_it_was_not_exported_for(ort_backend):
    with pytest.raises(ValueError, match="64x96"):
        ort_backend.image_step(torch.zeros(1, 3, 96, 128))
    x = torch.zeros(1, 3, *NET)
    logits, feat = ort_backend.image_step(x)
    with pytest.raises(ValueError, match="homography"):
        ort_backend.ssp_step(x, logits, feat, torch.eye(3), torch.ones(1))


@pytest.mark.parametrize("kw, match", [({"device": "tpu"}, "device"),
                                       ({"threads": -1}, "threads"),
                                       ({"optimization": "max"}, "optimization")])
def test_config_validation(kw, match):
    with pytest.raises((ValueError, RuntimeError), match=match):
        OrtConfig(**kw)


def test_dtype_other_than_float32_is_refused(model, cache_dir):
    with pytest.raises(ValueError, match="float32"):
        create_backend("onnxruntime", model, cache_dir=cache_dir, dtype="float16")


def test_cuda_needs_the_cuda_provider(ort_backend):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider; the refusal path is not reached")
    with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
        make_session(ort_backend.sources.graphs["image"], OrtConfig(device="cuda"))


def test_dynamic_hw_is_verified_not_assumed(model):
    """A dynamic-H/W export must either work at another size or refuse with advice."""
    try:
        payload = export_onnx(model, "image", OnnxExportConfig(NET, dynamic_hw=True))
    except ValueError as err:
        assert "fixed shapes" in str(err)
        return
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(payload, providers=["CPUExecutionProvider"])
    inputs = example_inputs(model, "image", (96, 128))
    got = session.run(None, {"image": inputs["image"].numpy()})[0]
    with torch.inference_mode():
        ref = model.image_step(inputs["image"])[0].numpy()
    assert read_metadata(payload)["dynamic_hw"] == "true"
    np.testing.assert_allclose(got, ref, atol=1e-3)


def test_compare_tool_times_candidates_interleaved(model, cache_dir, ort_backend):
    report = compare([("torch", "float32"), ("onnxruntime", "float32")], size=NET, frames=2,
                     warmup=1, cache_dir=str(cache_dir), model=copy.deepcopy(model))
    assert report["reference"] == "torch:float32" and report["size"] == list(NET)
    ort_entry = report["candidates"]["onnxruntime:float32"]
    assert all(ort_entry[f"{s}_wall_ms"] > 0 for s in ("image", "ssp", "stream"))
    assert all(p["label_agreement"] >= 0.999 for p in ort_entry["vs_reference"])
