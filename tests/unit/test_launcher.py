"""`serve`'s start-up checks in process (launcher.main), with a fake cgroup file system: a model that cannot
fit the container's memory stops it at once with the figures; one that fits goes on to exec gunicorn."""
from __future__ import annotations

import pytest

from clip_sagemaker import launcher, worker_layout
from clip_sagemaker.settings import MB


@pytest.fixture
def cgroup(monkeypatch, tmp_path):
    """Sets the container's cgroup memory limit, in MiB (cgroup v2 memory.max)."""
    root = tmp_path / "cgroup"
    root.mkdir()
    monkeypatch.setattr(worker_layout, "CGROUP_ROOT", root)

    def limit(mib: int) -> None:
        (root / "memory.max").write_text(f"{mib * MB}\n")
    return limit


@pytest.fixture
def execs(monkeypatch, tmp_path):
    """What launcher.main would exec, instead of exec'ing it (without the front, serve becomes gunicorn)."""
    calls = []
    monkeypatch.setenv("FRONT", "off")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))  # main() exports it; restored after
    monkeypatch.setattr(launcher.os, "execv", lambda path, args: calls.append(args))
    monkeypatch.setenv("PYTHONPATH", "")  # main() extends it; restored after the test
    return calls


def test_a_model_too_large_for_the_memory_cap_stops_serve_with_the_figures(monkeypatch, tiny_model_dir, cgroup,
                                                                           execs, capsys):
    monkeypatch.setenv("MODEL_DIR", str(tiny_model_dir))
    cgroup(512)
    assert launcher.main() == 2
    error = capsys.readouterr().err
    needed = (worker_layout.MASTER_BYTES + worker_layout.memory_budget(
        launcher.Settings.from_env()).worker_bytes) // MB
    assert f"serve: cannot start: the model needs about {needed} MiB" in error
    assert "only 512 MiB are available (the cgroup memory limit)" in error
    assert execs == []


def test_a_model_that_fits_the_memory_cap_goes_on_to_gunicorn(monkeypatch, tiny_model_dir, cgroup, execs, capsys):
    monkeypatch.setenv("MODEL_DIR", str(tiny_model_dir))
    cgroup(2048)
    assert launcher.main() == 0
    assert len(execs) == 1 and "gunicorn" in execs[0]
    worker = worker_layout.memory_budget(launcher.Settings.from_env()).worker_bytes // MB
    out = capsys.readouterr().out
    assert "1 worker(s)" in out and f"memory 2048 MiB (the cgroup memory limit), about {worker} MiB per worker" in out
