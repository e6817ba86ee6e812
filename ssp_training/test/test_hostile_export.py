"""``ssp_export onnx`` under hostile input (issue 17 items 3, 5, 9): validate, then stage."""

import pytest
from ssp_perception.artifact import save_artifact
from ssp_perception.classes import UAVID
from ssp_perception.config import preset
from ssp_perception.files import OUTPUT_MARKER
from ssp_perception.models import create_model
from ssp_training.export import main
import torch

NET = (64, 96)


pytestmark = pytest.mark.usefixtures("one_thread")


def _artifact(path, nan=False):
    torch.manual_seed(0)
    model = create_model(preset("lite", input_size=NET)).eval()
    if nan:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
    save_artifact(path, model, UAVID, {"recipe": "test"})
    return path


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return _artifact(tmp_path_factory.mktemp("art") / "lite.safetensors")


def _run(capsys, *argv):
    try:
        rc = main(list(argv))
    except SystemExit as end:
        rc = end.code
    return rc, capsys.readouterr().err


def test_steps_zero_is_refused_before_writing(artifact, tmp_path, capsys, assert_one_error_line):
    rc, err = _run(capsys, "onnx", str(artifact), "--out-dir", str(tmp_path / "o"),
                   "--steps", "0")
    assert rc == 2
    assert_one_error_line(err, "ssp_export", "--steps must be >= 1", "got 0")
    assert list(tmp_path.iterdir()) == []   # no image.onnx, no ssp.onnx


@pytest.mark.parametrize("option,value", [("--atol", "nan"), ("--atol", "-1"),
                                          ("--min-agreement", "1.5")])
def test_bad_parity_options_are_refused_before_writing(option, value, artifact, tmp_path, capsys,
                                                       assert_one_error_line):
    rc, err = _run(capsys, "onnx", str(artifact), "--out-dir", str(tmp_path / "o"), option,
                   value)
    assert rc == 2
    assert_one_error_line(err, "ssp_export", option)
    assert list(tmp_path.iterdir()) == []


def test_out_dir_that_is_a_file(artifact, tmp_path, capsys, assert_one_error_line, snapshot):
    target = tmp_path / "deploy"
    target.write_text("not a folder\n")
    before = snapshot(tmp_path)
    rc, err = _run(capsys, "onnx", str(artifact), "--out-dir", str(target))
    assert rc == 2
    assert_one_error_line(err, "ssp_export", str(target), "not a folder")
    assert snapshot(tmp_path) == before
    rc, err = _run(capsys, "onnx", str(artifact), "--out-dir", str(target / "sub"))
    assert rc == 2
    assert_one_error_line(err, "ssp_export", f"{target} is a file, not a folder")
    assert snapshot(tmp_path) == before


def test_non_empty_folder_needs_force_and_must_be_an_export(artifact, tmp_path, capsys,
                                                            assert_one_error_line, snapshot):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.onnx").write_bytes(b"someone else's graph")
    before = snapshot(tmp_path)
    rc, err = _run(capsys, "onnx", str(artifact), "--out-dir", str(foreign), "--force")
    assert rc == 2 and snapshot(tmp_path) == before
    assert_one_error_line(err, "ssp_export", "not written by ssp_export onnx")

    out = tmp_path / "deploy"
    assert _run(capsys, "onnx", str(artifact), "--out-dir", str(out), "--no-check")[0] == 0
    assert (out / OUTPUT_MARKER).is_file()
    before = snapshot(tmp_path)
    rc, err = _run(capsys, "onnx", str(artifact), "--out-dir", str(out), "--no-check")
    assert rc == 2 and snapshot(tmp_path) == before
    assert_one_error_line(err, "ssp_export", "pass --force")
    # An export from before the marker (exactly its three files) is recognised as well.
    (out / OUTPUT_MARKER).unlink()
    assert _run(capsys, "onnx", str(artifact), "--out-dir", str(out), "--no-check",
                "--force")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [OUTPUT_MARKER, "export.json", "image.onnx", "ssp.onnx"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy", "foreign"]


def test_nan_weights_fail_the_parity_check_as_an_error(tmp_path, capsys, assert_one_error_line):
    broken = _artifact(tmp_path / "nan.safetensors", nan=True)
    rc, err = _run(capsys, "onnx", str(broken), "--out-dir", str(tmp_path / "o"))
    assert rc == 2
    assert_one_error_line(err, "ssp_export", "not finite", "nothing was exported")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.safetensors"]


def test_force_never_deletes_the_artifact_being_exported(artifact, tmp_path, capsys,
                                                         assert_one_error_line, snapshot):
    out = tmp_path / "deploy"
    assert _run(capsys, "onnx", str(artifact), "--out-dir", str(out), "--no-check")[0] == 0
    inside = out / "model.safetensors"
    inside.write_bytes(artifact.read_bytes())            # the user keeps the model with it
    before = snapshot(tmp_path)
    rc, err = _run(capsys, "onnx", str(inside), "--out-dir", str(out), "--no-check", "--force")
    assert rc == 2 and snapshot(tmp_path) == before
    assert_one_error_line(err, "ssp_export", "model.safetensors, an input of this run")
