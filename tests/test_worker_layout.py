"""plan_layout and the hardware counting behind it, without touching the real machine's limits."""
from __future__ import annotations

import itertools

import pytest

from clip_sagemaker import worker_layout
from clip_sagemaker.worker_layout import Layout, _cgroup_cpu_limit, available_cpus, plan_layout
from clip_sagemaker.settings import Settings


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
    assert _cgroup_cpu_limit(tmp_path) == 2.5


def test_cgroup_v2_max_means_unlimited(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v1_cfs_quota_is_read_in_cores(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _cgroup_cpu_limit(tmp_path) == 1.5


def test_cgroup_v1_negative_quota_means_unlimited(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v2_takes_precedence_over_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("400000 100000")
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert _cgroup_cpu_limit(tmp_path) == 4.0


def test_no_cgroup_files_means_unlimited(tmp_path):
    assert _cgroup_cpu_limit(tmp_path) is None


def test_unreadable_cgroup_v2_content_falls_back_to_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("garbage")
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert _cgroup_cpu_limit(tmp_path) == 3.0


# --- available_cpus / visible_gpus ---------------------------------------------------------------------------

def _fake_affinity(monkeypatch, cores):
    monkeypatch.setattr(worker_layout.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)


def test_available_cpus_is_capped_by_the_cgroup_quota_rounded_down(monkeypatch):
    _fake_affinity(monkeypatch, 16)
    monkeypatch.setattr(worker_layout, "_cgroup_cpu_limit", lambda: 2.5)
    assert available_cpus() == 2


def test_available_cpus_is_at_least_one_under_a_fractional_quota(monkeypatch):
    _fake_affinity(monkeypatch, 16)
    monkeypatch.setattr(worker_layout, "_cgroup_cpu_limit", lambda: 0.5)
    assert available_cpus() == 1


def test_available_cpus_uses_affinity_without_a_quota(monkeypatch):
    _fake_affinity(monkeypatch, 6)
    monkeypatch.setattr(worker_layout, "_cgroup_cpu_limit", lambda: None)
    assert available_cpus() == 6


def test_available_cpus_ignores_a_quota_above_the_affinity(monkeypatch):
    _fake_affinity(monkeypatch, 4)
    monkeypatch.setattr(worker_layout, "_cgroup_cpu_limit", lambda: 32.0)
    assert available_cpus() == 4


def _fake_gpus(monkeypatch, tmp_path, count):
    gpus_dir = tmp_path / "gpus"
    gpus_dir.mkdir()
    for i in range(count):
        (gpus_dir / f"0000:0{i}:00.0").mkdir()
    monkeypatch.setattr(worker_layout, "Path", lambda _path: gpus_dir)


def test_visible_gpus_counts_driver_entries(monkeypatch, tmp_path):
    _fake_gpus(monkeypatch, tmp_path, 4)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert worker_layout.visible_gpus() == 4


@pytest.mark.parametrize("visible, expected", [("0,1", 2), ("2", 1), ("", 0), ("-1", 0), ("0,1,2,3,4,5", 4)])
def test_visible_gpus_is_narrowed_by_cuda_visible_devices(monkeypatch, tmp_path, visible, expected):
    _fake_gpus(monkeypatch, tmp_path, 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert worker_layout.visible_gpus() == expected


def test_visible_gpus_is_zero_without_a_driver(monkeypatch, tmp_path):
    monkeypatch.setattr(worker_layout, "Path", lambda _path: tmp_path / "absent")
    assert worker_layout.visible_gpus() == 0
