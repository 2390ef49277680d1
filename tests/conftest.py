"""Shared test set-up: offline, Keras on torch, no network, and a deterministic power source."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# never the real per-user run registry, not even for a session finished at interpreter exit (after
# the per-test fixture below has been undone)
os.environ["WATTWISE_REGISTRY"] = os.path.join(tempfile.mkdtemp(prefix="wattwise-tests-"), "runs.sqlite")

import socket  # noqa: E402

import pytest  # noqa: E402
from fakes import PROBE_WATTS, FakeClock, SteadySource, steady_sources  # noqa: E402


class NetworkAccessed(AssertionError):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test fails if anything connects to a network address (Unix sockets are allowed)."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guard(method):
        def connect(self, address):
            if self.family in (socket.AF_INET, socket.AF_INET6):
                raise NetworkAccessed(f"network access attempted: {address!r}")
            return method(self, address)

        return connect

    monkeypatch.setattr(socket.socket, "connect", guard(real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guard(real_connect_ex))
    yield


@pytest.fixture(autouse=True)
def no_wattwise_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("WATTWISE_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def private_registry(no_wattwise_env, monkeypatch, tmp_path_factory):
    """No test writes to the real per-user run registry: each one gets its own file."""
    path = tmp_path_factory.mktemp("registry") / "runs.sqlite"
    monkeypatch.setenv("WATTWISE_REGISTRY", str(path))
    return path


@pytest.fixture(autouse=True)
def no_run_left_in_progress():
    """A run a test leaves unfinished is finished after it (quietly): its signal handlers and its
    overlap with later runs stay out of the next test."""
    yield
    import contextlib

    from wattwise import endings

    for run in endings.in_progress():
        with contextlib.suppress(Exception):
            run.finish_interrupted("the test ended", at_last_reading=True)


@pytest.fixture
def steady_source():
    return SteadySource


@pytest.fixture
def steady(monkeypatch) -> FakeClock:
    """A fake clock that the probe and every run read, and constant power (``PROBE_WATTS`` on one
    GPU) on it: a test's steps last what it advances the clock by, whatever the machine's speed."""
    import wattwise.probing
    import wattwise.sources

    clock = FakeClock()
    monkeypatch.setattr(wattwise.sources, "open_sources", steady_sources({"gpu:0": PROBE_WATTS}, clock))
    monkeypatch.setattr(wattwise.probing, "clock", clock)
    return clock
