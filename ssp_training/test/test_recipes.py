"""Tests of the typed recipes: every shipped recipe loads, bad ones fail with clear messages."""

import pytest
from ssp_training.recipes import (apply_overrides, dump_recipe, load_recipe, read_recipe_dict,
                                  Recipe, recipe_from_dict, RecipeError, shipped_recipes)


@pytest.mark.parametrize("path", shipped_recipes(), ids=lambda p: p.name)
def test_every_shipped_recipe_loads_and_round_trips(path, tmp_path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    assert recipe.name == path.stem, "a recipe's name is its file name"
    cfg = recipe.model_config()
    assert cfg.num_classes == recipe.data.num_classes
    out = tmp_path / "resolved.yaml"
    dump_recipe(recipe, out)
    assert load_recipe(out) == recipe


def test_paper_recipes_carry_the_spec_numbers():
    ssp = load_recipe(shipped_recipes()[0].parent / "ssp_uavid.yaml")
    assert (ssp.optim.lr, ssp.optim.epochs, ssp.optim.stop_epoch) == (5e-5, 250, 200)
    assert ssp.loss.tc_weight == 0.5 and ssp.data.train_size == (736, 736)
    rural = load_recipe(shipped_recipes()[0].parent / "kd_ssp_ruralscapes.yaml")
    assert (rural.optim.epochs, rural.optim.stop_epoch, rural.data.num_classes) == (30, 25, 12)
    assert rural.loss.kind == "kd_ssp" and rural.data.teacher_logits
    cos = load_recipe(shipped_recipes()[0].parent / "ssp_uavid_ablation_cossim.yaml")
    assert cos.model_config().sim_op == "cosine" and cos.model.init == ssp.model.init


def _base(**changes):
    data = {"name": "t", "data": {"root": "datasets/synth", "num_classes": 5, "size": [64, 96]}}
    return apply_overrides(data, [f"{k}={v}" for k, v in changes.items()])


def test_unknown_keys_are_errors_that_list_the_allowed_ones():
    with pytest.raises(RecipeError, match=r"unknown key\(s\) \['lrr'\].*allowed"):
        recipe_from_dict(_base(**{"optim.lrr": 1}))
    with pytest.raises(RecipeError, match="unknown key"):
        recipe_from_dict(_base(**{"extra": 1}))
    with pytest.raises(RecipeError, match="ModelConfig: unknown key"):
        recipe_from_dict(_base(**{"model.config.sim_opp": "conv"}))


@pytest.mark.parametrize("override,message", [
    ("data.root=", "root is required"),
    ("data.num_classes=0", "num_classes must be an integer in 1..254"),
    ("data.size=[70,96]", "multiples of 32"),
    ("optim.lr=abc", "expected a number"),
    ("optim.batch_size=3", "not divisible by grad_accum"),
    ("loss.kind=ssp", "needs a video model"),
    ("loss.kind=kd_image", "needs data.teacher_logits"),
    ("model.kind=transformer", "unknown model kind"),
    ("model.preset=huge", "preset 'huge'"),
    ("model.config={num_classes: 3}", "set from data.num_classes"),
    ("loss.flow=raft", "needs flow_weights"),
    ("data.homography=sift", "homography 'sift'"),
    ("data.registration={method: akaze}", "method 'akaze'"),
    ("optim.stop_epoch=300", "stop_epoch"),
])
def test_bad_values_fail_with_a_message_that_says_what_to_fix(override, message):
    data = _base()
    if override.startswith("optim.batch_size"):
        data = apply_overrides(data, ["optim.grad_accum=2"])
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(apply_overrides(data, [override]))


def test_ssp_model_needs_a_video_loss_and_init_excludes_backbone_weights():
    with pytest.raises(RecipeError, match="trained with loss.kind ssp"):
        recipe_from_dict(_base(**{"model.kind": "ssp"}))
    with pytest.raises(RecipeError, match="not both"):
        recipe_from_dict(_base(**{"model.init": "a.safetensors",
                                  "model.backbone_weights": "b.pt"}))


def test_extends_merges_sections_and_detects_loops(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "name: base\ndata: {root: d, num_classes: 3, size: [64, 64]}\noptim: {lr: 0.1}\n")
    (tmp_path / "child.yaml").write_text(
        "extends: base.yaml\nname: child\noptim: {epochs: 7}\nmodel: {config: {sim_op: reuse}}\n")
    r = load_recipe(tmp_path / "child.yaml", overrides=["optim.stop_epoch=5"])
    assert (r.name, r.optim.lr, r.optim.epochs, r.optim.stop_epoch) == ("child", 0.1, 7, 5)
    assert r.data.num_classes == 3 and r.model_config().sim_op == "reuse"
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(RecipeError, match="loops"):
        read_recipe_dict(tmp_path / "a.yaml")
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_override_syntax_errors_are_explained():
    with pytest.raises(RecipeError, match="section.key=value"):
        apply_overrides({}, ["optim.lr"])
    with pytest.raises(RecipeError, match="is not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])


def test_model_options_are_rejected_by_kinds_that_take_none():
    with pytest.raises(RecipeError, match="takes none"):
        recipe_from_dict(_base(**{"model.options": "{flow: {source: raft}}"}))


PAPER = [p for p in shipped_recipes() if not p.name.startswith("synth_")]
VIDEO_KINDS = ("ssp", "kd_ssp")


def _chain_text(path):
    """Return the text of a recipe file and every file it extends."""
    import yaml
    texts = []
    while path is not None:
        text = path.read_text(encoding="utf-8")
        texts.append(text)
        parent = (yaml.safe_load(text) or {}).get("extends")
        path = path.parent / parent if parent else None
    return "\n".join(texts)


def test_every_paper_recipe_is_there():
    names = {p.stem for p in PAPER}
    for d in ("uavid", "ruralscapes"):
        for stage in ("image", "teacher", "kd_image", "ssp", "kd_ssp", "dff", "netwarp",
                      "tcb_ppm", "tcb_ocr"):
            assert f"{stage}_{d}" in names
    for abl in ("ablation_consistencyloss", "ablation_cossim", "ablation_interpolation",
                "ablation_registration", "ablation_untrainedimage", "lambda_0.2",
                "lambda_0.35", "lambda_0.65"):
        assert f"ssp_uavid_{abl}" in names


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.name)
def test_paper_recipes_select_the_reference_parity_profile(path):
    from ssp_training import parity
    r = load_recipe(path)
    text = _chain_text(path)
    for key, want in parity.OPTIM.items():
        assert getattr(r.optim, key) == want, f"optim.{key}"  # §5.1: no AMP, no clipping
    rural = "ruralscapes" in path.stem
    kd = r.loss.kind in ("kd_image", "kd_ssp")
    epochs = {(False, False): (250, 200), (True, False): (100, 75),
              (False, True): (25, 20), (True, True): (30, 25)}[(rural, kd)]
    assert (r.optim.epochs, r.optim.stop_epoch) == epochs
    assert r.optim.lr == (5e-5 if r.model.kind != "image" else 2.5e-5)
    assert r.data.num_classes == (12 if rural else 8)
    assert "Departure: runs are seeded" in text
    if r.model.kind != "image":
        assert r.data.train_size == (736, 736) and r.data.size == (736, 1280)
    if r.loss.kind in VIDEO_KINDS:
        for key, want in parity.TC_LOSS.items():
            assert getattr(r.loss, key) == want, f"loss.{key}"
        assert r.loss.flow_weights and r.val.flow == "raft"
        if r.data.homography != "identity":
            assert r.data.homography == "registrator"
            reg = r.data.registration
            for key, want in parity.REGISTRATION.items():
                assert reg[key] == want, f"data.registration.{key}"
        assert "Departure: homographies are fitted with OpenCV RANSAC" in text
        assert "Departure: RAFT and DISK get" in text
    if r.loss.kind == "kd_ssp":
        crop = r.data.train_size[0] * r.data.train_size[1]
        assert r.loss.kd_reduction == "pixelmean" and "Departure: KL is a per-pixel" in text
        assert r.loss.tc_weight * crop == pytest.approx(parity.KD_WEIGHT_BATCHMEAN, rel=1e-4)
        assert r.loss.kd_consistent_labels and r.loss.kd_temperature == 2.0
        assert r.loss.kd_prev_weight == 1.0 and r.data.workers == 16
    if kd:
        assert "Departure: teacher logits are stored at stride 4" in text
        assert r.data.kd_frame_step == 2
    if r.model.kind in ("dff", "netwarp"):
        flow = r.model.options["flow"]
        for key, want in parity.BASELINE_FLOW.items():
            assert flow[key] == want
        assert flow["raft_weights"]
    if r.model.kind.startswith("tcb"):
        assert "Departure: no RAFT is carried" in text
    if path.stem.startswith("teacher"):
        assert r.model.preset == "hiera_bplus" and r.data.size == (1440, 2560)
        assert r.data.square_crop and "Departure: validation on whole" in text


def test_yaml_1_1_exponents_without_a_dot_are_numbers():
    r = recipe_from_dict(_base(**{"optim.lr": "1e-4", "optim.warmup_epochs": "5E-1"}))
    assert r.optim.lr == 1e-4 and r.optim.warmup_epochs == 0.5
    with pytest.raises(RecipeError, match="expected a number, got '1e-4x'"):
        recipe_from_dict(_base(**{"optim.lr": "1e-4x"}))


def test_keys_listing_covers_every_field_with_type_default_and_doc(capsys):
    from ssp_training.recipe_keys import recipe_keys
    from ssp_training.train import main
    rows = {r.key: r for r in recipe_keys()}
    assert rows["optim.lr"].type == "float" and rows["optim.lr"].default == "2.5e-05"
    assert rows["data.size"].type == "list[int]" and rows["data.size"].default == "[736, 1280]"
    assert rows["loss.kd_flow_iterations"].default == "15"
    assert all(r.doc for r in rows.values()), [k for k, r in rows.items() if not r.doc]
    assert main(["keys"]) == 0
    out = capsys.readouterr().out
    assert "run.keep_resume_state" in out and "model.options" in out


def test_baseline_options_choose_the_flow_network():
    r = recipe_from_dict(_base(**{"model.kind": "dff",
                                  "model.options": "{flow: {source: dis, iterations: 8}}"}))
    assert r.model.options["flow"]["source"] == "dis"
    with pytest.raises(RecipeError, match="needs flow.raft_weights"):
        recipe_from_dict(_base(**{"model.kind": "netwarp",
                                  "model.options": "{flow: {source: raft}}"}))
    with pytest.raises(RecipeError, match="unknown key"):
        recipe_from_dict(_base(**{"model.kind": "dff", "model.options": "{flw: 1}"}))


def test_a_recipe_gives_dff_a_raft_counted_in_its_parameters(tmp_path):
    import torch
    from torchvision.models.optical_flow import raft_large
    from ssp_training.model_kinds import get_model_kind
    weights = tmp_path / "raft.pth"
    torch.save(raft_large(weights=None, progress=False).state_dict(), weights)
    options = f"{{flow: {{source: raft, raft_weights: {weights}, iterations: 8}}}}"
    r = recipe_from_dict(_base(**{"model.kind": "dff", "model.options": options}))
    kind = get_model_kind("dff")
    with_raft = kind.create(r.model_config(), r.model.options)
    plain = kind.create(r.model_config())
    extra = sum(p.numel() for p in with_raft.parameters()) - sum(
        p.numel() for p in plain.parameters())
    assert extra == sum(p.numel() for p in with_raft.flow.raft.parameters())
    assert round(extra / 1e6, 2) == 5.26  # RAFT-large, in the count as in the paper (§8)
    assert with_raft.video_cfg.flow.iterations == 8
