"""benchmarks/gpu_check.sh, the script a GPU session runs, works here too: without CUDA it runs dry
(the GPU tests skip, the overhead benchmark makes one short CPU round), so it is ready when a GPU is had."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ..conftest import REPO


def test_the_gpu_check_runs_dry_without_a_gpu(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: run benchmarks/gpu_check.sh itself")
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    tests = (tmp_path / "gpu-tests.txt").read_text()
    assert "skipped" in tests and "failed" not in tests and "error" not in tests.lower()
    report = (tmp_path / "overhead.md").read_text()
    for needle in ("negligible on cpu", "single sentence", "bulk, 1024 sentences", "echo", "in process", "server"):
        assert needle in report
