"""The shell entry points: scripts/reproduce.sh and scripts/eval_baselines.sh.

Both are run from another directory with relative paths, which must resolve against the
caller's directory (not the repository's).
"""

import json
import os
from pathlib import Path
import subprocess

import pytest
from ssp_training.data.synth import generate_dataset, SynthConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("scripts")
    generate_dataset(root / "synth", SynthConfig(size=(64, 96), frames=6, sequences=3, seed=0),
                     progress=False)
    return root


def _run(cmd, cwd, **env):
    full = {**os.environ, "MPLBACKEND": "Agg", **env}
    return subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=600)


def test_reproduce_resolves_paths_against_the_caller_and_names_bare_roots(workdir):
    proc = _run(["bash", str(REPO / "scripts/reproduce.sh"), "synth", "out", "--profile",
                 "tiny", "--stages", "image", "--set", "run.threads=1"], workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = json.loads((workdir / "out/table.json").read_text())
    # A bare root is named after its class set (the synthetic data uses UAVid's).
    assert table["datasets"] == {"uavid": "synth"}
    assert [r["name"] for r in table["rows"]] == ["Base Image Model"]
    assert (workdir / "out/uavid/image/seed0/model.safetensors").is_file()


def test_reproduce_without_arguments_prints_its_usage(workdir):
    proc = _run(["bash", str(REPO / "scripts/reproduce.sh")], workdir)
    assert proc.returncode == 2 and "Usage: scripts/reproduce.sh DATASETS OUT" in proc.stderr


def test_eval_baselines_resolves_paths_against_the_caller(workdir):
    proc = _run(["bash", str(REPO / "scripts/eval_baselines.sh"), "synth", "baselines"],
                workdir, KINDS="dff", EPOCHS="1", SIZE="64 96", THREADS="1",
                EVAL_ARGS="--max-frames 3 --no-plots --flow gt")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (workdir / "baselines/dff/model.safetensors").is_file()
    rows = [r["name"] for r in json.loads((workdir / "baselines/eval/eval.json").read_text())
            ["results"]]
    assert rows == ["image model", "SSP", "DFF"]
