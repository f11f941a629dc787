"""benchmarks/bench.py's record and report (bench_report.py) when a contender fails a step: the
step is named with its round and what went wrong, and the contender's other steps and earlier
rounds keep their numbers (a peer that timed out on single sentences once cost it the whole run
and named nothing)."""

from __future__ import annotations

import importlib.util
import types

import httpx

from ..conftest import REPO

_spec = importlib.util.spec_from_file_location("bench_report", REPO / "benchmarks" / "bench_report.py")
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def test_a_failed_step_is_named_and_the_other_steps_keep_their_numbers(tmp_path) -> None:
    record = report.Record(timeout_s=120)
    calls = []

    def single_once() -> list[float]:
        calls.append(1)
        if len(calls) > 1:
            raise httpx.ReadTimeout("no answer")
        return [20.0, 30.0]

    for rnd in range(3):
        record.measure("in-process", "bulk", rnd, lambda: 100.0)
        record.measure("in-process", "single", rnd, lambda: [5.0, 6.0])
        record.measure("server", "bulk", rnd, lambda: 150.0)
        record.measure("server", "small", rnd, lambda: 120.0)
        record.measure("server", "single", rnd, lambda: [4.0, 5.0])
        record.measure("peer", "bulk", rnd, lambda: 50.0)
        record.measure("peer", "small", rnd, lambda: 30.0)
        record.measure("peer", "single", rnd, single_once)

    assert len(calls) == 2  # not tried again after it failed
    assert record.failures == {"peer": {"single": "round 2: ReadTimeout after 120 s"}}
    summary = report.summarize(record, ["server", "peer"], {"server": {"statistic": {"avg_batch_size": 3.0}}},
                               {"server": "(defaults)", "peer": "its flags"})
    assert summary["peer"]["bulk"] == 50.0 and summary["peer"]["small_32_clients"] == 30.0
    assert summary["peer"]["single_p50_ms"] == 25.0 and summary["peer"]["rounds"]["single"] == 1

    report.write_report(types.SimpleNamespace(out=tmp_path), summary, record, {}, {"model_name": "m"}, 3, None)
    written = (tmp_path / "results.md").read_text()
    assert "peer: the single sentence step failed in round 2: ReadTimeout" in written
    assert "| bulk, sentences/s | 100 | 150 (1.50x) | 50 (0.50x) |" in written
    assert "| server / peer | 3.00x | 4.00x | 0.18x |" in written
