"""SSPModel: two-frame training step, pure recurrent step, fusion limits (SSP_SPEC §2.3, §2.7)."""

import pytest
from ssp_perception.geometry import scale_homography, warp_homography
import torch
import torch.nn.functional as F

# The tiny model is the lite network at 64x96; conftest.py lists the fusion modes.
pytestmark = pytest.mark.usefixtures("one_thread")


def _fusion_size(model) -> tuple[int, int]:
    return 64 // model.fusion_stride, 96 // model.fusion_stride


def _state(model, batch: int = 1, seed: int = 3):
    gen = torch.Generator().manual_seed(seed)
    prev_logits = torch.randn(batch, model.num_classes, *_fusion_size(model), generator=gen)
    prev_feat = torch.randn(batch, model.feature_channels, 16, 24, generator=gen)
    return prev_logits, prev_feat


def _first_layer(module: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """Return the first layer with weights that ``module`` runs on ``x`` (a backbone's stem)."""
    order = []
    hooks = [m.register_forward_pre_hook(lambda m, _: order.append(m))
             for m in module.modules()
             if not any(m.children()) and any(True for _ in m.parameters(recurse=False))]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for hook in hooks:
            hook.remove()
    return order[0]


class TestFusionModes:
    """The SSP model contract, run for every fusion mode and preset (``fusion`` in conftest)."""

    def test_forward_pair_outputs_and_gradients(self, tiny_image, tiny_model, translation, fusion):
        model = tiny_model(**fusion).train()
        prev, cur = tiny_image(2, seed=1), tiny_image(2, seed=2)
        out = model.forward_pair(prev, cur, translation(4.0, -2.0, batch=2))
        assert set(out) == {"out", "prev_logits", "logits", "sim"}
        for key in ("out", "prev_logits", "logits"):
            assert out[key].shape == (2, 8, 64, 96)
        assert out["sim"].shape == (2, 1, 64, 96)
        assert ((out["sim"] >= 0) & (out["sim"] <= 1)).all()
        out["out"].square().mean().backward()
        sim_grads = [p.grad for p in model.similarity.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in sim_grads)
        # The gradient reaches the first layer the image meets (MobileNet's conv_stem,
        # Hiera's patch embedding): the whole backbone trains.
        stem = _first_layer(model.image_model.encoder, cur)
        assert stem.weight.grad.abs().sum() > 0

    def test_forward_pair_parts_are_the_image_model_outputs(self, tiny_image, tiny_model,
                                                            translation, fusion):
        model = tiny_model(**fusion)
        prev, cur = tiny_image(1, seed=1), tiny_image(1, seed=2)
        with torch.no_grad():
            out = model.forward_pair(prev, cur, translation(1.0, 1.0))
            torch.testing.assert_close(out["prev_logits"], model.image_model(prev))
            torch.testing.assert_close(out["logits"], model.image_model(cur))

    def test_constant_similarity_gives_the_image_model_output(self, tiny_image, tiny_model,
                                                              translation, fusion):
        model = tiny_model(**{**fusion, "sim_op": "constant"})
        prev, cur = tiny_image(1, seed=1), tiny_image(1, seed=2)
        prev_logits, prev_feat = _state(model)
        with torch.no_grad():
            expected = model.image_model(cur)
            out, feat, s = model.step(cur, prev_logits, prev_feat, translation(3.0, 5.0),
                                      torch.ones(1))
            assert torch.equal(model.output_logits(out, (64, 96)), expected)
            assert s.abs().max() == 0
            assert torch.equal(model.forward_pair(prev, cur, translation(3.0, 5.0))["out"],
                               expected)

    def test_reuse_similarity_gives_the_warped_previous_logits(self, tiny_image, tiny_model,
                                                               translation, fusion):
        model = tiny_model(**{**fusion, "sim_op": "reuse"})
        cur = tiny_image(1, seed=2)
        prev_logits, prev_feat = _state(model)
        dx, dy = 8, 4  # the scene moves right by 8 and down by 4 pixels
        with torch.no_grad():
            out, _, s = model.step(cur, prev_logits, prev_feat, translation(dx, dy), torch.ones(1))
        assert (s == 1).all()
        assert out.shape == prev_logits.shape  # the state keeps its resolution
        # Independent of the warp code: an integer shift is a slice, uncovered pixels are 0
        # (tolerance: kornia normalises coordinates in float32). At stride 4 the shift is (2, 1).
        dx, dy = dx // model.fusion_stride, dy // model.fusion_stride
        torch.testing.assert_close(out[..., dy:, dx:], prev_logits[..., :-dy, :-dx],
                                   atol=2e-4, rtol=0)
        assert out[..., :dy, :].abs().max() < 1e-3 and out[..., :, :dx].abs().max() < 1e-3

    def test_use_prev_zero_is_the_first_frame_per_sample(self, tiny_image, tiny_model, translation,
                                                         fusion):
        model = tiny_model(**fusion)  # a learned similarity: s strictly inside (0, 1)
        cur = tiny_image(2, seed=2)
        prev_logits, prev_feat = _state(model, batch=2)
        with torch.no_grad():
            expected, expected_feat = model.image_step(cur)
            out, feat, s = model.step(cur, prev_logits, prev_feat, translation(2, 1, batch=2),
                                      torch.tensor([0.0, 1.0]))
            assert torch.equal(out[0], expected[0])
            assert s[0].abs().max() == 0 and (s[1] > 0).all()
            assert not torch.allclose(out[1], expected[1])
            torch.testing.assert_close(feat, expected_feat)
            stage1 = model.image_model.encoder(cur)[0]
            torch.testing.assert_close(feat, model.similarity.embed(stage1))

    def test_step_matches_manual_fusion_and_forward_pair(self, tiny_image, tiny_model, fusion):
        model = tiny_model(**fusion)
        prev, cur = tiny_image(1, seed=1), tiny_image(1, seed=2)
        hom = torch.tensor([[[1.02, 0.01, 2.5], [-0.01, 0.99, -1.5], [1e-4, 0.0, 1.0]]])
        r = model.fusion_stride
        with torch.no_grad():
            prev_logits, prev_feat = model.image_step(prev)
            out, feat, s = model.step(cur, prev_logits, prev_feat, hom, torch.ones(1))
            pair = model.forward_pair(prev, cur, hom)
            torch.testing.assert_close(model.output_logits(out, (64, 96)), pair["out"])
            if r == 1:
                torch.testing.assert_close(s, pair["sim"])
            # The fusion rule itself, written out: out = s * warp(prev) + (1 - s) * y, at the
            # fusion resolution, with the homography expressed on that grid.
            y, _ = model.image_step(cur)
            h_r = scale_homography(hom, 1.0 / r)
            warped = warp_homography(prev_logits, h_r, _fusion_size(model))
            torch.testing.assert_close(out, s * warped + (1 - s) * y)
            assert s.min() > 0 and s.max() < 1

    def test_forward_unrolled_is_the_inference_recurrence(self, tiny_image, tiny_model,
                                                          translation, fusion):
        """Unrolled training (data.unroll) runs exactly the node's steps, frame by frame."""
        model = tiny_model(**fusion)
        frames = torch.stack([tiny_image(2, seed=k) for k in range(4)], dim=1)  # (2, 4, ...)
        homs = torch.stack([translation(2.0 * k, -1.0, batch=2) for k in range(1, 4)], dim=1)
        with torch.no_grad():
            state, feat = model.image_step(frames[:, 0])
            outputs = []
            for k in range(1, 4):
                state, feat, _ = model.step(frames[:, k], state, feat, homs[:, k - 1],
                                            torch.ones(2))
                outputs.append(model.output_logits(state, (64, 96)))
            unrolled = model.forward_unrolled(frames, homs)
            torch.testing.assert_close(unrolled["out"], outputs[-1])
            torch.testing.assert_close(unrolled["prev_logits"], outputs[-2])
            pair = model.forward_pair(frames[:, 2], frames[:, 3], homs[:, 2])
            torch.testing.assert_close(model.forward_unrolled(frames[:, 2:], homs[:, 2:])["out"],
                                       pair["out"])
        with pytest.raises(ValueError, match="T - 1 homographies"):
            model.forward_unrolled(frames, homs[:, 1:])

    def test_forward_unrolled_trains_the_last_pair_only(self, tiny_image, tiny_model,
                                                        translation, fusion):
        model = tiny_model(**fusion).train()
        frames = torch.stack([tiny_image(2, seed=k) for k in range(4)], dim=1).requires_grad_()
        homs = torch.stack([translation(1.0, 1.0, batch=2) for _ in range(3)], dim=1)
        model.forward_unrolled(frames, homs)["out"].square().mean().backward()
        grads = frames.grad.abs().flatten(2).sum(-1)[0]   # per frame of the first sample
        assert grads[0] == 0 and grads[1] == 0 and grads[2] > 0 and grads[3] > 0
        assert all(p.grad is not None for p in model.similarity.parameters())

    def test_similarity_sees_features_warped_with_the_conjugated_homography(self, tiny_image,
                                                                            tiny_model,
                                                                            translation, fusion):
        model = tiny_model(**fusion)
        cur = tiny_image(1, seed=2)
        prev_logits, _ = _state(model)
        seen = {}
        model.similarity.register_forward_hook(lambda m, args, out: seen.update(prev=args[0]))
        with torch.no_grad():
            _, feat = model.image_step(cur)
            # Identity motion: the warped previous feature is the previous feature itself.
            model.step(cur, prev_logits, feat, torch.eye(3)[None], torch.ones(1))
            torch.testing.assert_close(seen["prev"], feat)
            # A shift of 8 image pixels is exactly 2 feature pixels at stride 4.
            model.step(cur, prev_logits, feat, translation(8.0, 4.0), torch.ones(1))
            torch.testing.assert_close(seen["prev"][..., 1:, 2:], feat[..., :-1, :-2],
                                       atol=2e-4, rtol=0)
            assert seen["prev"][..., :1, :].abs().max() < 1e-3

    def test_image_step_returns_fusion_resolution_logits_and_stage1_embedding(self, tiny_image,
                                                                              tiny_model, fusion):
        model = tiny_model(**fusion)
        x = tiny_image(1)
        with torch.no_grad():
            logits, feat = model.image_step(x)
            feats = model.image_model.encoder(x)
            torch.testing.assert_close(feat, model.similarity.embed(feats[0]))
            full = F.interpolate(model.image_model.decoder(feats), size=(64, 96), mode="bicubic",
                                 align_corners=False)
            assert logits.shape[-2:] == _fusion_size(model)
            torch.testing.assert_close(model.output_logits(logits, (64, 96)), full)
            first = model(x, logits, feat, torch.eye(3)[None], torch.zeros(1))[0]
            torch.testing.assert_close(first, logits)


def test_spec_blocks_keep_the_raw_feature_and_lite_keeps_a_small_embedding(tiny_image, tiny_model,
                                                                           fusion_modes):
    spec, lite = tiny_model(**fusion_modes["spec"]), tiny_model()
    assert spec.fusion_stride == 1 and spec.feature_channels == 24  # d of Lite0 stage 1
    assert lite.fusion_stride == 4 and lite.feature_channels == 4
    x = tiny_image(1)
    with torch.no_grad():
        assert torch.equal(spec.similarity.embed(x), x)
        logits, feat = lite.image_step(x)
    assert logits.shape == (1, 8, 16, 24) and feat.shape == (1, 4, 16, 24)
