"""Read-only access to downloaded inputs: a folder, a zip archive or a tar archive.

Every archive member name is checked when the archive is opened. Absolute paths, drive
letters, ``..`` components, backslashes, links and device files are refused: opening such an
archive raises :class:`ArchiveError` naming the member, and nothing is extracted from it.
A truncated or corrupt archive raises :class:`ArchiveError` naming the file (zip member data
is CRC-checked as it is read).

Sizes are capped per member, by the size the archive declares (before anything is read) and
again while streaming (in case the declaration lies): a member read into memory (labels,
stills) may hold at most :data:`MAX_READ_BYTES`, and a member extracted to disk (videos) may
not expand more than :data:`MAX_RATIO` times its compressed size (videos and PNGs barely
compress, a zip bomb expands a thousandfold).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
import re
import stat
import tarfile
import threading
from typing import IO
import zipfile
import zlib


class ArchiveError(RuntimeError):
    """An input archive or folder is missing, unreadable, corrupt or unsafe."""


MAX_READ_BYTES = 128 << 20   # a 4K label PNG or still is < 40 MB
MAX_RATIO = 100              # declared / compressed size of one extracted member
RATIO_FLOOR = 16 << 20       # members up to this size are never refused for their ratio
_CHUNK = 1 << 20


def _copy_capped(src: IO[bytes], dst: IO[bytes] | None, limit: int, what: str) -> bytes:
    """Stream ``src`` into ``dst`` (or into the returned bytes); refuse more than ``limit``."""
    parts, total = [], 0
    while chunk := src.read(_CHUNK):
        total += len(chunk)
        if total > limit:
            raise ArchiveError(f"{what} holds more than {limit >> 20} MiB; refused (is the "
                               "archive damaged or a zip bomb?)")
        if dst is None:
            parts.append(chunk)
        else:
            dst.write(chunk)
    return b"".join(parts)


_DRIVE = re.compile(r"^[A-Za-z]:")


def check_member_name(name: str) -> str:
    """Return ``name`` as a safe relative posix path, or raise ``ValueError`` saying why not."""
    if not name or "\x00" in name:
        raise ValueError("empty name or NUL byte")
    if "\\" in name:
        raise ValueError("backslash in the path")
    if name.startswith("/") or _DRIVE.match(name):
        raise ValueError("absolute path")
    parts = PurePosixPath(name).parts
    if any(p == ".." for p in parts):
        raise ValueError("'..' component escapes the output folder")
    return str(PurePosixPath(*[p for p in parts if p != "."])) if parts else name


class Source:
    """Files of a downloaded input, by relative posix path; see :func:`open_source`."""

    def __init__(self, path: Path) -> None:
        """Remember the input's path (use :func:`open_source` to make one)."""
        self.path = path

    def names(self) -> list[str]:
        """Return the relative paths of all regular files."""
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        """Return the bytes of one file; errors name the input and the member."""
        raise NotImplementedError

    def local_path(self, name: str, cache_dir: Path) -> Path:
        """Return a filesystem path of ``name`` (extracting it into ``cache_dir`` if needed)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the input."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _FolderSource(Source):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*")
                             if p.is_file() and not p.is_symlink())

    def names(self) -> list[str]:
        return list(self._names)

    def read(self, name: str) -> bytes:
        try:
            path = self.path / check_member_name(name)
            if path.stat().st_size > MAX_READ_BYTES:
                raise ArchiveError(f"{path}: {path.stat().st_size >> 20} MiB is more than "
                                   f"the {MAX_READ_BYTES >> 20} MiB a label or still may have")
            return path.read_bytes()
        except (OSError, ValueError) as err:
            raise ArchiveError(f"{self.path / name}: cannot read ({err})") from err

    def local_path(self, name: str, cache_dir: Path) -> Path:
        return self.path / check_member_name(name)


class _ArchiveSource(Source):
    """Common extraction logic of zip and tar sources."""

    _lock = threading.Lock()  # zipfile/tarfile handles are not thread-safe

    def _open_member(self, name: str) -> IO[bytes]:
        raise NotImplementedError

    def _sizes(self, name: str) -> tuple[int, int]:
        """Return (declared size, compressed size) of a member."""
        raise NotImplementedError

    def _check_declared(self, name: str, in_memory: bool) -> int:
        """Refuse a member by its declared size; return the most bytes it may stream."""
        what = f"{self.path}: member {name!r}"
        try:
            size, packed = self._sizes(name)
        except KeyError:
            raise ArchiveError(f"{what} does not exist") from None
        if in_memory and size > MAX_READ_BYTES:
            raise ArchiveError(f"{what} declares {size >> 20} MiB, more than the "
                               f"{MAX_READ_BYTES >> 20} MiB a label or still may have; refused "
                               "before extraction")
        if not in_memory and size > RATIO_FLOOR and size > MAX_RATIO * max(packed, 1):
            raise ArchiveError(f"{what} declares {size >> 20} MiB from {packed >> 10} KiB "
                               f"compressed (more than {MAX_RATIO}x); refused before "
                               "extraction (is the archive a zip bomb?)")
        return size

    def read(self, name: str) -> bytes:
        limit = self._check_declared(name, in_memory=True)
        with self._lock:
            try:
                with self._open_member(name) as f:
                    return _copy_capped(f, None, limit, f"{self.path}: member {name!r}")
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, tarfile.TarError,
                    KeyError) as err:
                raise ArchiveError(f"{self.path}: member {name!r} is corrupt or truncated "
                                   f"({err}); download the archive again") from err

    def local_path(self, name: str, cache_dir: Path) -> Path:
        dest = (cache_dir / check_member_name(name)).resolve()
        if not dest.is_relative_to(cache_dir.resolve()):
            raise ArchiveError(f"{self.path}: member {name!r} would land outside {cache_dir}")
        if dest.is_file():  # extracted by an earlier (possibly interrupted) run
            return dest
        limit = self._check_declared(name, in_memory=False)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        with self._lock:
            try:
                with self._open_member(name) as src, open(tmp, "wb") as dst:
                    _copy_capped(src, dst, limit, f"{self.path}: member {name!r}")
                os.replace(tmp, dest)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, tarfile.TarError,
                    KeyError) as err:
                raise ArchiveError(f"{self.path}: cannot extract member {name!r} ({err}); the "
                                   "archive may be truncated or corrupt") from err
            finally:
                if tmp.exists():
                    tmp.unlink()
        return dest


class _ZipSource(_ArchiveSource):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self._zip = zipfile.ZipFile(path)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise ArchiveError(f"{path}: not a readable zip archive ({err}); the download may "
                               "be truncated or corrupt") from err
        self._names = []
        for info in infos:
            # Unix file type bits, when the archiver stored them (many write permissions only).
            kind = stat.S_IFMT(info.external_attr >> 16)
            _refuse_unsafe(path, info.filename, is_link=kind == stat.S_IFLNK,
                           is_special=kind not in (0, stat.S_IFREG, stat.S_IFDIR))
            if not info.is_dir():
                self._names.append(info.filename)

    def names(self) -> list[str]:
        return list(self._names)

    def _open_member(self, name: str) -> IO[bytes]:
        return self._zip.open(name)

    def _sizes(self, name: str) -> tuple[int, int]:
        info = self._zip.getinfo(name)
        return info.file_size, info.compress_size

    def close(self) -> None:
        self._zip.close()


class _TarSource(_ArchiveSource):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self._tar = tarfile.open(path)
            members = self._tar.getmembers()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            raise ArchiveError(f"{path}: not a readable tar archive ({err}); the download may "
                               "be truncated or corrupt") from err
        self._members = {}
        for m in members:
            _refuse_unsafe(path, m.name, is_link=m.issym() or m.islnk(),
                           is_special=not (m.isfile() or m.isdir()))
            if m.isfile():
                self._members[m.name] = m

    def names(self) -> list[str]:
        return list(self._members)

    def _sizes(self, name: str) -> tuple[int, int]:
        # Members of a compressed tar share one stream: the whole file is each one's budget.
        return self._members[name].size, self.path.stat().st_size

    def _open_member(self, name: str) -> IO[bytes]:
        f = self._tar.extractfile(self._members[name])
        if f is None:
            raise KeyError(name)
        return f

    def close(self) -> None:
        self._tar.close()


def _refuse_unsafe(archive: Path, name: str, is_link: bool, is_special: bool) -> None:
    try:
        check_member_name(name)
    except ValueError as err:
        raise ArchiveError(f"{archive}: refusing unsafe member {name!r}: {err}; nothing was "
                           "extracted") from None
    if is_link:
        raise ArchiveError(f"{archive}: refusing link member {name!r}; nothing was extracted")
    if is_special:
        raise ArchiveError(f"{archive}: refusing special-file member {name!r}; nothing was "
                           "extracted")


def open_source(path: str | Path) -> Source:
    """Open a folder, zip or tar input; errors name the path and say what is wrong."""
    path = Path(path)
    if not path.exists():
        raise ArchiveError(f"input not found: {path}")
    if path.is_dir():
        return _FolderSource(path)
    if not path.is_file():   # a device (/dev/zero), a FIFO, a socket: no end, or no data
        raise ArchiveError(f"{path}: not a folder, .zip or .tar archive (not a regular file)")
    if zipfile.is_zipfile(path) or path.suffix.lower() == ".zip":
        return _ZipSource(path)
    if path.name.lower().endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return _TarSource(path)
    raise ArchiveError(f"{path}: not a folder, .zip or .tar archive")
