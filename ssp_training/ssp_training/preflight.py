"""Checks that run before any training: the recipe's files exist and agree with it.

Everything here is cheap (headers and folder listings, no weights or frames are decoded), so
``ssp_train fit`` fails within seconds, with a message that names the recipe key to fix,
instead of after an epoch. Every problem found is reported in one error, so one round of
fixes suffices. ``ssp_train check`` runs only these checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ssp_perception.artifact import ArtifactError, read_meta
from ssp_perception.classes import ClassSet
from ssp_perception.files import load_tensor_file
from ssp_perception.models.backbones import check_feature_indices
from ssp_perception.models.pretrained import check_source, WeightsError, WeightSource

from .data.frames import DatasetInfo, list_clips
from .distributed import device_problem
from .logits import read_manifest
from .model_kinds import get_model_kind
from .recipes import Recipe, RecipeError

# Fields that define the architecture of the image model (the rest may differ, e.g. sim_op).
ARCH_FIELDS = ("backbone", "head_channels", "num_classes", "pool_scales", "feature_indices")


@dataclass(frozen=True)
class PreflightResult:
    """What preflight learnt about the run's inputs."""

    info: DatasetInfo
    """The dataset description (dataset.json) of ``data.root``."""
    class_set: ClassSet
    """The dataset's class set (checked against ``data.num_classes``)."""
    train_clips: tuple[str, ...]
    """Clip names of the training split."""
    val_clips: tuple[str, ...]
    """Clip names of the validation split."""
    init_kind: str = ""
    """Model kind recorded in the ``model.init`` artifact ("" when there is none)."""

    def describe(self) -> str:
        """Return a one-line summary for the console."""
        return (f"dataset {self.info.root} ({self.class_set.name}, {self.class_set.num_classes} "
                f"classes), {len(self.train_clips)} train / {len(self.val_clips)} val clips"
                + (f", init from a {self.init_kind} artifact" if self.init_kind else ""))


def _fail(msg: str) -> None:
    raise RecipeError(msg)


def check_dataset(recipe: Recipe) -> tuple[DatasetInfo, tuple[str, ...], tuple[str, ...]]:
    """Check ``data.root``, its class set and its splits; return (info, train, val clips)."""
    data = recipe.data
    root = Path(data.root)
    if not (root / "dataset.json").is_file():
        _fail(f"data.root {root} is not a dataset (no dataset.json): set data.root=<folder> to "
              "a prepared dataset, or make the synthetic one with "
              f"'ssp_data synth --out {root}'")
    try:
        info = DatasetInfo.load(root)
    except (ValueError, KeyError) as err:
        _fail(f"data.root {root}: unusable dataset ({err})")
    cs = info.class_set
    if cs.num_classes != data.num_classes:
        _fail(f"wrong class count: the recipe has data.num_classes={data.num_classes} but "
              f"dataset {root} ({cs.name}) has {cs.num_classes} classes "
              f"({', '.join(cs.names)}); set data.num_classes={cs.num_classes}")
    if data.class_set and data.class_set != cs.name:
        _fail(f"data.class_set is {data.class_set!r} but dataset {root} uses class set "
              f"{cs.name!r}; fix data.class_set or data.root")
    splits = []
    for split in ("train", recipe.val.split):
        try:
            clips = tuple(list_clips(root, split))
        except (FileNotFoundError, ValueError) as err:
            _fail(f"data.root {root}: split {split!r} is unusable ({err})")
        if not clips:
            _fail(f"data.root {root}: split {split!r} lists no clips ({split}.txt is empty)")
        splits.append(clips)
    return info, splits[0], splits[1]


def check_model(recipe: Recipe) -> None:
    """Check the model config builds: its feature_indices exist in its backbone."""
    cfg = recipe.model_config()
    try:
        check_feature_indices(cfg.backbone, cfg.feature_indices)
    except ValueError as err:
        _fail(f"model.config: {err}")


def check_init(recipe: Recipe) -> str:
    """Check ``model.init`` fits the recipe's architecture; return the artifact's model kind."""
    path = recipe.model.init
    if not path:
        return ""
    if not Path(path).is_file():
        _fail(f"model.init {path} does not exist; train the image model first (its run writes "
              "<run>/model.safetensors) or fix the path")
    try:
        meta = read_meta(path)
    except ArtifactError as err:
        _fail(f"model.init {path} is not a usable artifact: {err}")
    want = recipe.model_config()
    diffs = [f"{f}: checkpoint {getattr(meta.model, f)!r} vs recipe {getattr(want, f)!r}"
             for f in ARCH_FIELDS if getattr(meta.model, f) != getattr(want, f)]
    if diffs:
        _fail(f"model.init {path} holds another architecture ({meta.model.preset}, "
              f"{meta.model.backbone}): " + "; ".join(diffs)
              + ". Point model.init at a checkpoint of this recipe's model.preset, or change "
                "model.preset/data.num_classes to match it")
    return str(meta.provenance.get("model_kind", "ssp"))


def check_teacher(recipe: Recipe, train_clips: tuple[str, ...] | None) -> None:
    """Check the exported teacher logits exist, cover the training clips and fit the classes.

    ``train_clips`` None (the dataset itself is unusable) skips the coverage check.
    """
    folder = recipe.data.teacher_logits
    if not recipe.loss.uses_teacher:
        return
    if not Path(folder).is_dir():
        _fail(f"data.teacher_logits {folder} does not exist; export them with 'ssp_train "
              f"export-logits --teacher <teacher model.safetensors> --data {recipe.data.root} "
              f"--out {folder}'")
    try:
        manifest = read_manifest(folder)
    except (FileNotFoundError, ValueError) as err:
        _fail(f"data.teacher_logits {folder}: {err}")
    if manifest["num_classes"] != recipe.data.num_classes:
        _fail(f"data.teacher_logits {folder} holds {manifest['num_classes']}-class logits but "
              f"the recipe trains {recipe.data.num_classes} classes")
    done = {c for c, n in manifest["clips"].items() if n["done"]}
    missing = sorted(set(train_clips or ()) - done)
    if missing:
        _fail(f"data.teacher_logits {folder} lacks training clips {missing[:5]}"
              f"{' ...' if len(missing) > 5 else ''}; re-run export-logits (it resumes)")


def check_files(recipe: Recipe, needs_homography: bool) -> None:
    """Check the weight files the run will read exist and hold tensors (never unpickled)."""
    flow_options = recipe.model.options.get("flow") or {}
    named = [("model.options.flow.raft_weights",
              flow_options.get("raft_weights", "") if isinstance(flow_options, dict) else "")]
    if recipe.model.backbone_weights:
        source = _backbone_source(recipe)
        if source.kind != "package":
            named.insert(0, ("model.backbone_weights", source.ref))
    if recipe.loss.uses_flow and recipe.loss.flow == "raft":
        named.append(("loss.flow_weights", recipe.loss.flow_weights))
    if recipe.val.tc and recipe.val.flow == "raft":
        named.append(("val.flow_weights", recipe.val.flow_weights))
    if needs_homography and recipe.data.homography == "registrator":
        reg = recipe.data.registration
        named += [("data.registration.disk_weights", reg.get("disk_weights", "")),
                  ("data.registration.lightglue_weights", reg.get("lightglue_weights", ""))]
    missing = [f"{key} {path}" for key, path in named
               if path and path != "download" and not Path(path).is_file()]
    if missing:
        _fail(f"{'; '.join(missing)} {'does' if len(missing) == 1 else 'do'} not exist; give "
              "the path of each weights file (nothing is downloaded)")
    for key, path in named:
        if path and path != "download":
            # Read it now, safely: the loaders behind these keys would otherwise fail deep in
            # the run with torch's multi-line unpickling message.
            try:
                load_tensor_file(path, f"recipe {key}")
            except ValueError as err:
                _fail(str(err))


def _backbone_source(recipe: Recipe) -> WeightSource:
    """Parse ``model.backbone_weights``; a package must be installed and fit the backbone."""
    backbone = recipe.model_config().backbone
    try:
        source = WeightSource.parse(recipe.model.backbone_weights, backbone)
        if source.kind == "package":
            check_source(source, backbone)
    except WeightsError as err:
        _fail(f"model.backbone_weights: {err}")
    return source


def check_devices(recipe: Recipe, needs_homography: bool) -> None:
    """Check the CUDA devices the recipe names exist on this machine."""
    named = [("run.device", recipe.run.device)]
    if needs_homography and recipe.data.homography == "registrator":
        named.append(("data.registration.device",
                      recipe.data.registration.get("device", "cpu")))
    problems = [p for p in (device_problem(k, v) for k, v in named) if p]
    if problems:
        _fail("; ".join(problems))


def check_batch(recipe: Recipe, world_size: int) -> None:
    """Check the global batch splits evenly over ranks and accumulation steps."""
    o = recipe.optim
    if o.batch_size % (o.grad_accum * world_size):
        _fail(f"optim.batch_size {o.batch_size} must be a multiple of grad_accum "
              f"({o.grad_accum}) x processes ({world_size}); it is the global batch per step")
    if o.batch_size // (o.grad_accum * world_size) < 2:
        # BatchNorm after the 1x1 pyramid pooling sees one value per channel per sample.
        _fail(f"optim.batch_size {o.batch_size} leaves one sample per micro-batch on each of "
              f"{world_size} process(es) with grad_accum {o.grad_accum}; BatchNorm needs at "
              "least 2: raise optim.batch_size or lower optim.grad_accum")


def _has(info: DatasetInfo, clips: tuple[str, ...], sub: str) -> bool:
    return all((Path(info.root) / "data" / c / sub).is_dir() for c in clips)


def check_dataset_content(recipe: Recipe, info: DatasetInfo, clips: tuple[str, ...],
                          needs_homography: bool) -> None:
    """Check the dataset has the ground-truth flow and homographies the recipe reads."""
    needs_gt_flow = ((recipe.loss.uses_flow and recipe.loss.flow == "gt")
                     or (recipe.val.tc and recipe.val.flow == "gt"))
    problems = []
    if needs_gt_flow and not _has(info, clips, "flow"):
        problems.append(f"flow 'gt' needs ground-truth flow (data/<clip>/flow/), which dataset "
                        f"{info.root} does not have; set loss.flow=dis and val.flow=dis")
    if (needs_homography and recipe.data.homography == "dataset"
            and not _has(info, clips, "registration")):
        problems.append(f"data.homography 'dataset' needs registration/*.npy in {info.root}; "
                        "set data.homography=registrator")
    if problems:
        _fail("; ".join(problems))


def check_kd_flow(recipe: Recipe) -> None:
    """Check the KD label fusion has a flow source that gives both directions."""
    if (recipe.loss.kind == "kd_ssp" and recipe.loss.kd_consistent_labels
            and recipe.loss.flow == "gt"):
        _fail("loss.flow 'gt' cannot feed the KD label fusion (the KD pairs carry no forward "
              "flow); set loss.flow=dis")


def preflight(recipe: Recipe, world_size: int = 1) -> PreflightResult:
    """Run every check; return what they learnt or raise one :class:`RecipeError` naming all.

    Checks that need the dataset are skipped when the dataset itself is unusable, so each
    reported problem is real and a fix never reveals a new one that was already there.
    """
    kind = get_model_kind(recipe.model.kind)
    problems: list[str] = []

    def attempt(check, *args):
        try:
            return check(*args)
        except RecipeError as err:
            problems.append(str(err))
            return None

    attempt(check_devices, recipe, kind.needs_homography)
    attempt(check_model, recipe)
    attempt(check_batch, recipe, world_size)
    attempt(check_files, recipe, kind.needs_homography)
    attempt(check_kd_flow, recipe)
    dataset = attempt(check_dataset, recipe)
    if dataset is not None:
        info, train, val = dataset
        attempt(check_dataset_content, recipe, info, train + val, kind.needs_homography)
    init_kind = attempt(check_init, recipe)
    attempt(check_teacher, recipe, None if dataset is None else dataset[1])
    if len(problems) == 1:
        raise RecipeError(problems[0])
    if problems:
        raise RecipeError(f"{len(problems)} problems with recipe {recipe.name}:\n  - "
                          + "\n  - ".join(problems))
    info, train, val = dataset
    return PreflightResult(info=info, class_set=info.class_set, train_clips=train,
                           val_clips=val, init_kind=init_kind or "")
