"""GPU check: the --cpu --quick run writes a complete report; failing parts do not stop it."""

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest
from ssp_perception.files import OUTPUT_MARKER
from ssp_perception.tools import gpu_check
from ssp_perception.tools.gpu_check import (CheckConfig, Context, KINDS, main, run_check,
                                            run_part, STATUSES, training_part)

ROOT = Path(__file__).resolve().parents[1]
RECORD_KEYS = {"kind", "name", "params", "budget_s", "status", "error", "metrics",
               "elapsed_s"}


def _env() -> dict:
    # The check runs ssp_training in a subprocess: give it both packages' sources.
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "ssp_training"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def _by_name(report: dict) -> dict:
    return {p["name"]: p for p in report["parts"]}


def test_quick_cpu_run_writes_report_and_table(tmp_path):
    out = tmp_path / "gpu"
    proc = subprocess.run([sys.executable, "-m", "ssp_perception.tools.gpu_check", "--cpu",
                           "--quick", "--out", str(out)], capture_output=True, text=True,
                          env=_env(), cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1/12 inference: lite 64x96 float32 eager" in proc.stdout  # progress lines
    report = json.loads((out / gpu_check.JSON_NAME).read_text())
    assert json.loads((out / OUTPUT_MARKER).read_text()) == {"tool": gpu_check.TOOL}
    assert report["tool"] == gpu_check.TOOL and report["schema_version"] == 1
    assert report["complete"] is True and report["mode"] == "cpu quick"
    assert "random weights" in report["weights"]
    assert report["environment"]["device"] == "cpu" and report["environment"]["torch"]
    assert {p["kind"] for p in report["parts"]} == set(KINDS)
    for part in report["parts"]:
        assert set(part) == RECORD_KEYS, part["name"]
        assert part["status"] in STATUSES
        assert bool(part["error"]) == (part["status"] != "ok"), part["name"]
    parts = _by_name(report)
    for dtype in ("float32", "bfloat16"):
        m = parts[f"lite 64x96 {dtype} eager"]
        assert m["status"] == "ok", m["error"]
        m = m["metrics"]
        assert m["image_n"] == m["ssp_n"] == m["stream_n"] == 2
        for key in ("image_ms", "ssp_ms", "stream_ms", "stream_fps", "ssp_over_image"):
            assert m[key] > 0, key
        assert m["stream_ms"] >= m["stream_model_ms"]
    assert parts["lite 64x96 float16 eager"]["status"] == "skipped"
    assert "CUDA" in parts["lite 64x96 float32 cuda_graphs"]["error"]
    assert "--quick" in parts["lite 64x96 float32 compile"]["error"]
    train = parts["lite 64x64 batch 2 AMP training"]
    assert train["status"] == "ok", train["error"]
    assert train["metrics"]["losses_finite"] and train["metrics"]["steps"] == 2
    assert train["metrics"]["amp_dtype"] == "bfloat16" and train["metrics"]["steps_per_s"] > 0
    reg = parts["64x96 frames: kornia DISK+LightGlue vs ORB"]
    assert reg["status"] == "ok", reg["error"]
    assert reg["metrics"]["orb_frame_n"] >= 1 and reg["metrics"]["kornia_frame_ms"] > 0
    assert report["summary"]["best"] is None and not report["summary"]["targets_apply"]
    table = (out / gpu_check.TABLE_NAME).read_text()
    assert table == gpu_check.render_table(report)
    row = next(line for line in table.splitlines()
               if line.startswith("| lite | 64x96 | float32 | eager |"))
    assert row.endswith("| ok |") and row.count("|") == 13
    assert "| skipped: CUDA graphs need a CUDA device |" in table
    assert "not evaluated" in table


def test_failing_part_is_recorded_and_the_rest_runs():
    # 64x100 is no network size (multiples of 32): the inference part fails for real inside
    # the model's construction, and registration of 64x100 frames still runs after it.
    cfg = CheckConfig.quick_cpu(sizes=(("lite", (64, 100)),), dtypes=("float32",),
                                modes=("eager",), kinds=("inference", "registration"))
    lines = []
    report = run_check(cfg, progress=lines.append)
    first, second = report["parts"]
    assert first["status"] == "error" and "multiples of 32" in first["error"]
    assert first["metrics"] == {}
    assert second["kind"] == "registration" and second["status"] == "ok", second["error"]
    assert second["metrics"]["orb_frame_ms"] > 0
    assert report["complete"] and any("-> error: ValueError" in line for line in lines)


def test_part_past_its_budget_is_interrupted():
    # 50 untimed steps at batch 4 (plus the subprocess's start) take far longer than 5 s on
    # any CPU: a real overrun, and the subprocess is killed.
    ctx = Context(CheckConfig.quick_cpu(train_budget_s=5.0, train_size=(128, 128),
                                        train_batch=4, train_warmup=50))
    part = training_part(ctx)
    record = run_part(part, run_deadline=1e12)
    assert record["status"] == "timeout", record
    assert "budget" in record["error"] and record["elapsed_s"] < 30


@pytest.mark.parametrize("argv,needle", [
    (["--quick"], "--quick is the CPU smoke mode"),
    (["--cpu", "--parts", "inference,nope"], "unknown precisions, modes or parts"),
])
def test_bad_arguments_give_one_line_errors(tmp_path, argv, needle, capsys):
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_bad_size_and_foreign_output_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--cpu", "--quick", "--size", "lite=60x96", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and "multiples of 32" in capsys.readouterr().err
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert main(["--cpu", "--quick", "--out", str(foreign)]) == 2
    assert "only replaces its own outputs" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep"
