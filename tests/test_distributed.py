"""Runs over torch.distributed: one correct total, nothing counted twice, one set of files.

The multi-process tests launch real processes with torchrun (gloo, on the CPU): a bare Run
driven like an integration (tests/distributed/session_worker.py), the HF Trainer and Lightning DDP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from distributed.common import DRAM_J as NODE_DRAM_J  # tests/ is on sys.path
from distributed.common import PACKAGE_J as NODE_PACKAGE_J
from distributed.session_worker import DRAM_J, GPU_J, PACKAGE_J
from fakes import FakeClock, SteadySource

from wattwise.config import Config
from wattwise.distributed import (
    Reducer,
    launcher_node_rank,
    merge_rank_components,
    node_identity,
    node_leaders,
)
from wattwise.meter import EnergyMeter
from wattwise.modelcard import hardware_used
from wattwise.report import RunReport
from wattwise.run import Run
from wattwise.sources.base import Component

WORKERS = Path(__file__).parent / "distributed"
TIMEOUT_S = 300


def torchrun(tmp_path: Path, script: str, *args: str, nproc: int = 2) -> list[dict]:
    """Run ``script`` on ``nproc`` ranks; every rank must exit 0; return each rank's rank<r>.json."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
               f"--nproc_per_node={nproc}", str(WORKERS / script), str(tmp_path), *args]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(nproc)]


# ---- node identity and naming, in-process ----------------------------------------------------------


def test_node_identity_comes_from_the_launcher_or_the_host_never_from_rank_numbers(monkeypatch):
    env = {"RANK": "3", "LOCAL_RANK": "1"}
    host = node_identity(env)
    assert host and "3" not in host.split("#")[-1]
    assert node_identity({**env, "GROUP_RANK": "1"}) == f"{host}#1"       # torchrun's node rank
    assert node_identity({"SLURM_NODEID": "7"}) == f"{host}#7"
    assert node_identity({"GROUP_RANK": "1", "WATTWISE_NODE_ID": "rack2-n4"}) == "rack2-n4"
    assert launcher_node_rank({}) is None


def test_the_lowest_rank_of_each_node_leads_it():
    assert node_leaders(["a", "a", "b", "b"]) == [True, False, True, False]
    assert node_leaders(["b", "a", "b", "a"]) == [True, True, False, False]


def test_merged_components_keep_unique_names_and_qualify_shared_ones():
    def comp(name, scope, energy_j):
        return {**Component(name, name.split(":")[0], True, "x", scope).__dict__, "energy_j": energy_j}

    ranks = [
        {"rank": 0, "node": "a", "components": [comp("gpu:0", "device", 1.0), comp("cpu:0", "node", 2.0)]},
        {"rank": 1, "node": "b", "components": [comp("gpu:0", "device", 3.0), comp("cpu:0", "node", 4.0)]},
        {"rank": 2, "node": "b", "components": [comp("gpu:1", "device", 5.0)]},
    ]
    merged = merge_rank_components(ranks)
    assert {k: v.energy_j for k, v in merged.items()} == {
        "gpu:0 (rank 0)": 1.0, "cpu:0 (node a)": 2.0, "gpu:0 (rank 1)": 3.0, "cpu:0 (node b)": 4.0, "gpu:1": 5.0,
    }
    assert merged["gpu:1"].detail == "rank 2 on b"


def test_without_an_initialised_process_group_a_session_is_one_process(tmp_path):
    assert Reducer.from_environment() is None  # torch is imported here, torch.distributed is not initialised
    clock = FakeClock()
    session = Run.from_config(Config.from_kwargs(country_iso_code="FRA", write_files=False, print_summary=False), "loop",
                      clock=clock)
    session.start(output_dir=tmp_path, planned_steps=4, across_ranks=True,
                  meter=EnergyMeter([SteadySource({"cpu": 10.0}, clock=clock)], clock=clock))
    for _ in range(4):
        clock.now += 1.0
        session.step()
    session.sync()
    logged = session.metrics(read=False)
    report = session.finish()
    assert report.ranks == [] and report.energy_j == pytest.approx(40.0)
    assert logged["energy/total_kwh"] * 3.6e6 == pytest.approx(40.0)
    assert logged["energy/step_j"] == pytest.approx(10.0)


# ---- a bare Run on two real processes ------------------------------------------------------------


def test_one_node_totals_are_the_sum_of_the_ranks_and_node_counters_count_once(tmp_path):
    steps = 40
    ranks = torchrun(tmp_path, "session_worker.py", "one-node", str(steps))
    expected_j = steps * (GPU_J[0] + GPU_J[1] + PACKAGE_J + DRAM_J)  # RAPL once: one node
    for result in ranks:  # every rank ends with the run's totals, not its own
        report = result["report"]
        assert report["energy_j"] == pytest.approx(expected_j)
        assert sum(r["energy_j"] for r in report["ranks"]) == pytest.approx(expected_j)
    report = ranks[0]["report"]
    assert [r["node_leader"] for r in report["ranks"]] == [True, False]
    assert report["ranks"][0]["components"] == pytest.approx(
        {"gpu:0": steps * GPU_J[0], "cpu:0": steps * PACKAGE_J, "dram:0": steps * DRAM_J})
    assert report["ranks"][1]["components"] == pytest.approx({"gpu:1": steps * GPU_J[1]})  # no CPU/RAM estimate beside RAPL
    assert set(report["by_component"]) == {"gpu:0", "gpu:1", "cpu:0", "dram:0"}
    # logged at the syncs: the same totals on every rank, and step_j is the whole run's joules per step
    def run_figures(metrics):  # power_w divides by each rank's own clock; the energies are the run's
        return [{k: v for k, v in m.items() if k != "energy/power_w"} for m in metrics]

    assert run_figures(ranks[0]["metrics"]) == run_figures(ranks[1]["metrics"])
    for logged in ranks[0]["metrics"]:
        assert logged["energy/step_j"] == pytest.approx(expected_j / steps)
        assert logged["energy/total_kwh"] * 3.6e6 == pytest.approx(logged["step"] * expected_j / steps)
    # one run, one id, one set of files (written by rank 0)
    assert ranks[0]["report"]["run_id"] == ranks[1]["report"]["run_id"]
    written = json.loads((tmp_path / "wattwise" / "report.json").read_text())
    assert written["energy_j"] == pytest.approx(expected_j) and len(written["ranks"]) == 2
    assert len((tmp_path / "wattwise" / "emissions.csv").read_text().splitlines()) == 2  # header and one run
    assert ranks[0]["report"]["forecasts"][-1]["energy_j"] == pytest.approx(expected_j)  # 50%: of the totals
    assert hardware_used(RunReport.from_dict(report)) == "2 x NVIDIA H100 80GB HBM3"  # the model card's


def test_two_nodes_count_each_nodes_counters_and_each_ranks_gpu(tmp_path):
    steps = 40
    ranks = torchrun(tmp_path, "session_worker.py", "two-nodes", str(steps))
    expected_j = steps * (GPU_J[0] + GPU_J[1] + 2 * (PACKAGE_J + DRAM_J))  # RAPL on each node
    report = ranks[0]["report"]
    assert report["energy_j"] == pytest.approx(expected_j)
    assert [(r["node"], r["node_leader"]) for r in report["ranks"]] == [("node-0", True), ("node-1", True)]
    by_component = {name: c["energy_j"] for name, c in report["by_component"].items()}
    assert hardware_used(RunReport.from_dict(report)) == "2 x NVIDIA H100 80GB HBM3"
    assert by_component == pytest.approx({
        "gpu:0 (rank 0)": steps * GPU_J[0], "gpu:0 (rank 1)": steps * GPU_J[1],
        "cpu:0 (node node-0)": steps * PACKAGE_J, "cpu:0 (node node-1)": steps * PACKAGE_J,
        "dram:0 (node node-0)": steps * DRAM_J, "dram:0 (node node-1)": steps * DRAM_J,
    })


def test_a_rank_that_cannot_give_its_figures_makes_every_rank_fall_back_together(tmp_path):
    """Rank 1 fails to compute its figures at step 15: it still takes part in the next sum (with
    NaN), so both ranks learn it at the same sync, stop summing, say so, and finish on their own
    figures; nothing hangs and training runs to the end."""
    steps = 40
    ranks = torchrun(tmp_path, "session_worker.py", "one-node-broken", str(steps))
    own_j = [steps * (GPU_J[0] + PACKAGE_J + DRAM_J), steps * GPU_J[1]]
    for rank, result in enumerate(ranks):
        report = result["report"]
        assert result["steps_run"] == steps and report["ranks"] == []
        assert report["energy_j"] == pytest.approx(own_j[rank])
        assert any(f"figures are rank {rank}'s own" in note and "could not give its figures" in note
                   for note in report["notes"])
        logged = [m["energy/total_kwh"] * 3.6e6 for m in result["metrics"]]
        assert logged[0] == pytest.approx(10 * sum(own_j) / steps)  # step 10: still the sum
    assert ranks[0]["report"]["run_id"] == ranks[1]["report"]["run_id"]


def test_a_budget_stop_is_decided_on_the_totals_and_stops_every_rank_at_the_same_step(tmp_path):
    per_step_j = GPU_J[0] + GPU_J[1] + PACKAGE_J + DRAM_J
    budget_j = 15 * per_step_j  # the totals reach it at step 15; no rank reaches it on its own by step 40
    ranks = torchrun(tmp_path, "session_worker.py", "one-node", "40", str(budget_j / 3.6e6))
    stops = [r["stopped_at"] for r in ranks]
    assert stops[0] is not None and stops[0] == stops[1] and 15 <= stops[0] < 40
    for result in ranks:
        assert result["report"]["budget"]["stopped_at_step"] == stops[0]
        assert result["report"]["energy_j"] == pytest.approx(stops[0] * per_step_j)


# ---- the integrations under their launchers ------------------------------------------------------------

NODE_J_PER_STEP = NODE_PACKAGE_J + NODE_DRAM_J  # hf_worker / lightning_worker, per step


def launch_lightning(tmp_path: Path, *args: str) -> list[dict]:
    """Lightning's DDP launcher starts the second process itself: run the script plainly."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    env.pop("LOCAL_RANK", None)
    done = subprocess.run([sys.executable, str(WORKERS / "lightning_worker.py"), str(tmp_path), *args], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


def assert_one_node_run(ranks: list[dict], steps: int) -> dict:
    """Totals are the sum of the ranks; the node's CPU/RAM counted once, by its leader; one run id."""
    expected_j = steps * NODE_J_PER_STEP
    for result in ranks:
        report = result["report"]
        assert report["energy_j"] == pytest.approx(expected_j)
        assert sum(r["energy_j"] for r in report["ranks"]) == pytest.approx(expected_j)
        assert {name: c["energy_j"] for name, c in report["by_component"].items()} == pytest.approx(
            {"cpu:0": steps * NODE_PACKAGE_J, "dram:0": steps * NODE_DRAM_J})
        assert [(r["rank"], r["node_leader"], r["components"]) for r in report["ranks"]][1] == (1, False, {})
    assert ranks[0]["report"]["run_id"] == ranks[1]["report"]["run_id"]
    return ranks[0]["report"]


def test_hf_trainer_under_torchrun_logs_and_reports_the_runs_total(tmp_path):
    ranks = torchrun(tmp_path, "hf_worker.py")
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["global_step"] for r in ranks] == [12, 12]
    report = assert_one_node_run(ranks, 12)
    # every training log entry carries the run's total so far, the same on both ranks
    train_logs = [[e for e in r["log_history"] if "energy/step_j" in e] for r in ranks]
    assert [e["step"] for e in train_logs[0]] == [2, 4, 6, 8, 10, 12]
    for mine, theirs in zip(*train_logs, strict=True):
        assert mine["energy/total_kwh"] == theirs["energy/total_kwh"]
        assert mine["energy/total_kwh"] * 3.6e6 == pytest.approx(mine["step"] * NODE_J_PER_STEP)
        assert mine["energy/step_j"] == pytest.approx(NODE_J_PER_STEP)
    assert report["by_phase"]["eval"]["passes"] == 2
    files = tmp_path / "hf" / "wattwise"  # one set, by rank 0
    assert json.loads((files / "report.json").read_text())["run_id"] == report["run_id"]
    assert len((files / "emissions.csv").read_text().splitlines()) == 2


def test_a_budget_stop_ends_both_hf_processes_at_the_same_step(tmp_path):
    budget_j = 5 * NODE_J_PER_STEP  # reached by the totals at step 5: checked at the next sync
    ranks = torchrun(tmp_path, "hf_worker.py", str(budget_j / 3.6e6))
    steps = [r["global_step"] for r in ranks]
    assert steps[0] == steps[1] and 5 <= steps[0] < 12
    for result in ranks:
        assert result["report"]["budget"]["stopped_at_step"] == steps[0]


def test_lightning_ddp_logs_and_reports_the_runs_total(tmp_path):
    ranks = launch_lightning(tmp_path)
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["global_step"] for r in ranks] == [12, 12]
    report = assert_one_node_run(ranks, 12)
    assert report["by_phase"]["train"]["samples"] == 12 * 4 * 2  # each rank's batches, summed
    rows = [row for row in ranks[0]["rows"] if row["energy/total_kwh"]]
    assert rows and all(
        float(row["energy/total_kwh"]) * 3.6e6 == pytest.approx((int(row["step"]) + 1) * NODE_J_PER_STEP)
        for row in rows if row["energy/step_j"]
    )
    files = tmp_path / "logs" / "version_0" / "wattwise"
    assert json.loads((files / "report.json").read_text())["run_id"] == report["run_id"]


def test_a_budget_stop_ends_both_lightning_processes_at_the_same_step(tmp_path):
    budget_j = 5 * NODE_J_PER_STEP
    ranks = launch_lightning(tmp_path, str(budget_j / 3.6e6))
    steps = [r["global_step"] for r in ranks]
    assert steps[0] == steps[1] and 5 <= steps[0] < 12
    for result in ranks:
        assert result["report"]["budget"]["stopped_at_step"] == steps[0]


def test_lightning_ddp_spawn_sums_each_process_own_cpu_estimate(tmp_path, monkeypatch):
    """ddp_spawn: the ranks run in spawned children, which measure with the real sources (no fake
    RAPL there: on a machine without readable RAPL, each process's CPU time x TDP and RAM share)."""
    monkeypatch.setenv("WORKER_STRATEGY", "ddp_spawn")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(WORKERS / "lightning_worker.py"), str(tmp_path)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-6000:]
    report = json.loads((tmp_path / "logs" / "version_0" / "wattwise" / "report.json").read_text())
    assert report["train_steps"] == 12 and len(report["ranks"]) == 2
    assert report["energy_j"] == pytest.approx(sum(r["energy_j"] for r in report["ranks"]))
    if any(c["source"] == "rapl" for c in report["by_component"].values()):
        pytest.skip("this machine's RAPL is readable: the node's counters replace the per-process estimates")
    for rank in (0, 1):  # a per-process estimate on every rank, kept apart by rank
        assert report["by_component"][f"cpu (rank {rank})"]["energy_j"] > 0


def test_keras_on_several_gpus_in_one_process_measures_every_visible_gpu(tmp_path, monkeypatch):
    """Keras's multi-device training (a tf.distribute.MirroredStrategy, a JAX DataParallel
    distribution) is one process driving every visible GPU: with no launcher's LOCAL_RANK, the
    callback measures them all, each once (fake NVML: an autospec of the real pynvml)."""
    import keras
    import numpy as np
    from fakes import FakeGpu, make_fake_nvml

    from wattwise.integrations.keras import EnergyCallback

    gpus = [FakeGpu(uuid=f"GPU-{i}000-0000", energy_mj=0) for i in range(2)]
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_nvml(gpus))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)

    class Burn(keras.callbacks.Callback):  # each GPU's counter advances per batch, as the devices work
        def on_train_batch_begin(self, batch, logs=None):
            gpus[0].energy_mj += 10_000
            gpus[1].energy_mj += 30_000

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    energy = EnergyCallback(sources=("nvml",), country_iso_code="FRA", print_summary=False, output_dir=str(tmp_path))
    model.fit(x, x[:, :1], batch_size=8, epochs=1, verbose=0, callbacks=[Burn(), energy])
    by_component = {name: c.energy_j for name, c in energy.report.by_component.items()}
    assert hardware_used(energy.report) == "2 x NVIDIA H100 80GB HBM3"
    assert by_component == pytest.approx({"gpu:0": 4 * 10.0, "gpu:1": 4 * 30.0})
    assert energy.report.ranks == []
