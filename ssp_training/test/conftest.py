"""Fixtures shared by the ssp_training tests."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread for a module's tests, then restore the setting.

    Two shared cores: one thread avoids OpenMP workers spinning against the other test
    processes, and tiny tensors gain nothing from more. Modules use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Return every path under ``root`` with (mode, size, mtime_ns): what 'untouched' means."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def _assert_one_error_line(stderr: str, tool: str, *needles: str) -> str:
    """Assert ``stderr`` ends with exactly one ``<tool>...: error:`` line holding ``needles``."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if ": error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    line = errors[0]
    assert line.startswith(tool), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, tuple[int, int, int]]]:
    """Return the folder-state reader, to assert that a refused tool left a folder alone."""
    return _snapshot


@pytest.fixture
def assert_one_error_line() -> Callable[..., str]:
    """Return the checker of the hostile-input contract (stderr, tool, *needles).

    A refused command prints one ``<tool>...: error:`` line, last, holding every needle, and no
    traceback; the checker returns that line.
    """
    return _assert_one_error_line
