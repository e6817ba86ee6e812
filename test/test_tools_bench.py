"""ssp_bench: the JSON report has every key and sane values; synthetic frames are consistent."""

import json

import cv2
import numpy as np
import pytest
from ssp_perception.geometry import transform_points
from ssp_perception.synthetic import camera_pose, synthetic_frames
from ssp_perception.tools.bench import BenchConfig, main
import torch

KEYS = ("image_model_ms", "ssp_ms", "registration_ms", "ssp_with_registration_ms", "stream_ms",
        "image_model_p90_ms", "ssp_p90_ms", "registration_p90_ms",
        "ssp_with_registration_p90_ms", "stream_p90_ms", "ssp_over_image_ratio",
        "image_model_params", "ssp_params", "peak_memory_mb", "memory_growth_mb",
        "registration_success_rate", "image_model_cpu_ms", "ssp_cpu_ms",
        "ssp_over_image_cpu_ratio", "machine", "cpu", "device", "dtype", "torch_version")


def test_bench_writes_a_sane_report(tmp_path, capsys):
    threads = torch.get_num_threads()
    out = tmp_path / "sub" / "bench.json"
    try:
        rc = main(["--preset", "lite", "--size", "64x96", "--frame-size", "120x200",
                   "--frames", "3", "--warmup", "1", "--threads", "1", "--no-progress",
                   "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(-1)
    assert rc == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    missing = [k for k in KEYS if k not in report]
    assert not missing, missing
    assert report["ssp_over_image_ratio"] > 0
    assert report["ssp_params"] > report["image_model_params"] > 0
    for k in KEYS[:10]:
        assert report[k] > 0, k
    assert report["ssp_with_registration_ms"] >= report["registration_ms"]
    assert report["peak_memory_mb"] > 0 and report["size"] == [64, 96]
    assert report["frames"] == 3 and report["device"] == "cpu"
    assert 0.0 <= report["registration_success_rate"] <= 1.0


@pytest.mark.parametrize("argv,needle", [
    (["--size", "60x96"], "multiples of 32"),
    (["--size", "64"], "HxW"),
    (["--preset", "nope", "--size", "64x96"], "unknown model preset"),
    (["--seed", "-1"], "argument --seed: expected an integer >= 0"),   # named no flag
])
def test_bench_rejects_bad_arguments(argv, needle, capsys):
    try:
        rc = main(argv + ["--frames", "1", "--no-progress"])
    except SystemExit as exc:  # argparse rejects malformed values itself
        rc = exc.code
    assert rc == 2
    assert needle in capsys.readouterr().err


def test_bench_refuses_an_artifact_whose_feature_indices_its_backbone_lacks(tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import save_file
    from ssp_perception.artifact import META_KEY, save_artifact
    from ssp_perception.classes import UAVID
    from ssp_perception.config import preset
    from ssp_perception.models import create_model
    good, bad = tmp_path / "good.safetensors", tmp_path / "bad.safetensors"
    save_artifact(good, create_model(preset("lite", input_size=(64, 96))), UAVID)
    with safe_open(str(good), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    doc = json.loads(meta[META_KEY])
    doc["model"]["feature_indices"] = [7, 8, 9, 10]
    save_file(tensors, str(bad), metadata={**meta, META_KEY: json.dumps(doc)})
    rc = main(["--checkpoint", str(bad), "--frames", "1", "--warmup", "0", "--no-progress"])
    assert rc == 2    # was an IndexError traceback from timm
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert "feature_indices [7, 8, 9, 10] do not fit backbone 'efficientnet_lite0'" in err


def test_bench_refuses_a_model_whose_outputs_are_not_finite(tmp_path, capsys):
    from ssp_perception.artifact import save_artifact
    from ssp_perception.classes import UAVID
    from ssp_perception.config import preset
    from ssp_perception.models import create_model
    model = create_model(preset("lite", input_size=(64, 96)))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    path = tmp_path / "nan.safetensors"
    save_artifact(path, model, UAVID)
    out = tmp_path / "bench.json"
    rc = main(["--checkpoint", str(path), "--frames", "50", "--warmup", "0", "--no-progress",
               "--json", str(out)])
    assert rc == 2    # was 0, with a report of a model that outputs NaN
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert f"{path}: the model's outputs on the first frame are not finite" in err
    assert not out.exists()


def test_bench_config_validation():
    with pytest.raises(ValueError, match="frames"):
        BenchConfig(frames=0)


def test_synthetic_homographies_match_the_rendered_motion():
    size = (90, 160)
    frames = list(synthetic_frames(size, 3, seed=2))
    np.testing.assert_array_equal(frames[0][1], np.eye(3))
    for k in (1, 2):
        h = frames[k][1]
        expected = camera_pose(k, size) @ np.linalg.inv(camera_pose(k - 1, size))
        np.testing.assert_allclose(h, expected / expected[2, 2], atol=1e-12)
        # A pixel of frame k-1 lands where H says in frame k (interior, away from borders).
        p = np.array([[80.0, 45.0]])
        q = transform_points(h, p)[0]
        prev_val = frames[k - 1][0][45, 80].astype(float)
        cur_val = frames[k][0][int(round(q[1])), int(round(q[0]))].astype(float)
        assert np.abs(prev_val - cur_val).max() < 40


@pytest.mark.slow
def test_node_overhead_command_prints_the_overhead_json(capsys):
    # The node benchmark on real topics, a few tiny frames: the ssp_bench subcommand works.
    assert main(["node-overhead", "--size", "48x64", "--frames", "3", "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 3 and report["size"] == [48, 64]
    assert report["segmenter_ms"] > 0 and report["node_overhead_ratio"] >= 0
    assert report["outputs"] == ["labels", "color", "overlay", "confidence", "status"]


def test_node_commands_reject_bad_arguments(capsys):
    with pytest.raises(SystemExit) as info:
        main(["node-overload", "--size", "big"])
    assert info.value.code == 2
    assert "expected HxW" in capsys.readouterr().err
