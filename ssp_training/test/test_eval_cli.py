"""ssp_eval end to end on a tiny synthetic split, with answers computed from the masks."""

import json

import cv2
import numpy as np
import pytest
from ssp_perception.artifact import save_artifact
from ssp_perception.classes import RURALSCAPES, UAVID
from ssp_perception.config import preset
from ssp_perception.models import create_model
from ssp_training.baselines import BaselineConfig, create_baseline, save_baseline
from ssp_training.data.dataset import SequenceDataset
from ssp_training.data.synth import generate_dataset, SynthConfig
from ssp_training.eval.efficiency import count_parameters
from ssp_training.evaluate import main
import torch

H, W, FRAMES = 64, 96, 6
CLASS = 0  # the constant model predicts "road" everywhere


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synth"
    generate_dataset(root, SynthConfig(size=(H, W), frames=FRAMES, sequences=2,
                                       val_fraction=0.5), progress=False)
    return root


def constant_model(num_classes: int = 8):
    """Return an SSP model whose image model outputs class CLASS at every pixel."""
    torch.manual_seed(0)
    model = create_model(preset("lite", num_classes=num_classes, input_size=(H, W),
                                head_channels=16)).eval()
    classifier = model.image_model.decoder.classifier
    with torch.no_grad():
        classifier.weight.zero_()
        classifier.bias.zero_()
        classifier.bias[CLASS] = 5.0
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    model = constant_model()
    save_artifact(folder / "ssp.safetensors", model, UAVID)
    dff = create_baseline(model.cfg, BaselineConfig("dff"), image_model=model.image_model)
    save_baseline(folder / "dff.safetensors", dff, UAVID)
    return folder, model


def expected_scores(root):
    """Return (mIoU %, per-class IoU %) of predicting CLASS everywhere, from the masks."""
    counts = np.zeros(256, np.int64)
    for clip in SequenceDataset(root, "val"):
        for frame in clip:
            counts += np.bincount(frame.label.ravel(), minlength=256)
    valid = counts[:8].sum()
    present = set(np.flatnonzero(counts[:8])) | {CLASS}
    per_class = {name: (100.0 * counts[CLASS] / valid if i == CLASS else 0.0)
                 if i in present else None for i, name in enumerate(UAVID.names)}
    return 100.0 * counts[CLASS] / valid / len(present), per_class


def test_constant_predictions_give_hand_computed_miou_and_full_consistency(
        dataset, checkpoints, tmp_path, capsys):
    folder, model = checkpoints
    out = tmp_path / "eval"
    rc = main(["--checkpoint", str(folder / "ssp.safetensors"), str(folder / "dff.safetensors"),
               "--data", str(dataset), "--with-image-model", "--flow", "gt",
               "--homography", "dataset", "--render", "--no-progress", "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "eval.json").read_text())
    rows = {r["name"]: r for r in report["results"]}
    assert list(rows) == ["image model", "SSP", "DFF"]
    miou, per_class = expected_scores(dataset)
    for row in rows.values():
        assert row["miou"] == pytest.approx(miou)
        assert row["per_class_iou"] == pytest.approx(per_class)
        assert row["tc"] == pytest.approx(100.0)
        assert len(row["tc_curves"]["synth_001"]) == FRAMES - 1
        assert row["frames"] == FRAMES and row["labelled_frames"] == FRAMES
        assert row["gflops"] > 0 and row["fps"] > 0
    assert rows["SSP"]["params"] == count_parameters(model)
    assert rows["image model"]["params"] == count_parameters(model.image_model)
    # DFF classifies warped features on 7 of 8 frames: far cheaper than the image model.
    assert rows["DFF"]["gflops"] < 0.5 * rows["image model"]["gflops"]
    table = (out / "table.md").read_text()
    assert table.splitlines()[0].startswith("| method | params | GFLOPs | FPS")
    assert all(f"| {name} |" in table for name in rows)
    assert "| SSP |" in capsys.readouterr().out
    for name in ("per_class_iou.png", "accuracy_vs_consistency.png", "tc/synth_001.png"):
        assert (out / "plots" / name).is_file()
    video = cv2.VideoCapture(str(out / "render" / "synth_001.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    strip = cv2.imread(str(out / "render" / "synth_001.png"))
    assert strip.shape[1] == 5 * W // 2  # five half-size panels side by side


def test_no_propagation_evaluates_the_image_model(dataset, checkpoints, tmp_path):
    folder, model = checkpoints
    rc = main(["--checkpoint", str(folder / "ssp.safetensors"), "--data", str(dataset),
               "--no-propagation", "--flow", "dis", "--no-plots", "--no-progress",
               "--out", str(tmp_path), "--json", str(tmp_path / "r.json")])
    assert rc == 0
    (row,) = json.loads((tmp_path / "r.json").read_text())["results"]
    assert row["name"] == "image model" and row["kind"] == "image"
    assert row["params"] == count_parameters(model.image_model)
    assert row["tc"] == pytest.approx(100.0)


def test_checkpoint_of_another_class_set_is_refused(dataset, tmp_path, capsys):
    path = tmp_path / "rural.safetensors"
    save_artifact(path, constant_model(num_classes=RURALSCAPES.num_classes), RURALSCAPES)
    rc = main(["--checkpoint", str(path), "--data", str(dataset), "--no-progress",
               "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "class set mismatch" in err and "'ruralscapes'" in err and "'uavid'" in err
    assert not (tmp_path / "eval").exists()  # nothing written on bad input


def test_missing_ground_truth_flow_is_a_clear_error(dataset, checkpoints, tmp_path, capsys):
    folder, _ = checkpoints
    bare = tmp_path / "bare"
    import shutil
    shutil.copytree(dataset, bare)
    for f in bare.glob("data/*/flow/*.npz"):
        f.unlink()
    rc = main(["--checkpoint", str(folder / "ssp.safetensors"), "--data", str(bare),
               "--flow", "gt", "--no-progress", "--out", str(tmp_path / "eval")])
    assert rc == 2 and "--flow dis" in capsys.readouterr().err


def test_reference_defaults_raft_on_real_data_and_disk_needs_its_weights(
        dataset, checkpoints, tmp_path, capsys):
    from ssp_training.evaluate import build_parser
    args = build_parser().parse_args(["--checkpoint", "c", "--data", "d"])
    assert (args.tc_out_of_view, args.on_registration_failure) == ("class0", "identity")
    assert (args.flow, args.homography, args.registration) == ("auto", "auto", "auto")
    folder, _ = checkpoints
    bare = tmp_path / "bare"
    import shutil
    shutil.copytree(dataset, bare)
    for f in bare.glob("data/*/flow/*.npz"):
        f.unlink()
    # Real data (no ground-truth flow): the paper's TC needs RAFT, never a silent DIS.
    rc = main(["--checkpoint", str(folder / "ssp.safetensors"), "--data", str(bare),
               "--no-progress", "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert rc == 2 and "--flow-weights" in err and "--flow dis" in err
    rc = main(["--checkpoint", str(folder / "ssp.safetensors"), "--data", str(dataset),
               "--homography", "registrator", "--registration", "disk_lightglue",
               "--no-progress", "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert rc == 2 and "--disk-weights" in err and "--registration orb" in err
