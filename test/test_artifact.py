"""Artifacts: round trips, header-only metadata, clear errors (weight loaders: test_pretrained)."""

import json
import os
import stat

import pytest
from safetensors.torch import save_file
from ssp_perception.artifact import (ArtifactError, baseline_kind, FORMAT_VERSION, load_artifact,
                                     META_KEY, read_meta, save_artifact)
from ssp_perception.classes import RURALSCAPES, UAVID
from ssp_perception.models import create_model
import torch


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model(seed=4)


@pytest.fixture
def saved(tmp_path, model):
    path = tmp_path / "lite.safetensors"
    save_artifact(path, model, UAVID, {"recipe": "unit", "epochs": 1, "metrics": {"miou": 0.5}})
    return path


@pytest.fixture
def outputs(tiny_image, translation):
    """Return a function giving a model's SSP-step outputs on one fixed pair of frames."""
    def run(model):
        x, prev = tiny_image(1, seed=7), tiny_image(1, seed=8)
        with torch.no_grad():
            logits, feat = model.image_step(prev)
            return model.step(x, logits, feat, translation(3, -2), torch.ones(1))
    return run


def _write(path, tensors, meta: dict | None):
    header = {"format": "pt"}
    if meta is not None:
        header[META_KEY] = json.dumps(meta)
    save_file(tensors, str(path), metadata=header)


def _tensors(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_fp32_round_trip_reproduces_outputs_and_metadata(saved, model, outputs):
    loaded, meta = load_artifact(saved)
    assert not loaded.training
    for a, b in zip(outputs(model), outputs(loaded)):
        assert torch.equal(a, b)
    assert meta.model == model.cfg and meta.class_set == UAVID
    assert meta.format_version == FORMAT_VERSION and meta.dtype == "float32"
    assert (meta.mean, meta.std, meta.input_size) == (model.cfg.mean, model.cfg.std, (64, 96))
    assert meta.provenance["recipe"] == "unit" and meta.provenance["metrics"] == {"miou": 0.5}
    assert "created" in meta.provenance and "ssp_perception_version" in meta.provenance
    assert read_meta(saved) == meta
    assert not [p for p in saved.parent.iterdir() if p.name.endswith(".tmp")]


def test_saved_artifact_is_world_readable(saved, model):
    # Written via a mkstemp file (0600) and renamed: the artifact must not stay owner-only.
    assert stat.S_IMODE(saved.stat().st_mode) == 0o644
    save_artifact(saved, model, UAVID, half=True)  # overwriting keeps the mode too
    assert stat.S_IMODE(saved.stat().st_mode) == 0o644


def test_fp16_round_trip_is_close_and_small(tmp_path, model, outputs):
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    save_artifact(full, model, UAVID)
    save_artifact(half, model, UAVID, half=True)
    assert os.path.getsize(half) < 0.55 * os.path.getsize(full)
    loaded, meta = load_artifact(half)
    assert meta.dtype == "float16"
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    ref, got = outputs(model), outputs(loaded)
    scale = ref[0].abs().max()
    assert (ref[0] - got[0]).abs().max() < 5e-3 * scale
    assert (ref[2] - got[2]).abs().max() < 5e-3


def test_lite_preset_fp16_artifact_is_under_10_mb(tiny_config, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "lite.safetensors"
    save_artifact(path, create_model(tiny_config()), UAVID, half=True)
    assert os.path.getsize(path) < 10e6


def test_read_meta_reads_only_the_header(saved):
    # A file whose tensor data is gone still has a readable header... but is reported as
    # truncated, because the header promises data the file lacks.
    data = saved.read_bytes()
    cut = saved.with_name("cut.safetensors")
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="cut.safetensors: truncated or corrupt"):
        read_meta(cut)
    with pytest.raises(ArtifactError, match="truncated or corrupt"):
        load_artifact(cut)


@pytest.mark.parametrize("content, message", [
    (b"", "too short to be a safetensors file"),
    (os.urandom(4096), "not a safetensors file"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}", "header is not JSON"),
    (b"\x02\x00\x00\x00\x00\x00\x00\x00[]", "header is not a JSON object"),
])
def test_garbage_files_are_rejected(tmp_path, content, message):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(content)
    with pytest.raises(ArtifactError, match=message) as err:
        load_artifact(path)
    assert "garbage.safetensors" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match="nope.safetensors: no such artifact file"):
        load_artifact(tmp_path / "nope.safetensors")


def test_missing_or_bad_metadata(tmp_path, model):
    path = tmp_path / "plain.safetensors"
    _write(path, _tensors(model), None)
    with pytest.raises(ArtifactError, match="no 'ssp_perception' metadata"):
        read_meta(path)
    save_file(_tensors(model), str(path), metadata={META_KEY: "{broken"})
    with pytest.raises(ArtifactError, match="metadata is not valid JSON"):
        read_meta(path)


def _meta(ssp, **changes):
    meta = {"format_version": FORMAT_VERSION, "model": ssp.cfg.to_dict(),
            "class_set": UAVID.to_dict(), "dtype": "float32", "provenance": {}}
    meta.update(changes)
    return meta


@pytest.mark.parametrize("changes, message", [
    ({"format_version": 99}, "unsupported artifact format version 99.*reads version 1"),
    ({"class_set": RURALSCAPES.to_dict()}, "class count mismatch.*8 classes.*has 12"),
    ({"model": {"preset": "lite"}}, r"missing required key\(s\) \['backbone'"),
    ({"dtype": "int8"}, "dtype must be float32 or float16"),
    ({"mean": [0.5, 0.5, 0.5]}, "metadata mean .* disagrees with the model config"),
])
def test_inconsistent_metadata(tmp_path, model, changes, message):
    path = tmp_path / "meta.safetensors"
    _write(path, _tensors(model), _meta(model, **changes))
    with pytest.raises(ArtifactError, match=message):
        read_meta(path)


def test_weights_of_another_architecture(tiny_config, tmp_path, model):
    path = tmp_path / "other.safetensors"
    other = create_model(tiny_config(head_channels=16, sim_op="cosine"))
    _write(path, _tensors(other), _meta(model))
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    text = str(err.value)
    assert "do not match the architecture" in text
    assert "missing 11: similarity.block.0.bias" in text  # no learned block in a cosine model
    assert "unexpected none" in text
    assert ("shape mismatches (stored vs expected) 61: "
            "image_model.decoder.ppm.branches.0.0.weight (16, 320, 1, 1) vs (32, 320, 1, 1)"
            in text)
    assert "(+55 more)" in text  # long lists are cut short


def test_weights_with_another_class_count(tiny_config, tmp_path, model):
    path = tmp_path / "classes.safetensors"
    twelve = create_model(tiny_config(num_classes=12))
    _write(path, _tensors(twelve), _meta(model))
    with pytest.raises(ArtifactError, match="class count mismatch: the weights have 12 classes, "
                                            "the metadata 8"):
        load_artifact(path)


# What ssp_training.baselines.save_baseline adds to the provenance: VideoBaseline's
# artifact_provenance() for BaselineConfig("dff") (ssp_perception tests never import
# ssp_training, so it is spelled out).
DFF_PROVENANCE = {"video_model": {"kind": "dff", "config": {
    "kind": "dff", "flow": {"source": "dis", "raft_weights": "", "iterations": 8,
                            "finetune": True, "dis_preset": "medium"},
    "keyframe_interval": 8, "tcb_frames": 3, "tcb_channels": 0, "ocr_channels": 0,
    "ocr_key_channels": 0}}}


class _BaselineLike(torch.nn.Module):
    """Stand in for a DIS-flow DFF baseline: its state dict is the image model's alone."""

    def __init__(self, ssp):
        super().__init__()
        self.image_model = ssp.image_model
        self.cfg = ssp.cfg
        self.num_classes = ssp.num_classes


@pytest.mark.parametrize("provenance, kind", [
    (DFF_PROVENANCE, "dff"),  # save_baseline
    ({"model_kind": "tcb_ocr", "recipe": {}}, "tcb_ocr"),  # ssp_train's generic provenance
])
def test_video_baseline_artifacts_are_refused_with_a_pointer(tmp_path, model, provenance, kind):
    path = tmp_path / "baseline.safetensors"
    # The same call save_baseline makes: save_artifact with the baseline's provenance entry.
    save_artifact(path, _BaselineLike(model), UAVID, provenance)
    meta = read_meta(path)  # load_baseline reads the header with read_meta: it must work
    assert baseline_kind(meta) == kind
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    text = str(err.value)
    assert text.startswith(f"{path}: this is a video-baseline artifact (kind '{kind}'")
    assert "ssp_training.baselines.load_baseline" in text
    assert "similarity" not in text and "missing" not in text


def test_ssp_and_image_model_kinds_are_not_baselines(saved, tmp_path, model):
    assert baseline_kind(read_meta(saved)) is None
    image = tmp_path / "image.safetensors"
    save_artifact(image, model, UAVID, {"model_kind": "image"})
    assert baseline_kind(read_meta(image)) is None
    assert load_artifact(image)[1].provenance["model_kind"] == "image"


def test_save_rejects_mismatched_class_set_and_keeps_the_old_file(saved, model):
    before = saved.read_bytes()
    with pytest.raises(ArtifactError, match="model has 8 classes but class set 'ruralscapes'"):
        save_artifact(saved, model, RURALSCAPES)
    with pytest.raises(ArtifactError, match="provenance is not JSON-serialisable"):
        save_artifact(saved, model, UAVID, {"when": object()})
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]


def test_corrupt_header_entries(tmp_path):
    path = tmp_path / "odd.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [1]}}).encode()  # no data_offsets
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(ArtifactError, match="odd.safetensors: corrupt safetensors header"):
        read_meta(path)
