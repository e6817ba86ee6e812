"""Crash-safe training checkpoints: the model artifact plus optimiser/schedule/RNG state.

Layout of ``<run>/checkpoints/``::

    latest.json                 {"epoch": 3, "dir": "epoch_0003"}  (the only pointer)
    epoch_0003/model.safetensors        the model, written by ``save_artifact``
    epoch_0003/train_state.safetensors  optimiser tensors, RNG states (tensors only)
    epoch_0003/train_state.json         everything else (epoch, step, param groups, scheduler,
                                         AMP scaler, numpy/python RNG, metric history)

A checkpoint is built in a hidden ``.epoch_0003.partial-<pid>`` folder, renamed into place
(an atomic rename of a fresh name), and only then published by atomically replacing
``latest.json``. A process killed at any instant therefore leaves ``latest.json`` pointing at
a complete checkpoint (or no ``latest.json`` at all); partial folders are ignored and removed
on the next save. Nothing is ever unpickled: tensors go through safetensors, the rest is JSON.
"""

from __future__ import annotations

from collections.abc import Callable
import json
import os
from pathlib import Path
import random
import re
import shutil
from typing import Any

import numpy as np
from safetensors.torch import save_file
from ssp_perception.files import atomic_write_json, load_tensor_file
import torch

LATEST = "latest.json"
MODEL_FILE = "model.safetensors"
STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not match the run that loads it."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return the process RNG states as (tensors, JSON-able values)."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy.keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, py_state, gauss = random.getstate()
    values = {"numpy": [kind, int(pos), int(has_gauss), float(cached)],
              "python": [version, list(py_state), gauss]}
    return tensors, values


def set_rng_state(tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
    """Restore RNG states saved by :func:`rng_state`."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, cached = values["numpy"]
    np.random.set_state((kind, tensors["rng.numpy.keys"].numpy().astype(np.uint32), pos,
                         has_gauss, cached))
    version, py_state, gauss = values["python"]
    random.setstate((version, tuple(py_state), gauss))


def optimizer_state(optimizer: torch.optim.Optimizer
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors and JSON values (no pickle needed)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         values: dict[str, Any]) -> None:
    """Load what :func:`optimizer_state` split back into ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, st in values["scalars"].items():
        state.setdefault(int(pid), {}).update(st)
    groups = values["param_groups"]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in optimizer.param_groups]:
        raise CheckpointError("the checkpoint's optimiser holds a different set of parameters "
                              "than this model; was the recipe's model changed?")
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(run_dir: Path, epoch: int, write_model: Callable[[Path], None],
                    tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> Path:
    """Write checkpoint ``epoch`` atomically and publish it; return its folder.

    ``write_model(path)`` writes the model artifact to ``path``; ``tensors``/``values`` are the
    training state (see :func:`optimizer_state`, :func:`rng_state`). Older checkpoints and
    stale partial folders are removed after the new one is published.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"epoch_{epoch:04d}"
    partial = root / f".{name}.partial-{os.getpid()}"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    write_model(partial / MODEL_FILE)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(partial / STATE_TENSORS))
    with open(partial / STATE_JSON, "w", encoding="utf-8") as f:
        json.dump({"epoch": epoch, **values}, f, indent=1, sort_keys=True)
    for p in partial.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())
    final = root / name
    if final.exists():  # a re-run of this epoch after a crash between rename and publish
        shutil.rmtree(final)
    os.rename(partial, final)
    _fsync_dir(root)
    atomic_write_json(root / LATEST, {"epoch": epoch, "dir": name}, indent=1, durable=True)
    for old in root.iterdir():
        if old.name not in (name, LATEST) and (old.name.startswith("epoch_")
                                               or old.name.startswith(".epoch_")):
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """Return the folder of the latest published checkpoint, or None if there is none.

    ``latest.json`` must be ``{"epoch": N, "dir": "epoch_NNNN"}`` naming a folder beside it;
    anything else raises :class:`CheckpointError` naming the file (nothing is changed).
    """
    pointer = Path(run_dir) / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    try:
        doc = json.loads(pointer.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:    # JSONDecodeError and UnicodeDecodeError
        raise _bad_pointer(pointer, f"is not readable JSON ({err})") from None
    if not isinstance(doc, dict):
        raise _bad_pointer(pointer, f"holds {type(doc).__name__} {_brief(doc)}")
    name, epoch = doc.get("dir"), doc.get("epoch")
    if not isinstance(name, str) or not re.fullmatch(r"epoch_\d{4,}", name):
        raise _bad_pointer(pointer, f"has dir {_brief(name)}")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or name != f"epoch_{epoch:04d}":
        raise _bad_pointer(pointer, f"has epoch {_brief(epoch)} for dir {name!r}")
    folder = pointer.parent / name
    missing = [f for f in (MODEL_FILE, STATE_TENSORS, STATE_JSON) if not (folder / f).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {folder} lacks {missing}")
    return folder


def _brief(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad_pointer(pointer: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f'{pointer} {what}; expected {{"epoch": N, "dir": "epoch_NNNN"}} naming a '
        f"checkpoint folder beside it: write that, or remove {pointer.parent} and run again "
        "with --resume to train from the first epoch")


def unreadable(folder: Path, reason: str) -> CheckpointError:
    """Return the error of a checkpoint that cannot be restored, with the way to start over."""
    folder = Path(folder)
    return CheckpointError(f"checkpoint {folder} cannot be restored: {reason}; restore the "
                           f"folder from a backup, or remove {folder.parent} and run again "
                           "with --resume to train from the first epoch")


def load_model_state(folder: Path) -> dict[str, torch.Tensor]:
    """Return the model tensors of checkpoint ``folder`` (CheckpointError if unreadable)."""
    try:
        return load_tensor_file(Path(folder) / MODEL_FILE, "checkpoint model")
    except (OSError, ValueError) as err:
        raise unreadable(folder, str(err)) from None


def load_train_state(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (tensors, values) of the training state in checkpoint ``folder``.

    A truncated, corrupt or foreign file raises :class:`CheckpointError` naming it.
    """
    folder = Path(folder)
    try:
        tensors = load_tensor_file(folder / STATE_TENSORS, "checkpoint training state")
        values = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise unreadable(folder, f"{folder / STATE_JSON} is not valid JSON ({err})") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise unreadable(folder, str(err)) from None
    if not isinstance(values, dict):
        raise unreadable(folder, f"{folder / STATE_JSON} holds no JSON object")
    return tensors, values


def prune_checkpoints(run_dir: Path) -> int:
    """Remove ``<run>/checkpoints/`` (the resume state of a finished run); return bytes freed.

    A finished run's artifact is ``<run>/model.safetensors``; its last checkpoint holds the same
    weights plus the optimiser state (twice the model again), only needed to resume.
    """
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return 0
    freed = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    shutil.rmtree(root)
    return freed
