"""Ctrl-C and SIGTERM end every ssp_training tool with 130 / 143 and no partial output (#21).

Each test starts the real console entry point (``ssp_training.console``) in a subprocess that
inherits SIGINT as ignored, as every process of a background ``make test &`` does, waits for a
real condition (handlers installed, a staging folder, a logged step) and signals it: at
start-up (during ``import torch``), mid-work, and twice in a row (the second signal lands in
the first one's cleanup and must change neither the status nor the cleanup).
"""

import json
import signal
import zipfile

import cv2
import numpy as np
import pytest
from ssp_perception.artifact import save_artifact
from ssp_perception.classes import UAVID
from ssp_perception.cli import EXIT_SIGINT, EXIT_SIGTERM
from ssp_perception.config import preset
from ssp_perception.models import create_model
from ssp_perception.testing import console, handlers_installed, ignore_sigint, wait_until
from ssp_training.data.synth import generate_dataset, SynthConfig
from ssp_training.recipes import CONFIG_DIR
import torch

IMAGE = str(CONFIG_DIR / "synth_tiny_image.yaml")
STATUS = {signal.SIGINT: EXIT_SIGINT, signal.SIGTERM: EXIT_SIGTERM}
BOTH = pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])


def _start(tool, *args):
    return console(tool, *args, preexec_fn=ignore_sigint)


def _signal_when(proc, condition, *sigs):
    """Send ``sigs`` once ``condition`` holds; return (status, stderr)."""
    try:
        wait_until(condition, proc)
        for sig in sigs:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err


def _interrupted_line(err, tool):
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"{tool}: interrupted; ")]
    assert len(lines) == 1, err
    return lines[0]


def _staging(folder):
    return [p for p in folder.iterdir() if ".staging-" in p.name]


@pytest.fixture(scope="module")
def video_dataset(tmp_path_factory):
    """Return a dataset long enough that converting or evaluating it takes seconds."""
    root = tmp_path_factory.mktemp("data") / "synth"
    return generate_dataset(root, SynthConfig(size=(96, 128), frames=24, sequences=2,
                                              val_fraction=0.5), progress=False)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model(preset("lite", input_size=(96, 128), head_channels=16)).eval()
    path = tmp_path_factory.mktemp("art") / "ssp.safetensors"
    save_artifact(path, model, UAVID)
    return path


# ------------------------------------------------------------------------------ start-up
@BOTH
@pytest.mark.parametrize("tool,args", [
    ("ssp_data", ("synth", "--out", "{out}")),
    ("ssp_train", ("fit", "--recipe", IMAGE, "run.out_dir={out}")),
    ("ssp_eval", ("--checkpoint", "x.safetensors", "--data", "d", "--out", "{out}")),
    ("ssp_export", ("onnx", "x.safetensors", "--out-dir", "{out}")),
], ids=["ssp_data", "ssp_train", "ssp_eval", "ssp_export"])
def test_signal_at_start_up(tool, args, sig, tmp_path):
    out = tmp_path / "out"
    proc = _start(tool, *(a.format(out=out) for a in args))
    status, err = _signal_when(proc, lambda: handlers_installed(proc.pid), sig)
    assert status == STATUS[sig]
    _interrupted_line(err, tool)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ mid-work
@BOTH
def test_ssp_data_synth_mid_work(sig, tmp_path):
    out = tmp_path / "synth"
    proc = _start("ssp_data", "synth", "--out", str(out), "--sequences", "2", "--frames",
                  "200", "--size", "384x640", "--quiet")
    status, err = _signal_when(
        proc, lambda: any(s.rglob("origin/*.png") for s in _staging(tmp_path)), sig)
    assert status == STATUS[sig]
    assert f"no output written ({out} is as before)" in _interrupted_line(err, "ssp_data")
    assert list(tmp_path.iterdir()) == []


def test_ssp_data_to_bag_mid_work(video_dataset, tmp_path):
    out = tmp_path / "bag"
    proc = _start("ssp_data", "to-bag", "--root", str(video_dataset), "--split", "train",
                  "--out", str(out), "--compressed", "--quiet")
    status, err = _signal_when(proc, lambda: bool(_staging(tmp_path)), signal.SIGTERM)
    assert status == EXIT_SIGTERM
    _interrupted_line(err, "ssp_data")
    assert list(tmp_path.iterdir()) == []


def test_ssp_data_prepare_mid_work(tmp_path):
    path = tmp_path / "v.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 20.0, (64, 48))
    for i in range(200):
        writer.write(np.full((48, 64, 3), i % 250, np.uint8))
    writer.release()
    label = cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))[1].tobytes()
    download = tmp_path / "uavid.zip"
    root = "uavid_v1.5_official_release/uavid_train/seq1"
    with zipfile.ZipFile(download, "w") as zf:
        zf.writestr(f"{root}/images.mp4", path.read_bytes())
        zf.writestr(f"{root}/Labels/000100.png", label)
    path.unlink()
    out = tmp_path / "out"
    proc = _start("ssp_data", "prepare", "uavid", "--uavid", str(download), "--out", str(out),
                  "--size", "720x960", "--quiet")
    status, err = _signal_when(
        proc, lambda: any((out / "data").glob(".*.partial/origin/*.png")), signal.SIGINT)
    assert status == EXIT_SIGINT
    _interrupted_line(err, "ssp_data")
    # Nothing was finished, so the folder this run created is gone (no .partial, no .cache).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["uavid.zip"]


def _train_rows(run):
    csv = run / "train.csv"
    return len(csv.read_text().splitlines()) - 1 if csv.is_file() else 0


def _checkpointed(run):
    try:
        return json.loads((run / "checkpoints" / "latest.json").read_text())["epoch"] >= 1
    except (OSError, ValueError, KeyError):
        return False


def test_ssp_train_before_the_first_checkpoint(video_dataset, tmp_path):
    run = tmp_path / "run"
    proc = _start("ssp_train", "fit", "--recipe", IMAGE, f"data.root={video_dataset}",
                  f"run.out_dir={run}", "val.every=0", "run.plot=false", "optim.batch_size=2")
    status, err = _signal_when(proc, lambda: _train_rows(run) >= 1 and not _checkpointed(run),
                               signal.SIGINT)
    assert status == EXIT_SIGINT
    assert "no checkpoint yet, so the run folder" in _interrupted_line(err, "ssp_train")
    assert list(tmp_path.iterdir()) == []


def test_ssp_train_after_a_checkpoint(video_dataset, tmp_path):
    run = tmp_path / "run"
    proc = _start("ssp_train", "fit", "--recipe", IMAGE, f"data.root={video_dataset}",
                  f"run.out_dir={run}", "val.every=0", "run.plot=false", "optim.batch_size=2",
                  "optim.epochs=3")
    status, err = _signal_when(proc, lambda: _checkpointed(run), signal.SIGTERM)
    assert status == EXIT_SIGTERM
    assert "continue with --resume" in _interrupted_line(err, "ssp_train")
    assert _checkpointed(run) and not (run / ".lock").exists()
    assert not any(p.name.startswith(".") and "tmp" in p.name for p in run.rglob("*"))


@BOTH
def test_ssp_eval_render_mid_work(sig, video_dataset, artifact, tmp_path):
    out = tmp_path / "eval"
    proc = _start("ssp_eval", "--checkpoint", str(artifact), "--data", str(video_dataset),
                  "--out", str(out), "--render", "--flow", "gt", "--no-progress",
                  "--no-plots", "--threads", "1")
    status, err = _signal_when(
        proc, lambda: out.is_dir() and any(s.glob(".*.mp4") for s in _staging(out)), sig)
    assert status == STATUS[sig]
    assert "no report written" in _interrupted_line(err, "ssp_eval")
    assert list(tmp_path.iterdir()) == []   # no report, no render/, no half staging


@BOTH
def test_ssp_export_mid_work(sig, artifact, tmp_path):
    out = tmp_path / "deploy"
    proc = _start("ssp_export", "onnx", str(artifact), "--out-dir", str(out))
    status, err = _signal_when(proc, lambda: bool(_staging(tmp_path)), sig)
    assert status == STATUS[sig]
    assert "no output folder written" in _interrupted_line(err, "ssp_export")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------- a second signal during the cleanup
@pytest.mark.parametrize("tool", ["ssp_export", "ssp_data"])
def test_second_signal_changes_nothing(tool, artifact, tmp_path):
    out = tmp_path / "out"
    args = (("onnx", str(artifact), "--out-dir", str(out)) if tool == "ssp_export" else
            ("synth", "--out", str(out), "--frames", "200", "--size", "384x640", "--quiet"))
    proc = _start(tool, *args)
    status, err = _signal_when(proc, lambda: bool(_staging(tmp_path)), signal.SIGINT,
                               signal.SIGTERM)
    assert status == EXIT_SIGINT
    _interrupted_line(err, tool)
    assert list(tmp_path.iterdir()) == []
