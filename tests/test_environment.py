"""setup(): the mode it picks, how fast it decides offline, seeds and devices, bad values."""

import random
import socket
import threading
import time

import numpy as np
import pytest
import torch

import lessonlib
from lessonlib import environment
from lessonlib.environment import MODE_ENV, decide_mode, hub_reachable, setup, validate_mode


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    """Each test starts from no setup() and leaves the process as it found it (environment variables,
    the hub client's offline switch, torch's thread count)."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.delenv(MODE_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv(environment.DEVICE_ENV, raising=False)
    monkeypatch.delenv(environment.THREADS_ENV, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    monkeypatch.setattr(environment, "_current", None)
    monkeypatch.setattr(environment, "_decided_without_setup", None)
    monkeypatch.setattr(environment, "_offline_saved", None)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", hf_constants.HF_HUB_OFFLINE)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


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
    import os

    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv(MODE_ENV, "offline")
    cfg = lessonlib.setup()
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "mode=offline" in out[0]
    assert f"device={environment.pick_device()}" in out[0]
    assert (
        f"threads={torch.get_num_threads()} (" in out[0] and cfg.threads == torch.get_num_threads()
    )
    assert cfg.mode == "offline" and lessonlib.get_mode() == "offline"
    assert environment.current() is cfg
    assert os.environ["HF_HUB_OFFLINE"] == "1" and hf_constants.HF_HUB_OFFLINE is True


def test_pretrained_setup_undoes_an_earlier_offline_setup(monkeypatch):
    import os

    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    setup(mode="offline", verbose=False)
    assert os.environ["HF_HUB_OFFLINE"] == "1" and hf_constants.HF_HUB_OFFLINE is True
    setup(mode="pretrained", verbose=False)
    assert "HF_HUB_OFFLINE" not in os.environ and hf_constants.HF_HUB_OFFLINE is False
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # a value the user set is put back as it was
    setup(mode="offline", verbose=False)
    setup(mode="pretrained", verbose=False)
    assert os.environ["HF_HUB_OFFLINE"] == "0"


def test_get_mode_before_setup_decides_once_and_says_so(monkeypatch):
    calls = []

    def probe():
        calls.append(1)
        return False

    monkeypatch.setattr(environment, "hub_reachable", probe)
    with pytest.warns(UserWarning, match="setup\\(\\) has not been called: mode=offline"):
        assert lessonlib.get_mode() == "offline"
    assert lessonlib.get_mode() == "offline" and len(calls) == 1  # no second network probe


@pytest.mark.parametrize(
    "usable, busy, expected",
    [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 3.5, 1), (1, 0.0, 1), (16, 2.2, 14)],
)
def test_choose_threads_gives_the_free_cpus(usable, busy, expected):
    assert environment.choose_threads(usable, busy) == expected


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2"])
def test_choose_threads_refuses_a_bad_cpu_count(bad):
    with pytest.raises(ValueError, match="usable CPUs"):
        environment.choose_threads(bad, 0.0)


def test_setup_uses_the_policy_unless_told(monkeypatch):
    monkeypatch.setattr(environment, "usable_cpus", lambda: (2, [0, 1]))
    monkeypatch.setattr(environment, "busy_cpus", lambda ids: 1.0)
    cfg = setup(mode="offline", verbose=False)
    assert cfg.threads == 1 == torch.get_num_threads()
    assert cfg.threads_reason == "2 CPUs usable, 1.0 busy with other work"
    monkeypatch.setattr(environment, "busy_cpus", lambda ids: 0.0)
    assert setup(mode="offline", verbose=False).threads == 2 == torch.get_num_threads()
    monkeypatch.setenv(environment.THREADS_ENV, "1")
    cfg = setup(mode="offline", verbose=False)
    assert (cfg.threads, cfg.threads_reason) == (1, "set by $LESSONLIB_THREADS")
    assert setup(mode="offline", threads=2, verbose=False).threads == 2  # the argument wins


@pytest.mark.parametrize("bad", ["0", "two", "1.5", "-1", " "])
def test_bad_thread_count_names_the_value(monkeypatch, bad):
    monkeypatch.setenv(environment.THREADS_ENV, bad)
    if not bad.strip():  # an empty variable means "not set": the policy decides
        assert setup(mode="offline", verbose=False).threads >= 1
        return
    with pytest.raises(ValueError, match=f"thread count '{bad}'.*LESSONLIB_THREADS=1"):
        setup(mode="offline", verbose=False)


def test_cgroup_quota_is_read_for_v1_and_v2(tmp_path):
    assert environment._cgroup_cpu_quota(tmp_path) is None  # no cgroup files: no quota
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert environment._cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert environment._cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert environment._cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    assert environment._cgroup_cpu_quota(tmp_path) == 1.0


def test_usable_cpus_respects_a_quota(monkeypatch):
    monkeypatch.setattr(environment, "_cgroup_cpu_quota", lambda: 1.5)
    n, ids = environment.usable_cpus()
    assert n == 1 and (ids is None or len(ids) >= 1)


def test_busy_cpus_sees_a_busy_loop():
    """A process that spins on one CPU shows up as about one busy CPU (checked with a wide margin:
    other work on the machine adds to it, never takes away)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    spinner = ctx.Process(target=_spin, args=(stop,), daemon=True)
    spinner.start()
    try:
        time.sleep(0.5)  # let it start spinning
        assert environment.busy_cpus(seconds=0.5) > 0.6
    finally:
        stop.set()
        spinner.join(5)


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
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert environment.pick_device() == "cuda"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert environment.pick_device() == "cuda"  # CUDA first
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert environment.pick_device() == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert environment.pick_device() == "cpu"
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


def _spin(stop):  # module level, so that a spawned process can import it
    while not stop.is_set():
        pass
