"""Image model, UperNet, similarity blocks and ModelConfig (SSP_SPEC §1.1, §2.5)."""

import json

import pytest
from ssp_perception.config import ModelConfig, preset, PRESETS
from ssp_perception.models import create_model, create_similarity
from ssp_perception.models.backbones import Backbone, check_feature_indices
from ssp_perception.models.upernet import adaptive_avg_pool
import torch
import torch.nn.functional as F


pytestmark = pytest.mark.usefixtures("one_thread")


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _meta_model(name: str, **overrides):
    # Parameters on the meta device: exact counts without allocating or initialising 100 M
    # weights (Hiera models are slow to build and run on a CPU).
    with torch.device("meta"):
        return create_model(preset(name, **overrides))


def test_student_hiera_s_upernet_256_has_43_17_m_parameters():
    model = _meta_model("hiera_s")
    assert round(_count(model.image_model.encoder) / 1e6, 2) == 33.95
    assert round(_count(model.image_model.decoder) / 1e6, 2) == 9.22
    assert round(_count(model.image_model) / 1e6, 2) == 43.17
    # SSP adds only the similarity block: 43.38 M as on the poster.
    assert _count(model.similarity) == 207_841
    assert round(_count(model) / 1e6, 2) == 43.38
    assert model.image_model.feature_channels == (96, 192, 384, 768)


def test_teacher_hiera_bplus_upernet_512_has_101_01_m_parameters():
    model = _meta_model("hiera_bplus")
    assert round(_count(model.image_model.encoder) / 1e6, 2) == 68.68
    assert round(_count(model.image_model.decoder) / 1e6, 2) == 32.33
    assert round(_count(model.image_model) / 1e6, 2) == 101.01
    # The similarity block reads the stage-1 width of this backbone (112), not a fixed 96.
    assert model.feature_channels == 112
    assert model.similarity.block[0].in_channels == 224


def test_lite_is_small():
    model = _meta_model("lite")
    assert _count(model) <= 3_500_000  # EfficientNet-Lite0 trunk + UperNet-32: 3.20 M
    assert _count(model.similarity) < 0.01 * _count(model.image_model)


def test_embed_similarity_block_layout():
    block = create_similarity("embed", 32, 4)
    # 1x1 embed 32->4 (132), 3x3 over the 8-channel concat -> 4 (292), BN (8), 1x1 -> 1 (5).
    assert _count(block) == 437 and block.embed_channels == 4
    feat = torch.randn(2, 32, 6, 10)
    emb = block.embed(feat)
    assert emb.shape == (2, 4, 6, 10)
    s = block.eval()(torch.zeros_like(emb), emb)
    assert s.shape == (2, 1, 6, 10) and ((s > 0) & (s < 1)).all()


def test_conv_similarity_block_is_207_841_parameters_for_d_96():
    assert _count(create_similarity("conv", 96)) == 207_841
    assert _count(create_similarity("conv", 96, hidden=96)) == 207_841
    for op in ("cosine", "constant", "reuse"):
        assert _count(create_similarity(op, 96)) == 0
    assert _count(create_similarity("average", 96)) == 1


def test_image_model_interfaces_on_tiny_input(tiny_image, tiny_model):
    model = tiny_model()
    x = tiny_image(batch=2)
    with torch.no_grad():
        feats = model.image_model.encoder(x)
        assert [tuple(f.shape) for f in feats] == [
            (2, c, 64 // s, 96 // s)
            for c, s in zip(model.image_model.feature_channels, (4, 8, 16, 32))]
        logits4 = model.image_model.decoder(feats)
        assert logits4.shape == (2, 8, 16, 24)
        feat = model.image_model.decoder_features(feats)
        assert feat.shape == (2, 32, 16, 24)
        torch.testing.assert_close(model.image_model.classifier(feat), logits4)
        logits = model.image_model(x)
        assert logits.shape == (2, 8, 64, 96)
        torch.testing.assert_close(
            logits, F.interpolate(logits4, size=(64, 96), mode="bicubic", align_corners=False))
    assert model.image_model.num_classes == 8


def test_upsample_mode_follows_the_config(tiny_image, tiny_model):
    model = tiny_model(upsample_mode="bilinear")
    x = tiny_image()
    with torch.no_grad():
        logits4 = model.image_model.decoder(model.image_model.encoder(x))
        torch.testing.assert_close(model.image_model(x), F.interpolate(
            logits4, size=(64, 96), mode="bilinear", align_corners=False))


@pytest.mark.parametrize("size", [(1, 1), (23, 40), (7, 5), (12, 18)])
def test_adaptive_pool_matches_pytorch(size):
    x = torch.randn(2, 3, *size)
    for scale in (1, 2, 3, 6):
        torch.testing.assert_close(adaptive_avg_pool(x, scale), F.adaptive_avg_pool2d(x, scale))


def test_backbone_rejects_wrong_strides_and_unknown_names():
    with pytest.raises(ValueError, match=r"strides \(2, 4, 8, 16\).*feature_indices"):
        Backbone("mobilenetv4_conv_small", (0, 1, 2, 3))
    with pytest.raises(ValueError, match="no_such_net"):
        Backbone("no_such_net", (0, 1, 2, 3))


@pytest.mark.parametrize("name,indices,needle", [
    # was an IndexError from timm (lite) and an AssertionError (Hiera)
    ("efficientnet_lite0", (7, 8, 9, 10), "5 feature stages (indices 0..4, strides 2, 4, 8, "
                                          "16, 32); the stages of strides 4, 8, 16, 32 are "
                                          "feature_indices [1, 2, 3, 4]"),
    ("sam2_hiera_small", (0, 1, 2, 4), "4 feature stages (indices 0..3"),
    ("efficientnet_lite0", (0, 1, 2, 3), "gives strides (2, 4, 8, 16)"),
])
def test_feature_indices_are_checked_against_the_backbones_stages(name, indices, needle):
    with pytest.raises(ValueError) as err:
        check_feature_indices(name, indices)    # on the meta device: no weights built
    assert needle in str(err.value)
    with pytest.raises(ValueError, match="feature_indices"):
        create_model(preset("lite", feature_indices=indices, backbone=name))


def test_similarity_ops():
    prev = torch.randn(2, 16, 8, 12)
    cur = prev.clone()
    cur[1] = -prev[1]  # opposite features: cosine similarity -1 -> s = 0
    s_cos = create_similarity("cosine", 16)(prev, cur)
    assert s_cos.shape == (2, 1, 8, 12)
    torch.testing.assert_close(s_cos[0], torch.full_like(s_cos[0], 0.95))  # capped
    assert s_cos[1].abs().max() == 0
    assert create_similarity("cosine", 16)(torch.zeros_like(prev), cur).abs().max() == 0
    assert create_similarity("constant", 16)(prev, cur).abs().max() == 0
    assert (create_similarity("reuse", 16)(prev, cur) == 1).all()
    avg = create_similarity("average", 16)(prev, cur)
    torch.testing.assert_close(avg, torch.full((2, 1, 8, 12), 0.5))
    conv = create_similarity("conv", 16).eval()(prev, cur)
    assert conv.shape == (2, 1, 8, 12) and ((conv > 0) & (conv < 1)).all()
    with pytest.raises(ValueError, match="unknown sim_op"):
        create_similarity("cossim", 16)


# --- ModelConfig ---------------------------------------------------------------------------

def test_presets_are_valid_and_round_trip_through_json():
    for name, cfg in PRESETS.items():
        assert cfg.preset == name
        assert cfg.input_size[0] % 32 == 0 and cfg.input_size[1] % 32 == 0
        again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert again == cfg
    assert PRESETS["hiera_s"].sim_op == "conv" and PRESETS["hiera_s"].sim_channels == 0
    # The spec's presets fuse at full resolution; lite at stride 4 with the "embed" block.
    assert all(PRESETS[name].upsample_before_mixing for name in ("hiera_s", "hiera_bplus"))
    assert not PRESETS["lite"].upsample_before_mixing and PRESETS["lite"].sim_op == "embed"
    assert preset("hiera_s").head_channels == 256 and preset("hiera_bplus").head_channels == 512


def test_preset_overrides_and_unknown_preset():
    cfg = preset("lite", num_classes=12, sim_op="cosine")
    assert (cfg.num_classes, cfg.sim_op, cfg.backbone) == (12, "cosine", PRESETS["lite"].backbone)
    with pytest.raises(ValueError, match="unknown model preset 'huge'.*hiera_s"):
        preset("huge")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['head'\]"):
        preset("lite", head=3)


def test_config_rejects_unknown_and_missing_keys(tiny_config):
    data = tiny_config().to_dict()
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['colour'\]; allowed"):
        ModelConfig.from_dict({**data, "colour": 1})
    del data["backbone"]
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['backbone'\]"):
        ModelConfig.from_dict(data)
    with pytest.raises(ValueError, match="expected a mapping"):
        ModelConfig.from_dict(["lite"])


@pytest.mark.parametrize("change, message", [
    ({"input_size": (360, 640)}, r"multiples of 32 .*\(360, 640\)"),
    ({"input_size": (384,)}, "input_size must be"),
    ({"sim_op": "cossim"}, "sim_op 'cossim' is not one of conv, embed, cosine"),
    ({"upsample_before_mixing": "yes"}, "upsample_before_mixing must be true or false"),
    ({"num_classes": 0}, "num_classes must be an integer in 1..254"),
    ({"num_classes": 255}, "num_classes"),
    ({"head_channels": -1}, "head_channels must be a positive integer"),
    ({"upsample_mode": "nearest"}, "upsample_mode 'nearest' is not one of bicubic, bilinear"),
    ({"std": (0.2, 0.0, 0.2)}, "std must be positive"),
    ({"mean": (0.5, 0.5)}, "mean must be three numbers"),
    ({"feature_indices": (1, 2, 3)}, "feature_indices must be 4"),
    ({"sim_channels": 1}, "sim_channels must be at least 2"),
    ({"pool_scales": ()}, "pool_scales must be positive"),
    ({"backbone": ""}, "backbone must be a non-empty"),
])
def test_config_rejects_bad_values(tiny_config, change, message):
    with pytest.raises(ValueError, match=message):
        tiny_config().replace(**change)


def test_config_is_frozen_and_hashable(tiny_config):
    cfg = tiny_config()
    with pytest.raises(AttributeError):
        cfg.num_classes = 3
    assert hash(cfg) == hash(ModelConfig.from_dict(cfg.to_dict()))
    assert isinstance(ModelConfig.from_dict(cfg.to_dict()).input_size, tuple)
