"""The run folder of ``ssp_train fit``: who may use it, what may start or resume there.

- **One run per folder.** The main rank holds an exclusive ``fcntl`` lock on
  ``<run_dir>/.lock`` (which records its PID) for the whole run; a second ``fit`` on the same
  folder refuses at once, naming that PID. The kernel drops the lock when its process dies,
  so the lock file of a killed run (``kill -9``) is simply taken over.
- **No leftovers of runs that never trained.** A folder this run created is removed again
  when the run fails or is interrupted before its first checkpoint (a bad learning rate, a
  batch larger than the data, an empty clip, Ctrl-C during start-up); once a checkpoint is
  published the folder stays, and ``--resume`` continues it.
- **A run may move.** ``--resume`` refuses a recipe that changes what is trained, but not a new
  ``run.out_dir`` (the folder was moved or copied), nor a new ``data.root`` that holds the same
  dataset: the same ``dataset.json`` and ``train.txt`` as when the run started (their SHA-256,
  kept in ``<run_dir>/dataset_identity.json``), as on a cluster that copies the dataset to each
  job's own scratch folder.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import errno
import fcntl
import json
import os
from pathlib import Path
import shutil
from typing import Any

from ssp_perception.backends.engine_cache import file_sha256
from ssp_perception.files import atomic_write_json

from .checkpoint import LATEST
from .distributed import barrier, DistInfo
from .recipes import dump_recipe, load_recipe, Recipe, RecipeError

RECIPE_COPY = "recipe.yaml"
DATASET_IDENTITY = "dataset_identity.json"
# The files that say which dataset a run trains on (a data.root holding the same may replace it).
_IDENTITY_FILES = ("dataset.json", "train.txt")
LOCK_FILE = ".lock"
# What a resumed run may change: how it runs and validates, not what it trains; and where the
# run folder is (one moved or copied to another disk or machine resumes there).
RESUME_MAY_CHANGE = ("run.threads", "run.device", "run.log_every", "run.plot",
                     "run.keep_resume_state", "run.out_dir", "data.workers", "val.",
                     "description")
SUMMARY = "summary.json"


class RunLock:
    """Exclusive lock of one run folder (``<run_dir>/.lock`` holding the owner's PID)."""

    def __init__(self, run_dir: Path) -> None:
        """Name the folder to lock; :meth:`acquire` takes the lock."""
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (creating the folder) or raise ``RecipeError`` naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = _read_pid(fd)
                os.close(fd)
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise RecipeError(
                    f"run folder {self.path.parent} is in use by another ssp_train fit "
                    f"(PID {holder or 'unknown'}); wait for it to end or set run.out_dir to "
                    "another folder") from None
            # The holder may have removed the file between our open and flock: then we
            # locked a file nobody else will see, so try again on the current one.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock."""
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = None


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def check_run_dir(recipe: Recipe, resume: bool) -> None:
    """Raise ``RecipeError`` if ``recipe``'s run folder cannot start (or resume) this run."""
    run_dir = recipe.out_dir
    saved = run_dir / RECIPE_COPY
    has_ckpt = (run_dir / "checkpoints" / LATEST).is_file()
    # A finished run's resume state may be pruned: its summary still marks it.
    finished = (run_dir / SUMMARY).is_file()
    if (has_ckpt or finished) and not resume:
        raise RecipeError(f"run folder {run_dir} already holds a "
                          f"{'finished run' if finished else 'checkpoint'}; pass --resume to "
                          "continue it, or set run.out_dir to a new folder")
    others = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE) if (
        run_dir.is_dir() and not (has_ckpt or finished)) else []
    if others and not saved.is_file():
        # Not a run folder: fit would overwrite model.safetensors, recipe.yaml, ... there (and
        # a model.init kept there) and append to a train.csv of the user's.
        raise RecipeError(f"run.out_dir {run_dir} is not empty and holds no training run "
                          f"({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}); "
                          "ssp_train fit never mixes its run with other files: set "
                          "run.out_dir to a new or empty folder")
    if resume and saved.is_file():
        a, b = _flatten(load_recipe(saved).to_dict()), _flatten(recipe.to_dict())
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)
                      and not k.startswith(RESUME_MAY_CHANGE))
        moved = "data.root" in diff and _same_dataset(run_dir, recipe.data.root)
        diff = [k for k in diff if not (moved and k == "data.root")]
        if diff:
            hint = (f" (a new data.root resumes only if its {' and '.join(_IDENTITY_FILES)} "
                    f"are the run's, as {run_dir / DATASET_IDENTITY} records them)"
                    if "data.root" in diff else "")
            raise RecipeError(f"--resume with a recipe that differs from {saved} in {diff}; "
                              f"resume with the same recipe and overrides{hint}")


@contextlib.contextmanager
def run_folder(recipe: Recipe, resume: bool, info: DistInfo) -> Iterator[Path]:
    """Lock and check the run folder for the block; clean up if the block fails early.

    An exception leaving the block removes the folder when this run created it and no
    checkpoint was published; the exception then carries a ``note`` saying what was kept
    (read by :func:`ssp_perception.cli.run_main` for its ``interrupted`` line).
    """
    run_dir = recipe.out_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise RecipeError(f"run.out_dir {run_dir} exists and is not a folder")
    ours = not run_dir.exists() or not any(run_dir.iterdir())
    if info.is_main:
        check_run_dir(recipe, resume)   # before the lock file: a refused folder stays as it was
    lock = RunLock(run_dir) if info.is_main else None
    if lock is not None:
        lock.acquire()
    try:
        check_run_dir(recipe, resume)
        yield run_dir
    except BaseException as err:
        if lock is not None:
            err.note = _after_failure(run_dir, ours)
        raise
    finally:
        if lock is not None:
            lock.release()


def _after_failure(run_dir: Path, ours: bool) -> str:
    if (run_dir / "checkpoints" / LATEST).is_file():
        return f"the last checkpoint is kept in {run_dir}; continue with --resume"
    if ours:
        shutil.rmtree(run_dir, ignore_errors=True)
        return f"no checkpoint yet, so the run folder {run_dir} was removed"
    return f"no checkpoint yet; {run_dir} holds only what was there before"


def start_run_dir(recipe: Recipe, info: DistInfo) -> None:
    """Write the recipe copy and the dataset's identity into the (locked, checked) run folder.

    Every rank waits for it. On a resume both describe the run as it goes on: its new place,
    and its dataset's new root (checked to hold the same dataset by :func:`check_run_dir`).
    """
    if info.is_main:
        dump_recipe(recipe, recipe.out_dir / RECIPE_COPY)
        atomic_write_json(recipe.out_dir / DATASET_IDENTITY, dataset_identity(recipe.data.root))
    barrier(info)


def dataset_identity(root: str | os.PathLike) -> dict[str, str]:
    """Return the SHA-256 of the files that say which dataset ``root`` holds (absent: "")."""
    root = Path(root)
    return {name: file_sha256(root / name) if (root / name).is_file() else ""
            for name in _IDENTITY_FILES}


def _same_dataset(run_dir: Path, root: str) -> bool:
    """Return whether ``root`` holds the dataset the run in ``run_dir`` started on."""
    try:
        recorded = json.loads((run_dir / DATASET_IDENTITY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False    # a run of an earlier version, or a damaged file: paths must match
    return isinstance(recorded, dict) and recorded == dataset_identity(root) and all(
        recorded.values())


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
