"""A real ``ssp_train fit`` killed with SIGKILL mid-epoch resumes with --resume and finishes.

It resumes after its run folder and its dataset were moved, too (``run.out_dir`` and
``data.root`` name the new places).
"""

import json
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time

import pytest
from ssp_perception.artifact import load_artifact
from ssp_training.checkpoint import latest_checkpoint, load_train_state
from ssp_training.data.synth import generate_dataset, SynthConfig
from ssp_training.recipes import CONFIG_DIR, load_recipe
from ssp_training.train import fit

pytestmark = pytest.mark.slow

IMAGE = str(CONFIG_DIR / "synth_tiny_image.yaml")


def _steps(csv: Path) -> list[int]:
    if not csv.is_file():
        return []
    lines = csv.read_text().splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines if line]


def _latest_epoch(run: Path) -> int:
    pointer = run / "checkpoints" / "latest.json"
    try:
        return json.loads(pointer.read_text())["epoch"]
    except (OSError, ValueError):
        return 0


def test_sigkill_mid_epoch_then_resume_finishes_with_each_step_once(tmp_path):
    data = tmp_path / "synth"
    generate_dataset(data, SynthConfig(size=(64, 96), frames=8, sequences=3, seed=2),
                     progress=False)
    run = tmp_path / "run"
    # 2 train clips x 8 frames / batch 2 = 8 steps per epoch, 2 epochs.
    overrides = [f"data.root={data}", f"run.out_dir={run}", "optim.batch_size=2",
                 "optim.epochs=2", "val.every=0", "val.max_frames=2", "run.plot=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ssp_training.train", "fit", "--recipe",
                             IMAGE, *overrides], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600
        # Kill once epoch 1 is checkpointed and epoch 2 has logged a step: mid-epoch.
        while not (_latest_epoch(run) == 1 and any(s > 8 for s in _steps(run / "train.csv"))):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "training made no progress"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(_steps(run / "train.csv"))
    assert _latest_epoch(run) == 1 and 8 < killed_at < 16, "the kill must land mid-epoch 2"
    # What the killed process left is a complete, loadable checkpoint.
    folder = latest_checkpoint(run)
    load_artifact(folder / "model.safetensors")
    assert load_train_state(folder)[1]["step"] == 8

    # The run folder and the dataset move (another machine, a job's own scratch folder); the
    # run resumes in its new place on the dataset's new root.
    (tmp_path / "disk2").mkdir()
    (tmp_path / "scratch").mkdir()
    run = Path(shutil.move(run, tmp_path / "disk2" / "run"))
    data = Path(shutil.move(data, tmp_path / "scratch" / "synth"))
    overrides = [o for o in overrides if not o.startswith(("run.out_dir=", "data.root="))] + [
        f"run.out_dir={run}", f"data.root={data}"]
    # keep_resume_state: look at the last checkpoint (a finished run prunes it by default).
    summary = fit(IMAGE, overrides + ["run.threads=0", "run.keep_resume_state=true"],
                  resume=True)
    assert summary["epochs"] == 2 and summary["steps"] == 16
    copy = load_recipe(run / "recipe.yaml")     # the run's recipe names the new places
    assert copy.out_dir == run and copy.data.root == str(data)
    assert _steps(run / "train.csv") == list(range(1, 17)), "each step logged exactly once"
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["epoch_0002", "latest.json"]
    model, meta = load_artifact(run / "model.safetensors")
    assert meta.provenance["epochs"] == 2 and meta.provenance["steps"] == 16
    # A resume of a finished run only rewrites its final artifact.
    again = fit(IMAGE, overrides + ["run.threads=0"], resume=True)
    assert again["steps"] == 16
