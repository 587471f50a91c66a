"""Fixtures shared by several test files."""

import pytest
import torch


@pytest.fixture()
def one_torch_thread():
    """Tiny models run far faster on one thread (BENCHMARKS.md, lesson 01); restore afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
