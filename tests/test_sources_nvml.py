"""NVML source: the energy counter, the power-polling fallback, and which GPUs this process measures.

The fake ``pynvml`` is ``create_autospec`` of the real module (nvidia-ml-py), so a call with the wrong
arguments or to a function that does not exist fails; the real exception classes and constants are
kept, so ``pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)`` is a real ``NVMLError_NotSupported``.
"""

from __future__ import annotations

import sys
import threading
import time

import pynvml
import pytest
from fakes import FakeClock, FakeGpu, make_fake_nvml, nvml_error, uuid

from wattwise.sources import SourceUnavailable
from wattwise.sources import nvml as nvml_module
from wattwise.sources.nvml import NvmlSource, parse_visible_devices, select_for_rank

# ---- a fake NVML driver --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


@pytest.fixture
def install(monkeypatch):
    """Install a fake driver with the given GPUs as ``import pynvml``; returns (fake module, gpus)."""

    def install_gpus(gpus: list[FakeGpu]):
        fake = make_fake_nvml(gpus)
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        return fake

    return install_gpus


@pytest.fixture
def fast_polling(monkeypatch):
    monkeypatch.setattr(nvml_module, "POLL_INTERVAL_S", 0.02)
    return 0.02


def names(source: NvmlSource) -> list[str]:
    return [c.name for c in source.components]


# ---- CUDA_VISIBLE_DEVICES and LOCAL_RANK, as pure functions ------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", []),
        ("0,1", ["0", "1"]),
        (" 2 , 0 ", ["2", "0"]),
        ("0,1,-1,2", ["0", "1"]),  # CUDA stops at the first invalid entry
        ("0,,1", ["0"]),
        ("NoDevFiles", []),
        ("GPU-8f3a,MIG-5c1d", ["GPU-8f3a", "MIG-5c1d"]),
    ],
)
def test_parse_visible_devices_follows_cuda(value, expected):
    assert parse_visible_devices(value) == expected


def test_select_for_rank():
    assert select_for_rank(["3"], 5) == ["3"]  # one visible device: that one, whatever the rank
    assert select_for_rank(["0", "1", "2"], None) == ["0", "1", "2"]  # no launcher: all of them
    assert select_for_rank(["0", "1", "2"], 1) == ["1"]
    assert select_for_rank(["5", "7"], 1) == ["7"]  # the position, not the index
    assert select_for_rank(["0", "1"], 4) == ["0", "1"]  # rank past the list: no guess
    assert select_for_rank([], 0) == []


# ---- the energy counter ------------------------------------------------------------------------


def test_counter_reads_joules_since_open(install):
    gpus = [FakeGpu(uuid(0), energy_mj=5_000_000), FakeGpu(uuid(1), energy_mj=70_000_000)]
    fake = install(gpus)

    source = NvmlSource.open()
    assert names(source) == ["gpu:0", "gpu:1"]
    assert all(c.kind == "gpu" and c.measured and c.source == "nvml" and c.scope == "device" for c in source.components)
    assert "total-energy counter" in source.components[0].detail
    assert source.read_j() == (0.0, 0.0)  # the counter's value at open is not this run's energy

    gpus[0].energy_mj += 12_345
    assert source.read_j() == pytest.approx((12.345, 0.0))
    gpus[0].energy_mj += 1_000
    gpus[1].energy_mj += 250_500
    assert source.read_j() == pytest.approx((13.345, 250.5))  # cumulative, per GPU

    fake.nvmlDeviceGetPowerUsage.assert_not_called()  # a counter GPU is never polled
    source.close()
    fake.nvmlShutdown.assert_called_once_with()


def test_bytes_names_from_old_bindings_are_decoded(install):
    install([FakeGpu(uuid(0), name=b"Tesla V100-SXM2-16GB")])
    source = NvmlSource.open()
    assert source.components[0].detail.startswith("Tesla V100-SXM2-16GB,")
    source.close()


# ---- the power-polling fallback -------------------------------------------------------------------


def polled(clock: FakeClock, **kwargs) -> NvmlSource:
    """A source whose sampling the test drives: ``poll()`` at the fake clock's times, no thread."""
    return NvmlSource.open(clock=clock, poll_thread=False, **kwargs)


def test_gpu_without_counter_integrates_its_power(install):
    install([FakeGpu(uuid(0), energy_mj=None, power_mw=250_000)])
    clock = FakeClock()
    source = polled(clock)
    for _ in range(5):
        clock.now += 0.1
        source.poll()
    energy_j = source.read_j()[0]
    source.close()
    assert "power sampled" in source.components[0].detail
    assert source.components[0].measured
    assert energy_j == pytest.approx(250.0 * 0.5)


def test_polling_integrates_each_gpus_own_power_by_trapezoids(install):
    gpus = [FakeGpu(uuid(0), energy_mj=None, power_mw=100_000), FakeGpu(uuid(1), energy_mj=None, power_mw=300_000)]
    install(gpus)
    clock = FakeClock()
    source = polled(clock)
    clock.now += 1.0
    source.poll()
    gpus[0].power_mw = 200_000  # the power changes: the next interval is a trapezoid
    clock.now += 1.0
    source.poll()
    low_j, high_j = source.read_j()
    source.close()
    assert low_j == pytest.approx(100.0 + 150.0)
    assert high_j == pytest.approx(600.0)


def test_counter_and_polled_gpus_keep_their_order(install):
    gpus = [FakeGpu(uuid(0), energy_mj=None, power_mw=200_000), FakeGpu(uuid(1), energy_mj=1_000)]
    fake = install(gpus)
    clock = FakeClock()
    source = polled(clock)
    gpus[1].energy_mj += 7_000
    clock.now += 0.5
    source.poll()
    polled_j, counted_j = source.read_j()
    source.close()
    assert counted_j == pytest.approx(7.0)
    assert polled_j == pytest.approx(100.0)
    # only the GPU without a counter is polled
    assert {call.args[0].index for call in fake.nvmlDeviceGetPowerUsage.call_args_list} == {0}


def test_the_thread_polls_until_close_and_stops(install, fast_polling):
    fake = install([FakeGpu(uuid(0), energy_mj=None)])
    source = NvmlSource.open()
    assert any(t.name == "wattwise-nvml-poll" for t in threading.enumerate())
    deadline = time.monotonic() + 30.0  # a bound for a starved thread, not a timing claim
    while fake.nvmlDeviceGetPowerUsage.call_count < 3 and time.monotonic() < deadline:
        time.sleep(fast_polling)
    assert fake.nvmlDeviceGetPowerUsage.call_count >= 3  # it did poll
    source.close()
    assert not any(t.name == "wattwise-nvml-poll" for t in threading.enumerate())
    calls_at_close = fake.nvmlDeviceGetPowerUsage.call_count
    time.sleep(5 * fast_polling)
    assert fake.nvmlDeviceGetPowerUsage.call_count == calls_at_close
    fake.nvmlShutdown.assert_called_once_with()


def test_a_failing_power_read_is_bridged_and_counted(install):
    gpus = [FakeGpu(uuid(0), energy_mj=None, power_mw=100_000)]
    fake = install(gpus)
    real_side_effect = fake.nvmlDeviceGetPowerUsage.side_effect
    failures = iter([False, True, True, True])  # the first read (at open) works, the next three fail

    def flaky(handle):
        if next(failures, False):
            raise nvml_error(pynvml.NVML_ERROR_UNKNOWN)
        return real_side_effect(handle)

    fake.nvmlDeviceGetPowerUsage.side_effect = flaky
    clock = FakeClock()
    source = polled(clock)
    for _ in range(5):
        clock.now += 1.0
        source.poll()
    energy_j = source.read_j()[0]
    source.close()
    assert energy_j == pytest.approx(500.0)  # each gap bridged with the last good reading: 100 W throughout
    assert source.problems() == ["3 NVML power reads failed; each gap was bridged with the last good reading"]


def test_the_meter_reports_a_sources_problems_at_close(install):
    from wattwise.meter import EnergyMeter

    fake = install([FakeGpu(uuid(0), energy_mj=None)])
    fake.nvmlDeviceGetPowerUsage.side_effect = nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
    clock = FakeClock()
    source = polled(clock)
    clock.now += 1.0
    source.poll()
    meter = EnergyMeter([source], clock=clock)
    meter.close()
    assert len(meter.notes) == 1 and "NVML power reads failed" in meter.notes[0]


# ---- which GPUs: CUDA_VISIBLE_DEVICES -------------------------------------------------------------


def test_visible_indices_choose_and_order_the_gpus(install, monkeypatch):
    gpus = [FakeGpu(uuid(i)) for i in range(4)]
    install(gpus)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    source = NvmlSource.open()
    assert names(source) == ["gpu:2", "gpu:0"]
    gpus[2].energy_mj += 2_000
    gpus[0].energy_mj += 1_000
    gpus[1].energy_mj += 99_000  # not visible: not counted
    assert source.read_j() == pytest.approx((2.0, 1.0))
    source.close()


def test_an_index_past_the_last_gpu_ends_the_list(install, monkeypatch):
    install([FakeGpu(uuid(0)), FakeGpu(uuid(1))])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,7,0")
    source = NvmlSource.open()
    assert names(source) == ["gpu:1"]
    source.close()


def test_only_missing_indices_means_no_gpu(install, monkeypatch):
    fake = install([FakeGpu(uuid(0))])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    with pytest.raises(SourceUnavailable, match="CUDA_VISIBLE_DEVICES='7'"):
        NvmlSource.open()
    fake.nvmlShutdown.assert_called_once_with()


def test_gpu_uuid_and_unique_prefix(install, monkeypatch):
    gpus = [FakeGpu(uuid(0)), FakeGpu(uuid(1)), FakeGpu(uuid(2))]
    install(gpus)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{uuid(2)[:9]},{uuid(0)}")
    source = NvmlSource.open()
    assert names(source) == ["gpu:2", "gpu:0"]
    gpus[2].energy_mj += 4_000
    assert source.read_j() == pytest.approx((4.0, 0.0))
    source.close()


@pytest.mark.parametrize(("prefix", "matches"), [("GPU-", 3), ("GPU-ffff", 0)])
def test_an_ambiguous_or_unknown_uuid_is_unavailable(install, monkeypatch, prefix, matches):
    fake = install([FakeGpu(uuid(0)), FakeGpu(uuid(1)), FakeGpu(uuid(2))])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", prefix)
    with pytest.raises(SourceUnavailable, match=f"{prefix!r} matches {matches} GPUs"):
        NvmlSource.open()
    fake.nvmlShutdown.assert_called_once_with()


def test_two_mig_instances_of_one_gpu_measure_it_once(install, monkeypatch):
    gpus = [FakeGpu(uuid(0), migs=("MIG-a0", "MIG-a1")), FakeGpu(uuid(1), migs=("MIG-b0",))]
    install(gpus)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-a0,MIG-a1")
    source = NvmlSource.open()
    assert names(source) == ["gpu:0"]
    assert "MIG" in source.components[0].detail
    gpus[0].energy_mj += 3_000
    gpus[1].energy_mj += 50_000
    assert source.read_j() == pytest.approx((3.0,))  # the parent's counter, once
    source.close()


def test_mig_instances_of_two_gpus_measure_both_parents(install, monkeypatch):
    gpus = [FakeGpu(uuid(0), migs=("MIG-a0",)), FakeGpu(uuid(1), migs=("MIG-b0", "MIG-b1"))]
    install(gpus)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-b1,MIG-a0")
    source = NvmlSource.open()
    assert names(source) == ["gpu:1", "gpu:0"]
    source.close()


def test_empty_cuda_visible_devices_hides_every_gpu(install, monkeypatch):
    fake = install([FakeGpu(uuid(0)), FakeGpu(uuid(1))])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(SourceUnavailable, match="hides every GPU"):
        NvmlSource.open()
    fake.nvmlShutdown.assert_called_once_with()
    fake.nvmlDeviceGetHandleByIndex.assert_not_called()


def test_no_gpu_at_all(install):
    fake = install([])
    with pytest.raises(SourceUnavailable, match="NVML sees no GPU"):
        NvmlSource.open()
    fake.nvmlShutdown.assert_called_once_with()


# ---- which GPUs: LOCAL_RANK -------------------------------------------------------------------------


def test_local_rank_picks_its_gpu_among_all(install, monkeypatch):
    gpus = [FakeGpu(uuid(i)) for i in range(4)]
    install(gpus)
    monkeypatch.setenv("LOCAL_RANK", "2")
    source = NvmlSource.open()
    assert names(source) == ["gpu:2"]
    gpus[2].energy_mj += 1_500
    gpus[0].energy_mj += 9_000
    assert source.read_j() == pytest.approx((1.5,))
    source.close()


def test_local_rank_is_a_position_in_cuda_visible_devices(install, monkeypatch):
    install([FakeGpu(uuid(i)) for i in range(4)])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    source = NvmlSource.open()
    assert names(source) == ["gpu:1"]
    source.close()


def test_one_visible_gpu_per_rank(install, monkeypatch):
    install([FakeGpu(uuid(i)) for i in range(4)])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # a launcher that narrows each rank to its GPU
    monkeypatch.setenv("LOCAL_RANK", "1")
    source = NvmlSource.open()
    assert names(source) == ["gpu:3"]
    source.close()


def test_explicit_arguments_override_the_environment(install, monkeypatch):
    install([FakeGpu(uuid(i)) for i in range(4)])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("LOCAL_RANK", "3")
    source = NvmlSource.open(visible="1,2", local_rank=0)
    assert names(source) == ["gpu:1"]
    source.close()


# ---- failures say why, never crash --------------------------------------------------------------


def test_driver_missing_from_the_fake(install):
    fake = install([FakeGpu(uuid(0))])
    fake.nvmlInit.side_effect = nvml_error(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    with pytest.raises(SourceUnavailable, match="NVML could not start"):
        NvmlSource.open()


def test_nvml_error_while_listing_gpus(install):
    fake = install([FakeGpu(uuid(0))])
    fake.nvmlDeviceGetCount.side_effect = nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
    with pytest.raises(SourceUnavailable, match="failed while listing GPUs"):
        NvmlSource.open()
    fake.nvmlShutdown.assert_called_once_with()


def test_pynvml_not_importable(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(SourceUnavailable, match="pynvml is not importable"):
        NvmlSource.open()


def test_real_pynvml_without_the_driver_library(monkeypatch):
    """The real bindings, with loading the driver library failing as it does on a machine without one."""

    def no_library(*args, **kwargs):
        raise OSError("libnvidia-ml.so.1: cannot open shared object file: No such file or directory")

    monkeypatch.setitem(sys.modules, "pynvml", pynvml)
    monkeypatch.setattr(pynvml, "nvmlLib", None)
    monkeypatch.setattr(pynvml, "CDLL", no_library)
    with pytest.raises(SourceUnavailable) as raised:
        NvmlSource.open()
    assert "NVML Shared Library Not Found" in str(raised.value)


def test_real_pynvml_on_this_machine():
    """Unpatched: on a machine without an NVIDIA driver the real bindings fail, and open() says why."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("an NVIDIA driver is present here")
    with pytest.raises(SourceUnavailable, match="no NVIDIA GPU source"):
        NvmlSource.open()
