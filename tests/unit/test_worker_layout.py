"""plan_layout and the hardware counting behind it, without touching the real machine's limits."""
from __future__ import annotations

import itertools

import pytest

from clip_sagemaker.worker_layout import (MASTER_BYTES, WORKER_RUNTIME_BYTES, Layout, MemoryBudget, MemoryFitError,
                                          available_cpus, cgroup_cpu_limit, cgroup_memory_limit, memory_budget,
                                          plan_layout, visible_gpus)
from clip_sagemaker.settings import MB, Settings


@pytest.mark.parametrize("cpus, gpus, workers, torch_threads", list(itertools.product(
    [1, 2, 3, 7, 8, 96],
    [0, 1, 2, 8],
    [None, 1, 3, 8, 16],
    [None, 1, 4],
)))
def test_workers_times_threads_never_exceeds_cpus(cpus, gpus, workers, torch_threads):
    settings = Settings(workers=workers, torch_threads=torch_threads)
    layout = plan_layout(settings, cpus=cpus, gpus=gpus)
    assert layout.workers >= 1
    assert layout.torch_threads >= 1
    assert layout.workers * layout.torch_threads <= cpus
    if torch_threads is not None:
        assert layout.torch_threads <= torch_threads


def test_env_worker_override_is_used_when_the_cores_allow_it():
    settings = Settings.from_env({"SAGEMAKER_MODEL_SERVER_WORKERS": "3"})
    assert plan_layout(settings, cpus=12, gpus=0) == Layout(workers=3, torch_threads=4, gpus=0)


def test_env_worker_override_above_the_core_count_does_not_oversubscribe():
    settings = Settings.from_env({"SAGEMAKER_MODEL_SERVER_WORKERS": "8"})
    assert plan_layout(settings, cpus=2, gpus=0) == Layout(workers=2, torch_threads=1, gpus=0)


def test_more_gpus_than_cores_still_keeps_one_thread_per_core():
    assert plan_layout(Settings(), cpus=2, gpus=4) == Layout(workers=2, torch_threads=1, gpus=4)


def test_cpu_only_machine_runs_one_worker_with_every_core():
    assert plan_layout(Settings(), cpus=16, gpus=0) == Layout(workers=1, torch_threads=16, gpus=0)


@pytest.mark.parametrize("gpus", [1, 2, 4, 8])
def test_one_worker_per_gpu_sharing_the_cores(gpus):
    layout = plan_layout(Settings(), cpus=96, gpus=gpus)
    assert layout == Layout(workers=gpus, torch_threads=96 // gpus, gpus=gpus)


def test_torch_threads_setting_caps_threads_per_worker():
    assert plan_layout(Settings(torch_threads=3), cpus=16, gpus=0).torch_threads == 3
    assert plan_layout(Settings(torch_threads=3), cpus=16, gpus=4).torch_threads == 3
    # It only lowers the planned count, never raises it past the cores.
    assert plan_layout(Settings(torch_threads=64), cpus=8, gpus=2).torch_threads == 4


@pytest.mark.parametrize("device", ["cpu", "cpu:0"])
def test_device_cpu_ignores_gpus(device):
    layout = plan_layout(Settings(device=device), cpus=8, gpus=4)
    assert layout == Layout(workers=1, torch_threads=8, gpus=0)


def test_device_cuda_keeps_gpus():
    assert plan_layout(Settings(device="cuda"), cpus=8, gpus=2) == Layout(workers=2, torch_threads=4, gpus=2)


# --- cgroup quota -------------------------------------------------------------------------------------------

def test_cgroup_v2_quota_is_read_in_cores(tmp_path):
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 2.5


def test_cgroup_v2_max_means_unlimited(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v1_cfs_quota_is_read_in_cores(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5


def test_cgroup_v1_negative_quota_means_unlimited(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v2_takes_precedence_over_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("400000 100000")
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpu_limit(tmp_path) == 4.0


def test_no_cgroup_files_means_unlimited(tmp_path):
    assert cgroup_cpu_limit(tmp_path) is None


def test_unreadable_cgroup_v2_content_falls_back_to_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("garbage")
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpu_limit(tmp_path) == 3.0


# --- available_cpus / visible_gpus ---------------------------------------------------------------------------

def _cgroup_quota(tmp_path, cores: float):
    """A cgroup v2 root whose cpu.max allows `cores` cores."""
    (tmp_path / "cpu.max").write_text(f"{round(cores * 100000)} 100000\n")
    return tmp_path


def test_available_cpus_is_capped_by_the_cgroup_quota_rounded_down(tmp_path):
    assert available_cpus(affinity=16, cgroup_root=_cgroup_quota(tmp_path, 2.5)) == 2


def test_available_cpus_is_at_least_one_under_a_fractional_quota(tmp_path):
    assert available_cpus(affinity=16, cgroup_root=_cgroup_quota(tmp_path, 0.5)) == 1


def test_available_cpus_uses_affinity_without_a_quota(tmp_path):
    assert cgroup_cpu_limit(tmp_path) is None
    assert available_cpus(affinity=6, cgroup_root=tmp_path) == 6


def test_available_cpus_ignores_a_quota_above_the_affinity(tmp_path):
    assert available_cpus(affinity=4, cgroup_root=_cgroup_quota(tmp_path, 32.0)) == 4


def test_available_cpus_reads_this_process_affinity_when_not_given(tmp_path):
    import os
    assert available_cpus(cgroup_root=tmp_path) == len(os.sched_getaffinity(0))


def _fake_gpus(tmp_path, count):
    """A driver directory with one entry per GPU, as /proc/driver/nvidia/gpus has."""
    gpus_dir = tmp_path / "gpus"
    gpus_dir.mkdir()
    for i in range(count):
        (gpus_dir / f"0000:0{i}:00.0").mkdir()
    return gpus_dir


def test_visible_gpus_counts_driver_entries(monkeypatch, tmp_path):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus(_fake_gpus(tmp_path, 4)) == 4


@pytest.mark.parametrize("visible, expected", [("0,1", 2), ("2", 1), ("", 0), ("-1", 0), ("0,1,2,3,4,5", 4)])
def test_visible_gpus_is_narrowed_by_cuda_visible_devices(monkeypatch, tmp_path, visible, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert visible_gpus(_fake_gpus(tmp_path, 4)) == expected


def test_visible_gpus_is_zero_without_a_driver(tmp_path):
    assert visible_gpus(tmp_path / "absent") == 0


def test_a_multi_model_endpoint_runs_one_worker_with_every_core():
    """SageMaker sends each model's load once: the one process that gets it must be the one serving it."""
    layout = plan_layout(Settings(multi_model=True, workers=4), cpus=8, gpus=2)
    assert (layout.workers, layout.torch_threads) == (1, 8)


# --- memory -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("files, expected", [
    ({"memory.max": "2147483648\n"}, 2 * 1024 * MB),
    ({"memory.max": "max\n"}, None),
    ({"memory/memory.limit_in_bytes": "3221225472\n"}, 3 * 1024 * MB),
    ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # v1's "unlimited"
    ({"memory.max": "garbage", "memory/memory.limit_in_bytes": "1073741824"}, 1024 * MB),
    ({}, None),
])
def test_cgroup_memory_limit_is_read_from_v2_then_v1(tmp_path, files, expected):
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    assert cgroup_memory_limit(tmp_path) == expected


def _memory_cap(tmp_path, mib: int):
    (tmp_path / "memory.max").write_text(f"{mib * MB}\n")
    return tmp_path


def test_a_worker_needs_its_runtime_and_a_quarter_more_than_its_safetensors_weights(tmp_path, tiny_model_dir):
    budget = memory_budget(Settings(model_dir=str(tiny_model_dir)), _memory_cap(tmp_path, 2048))
    weights = (tiny_model_dir / "open_clip_model.safetensors").stat().st_size
    assert budget == MemoryBudget(2048 * MB, WORKER_RUNTIME_BYTES + int(1.25 * weights), "the cgroup memory limit")


def test_memory_limit_mb_can_lower_the_cgroup_limit_but_never_raise_it(tmp_path, tiny_model_dir):
    cap = _memory_cap(tmp_path, 2048)
    lowered = memory_budget(Settings(model_dir=str(tiny_model_dir), memory_limit_mb=1500), cap)
    assert (lowered.available_bytes, lowered.limited_by) == (1500 * MB, "MEMORY_LIMIT_MB=1500")
    assert memory_budget(Settings(model_dir=str(tiny_model_dir), memory_limit_mb=4096), cap).available_bytes == 2048 * MB


def test_a_model_whose_weights_are_not_on_disk_yet_has_no_estimate(tmp_path):
    budget = memory_budget(Settings(model_dir=str(tmp_path / "absent"), model_pretrained="none"), _memory_cap(tmp_path, 1024))
    assert budget.worker_bytes is None and budget.workers_that_fit() is None
    budget.require_one()  # nothing to refuse on


def test_workers_are_capped_at_what_the_memory_holds():
    worker = 1000 * MB
    budget = MemoryBudget(MASTER_BYTES + 2 * worker + worker // 2, worker)
    assert plan_layout(Settings(workers=4), cpus=8, gpus=0, memory=budget) == Layout(workers=2, torch_threads=4, gpus=0)
    assert plan_layout(Settings(), cpus=8, gpus=4, memory=budget) == Layout(workers=2, torch_threads=4, gpus=4)
    unlimited = MemoryBudget(None, worker)
    assert plan_layout(Settings(workers=4), cpus=8, gpus=0, memory=unlimited).workers == 4


def test_a_model_that_cannot_fit_one_worker_is_refused_with_the_figures():
    budget = MemoryBudget(1024 * MB, 1700 * MB, "the cgroup memory limit")
    with pytest.raises(MemoryFitError) as refused:
        budget.require_one()
    message = str(refused.value)
    assert f"needs about {1700 + MASTER_BYTES // MB} MiB" in message
    assert "only 1024 MiB are available (the cgroup memory limit)" in message


# --- inference components: a share of the instance's cores and GPUs -------------------------------------------

def test_a_cgroup_share_of_the_cores_lays_out_the_workers_on_that_share(tmp_path):
    # An inference component given 3 of a 48-core instance's cores (cpu.max 300000 100000).
    cores = available_cpus(affinity=48, cgroup_root=_cgroup_quota(tmp_path, 3.0))
    assert cores == 3
    assert plan_layout(Settings(), cpus=cores, gpus=0) == Layout(workers=1, torch_threads=3, gpus=0)
    assert plan_layout(Settings(workers=8), cpus=cores, gpus=0) == Layout(workers=3, torch_threads=1, gpus=0)


@pytest.mark.parametrize("visible, workers", [("2,3", 2), ("5", 1), ("0,2,4,6", 4)])
def test_a_subset_of_gpus_gets_one_worker_each_sharing_the_component_cores(monkeypatch, tmp_path, visible,
                                                                          workers):
    # An inference component given some of an 8-GPU instance's accelerators and 16 of its cores.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    gpus = visible_gpus(_fake_gpus(tmp_path, 8))
    cores = available_cpus(affinity=96, cgroup_root=_cgroup_quota(tmp_path, 16.0))
    assert plan_layout(Settings(), cpus=cores, gpus=gpus) == Layout(workers=workers, torch_threads=16 // workers,
                                                                   gpus=workers)
