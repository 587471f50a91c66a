"""Fixtures shared by several test files."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def threads_by_the_course_policy():
    """The unit tests use torch's threads as the lessons do: lessonlib's thread policy (one thread when
    the machine is already busy, where two were measured many times slower), or $LESSONLIB_THREADS."""
    from lessonlib.environment import set_threads

    before = torch.get_num_threads()
    set_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def one_torch_thread():
    """Tiny models run far faster on one thread (BENCHMARKS.md, lesson 01); restore afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
