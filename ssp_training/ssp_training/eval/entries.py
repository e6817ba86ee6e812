"""The checkpoint side of ``ssp_eval``: opened artifacts and the rows they are evaluated as."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssp_perception.artifact import ArtifactError, ArtifactMeta
from ssp_perception.classes import ClassSet
from ssp_perception.config import PRESETS
from ssp_perception.registration import RegistrationConfig
import torch
from torch import nn

from .inputs import EvalError
from .predictors import (BaselinePredictor, HOMOGRAPHY_SOURCES, ImagePredictor, Predictor,
                         SSPPredictor)
from .runner import Entry
from .. import parity
from ..baselines import load_video_model
from ..data.dataset import DatasetInfo

ROW_NAMES = {"image": "image model", "ssp": "SSP", "dff": "DFF", "netwarp": "NetWarp",
             "tcb_ppm": "TCB-PPM", "tcb_ocr": "TCB-OCR"}


@dataclass
class LoadedCheckpoint:
    """One artifact opened for evaluation."""

    path: str
    model: nn.Module
    meta: ArtifactMeta
    kind: str
    label: str


def check_class_set(path: str, meta: ArtifactMeta, dataset: ClassSet, root: Path) -> None:
    """Raise :class:`EvalError` when a checkpoint's classes are not the dataset's."""
    ours = meta.class_set
    if ours.names != dataset.names:
        raise EvalError(
            f"class set mismatch: checkpoint {path} was trained on {ours.name!r} "
            f"({ours.num_classes} classes: {', '.join(ours.names)}) but dataset {root} uses "
            f"{dataset.name!r} ({dataset.num_classes} classes: {', '.join(dataset.names)}); "
            "evaluate it on a dataset with its class set")


def _label(path: str) -> str:
    p = Path(path)
    # runs/<name>/model.safetensors is the trainer's layout: the run folder names the model.
    return p.parent.name if p.stem == "model" and p.parent.name else p.stem


def load_checkpoints(paths: list[str], info: DatasetInfo,
                     device: torch.device) -> list[LoadedCheckpoint]:
    """Open every artifact, check its class set against the dataset's."""
    loaded = []
    for path in paths:
        try:
            model, meta, kind = load_video_model(path, map_location=device)
        except ArtifactError as err:
            raise EvalError(str(err)) from None
        if meta.model.preset not in PRESETS:
            raise EvalError(f"{path}: model.preset {meta.model.preset!r} is not one of "
                            f"{', '.join(sorted(PRESETS))}; the artifact was not written by "
                            "ssp_train or its metadata was edited")
        check_class_set(path, meta, info.class_set, info.root)
        loaded.append(LoadedCheckpoint(path, model, meta, kind, _label(path)))
    stats = {(tuple(c.meta.mean), tuple(c.meta.std)) for c in loaded}
    if len(stats) > 1:
        raise EvalError("the checkpoints normalise their input differently (mean/std "
                        f"{sorted(stats)}); evaluate them in separate runs")
    return loaded


def trained_data_section(ckpt: LoadedCheckpoint) -> dict[str, Any]:
    """Return the ``data`` section of the recipe an artifact was trained with ({} if none)."""
    recipe = ckpt.meta.provenance.get("recipe")
    data = recipe.get("data") if isinstance(recipe, dict) else None
    return data if isinstance(data, dict) else {}


def homography_for(ckpt: LoadedCheckpoint, args: argparse.Namespace,
                   dataset_has_homographies: bool) -> str:
    """Resolve ``--homography`` for one SSP checkpoint.

    ``auto`` takes the mode the artifact was trained with (so the no-registration ablation is
    evaluated with the identity); a "dataset" training on a dataset without homographies, or an
    artifact without a recipe, uses the registrator.
    """
    if args.homography != "auto":
        return args.homography
    trained = trained_data_section(ckpt).get("homography", "registrator")
    if trained == "dataset" and not dataset_has_homographies:
        return "registrator"
    return trained if trained in HOMOGRAPHY_SOURCES else "registrator"


def registration_for(ckpt: LoadedCheckpoint, args: argparse.Namespace,
                     device: torch.device) -> RegistrationConfig:
    """Resolve ``--registration`` for one SSP checkpoint.

    ``disk_lightglue`` (the paper's registrator) needs the DISK and LightGlue weight files:
    ``--disk-weights``/``--lightglue-weights`` or the paths in the artifact's recipe. Its
    settings are the artifact's recipe's when it trained with DISK + LightGlue, else the
    reference-parity ones (:data:`ssp_training.parity.REGISTRATION`). ``auto`` picks it when
    the weights exist and ORB otherwise (said in the report's settings).
    """
    trained = trained_data_section(ckpt).get("registration") or {}
    disk = args.disk_weights or trained.get("disk_weights", "")
    glue = args.lightglue_weights or trained.get("lightglue_weights", "")
    have = bool(disk and glue and Path(disk).is_file() and Path(glue).is_file())
    method = args.registration
    if method == "auto":
        method = "disk_lightglue" if have else "orb"
    if method != "disk_lightglue":
        return RegistrationConfig(method=method)
    if not have:
        raise EvalError(f"--registration disk_lightglue needs the DISK and LightGlue weight "
                        f"files (--disk-weights, --lightglue-weights; got {disk or 'none'!r} "
                        f"and {glue or 'none'!r}); or use --registration orb")
    base = dict(parity.REGISTRATION)
    if trained.get("method") == "disk_lightglue":
        base.update(trained)
    try:
        return RegistrationConfig(**{**base, "disk_weights": disk, "lightglue_weights": glue,
                                     "device": str(device)})
    except (TypeError, ValueError) as err:
        raise EvalError(f"registration of {ckpt.path}: {err}") from None


def build_entries(ckpts: list[LoadedCheckpoint], args: argparse.Namespace,
                  dataset_has_homographies: bool = True,
                  device: torch.device | None = None) -> list[Entry]:
    """Return the rows to evaluate: each checkpoint's method, plus image rows if asked."""
    device = device or torch.device("cpu")
    rows: list[tuple[str, Predictor, dict[str, Any], LoadedCheckpoint]] = []
    for i, c in enumerate(ckpts):
        given = args.names[i] if args.names else ""
        if args.no_propagation or c.kind == "image":
            rows.append((given or ROW_NAMES["image"], ImagePredictor(c.model.image_model),
                         {"propagation": False}, c))
        elif c.kind == "ssp":
            if args.with_image_model:
                rows.append((ROW_NAMES["image"], ImagePredictor(c.model.image_model),
                             {"propagation": False}, c))
            homography = homography_for(c, args, dataset_has_homographies)
            registration = (registration_for(c, args, device) if homography == "registrator"
                            else RegistrationConfig(method="identity"))
            rows.append((given or ROW_NAMES["ssp"],
                         SSPPredictor(c.model, homography, registration,
                                      args.on_registration_failure),
                         {"homography": homography,
                          **({"registration": registration.method}
                             if homography == "registrator" else {}),
                          "on_registration_failure": args.on_registration_failure}, c))
        else:
            rows.append((given or ROW_NAMES[c.kind], BaselinePredictor(c.model),
                         {"baseline": c.model.video_cfg.to_dict()}, c))
    names = [name for name, *_ in rows]
    return [Entry(f"{name} ({c.label})" if names.count(name) > 1 else name, c.path, predictor,
                  {**extra, "class_names": list(c.meta.class_set.names),
                   "preset": c.meta.model.preset})
            for name, predictor, extra, c in rows]
