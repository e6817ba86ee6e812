"""The whole paper pipeline on tiny synthetic data: every stage, resumable, one merged table."""

import json
import os
import stat

import pytest
from ssp_training.data.synth import generate_dataset, SynthConfig
from ssp_training.eval.report import ModelResult
from ssp_training.eval.tables import merged_table, MergedRow
from ssp_training.pipeline import ORDER, PipelineError, Plan, recipe_path, STAGES
from ssp_training.train import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    data = root / "synth"
    generate_dataset(data, SynthConfig(size=(64, 96), frames=6, sequences=3, seed=0),
                     progress=False)
    return root, data


@pytest.fixture(scope="module")
def pipeline_run(tiny):
    root, data = tiny
    out = root / "out"
    old = os.umask(0o077)  # outputs must still be readable by everyone (0644)
    try:
        rc = main(["pipeline", "--profile", "tiny", "--data", f"synth={data}",
                   "--out", str(out), "--set", "run.threads=1"])
    finally:
        os.umask(old)
    assert rc == 0
    return out


def test_every_stage_has_a_tiny_and_a_paper_recipe():
    for stage in ORDER:
        if stage != "teacher_logits":
            assert recipe_path("tiny", stage, "synth").is_file(), stage
            assert recipe_path("paper", stage, "uavid").is_file(), stage
            if not stage.startswith("ssp_"):
                assert recipe_path("paper", stage, "ruralscapes").is_file(), stage


def test_tiny_pipeline_runs_every_stage_and_merges_one_table(pipeline_run):
    out = pipeline_run
    table = json.loads((out / "table.json").read_text())
    rows = {r["name"]: r for r in table["rows"]}
    assert list(rows) == [s.row for s in STAGES if s.row], "every paper row, in paper order"
    for row in rows.values():
        assert row["params"] > 0 and row["gflops"] > 0 and row["fps"] > 0
        assert 0 <= row["synth"]["miou"]["mean"] <= 100 and row["synth"]["tc"]["n"] == 1
    assert rows["SSP, λ = 0.2"]["lambda"] == 0.2
    md = (out / "table.md").read_text()
    assert md.startswith("| method | params | GFLOPs | FPS | synth mIoU / TC |")
    # The no-registration ablation is evaluated the way it was trained: identity homographies.
    report = json.loads((out / "synth/eval/seed0/64x96/eval.json").read_text())
    resolved = report["settings"]["resolved"]
    assert resolved["SSP, no registration"]["homography"] == "identity"
    assert resolved["SSP"]["homography"] == "dataset"
    assert report["settings"]["tc_out_of_view"] == "class0"
    for path in (out / "table.md", out / "table.json", out / "plots/lambda_sweep.png",
                 out / "plots/accuracy_vs_consistency.png",
                 out / "synth/eval/seed0/64x96/eval.json",
                 out / "synth/eval/seed0/64x96/table.md", out / "synth/ssp/seed0/recipe.yaml"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    # Finished runs keep their artifact, not their resume state.
    assert (out / "synth/ssp/seed0/model.safetensors").is_file()
    assert not (out / "synth/ssp/seed0/checkpoints").exists()
    assert (out / "synth/teacher/seed0/train_logits/logits.json").is_file()


def test_rerun_resumes_stage_by_stage(pipeline_run, tiny, capsys):
    _, data = tiny
    out = pipeline_run
    (out / "synth/dff/seed0/summary.json").unlink()  # as if dff had been interrupted
    before = (out / "synth/ssp/seed0/model.safetensors").stat().st_mtime_ns
    assert main(["pipeline", "--profile", "tiny", "--data", f"synth={data}", "--out",
                 str(out), "--set", "run.threads=1"]) == 0
    log = capsys.readouterr().out
    assert "synth ssp seed 0: done" in log and "synth dff seed 0: resuming" in log
    assert (out / "synth/ssp/seed0/model.safetensors").stat().st_mtime_ns == before
    assert (out / "synth/dff/seed0/summary.json").is_file()


def test_bad_plans_fail_with_a_clear_message(tiny, capsys):
    _, data = tiny
    with pytest.raises(PipelineError, match="recipes for"):
        Plan(profile="paper", datasets={"synth": data}, seeds=(0,), out=data)
    rc = main(["pipeline", "--profile", "tiny", "--data", f"synth={data}", "--out",
               str(data.parent / "bad"), "--set", "optim.lrr=1"])
    err = capsys.readouterr().err
    assert rc == 2 and "recipe problem(s)" in err and "unknown key(s) ['lrr']" in err


def _result(name, miou, tc):
    return ModelResult(name=name, checkpoint="c", kind="ssp", miou=miou, per_class_iou={},
                       tc=tc, tc_per_clip={}, tc_curves={}, params=43_380_000, gflops=322.8,
                       fps=95.0, latency_ms=10.5, latency_p90_ms=11.0, cpu_ms=10.0,
                       frames=10, labelled_frames=1)


def test_merged_table_gives_mean_and_std_over_seeds_per_dataset():
    row = MergedRow("SSP", lam=0.5)
    for miou, tc in ((79.0, 92.0), (80.0, 93.0), (81.0, 91.0)):
        row.add("uavid", _result("SSP", miou, tc))
    row.add("ruralscapes", _result("SSP", 64.0, 94.06))
    md = merged_table([row], ["uavid", "ruralscapes"])
    assert ("| SSP | 43.38 M | 322.8 | 95.0 | 80.00 ± 1.00 / 92.00 ± 1.00 | 64.00 / 94.06 |"
            in md)
    assert "mean ± std over 3 seeds" in md
    js = row.to_json()
    assert js["uavid"]["tc"]["n"] == 3 and js["uavid"]["miou"]["std"] == 1.0
