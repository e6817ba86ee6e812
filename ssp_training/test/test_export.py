"""ssp_export: ONNX export of an artifact, its embedded metadata and the CPU parity gate (CI)."""

import contextlib
import io
import json

import cv2
import numpy as np
import pytest
from ssp_perception.artifact import read_meta, save_artifact
from ssp_perception.backends import create_backend
from ssp_perception.backends.onnx_graphs import (INPUT_NAMES, OUTPUT_NAMES, read_metadata,
                                                 resolve_onnx)
from ssp_perception.backends.tensorrt_backend import tensorrt_status
from ssp_perception.classes import UAVID
from ssp_perception.config import preset
from ssp_perception.geometry import rescale_homography
from ssp_perception.models import create_model
from ssp_perception.synthetic import synthetic_frames
from ssp_training.export import CalibrationFrames, main
import torch

NET = (64, 96)


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model(preset("lite", input_size=NET)).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("art") / "lite.safetensors"
    save_artifact(path, model, UAVID, {"recipe": "test"})
    return path


@pytest.fixture(scope="module")
def exported(artifact, tmp_path_factory):
    """Run ``ssp_export onnx`` once (CLI entry point) and return (out_dir, printed report)."""
    out_dir = tmp_path_factory.mktemp("onnx")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = main(["onnx", str(artifact), "--out-dir", str(out_dir)])
    assert rc == 0, stdout.getvalue()
    return out_dir, json.loads(stdout.getvalue())


def test_onnx_parity_with_eager_meets_the_target(exported):
    out_dir, report = exported
    assert report["passed"] is True
    steps = {p["step"]: p for p in report["parity"]}
    # First frame (use_prev = 0), then the real homography with the carried state.
    assert set(steps) == {"image", "ssp0", "ssp1"}
    for p in report["parity"]:
        assert max(p["max_abs_diff"].values()) <= 1e-3, p
        assert p["label_agreement"] >= 0.999, p
    assert json.loads((out_dir / "export.json").read_text()) == report


def test_metadata_describes_the_artifact(artifact, exported):
    out_dir, report = exported
    meta = read_meta(artifact)
    for graph in ("image", "ssp"):
        onnx_meta = read_metadata(out_dir / f"{graph}.onnx")
        assert onnx_meta["graph"] == graph and onnx_meta["input_size"] == "64x96"
        assert onnx_meta["opset"] == "17" and onnx_meta["dynamic_hw"] == "false"
        assert onnx_meta["artifact_sha256"] == report["artifact_sha256"]
        assert json.loads(onnx_meta["artifact"]) == meta.to_dict()
        assert list(json.loads(onnx_meta["inputs"])) == list(INPUT_NAMES[graph])
        assert list(json.loads(onnx_meta["outputs"])) == list(OUTPUT_NAMES[graph])
    shapes = json.loads(read_metadata(out_dir / "ssp.onnx")["inputs"])
    # lite fuses at stride 4 and keeps a 4-channel embedding of the stage-1 feature.
    assert shapes == {"image": [1, 3, 64, 96], "prev_logits": [1, 8, 16, 24],
                      "prev_feat": [1, 4, 16, 24], "homography": [1, 3, 3], "use_prev": [1]}


def test_export_folder_serves_the_onnxruntime_backend(exported):
    out_dir, _ = exported
    backend = create_backend("onnxruntime", out_dir, threads=1)
    assert backend.input_size == NET and backend.num_classes == UAVID.num_classes
    with pytest.raises(ValueError, match="ssp_export onnx"):
        resolve_onnx(out_dir, input_size=(96, 128))


def test_bad_inputs_fail_clearly(tmp_path, capsys):
    not_artifact = tmp_path / "x.safetensors"
    not_artifact.write_bytes(b"\x00" * 16)
    assert main(["onnx", str(not_artifact), "--out-dir", str(tmp_path / "o")]) == 2
    assert "not a safetensors file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        main(["onnx", str(not_artifact), "--out-dir", str(tmp_path), "--size", "64-96"])


@pytest.mark.skipif(tensorrt_status()[0], reason="TensorRT is usable here: engines are tested "
                    "in test/test_backend_tensorrt.py")
def test_tensorrt_command_explains_why_it_cannot_run(artifact, tmp_path, capsys):
    rc = main(["tensorrt", str(artifact), "--build-only", "--cache-dir", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "cannot build TensorRT engines here" in err and ("tensorrt" in err or "CUDA" in err)


def _dataset(root, clips, frames, with_registration):
    """Write a tiny dataset in the documented layout: clips of consecutive 96x160 frames."""
    (root / "train.txt").write_text("\n".join(clips) + "\n")
    for k, clip in enumerate(clips):
        origin = root / "data" / clip / "origin"
        origin.mkdir(parents=True)
        for i, (frame, h) in enumerate(synthetic_frames((96, 160), frames, seed=k, speed=2.0)):
            cv2.imwrite(str(origin / f"{i:06d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            if with_registration and i > 0:
                reg = root / "data" / clip / "registration"
                reg.mkdir(exist_ok=True)
                np.save(reg / f"{i:06d}.npy", h)
    return root


def test_calibration_frames_carry_the_stream_state(artifact, tmp_path):
    from ssp_perception.artifact import load_artifact

    model, meta = load_artifact(artifact)
    root = _dataset(tmp_path, ["a", "b"], 3, with_registration=True)
    feed = CalibrationFrames(model, root, NET, meta.mean, meta.std, frames=5)
    assert len(feed) == 5  # 3 from clip a, then 2 from clip b
    batches = list(feed)
    assert [float(b["use_prev"][0]) for b in batches] == [0, 1, 1, 0, 1]
    for b in batches:
        assert set(b) == set(INPUT_NAMES["ssp"])
        assert b["image"].shape == (1, 3, *NET) and b["prev_feat"].shape == (1, 4, 16, 24)
    assert not batches[0]["prev_logits"].any() and batches[1]["prev_logits"].any()
    # The stored homography (dataset resolution) is moved to the network resolution.
    stored = np.load(root / "data" / "a" / "registration" / "000001.npy")
    np.testing.assert_allclose(batches[1]["homography"][0],
                               rescale_homography(stored, (96, 160), NET), rtol=1e-5, atol=1e-5)
    # Re-iterable (TensorRT calibrates each graph in turn) and deterministic.
    again = next(iter(feed))
    np.testing.assert_array_equal(again["image"], batches[0]["image"])


def test_calibration_needs_a_dataset(artifact, tmp_path):
    from ssp_perception.artifact import load_artifact

    model, meta = load_artifact(artifact)
    with pytest.raises(FileNotFoundError, match="train.txt"):
        CalibrationFrames(model, tmp_path, NET, meta.mean, meta.std)
