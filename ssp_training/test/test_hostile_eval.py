"""``ssp_eval`` under hostile input (issue 17 items 8, 9, 11): one line, no report left."""

import json
from pathlib import Path
import pickle
import shutil

import cv2
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import save_file
from ssp_perception.artifact import META_KEY, save_artifact
from ssp_perception.classes import UAVID
from ssp_perception.config import preset
from ssp_perception.models import create_model
from ssp_training.data.synth import generate_dataset, SynthConfig
from ssp_training.evaluate import main
import torch

H, W = 64, 96


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synth"
    return generate_dataset(root, SynthConfig(size=(H, W), frames=3, sequences=2,
                                              val_fraction=0.5), progress=False)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model(preset("lite", input_size=(H, W), head_channels=16)).eval()
    path = tmp_path_factory.mktemp("ckpt") / "ssp.safetensors"
    save_artifact(path, model, UAVID)
    return path


def _edited(artifact, path, **model_fields):
    """Write a copy of ``artifact`` whose metadata has ``model_fields`` changed."""
    with safe_open(str(artifact), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    doc = json.loads(meta[META_KEY])
    doc["model"].update(model_fields)
    for key in ("input_size",):
        if key in model_fields:
            doc[key] = model_fields[key]
    save_file(tensors, str(path), metadata={**meta, META_KEY: json.dumps(doc)})
    return path


def _run(capsys, *argv):
    try:
        rc = main([*argv, "--no-progress", "--no-plots"])
    except SystemExit as end:
        rc = end.code
    return rc, capsys.readouterr().err


def _eval(capsys, artifact, data, out, *extra):
    return _run(capsys, "--checkpoint", str(artifact), "--data", str(data), "--out", str(out),
                *extra)


@pytest.mark.parametrize("extra,needle", [
    (("--threads", "-3"), "--threads must be >= 0"),
    (("--max-frames", "-1"), "--max-frames must be >= 0"),
    (("--max-clips", "-2"), "--max-clips must be >= 0"),
    (("--flow-iterations", "0"), "--flow-iterations must be >= 1"),
])
def test_bad_numbers(extra, needle, artifact, dataset, tmp_path, capsys, assert_one_error_line):
    rc, err = _eval(capsys, artifact, dataset, tmp_path / "out", *extra)
    assert rc == 2
    assert_one_error_line(err, "ssp_eval", needle)
    assert list(tmp_path.iterdir()) == []


def test_out_that_is_a_file_fails_before_the_evaluation(artifact, dataset, tmp_path, capsys,
                                                        assert_one_error_line, snapshot):
    out = tmp_path / "results.txt"
    out.write_text("keep me\n")
    before = snapshot(tmp_path)
    rc, err = _eval(capsys, artifact, dataset, out)
    assert rc == 2
    assert_one_error_line(err, "ssp_eval", "--out", "not a folder")
    assert snapshot(tmp_path) == before
    rc, err = _eval(capsys, artifact, dataset, out / "sub")
    assert rc == 2 and snapshot(tmp_path) == before
    assert_one_error_line(err, "ssp_eval", "is a file, not a folder")


def test_json_that_is_a_folder(artifact, dataset, tmp_path, capsys, assert_one_error_line,
                               snapshot):
    (tmp_path / "reports").mkdir()
    before = snapshot(tmp_path)
    rc, err = _eval(capsys, artifact, dataset, tmp_path / "out", "--json",
                    str(tmp_path / "reports"))
    assert rc == 2
    assert_one_error_line(err, "ssp_eval", "--json", "is a folder")
    assert snapshot(tmp_path) == before


def test_json_replaces_only_an_earlier_report(artifact, dataset, tmp_path, capsys,
                                              assert_one_error_line, snapshot):
    # The run's own checkpoint or the dataset's description given as --json by mistake.
    for victim in (shutil.copy(artifact, tmp_path / "ssp.safetensors"),
                   dataset / "dataset.json"):
        before = victim.read_bytes()
        rc, err = _eval(capsys, artifact, dataset, tmp_path / "out", "--json", str(victim),
                        "--flow", "dis")
        assert rc == 2
        assert_one_error_line(err, "ssp_eval", f"--json {victim}",
                              "is not an earlier ssp_eval report")
        assert victim.read_bytes() == before and not (tmp_path / "out").exists()
    # The default report inside --out: a foreign eval.json there is kept too.
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "eval.json").write_text('{"mine": true}\n')
    rc, err = _eval(capsys, artifact, dataset, tmp_path / "out", "--flow", "dis")
    assert rc == 2
    assert_one_error_line(err, "ssp_eval", "--out", "eval.json", "not an earlier ssp_eval")
    # Its own report, and one written before reports named their tool, are replaced.
    report = tmp_path / "report.json"
    for _ in range(2):
        rc, err = _eval(capsys, artifact, dataset, tmp_path / "out2", "--json", str(report),
                        "--flow", "dis")
        assert rc == 0, err
        assert json.loads(report.read_text())["tool"] == "ssp_eval"
    old = json.loads(report.read_text())
    del old["tool"]
    report.write_text(json.dumps(old))
    rc, err = _eval(capsys, artifact, dataset, tmp_path / "out2", "--json", str(report),
                    "--flow", "dis")
    assert rc == 0, err


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs sysfs (Linux)")
@pytest.mark.parametrize("flag", ["--out", "--json"])
def test_an_output_this_user_may_not_write(flag, artifact, dataset, tmp_path, capsys,
                                           assert_one_error_line):
    # /sys refuses new files and folders, also to root (whom chmod does not stop).
    target = "/sys/ssp_eval" + (".json" if flag == "--json" else "")
    extra = (flag, target) if flag == "--json" else ()
    out = target if flag == "--out" else tmp_path / "out"
    rc, err = _eval(capsys, artifact, dataset, out, *extra, "--max-frames", "2")
    assert rc == 2
    # Refused before the evaluation ran (the probe of the folder), not after it.
    line = assert_one_error_line(err, "ssp_eval", f"{target}: cannot write in /sys")
    assert ".tmp-" not in line
    assert not (tmp_path / "out").exists()


def test_an_artifact_whose_feature_indices_its_backbone_lacks(artifact, dataset, tmp_path,
                                                              capsys, assert_one_error_line):
    bad = _edited(artifact, tmp_path / "bad.safetensors", feature_indices=[7, 8, 9, 10])
    rc, err = _eval(capsys, bad, dataset, tmp_path / "out")
    assert rc == 2    # was an IndexError traceback from timm
    assert_one_error_line(err, "ssp_eval", str(bad), "feature_indices [7, 8, 9, 10] do not "
                          "fit backbone 'efficientnet_lite0'")
    assert not (tmp_path / "out").exists()


def _pickle(path):
    with open(path, "wb") as f:
        pickle.dump({"weights": [1, 2, 3], "evil": print}, f)
    return path


@pytest.mark.parametrize("kind,needle", [("pickle", "pickled Python objects"),
                                         ("empty", "empty (0 bytes)"),
                                         ("missing", "file not found"),
                                         ("folder", "file not found")])
def test_bad_flow_weights(kind, needle, artifact, dataset, tmp_path, capsys, assert_one_error_line,
                          snapshot):
    weights = tmp_path / "raft.pth"
    if kind == "pickle":
        _pickle(weights)
    elif kind == "empty":
        weights.write_bytes(b"")
    elif kind == "folder":
        weights.mkdir()
    before = snapshot(tmp_path)
    rc, err = _eval(capsys, artifact, dataset, tmp_path / "out", "--flow", "raft",
                    "--flow-weights", str(weights))
    assert rc == 2
    assert_one_error_line(err, "ssp_eval", "--flow-weights", needle)
    assert snapshot(tmp_path) == before


def _broken_copy(dataset, tmp_path, breaker):
    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    clip = (copy / "val.txt").read_text().split()[0]
    return copy, breaker(copy / "data" / clip)


def test_object_dtype_npy(dataset, artifact, tmp_path, capsys, assert_one_error_line):
    def breaker(clip):
        target = sorted((clip / "registration").glob("*.npy"))[0]
        np.save(target, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
        return target

    data, target = _broken_copy(dataset, tmp_path, breaker)
    rc, err = _eval(capsys, artifact, data, tmp_path / "out", "--homography", "dataset",
                    "--flow", "dis")
    assert rc == 2
    assert_one_error_line(err, "ssp_eval", str(target), "not a readable .npy file")
    assert not (tmp_path / "out").exists()


def test_object_dtype_npz(dataset, artifact, tmp_path, capsys, assert_one_error_line):
    def breaker(clip):
        target = sorted((clip / "flow").glob("*.npz"))[0]
        np.savez(target, bwd=np.array([object()], dtype=object), occ=np.zeros(1))
        return target

    data, target = _broken_copy(dataset, tmp_path, breaker)
    rc, err = _eval(capsys, artifact, data, tmp_path / "out", "--flow", "gt")
    assert rc == 2
    assert_one_error_line(err, "ssp_eval", str(target), "not a readable .npz file")
    assert not (tmp_path / "out").exists()


def test_string_dtype_npy(dataset, artifact, tmp_path, capsys, assert_one_error_line):
    def breaker(clip):
        target = sorted((clip / "registration").glob("*.npy"))[0]
        np.save(target, np.array([["a"] * 3] * 3))
        return target

    data, target = _broken_copy(dataset, tmp_path, breaker)
    rc, err = _eval(capsys, artifact, data, tmp_path / "out", "--homography", "dataset",
                    "--flow", "dis")
    assert rc == 2
    assert_one_error_line(err, "ssp_eval", str(target), "expected numbers")


def test_corrupt_png_mid_clip(dataset, artifact, tmp_path, capsys, assert_one_error_line):
    def breaker(clip):
        target = sorted((clip / "origin").glob("*.png"))[-1]
        target.write_bytes(target.read_bytes()[:40])
        return target

    data, target = _broken_copy(dataset, tmp_path, breaker)
    rc, err = _eval(capsys, artifact, data, tmp_path / "out", "--flow", "dis", "--render")
    assert rc == 2
    assert_one_error_line(err, "ssp_eval", str(target), "not a readable image")
    assert not (tmp_path / "out").exists()   # no report, no half render/


def test_huge_input_size_is_refused_before_allocating(dataset, artifact, tmp_path, capsys,
                                                      assert_one_error_line):
    huge = _edited(artifact, tmp_path / "huge.safetensors", input_size=[100000, 100000])
    rc, err = _eval(capsys, huge, dataset, tmp_path / "out")
    assert rc == 2
    assert_one_error_line(err, "ssp_eval", "100000x100000", "larger than 8192")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.safetensors"]
    rc, err = _eval(capsys, artifact, dataset, tmp_path / "out", "--size", "99968", "64")
    assert rc == 2
    assert_one_error_line(err, "ssp_eval", "--size 99968x64")


def test_unknown_preset_in_the_artifact(dataset, artifact, tmp_path, capsys,
                                        assert_one_error_line):
    nope = _edited(artifact, tmp_path / "nope.safetensors", preset="nope")
    rc, err = _eval(capsys, nope, dataset, tmp_path / "out")
    assert rc == 2
    assert_one_error_line(err, "ssp_eval", "model.preset 'nope'", "hiera_bplus, hiera_s, lite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nope.safetensors"]


def test_render_never_replaces_a_foreign_render_folder(dataset, artifact, tmp_path, capsys,
                                                       snapshot, assert_one_error_line):
    render = tmp_path / "out" / "render"
    render.mkdir(parents=True)
    (render / "notes.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    rc, err = _eval(capsys, artifact, dataset, tmp_path / "out", "--render")
    assert rc == 2
    assert_one_error_line(err, "ssp_eval", str(render), "not written by ssp_eval --render")
    assert snapshot(tmp_path) == before


def test_mask_with_ids_outside_the_class_set(dataset, artifact, tmp_path, capsys,
                                             assert_one_error_line):
    def breaker(clip):
        target = sorted((clip / "mask").glob("*.png"))[-1]
        cv2.imwrite(str(target), np.full((H, W), 50, np.uint8))   # 50: not a uavid train id
        return target

    data, target = _broken_copy(dataset, tmp_path, breaker)
    rc, err = _eval(capsys, artifact, data, tmp_path / "out", "--flow", "dis")
    assert rc == 2
    assert_one_error_line(err, "ssp_eval", str(target), "class id 50",
                          "outside class set 'uavid' (0..7, 255 = ignore)")
    assert not (tmp_path / "out").exists()


def test_frame_without_a_homography_fails_before_anything_runs(dataset, artifact, tmp_path,
                                                               capsys, assert_one_error_line):
    def breaker(clip):
        target = sorted((clip / "registration").glob("*.npy"))[-1]
        target.unlink()
        return target

    data, target = _broken_copy(dataset, tmp_path, breaker)
    rc, err = _eval(capsys, artifact, data, tmp_path / "out", "--flow", "dis",
                    "--homography", "dataset")
    assert rc == 2
    assert_one_error_line(err, "ssp_eval", "--homography dataset", str(target),
                          "--homography registrator")
    assert not (tmp_path / "out").exists()
    rc, err = _eval(capsys, artifact, data, tmp_path / "out", "--flow", "dis",
                    "--homography", "registrator")
    assert rc == 0, err


@pytest.mark.parametrize("content,needle", [
    (b"synth_\xff\n", "not UTF-8 text"),
    (b"../../elsewhere\n", "'../../elsewhere' is not a clip name"),
    (b"..\n", "'..' is not a clip name"),
    (None, "more than once"),
])
def test_bad_split_file(content, needle, dataset, artifact, tmp_path, capsys,
                        assert_one_error_line):
    data, _ = _broken_copy(dataset, tmp_path, lambda clip: None)
    split = data / "val.txt"
    clip = split.read_text().split()[0]
    split.write_bytes(content if content is not None else f"{clip}\n{clip}\n".encode())
    rc, err = _eval(capsys, artifact, data, tmp_path / "out", "--flow", "dis")
    assert rc == 2
    assert_one_error_line(err, "ssp_eval", str(split), needle)
    assert not (tmp_path / "out").exists()
