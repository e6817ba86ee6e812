"""Fixtures shared by the ssp_training tests."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ssp_perception import testing
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


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, tuple[int, int, int]]]:
    """Return the folder-state reader, to assert that a refused tool left a folder alone."""
    return testing.snapshot


@pytest.fixture
def assert_one_error_line() -> Callable[..., str]:
    """Return the checker of the hostile-input contract (stderr, tool, *needles).

    A refused command prints one ``<tool>...: error:`` line, last, holding every needle, and no
    traceback; the checker returns that line.
    """
    return testing.assert_one_error_line
