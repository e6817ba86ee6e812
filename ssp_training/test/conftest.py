"""Fixtures shared by the ssp_training tests."""

from collections.abc import Iterator

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
