"""Atomic file and folder outputs: the one home for "never half-written, never clobbered".

Every tool of both packages writes its outputs through these helpers:

- :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_json` write a
  temporary sibling and ``os.replace`` it onto the final name, so a crash or Ctrl-C never
  leaves a half-written file under that name. Files are created with mode 0644 (not
  ``mkstemp``'s 0600), so outputs are readable by the other users of a shared machine.
- :func:`staged_dir` builds a whole output folder next to its destination and renames it
  into place only when the block succeeds; on any exception (KeyboardInterrupt included) the
  staging folder is removed and the destination is untouched.
- Folders a tool writes carry a marker file (:data:`OUTPUT_MARKER`) naming the tool.
  :func:`check_output_target` refuses to replace anything else, even with ``--force``: a
  regular file, a folder without the marker, or one written by another tool. A folder that
  another process creates or replaces while the tool runs is not replaced either: the new
  output is kept beside it under a name the error gives.
- JSON reports (``--json``) name their tool in a ``"tool"`` key (:func:`report_document`);
  :func:`check_report_file` lets a tool replace only its own earlier report, never another
  file (a checkpoint, a ``dataset.json``) that happens to sit at that path.

The guarantee is against process crashes; files are not fsync'ed unless ``durable=True``
(dataset writing would be several times slower).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
import contextlib
import glob
import json
import os
from pathlib import Path
import re
import shutil
import tempfile
import threading
import time
from typing import Any
import warnings

OUTPUT_MARKER = ".ssp_output"
FILE_MODE = 0o644


class OutputError(ValueError):
    """An output path that a tool must not write to (says which path and why)."""


def _temp_sibling(path: Path, kind: str = "tmp") -> Path:
    # Unique per process and thread: writer threads may write siblings at the same time.
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{threading.get_ident()}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling and an atomic rename."""
    path = Path(path)
    tmp = _temp_sibling(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)  # the umask may have narrowed it
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, durable: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def atomic_write_json(path: str | os.PathLike, obj: Any, sort_keys: bool = True,
                      indent: int = 2, durable: bool = False) -> Path:
    """Write ``obj`` as indented JSON (trailing newline) atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n",
                             durable=durable)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; rename it onto ``path`` on success.

    For writers that need a file name rather than bytes (safetensors ``save_file``, video
    encoders). The file gets mode 0644; on any exception the temporary file is removed and
    ``path`` is untouched.
    """
    path = Path(path)
    tmp = _temp_sibling(path)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


REPORT_KEY = "tool"
_MAX_REPORT_BYTES = 64 << 20   # larger files are no report of ours: not even read


def report_document(tool: str, doc: dict[str, Any]) -> dict[str, Any]:
    """Return ``doc`` with the ``"tool"`` key that :func:`check_report_file` recognises."""
    return {REPORT_KEY: tool, **doc}


def check_can_create(path: str | os.PathLike, flag: str, given: str | os.PathLike | None = None
                     ) -> None:
    """Raise :class:`OutputError` unless something can be created where ``path`` will be.

    Probed by creating (and removing) a hidden folder in the nearest existing ancestor of
    ``path``'s folder: permission bits do not tell (root may write anywhere, yet not in /sys
    or /proc, nor on a read-only mount). ``given`` is the path as the user wrote it.
    """
    path = Path(path)
    above = path.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{path.name}.probe-", dir=above))
    except OSError as err:
        raise OutputError(f"{flag} {given if given is not None else path}: cannot write in "
                          f"{above}: {err.strerror or err}") from None


def check_report_file(path: str | os.PathLike, tool: str, flag: str = "--json",
                      legacy: Callable[[dict], bool] | None = None) -> Path:
    """Check that ``tool`` may write its JSON report at ``path`` (before any work).

    A new file is fine when its folder can exist; an existing one only if it is an earlier
    report of ``tool``: a JSON object whose ``"tool"`` is ``tool``, or one that ``legacy``
    recognises (reports written before the key existed). Anything else raises
    :class:`OutputError`: a folder, a file under a non-folder, or any other file, such as the
    run's own checkpoint given by mistake.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {path}: is a folder; give a file name such as "
                          f"{path / (tool.replace('ssp_', '') + '.json')}")
    above = path.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise OutputError(f"{flag} {path}: {above} is a file, not a folder")
    if (path.exists() or path.is_symlink()) and not _is_report_of(path, tool, legacy):
        raise OutputError(f"{flag} {path}: exists and is not an earlier {tool} report; {tool} "
                          f"never replaces other files (choose another name, or remove it "
                          f"yourself)")
    check_can_create(path, flag)   # before the work, not after it
    return path


def _is_report_of(path: Path, tool: str, legacy: Callable[[dict], bool] | None) -> bool:
    try:
        if not path.is_file() or path.stat().st_size > _MAX_REPORT_BYTES:
            return False
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict):
        return False
    return doc.get(REPORT_KEY) == tool or (REPORT_KEY not in doc and legacy is not None
                                           and legacy(doc))


def _marker_tool(folder: Path) -> str | None:
    marker = folder / OUTPUT_MARKER
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text()).get("tool")
    except (OSError, ValueError, AttributeError):
        return None


def check_output_target(path: str | os.PathLike, tool: str, force: bool,
                        flag: str = "--force",
                        legacy: Callable[[Path], bool] | None = None,
                        inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Check that ``tool`` may write its output folder at ``path``; return it as a Path.

    A missing path is fine. An existing empty folder is fine. An existing folder that ``tool``
    itself wrote (it holds the marker naming ``tool``) may be replaced when ``force`` is set,
    unless one of the run's ``inputs`` lies inside it (replacing the folder would delete
    it). ``legacy``, if given, recognises outputs ``tool`` wrote before the marker existed (by
    the exact layout it writes); those count as its own. Everything else raises
    :class:`OutputError` with a one-line reason: a regular file or other non-folder, a folder
    with foreign contents, or an output of another tool.
    """
    path = Path(path)
    for item in inputs:
        if path.exists() and Path(item).resolve().is_relative_to(path.resolve()):
            raise OutputError(f"{path}: holds {item}, an input of this run; {tool} replaces "
                              f"the whole folder, so the input would be lost (choose another "
                              f"output folder)")
    if not path.exists() and not path.is_symlink():
        above = path.parent
        while not above.exists() and above != above.parent:
            above = above.parent
        if not above.is_dir():
            raise OutputError(f"{path}: {above} is a file, not a folder; {tool} cannot create "
                              "its output under it")
        return path
    if path.is_symlink() or not path.is_dir():
        raise OutputError(f"{path}: exists and is not a folder; {tool} writes a folder there "
                          f"and never replaces other files (choose another path)")
    if not any(path.iterdir()):
        return path
    owner = _marker_tool(path)
    if owner is None and legacy is not None and legacy(path):
        owner = tool
    if owner != tool:
        what = f"an output of {owner}" if owner else "a folder that was not written by " + tool
        raise OutputError(f"{path}: is {what}; {tool} only replaces its own outputs, even "
                          f"with {flag} (choose another path or remove it yourself)")
    if not force:
        raise OutputError(f"{path}: holds an earlier {tool} output; pass {flag} to replace it")
    return path


@contextlib.contextmanager
def staged_dir(dest: str | os.PathLike, tool: str, force: bool = False,
               flag: str = "--force",
               legacy: Callable[[Path], bool] | None = None,
               inputs: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield a staging folder that replaces ``dest`` only if the block finishes.

    The destination is checked first (:func:`check_output_target`), the staging folder is a
    hidden sibling of ``dest`` (same file system, so the final rename is atomic) and gets the
    marker naming ``tool``. On an exception the staging folder is deleted and ``dest`` keeps
    whatever it held before. ``legacy`` and ``inputs`` are passed on to
    :func:`check_output_target`. Staging folders of ``dest`` that killed runs of ``tool`` left
    (:func:`remove_stale_stages`) are removed first. If another process creates or replaces
    ``dest`` meanwhile, the finished output is kept beside it and :class:`OutputError` says
    where.
    """
    dest = check_output_target(dest, tool, force, flag, legacy, inputs)
    remove_stale_stages(dest, tool)   # what a killed (kill -9, segfault) run of tool left
    before = _identity(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = _temp_sibling(dest, "staging")
    shutil.rmtree(stage, ignore_errors=True)
    try:
        # Inside the try: a Ctrl-C right after the folder appears must remove it too.
        stage.mkdir()
        os.chmod(stage, 0o755)
        atomic_write_json(stage / OUTPUT_MARKER, {"tool": tool})
        yield stage
        if _identity(dest) != before:
            _keep_beside(stage, dest, tool)
        if dest.exists():
            old = _temp_sibling(dest, "old")
            os.replace(dest, old)
            try:
                os.replace(stage, dest)
            except BaseException:
                os.replace(old, dest)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, dest)
    finally:
        remove_tree(stage)


def _identity(path: Path) -> tuple[int, int, str | None] | None:
    """Return what identifies the folder at ``path`` now (None when there is none)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, _marker_tool(path) if path.is_dir() else None


def _keep_beside(stage: Path, dest: Path, tool: str) -> None:
    """Another process wrote ``dest`` while ``tool`` ran: keep both; raise OutputError."""
    kept = dest.with_name(f"{dest.name}.{tool}-{os.getpid()}")
    os.replace(stage, kept)
    raise OutputError(f"{dest}: was created or replaced by another process while {tool} ran; "
                      f"it was left as it is, and this run's output is in {kept}")


def process_alive(pid: int) -> bool:
    """Return whether a process ``pid`` exists on this machine (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_folders(parent: Path, name_glob: str, name: re.Pattern[str],
                        belongs: Callable[[Path], bool]) -> list[Path]:
    """Remove the folders in ``parent`` that processes which no longer exist left behind.

    A folder is removed only if it proves to be such: its name matches ``name`` (whose first
    group is the pid of the process that made it), it is a folder (not a link) owned by this
    user, that process no longer exists, and ``belongs(folder)`` holds. Return the removed
    folders. Used where ``kill -9`` gives a tool no chance to clean up after itself.
    """
    removed = []
    for path in parent.glob(name_glob):
        match = name.fullmatch(path.name)
        try:
            if (match is None or path.is_symlink() or not path.is_dir()
                    or path.stat().st_uid != os.getuid() or process_alive(int(match[1]))
                    or not belongs(path)):
                continue
        except OSError:
            continue   # another process removed it first, or it is not ours to read
        remove_tree(path)
        removed.append(path)
    return removed


def remove_stale_stages(dest: str | os.PathLike, tool: str) -> list[Path]:
    """Remove the staging folders of ``dest`` that a killed ``tool`` process left behind.

    ``kill -9`` gives :func:`staged_dir` no chance to clean up. Only folders named as
    :func:`staged_dir` names the staging folders of ``dest`` (``.<name>.staging-<pid>-<thread>``)
    and holding the marker naming ``tool`` are candidates (:func:`remove_dead_folders`).
    """
    dest = Path(dest)
    return remove_dead_folders(
        dest.parent, f".{glob.escape(dest.name)}.staging-*",
        re.compile(rf"\.{re.escape(dest.name)}\.staging-(\d+)-\d+"),
        lambda stage: _marker_tool(stage) == tool)


def remove_tree(path: Path, attempts: int = 5) -> None:
    """Remove the folder ``path`` if it exists; warn, naming it, if it cannot be removed.

    A removal can race a file that another thread is still creating in the folder (the
    folder is then not empty when ``rmdir`` runs), so it is tried again a few times.
    """
    for attempt in range(attempts):
        try:
            shutil.rmtree(path)
            return
        except OSError as err:
            if not path.exists():   # it was not there, or someone else removed it
                return
            if attempt == attempts - 1:
                warnings.warn(f"could not remove {path}: {err}; remove it by hand",
                              RuntimeWarning, stacklevel=2)
                return
        time.sleep(0.05 * (attempt + 1))


def load_tensor_file(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """Read a weights file without unpickling anything; raise one clear line on bad input.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``. ``what`` names the file's role in messages ("RAFT
    weights", "backbone_weights", ...). A missing, empty, truncated or pickled file, or one
    that holds no dict of tensors, raises ``ValueError`` (or
    ``FileNotFoundError``) naming the path. Nested checkpoints (``{"state_dict": ...}``,
    ``{"model": ...}``) are returned as they are: callers pick the entry they need.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what}: file not found: {p} (weights are never downloaded; "
                                f"pass the path of a local file)")
    if p.stat().st_size == 0:
        raise ValueError(f"{what}: {p} is empty (0 bytes)")
    import torch  # late: the dataset tools use this module without torch
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file
            state: Any = load_file(str(p), device="cpu")
        else:
            with warnings.catch_warnings():
                # torch warns about the pickle protocol of a file it then refuses: the one
                # line below says it all.
                warnings.simplefilter("ignore", UserWarning)
                state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every reader error becomes one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            first = "it holds pickled Python objects, which are never loaded"
        raise ValueError(f"{what}: cannot read {p}: {first[:200]} (expected a .safetensors "
                         f"file or a torch state dict saved with torch.save)") from None
    if not isinstance(state, dict):
        raise ValueError(f"{what}: {p} holds a {type(state).__name__}, not a state dict")
    return state
