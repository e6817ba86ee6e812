"""KD-SSP end to end on tiny synthetic data: teacher -> export-logits -> KD-SSP, plus units."""

import json

import numpy as np
import pytest
from ssp_perception.artifact import read_meta
from ssp_training.data.dataset import load_logits, logits_path
from ssp_training.data.synth import generate_dataset, SynthConfig
from ssp_training.kd import KDImageTask, KDSSPTask
from ssp_training.logits import export_logits, MANIFEST
from ssp_training.preflight import preflight
from ssp_training.recipes import CONFIG_DIR, load_recipe, RecipeError
from ssp_training.tasks import BatchFlow
from ssp_training.train import fit, main
import torch

pytestmark = pytest.mark.slow

IMAGE = str(CONFIG_DIR / "synth_tiny_image.yaml")
KD_SSP = str(CONFIG_DIR / "synth_tiny_kd_ssp.yaml")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synth"
    generate_dataset(root, SynthConfig(size=(64, 96), frames=5, sequences=3, seed=1),
                     progress=False)
    return root


def test_teacher_logits_export_then_kd_ssp_trains_end_to_end(synth, tmp_path, capsys):
    teacher = tmp_path / "teacher"
    fit(IMAGE, [f"data.root={synth}", f"run.out_dir={teacher}", "run.threads=0",
                "optim.epochs=1", "val.every=0"], resume=False)
    logits = tmp_path / "logits"
    rc = main(["export-logits", "--teacher", str(teacher / "model.safetensors"),
               "--data", str(synth), "--out", str(logits)])
    assert rc == 0
    assert "GiB before compression" in capsys.readouterr().out  # the size estimate
    manifest = json.loads((logits / MANIFEST).read_text())
    assert manifest["size"] == [16, 24] and manifest["dtype"] == "float16"
    assert all(c["done"] for c in manifest["clips"].values())
    z = load_logits(logits_path(logits, "synth_000", "000003"))
    assert z.shape == (8, 16, 24) and np.isfinite(z).all()
    # Resumable: a second run finds nothing to do and changes no file.
    stamp = logits_path(logits, "synth_000", "000003").stat().st_mtime_ns
    export_logits(teacher / "model.safetensors", synth, logits, progress=False)
    assert logits_path(logits, "synth_000", "000003").stat().st_mtime_ns == stamp

    out = tmp_path / "kd_ssp"
    summary = fit(KD_SSP, [f"data.root={synth}", f"run.out_dir={out}", "run.threads=0",
                           f"data.teacher_logits={logits}",
                           f"model.init={teacher / 'model.safetensors'}"], resume=False)
    assert summary["epochs"] == 1 and np.isfinite(summary["final_val"]["miou"])
    header = (out / "train.csv").read_text().splitlines()[0].split(",")
    assert {"kd", "kd_prev", "tc", "loss"} <= set(header) and "ce" not in header
    assert read_meta(out / "model.safetensors").provenance["model_kind"] == "ssp"


def test_kd_preflight_names_missing_or_mismatched_teacher_logits(synth, tmp_path):
    recipe = load_recipe(KD_SSP, [f"data.root={synth}", "model.init=",
                                  f"data.teacher_logits={tmp_path / 'none'}"])
    with pytest.raises(RecipeError, match="export-logits"):
        preflight(recipe)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / MANIFEST).write_text(json.dumps(
        {"num_classes": 5, "size": [16, 24], "clips": {}}))
    recipe = load_recipe(KD_SSP, [f"data.root={synth}", "model.init=",
                                  f"data.teacher_logits={tmp_path / 'bad'}"])
    with pytest.raises(RecipeError, match="5-class logits"):
        preflight(recipe)
    with pytest.raises(RecipeError, match="forward flow"):
        preflight(load_recipe(KD_SSP, [f"data.root={synth}", "model.init=", "loss.flow=gt"]))


def _batch(b=2, c=4, h=8, w=12):
    torch.manual_seed(0)
    img = torch.randn(b, 3, h, w)
    return {"image": img, "prev_image": img.clone(), "teacher_logits": torch.randn(b, c, h, w),
            "prev_teacher_logits": torch.randn(b, c, h, w),
            "flow": torch.zeros(b, 2, h, w), "flow_forward": torch.zeros(b, 2, h, w)}


def test_kd_image_task_is_zero_when_the_student_equals_the_teacher():
    recipe = load_recipe(IMAGE, ["data.root=x", "loss.kind=kd_image", "data.teacher_logits=t"])
    batch = _batch()
    losses = KDImageTask(recipe.loss)({"out": batch["teacher_logits"].clone()}, batch)
    assert set(losses) == {"kd", "loss"} and float(losses["loss"]) == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="do not match"):
        KDImageTask(recipe.loss)({"out": torch.zeros(2, 3, 8, 12)}, batch)


def test_kd_ssp_fusion_averages_the_frames_where_flows_agree():
    recipe = load_recipe(KD_SSP, ["data.root=x", "loss.flow=gt", "loss.tc_weight=0"])
    task = KDSSPTask(recipe.loss, BatchFlow("gt"))
    batch = _batch()
    cur, prev = task.soft_labels(batch, batch["teacher_logits"])
    mean = 0.5 * (batch["teacher_logits"] + batch["prev_teacher_logits"])
    # Zero flow: every pixel is visible, both targets are the average of the two frames.
    assert torch.allclose(cur, mean) and torch.allclose(prev, mean)
    losses = task({"out": mean.clone(), "prev_logits": mean.clone()}, batch)
    assert set(losses) == {"kd", "kd_prev", "loss"}
    assert float(losses["loss"]) == pytest.approx(0, abs=1e-6)
