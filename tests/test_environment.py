"""setup(): the mode it picks, how fast it decides offline, seeds and devices, bad values."""

import random
import socket
import threading

import numpy as np
import pytest
import torch

import lessonlib
from lessonlib import environment
from lessonlib.environment import MODE_ENV, decide_mode, hub_reachable, setup, validate_mode


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv(MODE_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv(environment.DEVICE_ENV, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    monkeypatch.setattr(environment, "_current", None)


@pytest.mark.parametrize(
    "given, expected", [(None, "auto"), ("OFFLINE", "offline"), (" pretrained", "pretrained")]
)
def test_validate_mode_normalises(given, expected):
    assert validate_mode(given) == expected


@pytest.mark.parametrize("bad", ["online", "", "tiny", 1, True])
def test_unknown_mode_lists_the_valid_ones(bad):
    with pytest.raises(ValueError, match="auto, pretrained, offline"):
        validate_mode(bad)
    with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(")):
        setup(mode=bad, verbose=False)


def test_environment_variable_forces_the_mode(monkeypatch):
    monkeypatch.setenv(MODE_ENV, "offline")
    assert decide_mode() == ("offline", f"set by ${MODE_ENV}")
    monkeypatch.setenv(MODE_ENV, "pretrained")
    assert decide_mode()[0] == "pretrained"
    monkeypatch.setenv(MODE_ENV, "sometimes")
    with pytest.raises(ValueError, match="sometimes"):
        decide_mode()


def test_explicit_mode_beats_the_environment(monkeypatch):
    monkeypatch.setenv(MODE_ENV, "pretrained")
    assert decide_mode("offline")[0] == "offline"


def test_auto_is_offline_when_hub_offline_is_set(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mode, reason = decide_mode()
    assert mode == "offline" and "HF_HUB_OFFLINE" in reason


def test_auto_uses_cached_weights_without_network(monkeypatch):
    monkeypatch.setattr(environment, "default_weights_cached", lambda: True)
    monkeypatch.setattr(
        environment, "hub_reachable", lambda: pytest.fail("must not probe the network")
    )
    assert decide_mode() == ("pretrained", "auto: pretrained CLIP weights found in the cache")


def test_auto_pretrained_when_the_hub_answers(monkeypatch):
    monkeypatch.setattr(environment, "hub_reachable", lambda: True)
    assert decide_mode()[0] == "pretrained"


def test_auto_offline_when_the_hub_does_not_answer(monkeypatch):
    monkeypatch.setattr(environment, "hub_reachable", lambda: False)
    mode, reason = decide_mode()
    assert mode == "offline" and "not reachable" in reason


def test_default_weights_cached_sees_a_file_in_the_hub_cache(tmp_path):
    # Lay out a file the way huggingface_hub caches it and check that it is found.
    repo = "models--" + environment.DEFAULT_CLIP_HUB_REPO.replace("/", "--")
    snap = tmp_path / "hf" / "hub" / repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (tmp_path / "hf" / "hub" / repo / "refs").mkdir()
    (tmp_path / "hf" / "hub" / repo / "refs" / "main").write_text("abc123")
    assert not environment.default_weights_cached()
    (snap / environment.DEFAULT_CLIP_FILES[0]).write_bytes(b"weights")
    assert environment.default_weights_cached()


def test_hub_probe_false_for_unresolvable_host_and_closed_port():
    assert hub_reachable(host="host.invalid", timeout=1.0) is False
    assert hub_reachable(host="127.0.0.1", port=9, timeout=1.0) is False


def test_hub_probe_returns_while_a_hanging_lookup_is_still_stuck(monkeypatch):
    """The probe must not wait for a stuck DNS lookup or connect: it returns False while the call hangs.

    (Checked by state, not by a stopwatch: the hanging call is still blocked when the probe returns.
    benchmarks/bench_setup.py measures the seconds.)
    """
    release = threading.Event()
    entered = threading.Event()

    def hanging_connect(*args, **kwargs):
        entered.set()
        release.wait(30)
        raise OSError("gave up")

    monkeypatch.setattr(socket, "create_connection", hanging_connect)
    try:
        assert hub_reachable(timeout=0.2) is False
        assert entered.is_set() and not release.is_set()  # returned while the connect still hung
    finally:
        release.set()


def test_hub_probe_true_for_a_listening_port():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        assert hub_reachable(host="127.0.0.1", port=server.getsockname()[1], timeout=2.0)
    finally:
        server.close()


def test_setup_prints_one_line_and_goes_offline(capsys, monkeypatch):
    monkeypatch.setenv(MODE_ENV, "offline")
    cfg = lessonlib.setup()
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "mode=offline" in out[0] and "device=cpu" in out[0]
    assert cfg.mode == "offline" and lessonlib.get_mode() == "offline"
    assert environment.current() is cfg
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_setup_seeds_everything():
    setup(mode="offline", seed=7, verbose=False)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    setup(mode="offline", seed=7, verbose=False)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_bad_seed(bad):
    with pytest.raises(ValueError, match="seed"):
        setup(mode="offline", seed=bad, verbose=False)


def test_device_choice(monkeypatch):
    assert environment.pick_device() == (
        "cuda" if torch.cuda.is_available() else environment.pick_device()
    )
    assert environment.pick_device("CPU") == "cpu"
    with pytest.raises(ValueError, match="'tpu'.*cpu, cuda, mps"):
        environment.pick_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        environment.pick_device("cuda")
    monkeypatch.setenv(environment.DEVICE_ENV, "cpu")
    assert environment.pick_device() == "cpu"


def test_get_mode_without_setup_reads_the_environment(monkeypatch):
    monkeypatch.setenv(MODE_ENV, "offline")
    assert lessonlib.get_mode() == "offline"


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(environment.CACHE_ENV, str(tmp_path / "c"))
    assert environment.cache_dir() == tmp_path / "c"
