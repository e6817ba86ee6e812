"""``ssp_train`` under hostile input (issue 17 items 2, 6, 9, 11): locks and no leftovers."""

import os
from pathlib import Path
import pickle
import shutil
import signal

import cv2
import numpy as np
import pytest
from ssp_perception.artifact import save_artifact
from ssp_perception.classes import UAVID
from ssp_perception.config import preset
from ssp_perception.models import create_model
from ssp_perception.testing import assert_one_error_line, console, snapshot, wait_until
from ssp_training.checkpoint import latest_checkpoint
from ssp_training.data.synth import generate_dataset, SynthConfig
from ssp_training.recipes import CONFIG_DIR
from ssp_training.run_folder import LOCK_FILE, RunLock
from ssp_training.tasks import SupervisedTask
from ssp_training.train import main
import torch

IMAGE = str(CONFIG_DIR / "synth_tiny_image.yaml")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synth"
    return generate_dataset(root, SynthConfig(size=(64, 96), frames=4, sequences=3, seed=0),
                            progress=False)


def _run(capsys, *argv):
    try:
        rc = main(list(argv))
    except SystemExit as end:
        rc = end.code
    return rc, capsys.readouterr().err


def _fit(capsys, synth, out, *overrides):
    return _run(capsys, "fit", "--recipe", IMAGE, f"data.root={synth}", f"run.out_dir={out}",
                "val.every=0", "run.plot=false", *overrides)


_RESUMABLE = ["optim.epochs=1", "run.keep_resume_state=true"]


@pytest.fixture(scope="module")
def _trained_run(synth, tmp_path_factory):
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["fit", "--recipe", IMAGE, f"data.root={synth}", f"run.out_dir={run}",
                 "val.every=0", "run.plot=false", *_RESUMABLE]) == 0
    return run


@pytest.fixture
def resumable_run(_trained_run, tmp_path):
    """Return this test's copy of a finished one-epoch run with its resume state."""
    return Path(shutil.copytree(_trained_run, tmp_path / "run", symlinks=True))


def _resume(capsys, synth, run):
    return _run(capsys, "fit", "--recipe", IMAGE, "--resume", f"data.root={synth}",
                f"run.out_dir={run}", "val.every=0", "run.plot=false", *_RESUMABLE)


# ------------------------------------------- item 6: data-dependent failures leave nothing
@pytest.mark.parametrize("override,needle", [
    ("optim.lr=.nan", "optim.lr: expected a finite number"),
    ("optim.lr=.inf", "optim.lr: expected a finite number"),
    ("optim.batch_size=4096", "no full optimiser step at batch_size 4096"),
    ("data.size=[100000,100000]", "recipe data: size must be [H, W], positive multiples of "
                                  "32 up to 8192"),   # was a cv2 allocation traceback
    ("data.crop=[8224,64]", "recipe data: crop must be [H, W]"),
    ("model.config={feature_indices: [7, 8, 9, 10]}",     # was an IndexError; check said OK
     "model.config: feature_indices [7, 8, 9, 10] do not fit backbone 'efficientnet_lite0'"),
])
def test_failed_check_leaves_no_run_folder(override, needle, synth, tmp_path, capsys):
    rc, err = _fit(capsys, synth, tmp_path / "run", override)
    assert rc == 2
    assert_one_error_line(err, "ssp_train", needle)
    assert list(tmp_path.iterdir()) == []
    if override.startswith(("data.", "model.")):   # a recipe value: ssp_train check too
        rc, err = _run(capsys, "check", "--recipe", IMAGE, f"data.root={synth}", override)
        assert rc == 2
        assert_one_error_line(err, "ssp_train", needle)


def test_nan_lr_in_a_recipe_file(synth, tmp_path, capsys):
    recipe = tmp_path / "nan.yaml"
    recipe.write_text(open(IMAGE).read().replace("lr: 1.0e-3", "lr: .nan"))
    rc, err = _run(capsys, "fit", "--recipe", str(recipe), f"data.root={synth}",
                   f"run.out_dir={tmp_path / 'run'}")
    assert rc == 2
    assert_one_error_line(err, "ssp_train", "optim.lr", "nan")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.yaml"]


@pytest.mark.parametrize("command", ["fit", "check"])
def test_a_recipe_file_that_is_not_utf8_is_named(command, tmp_path, capsys):
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("description: Caf\u00e9\n".encode("latin-1"))
    rc, err = _run(capsys, command, "--recipe", str(recipe))
    assert rc == 2    # was "'utf-8' codec can't decode byte 0xe9 ...", no file named
    assert_one_error_line(err, "ssp_train", f"recipe {recipe}: not UTF-8 text")


def test_empty_clip(synth, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("dataset.json", "val.txt"):
        (data / name).write_bytes((synth / name).read_bytes())
    for clip in (synth / "val.txt").read_text().split():   # the val clips are fine
        shutil.copytree(synth / "data" / clip, data / "data" / clip)
    (data / "train.txt").write_text("no_frames\n")
    (data / "data" / "no_frames" / "origin").mkdir(parents=True)
    before = snapshot(tmp_path)
    for command in ("fit", "check"):
        if command == "fit":
            rc, err = _fit(capsys, data, tmp_path / "run")
        else:
            rc, err = _run(capsys, "check", "--recipe", IMAGE, f"data.root={data}")
        assert rc == 2
        # Was "flow 'gt' needs ground-truth flow ..., which dataset does not have".
        assert_one_error_line(err, "ssp_train", f"{data / 'train.txt'} lists clips without "
                              "frames", "no_frames")
        assert "flow" not in err.split("origin/*.png")[1]
        assert snapshot(tmp_path) == before


@pytest.mark.parametrize("workers", [0, 2])
def test_mask_with_ids_outside_the_class_set(workers, synth, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synth, data)
    clip = (data / "train.txt").read_text().split()[0]
    target = sorted((data / "data" / clip / "mask").glob("*.png"))[-1]
    cv2.imwrite(str(target), np.full((64, 96), 50, np.uint8))   # 50: not a uavid train id
    before = snapshot(tmp_path)
    rc, err = _fit(capsys, data, tmp_path / "run", f"data.workers={workers}")
    assert rc == 2
    # A worker's error arrives with the worker's traceback in its text: one line still.
    assert_one_error_line(err, "ssp_train", str(target), "class id 50",
                          "outside class set 'uavid'")
    assert snapshot(tmp_path) == before   # the new run folder is gone, TensorBoard closed


# ------------------------------------------------- a loss that becomes NaN: one line, exit 1
def test_a_loss_that_diverges_before_a_checkpoint_leaves_no_run_folder(
        synth, tmp_path, capsys):
    rc, err = _fit(capsys, synth, tmp_path / "run", "optim.lr=1e12", "optim.warmup_epochs=0")
    assert rc == 1
    assert_one_error_line(err, "ssp_train", "the training loss became nan at step 2 (epoch 1)",
                          "optim.lr 1e+12: lower optim.lr",
                          "no checkpoint yet, so the run folder", "was removed")
    assert list(tmp_path.iterdir()) == []


def test_weights_that_became_non_finite_are_never_checkpointed(synth, tmp_path, capsys):
    # Warm-up keeps the loss of epoch 1 (2 steps here) finite, but its BatchNorm statistics
    # overflow: that epoch must not become a checkpoint to resume or start from.
    rc, err = _fit(capsys, synth, tmp_path / "run", "optim.lr=1e12", "optim.epochs=3")
    assert rc == 1
    assert_one_error_line(err, "ssp_train", "weights became non-finite during epoch 1",
                          "not checkpointed", "lower optim.lr", "run folder", "was removed")
    assert list(tmp_path.iterdir()) == []


def test_a_loss_that_diverges_later_keeps_the_last_good_checkpoint(
        synth, tmp_path, capsys, monkeypatch):
    calls = {"n": 0}
    real = SupervisedTask.__call__

    def nan_from_epoch_2(self, outputs, batch):   # 2 steps per epoch on this data
        losses = real(self, outputs, batch)
        calls["n"] += 1
        if calls["n"] > 2:    # e.g. a bad frame the augmentation turns into NaN
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(SupervisedTask, "__call__", nan_from_epoch_2)
    run = tmp_path / "run"
    rc, err = _fit(capsys, synth, run, "optim.epochs=3")
    assert rc == 1
    ckpt = run / "checkpoints" / "epoch_0001"
    assert_one_error_line(err, "ssp_train", "loss became nan at step 3 (epoch 2)",
                          f"the last good checkpoint (epoch_0001) is kept in {ckpt.parent}",
                          f"new run.out_dir with model.init={ckpt / 'model.safetensors'}")
    assert latest_checkpoint(run) == ckpt and not (run / "model.safetensors").exists()
    # What the line proposes works: a new run from that checkpoint.
    monkeypatch.setattr(SupervisedTask, "__call__", real)
    rc, err = _fit(capsys, synth, tmp_path / "again", f"model.init={ckpt / 'model.safetensors'}",
                   "optim.epochs=1")
    assert rc == 0, err


def test_init_weights_that_hold_nan_are_refused_before_training(synth, tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model(preset("lite", input_size=(64, 96)))
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    init = tmp_path / "nan.safetensors"
    save_artifact(init, model, UAVID)
    rc, err = _fit(capsys, synth, tmp_path / "run", f"model.init={init}")
    assert rc == 2
    assert_one_error_line(err, "ssp_train", f"model.init {init} holds non-finite weights")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.safetensors"]


# ----------------------------------------------- a CUDA device this machine does not have
@pytest.mark.parametrize("command", ["fit", "check"])
@pytest.mark.parametrize("device,gpus,needle", [
    ("cuda", 0, "run.device is 'cuda' but CUDA is not available on this machine; use "
                "run.device=cpu or auto"),
    ("cuda:3", 1, "run.device is 'cuda:3' but this machine has 1 CUDA device(s)"),
])
def test_a_missing_cuda_device_is_bad_input(command, device, gpus, needle, synth, tmp_path,
                                            capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    if command == "fit":
        rc, err = _fit(capsys, synth, tmp_path / "run", f"run.device={device}")
    else:
        rc, err = _run(capsys, "check", "--recipe", IMAGE, f"data.root={synth}",
                       f"run.device={device}")
    assert rc == 2
    assert_one_error_line(err, "ssp_train", needle)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------- item 9: weight files that are pickles
def _pickle(path):
    with open(path, "wb") as f:
        pickle.dump({"state": [1.0], "evil": os.system}, f)
    return path


@pytest.mark.parametrize("kind,needle", [("pickle", "pickled Python objects"),
                                         ("empty", "empty (0 bytes)"),
                                         ("missing", "does not exist")])
@pytest.mark.parametrize("key", ["model.backbone_weights", "loss.flow_weights"])
def test_bad_weight_files(key, kind, needle, synth, tmp_path, capsys):
    weights = tmp_path / "weights.pth"
    if kind == "pickle":
        _pickle(weights)
    elif kind == "empty":
        weights.write_bytes(b"")
    extra = [f"{key}={weights}"]
    if key == "loss.flow_weights":
        extra = ["loss.kind=ssp", "loss.flow=raft", "model.kind=ssp", *extra]
    before = snapshot(tmp_path)
    rc, err = _fit(capsys, synth, tmp_path / "run", *extra)
    assert rc == 2
    assert_one_error_line(err, "ssp_train", key, str(weights), needle)
    assert snapshot(tmp_path) == before


# ------------------------------------------- item 11: export-logits --input-size 31x33
def test_export_logits_input_size_must_be_multiples_of_32(synth, tmp_path, capsys):
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.safetensors"
    save_artifact(teacher, create_model(preset("lite", input_size=(64, 96))), UAVID)
    rc, err = _run(capsys, "export-logits", "--teacher", str(teacher), "--data", str(synth),
                   "--out", str(tmp_path / "logits"), "--input-size", "31x33")
    assert rc == 2
    assert_one_error_line(err, "ssp_train export-logits", "--input-size", "multiples of 32",
                          "31x33", "e.g. 32x32")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher.safetensors"]


def test_export_logits_never_mixes_teachers_or_datasets(synth, tmp_path, capsys):
    teachers = []
    for seed in (0, 1):   # same architecture, other weights
        torch.manual_seed(seed)
        teachers.append(tmp_path / f"teacher{seed}.safetensors")
        save_artifact(teachers[-1], create_model(preset("lite", input_size=(64, 96))), UAVID)
    out = tmp_path / "logits"
    argv = ["export-logits", "--data", str(synth), "--out", str(out), "--device", "cpu"]
    assert _run(capsys, *argv, "--teacher", str(teachers[0]))[0] == 0
    before = snapshot(out)
    rc, err = _run(capsys, *argv, "--teacher", str(teachers[1]))
    assert rc == 2
    assert_one_error_line(err, "ssp_train", "holds logits of another teacher",
                          "same --teacher, --data and --split")
    other = tmp_path / "other_data"
    shutil.copytree(synth, other)
    rc, err = _run(capsys, "export-logits", "--data", str(other), "--out", str(out),
                   "--device", "cpu", "--teacher", str(teachers[0]))
    assert rc == 2
    assert_one_error_line(err, "ssp_train", "holds logits of another dataset")
    assert snapshot(out) == before
    assert _run(capsys, *argv, "--teacher", str(teachers[0]))[0] == 0   # a true resume


# ------------------------------------------- --out that is a file; a --data NAME that escapes
@pytest.mark.parametrize("under", [False, True])
@pytest.mark.parametrize("command", ["export-logits", "pipeline"])
def test_out_that_is_a_file(command, under, synth, tmp_path, capsys):
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.safetensors"
    save_artifact(teacher, create_model(preset("lite", input_size=(64, 96))), UAVID)
    notes = tmp_path / "notes.txt"
    notes.write_text("the user's\n")
    out = notes / "sub" if under else notes
    before = snapshot(tmp_path)
    args = (["--teacher", str(teacher), "--data", str(synth)] if command == "export-logits"
            else ["--profile", "tiny", "--data", f"tiny={synth}", "--stages", "image"])
    rc, err = _run(capsys, command, *args, "--out", str(out))
    assert rc == 2    # was a bare "[Errno 17] File exists: ..."
    needle = f"is under a file ({notes})" if under else "is a file, not a folder"
    assert_one_error_line(err, "ssp_train", f"--out {out} {needle}")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["../esc", ".", "..", "a/b", ".hidden", ""])
def test_pipeline_data_names_are_plain_folder_names(name, synth, tmp_path, capsys):
    rc, err = _run(capsys, "pipeline", "--profile", "tiny", "--data", f"{name}={synth}",
                   "--out", str(tmp_path / "out"), "--stages", "image")
    assert rc == 2    # '../esc' wrote its runs beside --out
    assert_one_error_line(err, "ssp_train pipeline", "argument --data")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------ a corrupt checkpoint: named, and kept
@pytest.mark.parametrize("name,needle", [
    ("model.safetensors", "model.safetensors: Error while deserializing header"),
    ("train_state.safetensors", "train_state.safetensors: Error while deserializing header"),
    ("train_state.json", "train_state.json is not valid JSON"),
])
def test_resume_from_a_truncated_checkpoint_names_the_file_and_keeps_the_run(
        name, needle, synth, resumable_run, tmp_path, capsys):
    run = resumable_run
    path = latest_checkpoint(run) / name
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])

    def files():    # the run folder's own mtime changes: the resume takes and drops its lock
        return {k: v for k, v in snapshot(tmp_path).items() if (tmp_path / k).is_file()}

    before = files()
    rc, err = _resume(capsys, synth, run)
    assert rc == 2
    assert_one_error_line(err, "ssp_train", f"checkpoint {path.parent} cannot be restored",
                          needle, f"remove {run / 'checkpoints'}")
    assert files() == before     # every file of the run and its checkpoint is left as it was


def test_resume_on_a_data_root_holding_another_dataset_is_refused(
        synth, resumable_run, tmp_path, capsys):
    # A dataset copied elsewhere resumes (test_resume.py); one whose train split differs not.
    other = Path(shutil.copytree(synth, tmp_path / "other"))
    clips = (other / "train.txt").read_text().split()
    (other / "train.txt").write_text("\n".join(clips[:-1]) + "\n")
    before = {k: v for k, v in snapshot(resumable_run).items()
              if (resumable_run / k).is_file()}
    rc, err = _resume(capsys, other, resumable_run)
    assert rc == 2
    assert_one_error_line(err, "ssp_train", "differs from", "in ['data.root']",
                          "a new data.root resumes only if its dataset.json and train.txt are "
                          "the run's", str(resumable_run / "dataset_identity.json"))
    assert {k: v for k, v in snapshot(resumable_run).items()
            if (resumable_run / k).is_file()} == before
    rc, err = _resume(capsys, Path(shutil.copytree(synth, tmp_path / "same")), resumable_run)
    assert rc == 0, err


@pytest.mark.parametrize("pointer,needle", [
    (b"[1]", "holds list [1]"),                                    # was a TypeError traceback
    (b'{"dir": "../../..", "epoch": 1}', "has dir '../../..'"),   # never leaves checkpoints/
    (b'{"dir": "epoch_0001"}', "has epoch null for dir 'epoch_0001'"),
    (b"\xff\xfe", "is not readable JSON"),
])
def test_resume_with_a_malformed_latest_json_names_the_file(
        pointer, needle, synth, resumable_run, tmp_path, capsys):
    run = resumable_run
    (run / "summary.json").unlink()     # as if interrupted after its first checkpoint
    latest = run / "checkpoints" / "latest.json"
    latest.write_bytes(pointer)
    before = {k: v for k, v in snapshot(tmp_path).items() if (tmp_path / k).is_file()}
    rc, err = _resume(capsys, synth, run)
    assert rc == 2
    assert_one_error_line(err, "ssp_train", f"{latest} {needle}", '"dir": "epoch_NNNN"',
                          f"remove {latest.parent}")
    assert {k: v for k, v in snapshot(tmp_path).items() if (tmp_path / k).is_file()} == before


# ------------------------------------------------------------ item 2: one run per folder
def test_second_run_on_the_same_folder_is_refused_and_a_dead_runs_lock_taken_over(
        synth, tmp_path, capsys):
    run = tmp_path / "run"
    overrides = [f"data.root={synth}", f"run.out_dir={run}", "val.every=0", "run.plot=false",
                 "optim.epochs=1"]
    first = console("ssp_train", "fit", "--recipe", IMAGE, *overrides)
    try:
        lock = run / LOCK_FILE
        wait_until(lambda: lock.is_file() and lock.read_text().strip() == str(first.pid),
                   first)
        first.send_signal(signal.SIGSTOP)   # holds the lock, does nothing: a real 'busy' run
        rc, err = _run(capsys, "fit", "--recipe", IMAGE, *overrides)
        assert rc == 2
        assert_one_error_line(err, "ssp_train", f"in use by another ssp_train fit (PID "
                              f"{first.pid})", str(run))
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    # kill -9 left the lock file with the dead PID; the kernel dropped the lock itself.
    assert lock.read_text().strip() == str(first.pid)
    resume = ["--resume"] if latest_checkpoint(run) is not None else []
    rc, err = _run(capsys, "fit", "--recipe", IMAGE, *resume, *overrides)
    assert rc == 0, err
    assert (run / "model.safetensors").is_file() and not lock.exists()


def test_lock_file_of_a_dead_process_is_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text("999999999\n")
    lock = RunLock(tmp_path)
    lock.acquire()
    assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    with pytest.raises(ValueError, match=f"in use by another ssp_train fit \\(PID "
                                         f"{os.getpid()}\\)"):
        RunLock(tmp_path).acquire()   # a second holder, even in the same process, is refused
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_folder_that_holds_no_run_is_refused(synth, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"a model of the user's, its only copy")
    (folder / "train.csv").write_text("precious\n1\n")
    before = snapshot(tmp_path)
    rc, err = _fit(capsys, synth, folder)   # fit writes model.safetensors and train.csv
    assert rc == 2
    assert_one_error_line(err, "ssp_train", f"run.out_dir {folder} is not empty",
                          "model.safetensors, train.csv", "new or empty folder")
    assert snapshot(tmp_path) == before
