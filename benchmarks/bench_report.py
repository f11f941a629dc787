"""What a ``bench.py`` run measured, step by step, and its report (``results.md``, ``results.json``,
plots): each contender's figures with the rounds they come from, the ratios of our server to every
other contender of the run, and the steps that failed."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np

__all__ = ["STEPS", "Record", "summarize", "sweep_failure", "write_report"]


STEPS = {"bulk": "bulk", "small": "32 clients x 1", "single": "single sentence"}  # each contender's, each round


class Record:
    """Every contender's numbers step by step, one per round (``values["<contender>|<step>"]``),
    and the steps that failed. A step that fails (an error, a timeout) is named with its round and
    what went wrong, and is not run again for that contender (a wedged one would cost a timeout
    each round); its other steps, and its rounds before, keep their numbers."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s  # how long a contender's silence lasts before its step fails
        self.values: dict[str, list] = {}
        self.failures: dict[str, dict[str, str]] = {}

    def measure(self, name: str, step: str, round_: int, run: Callable[[], object]) -> None:
        values = self.values.setdefault(f"{name}|{step}", [])
        if step in self.failures.get(name, {}):
            return
        try:
            values.append(run())
        except Exception as exc:  # a contender that hangs or errs is reported, not fatal to the run
            why = f"{type(exc).__name__} after {self.timeout_s:.0f} s" if "Timeout" in type(exc).__name__ else repr(exc)
            self.failures.setdefault(name, {})[step] = f"round {round_ + 1}: {why}"
            print(f"{name}: the {STEPS[step]} step failed in round {round_ + 1}: {why}", flush=True)

    def get(self, name: str, step: str) -> list:
        return self.values.get(f"{name}|{step}", [])

    def latest(self, name: str) -> str:
        """The contender's numbers of the round just measured, for the progress line."""
        failed = self.failures.get(name, {})
        bulk, small, single = (self.get(name, step) for step in STEPS)
        parts = [f"{STEPS[step]} failed" if step in failed else text for step, text in (
            ("bulk", f"bulk {bulk[-1]:.0f}" if bulk else ""), ("small", f"32x1 {small[-1]:.0f}" if small else ""),
            ("single", f"p50 {statistics.median(single[-1]):.2f} ms" if single else ""))]
        return f"{name}: " + ", ".join(p for p in parts if p)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def summarize(record: Record, names: list[str], statuses: dict, setups: dict[str, str]) -> dict:
    """Per contender: the median of each step over the rounds it completed, single-sentence
    percentiles over all of them, and the steps that failed (none of this for a step with no round)."""
    summary = {}
    for name in ["in-process", *names]:
        single = [x for run in record.get(name, "single") for x in run]
        bulk, small = (statistics.median(v) if (v := record.get(name, step)) else None for step in ("bulk", "small"))
        summary[name] = {
            "bulk": bulk,
            "small_32_clients": small,
            "single_p50_ms": pct(single, 50) if single else None,
            "single_p99_ms": pct(single, 99) if single else None,
            "rounds": {step: len(record.get(name, step)) for step in STEPS},
            "failed_steps": record.failures.get(name, {}),
            "avg_batch_size": statuses[name]["statistic"]["avg_batch_size"] if name in statuses else None,
            "setup": setups.get(name, "encode(batch_size=32)"),
        }
    return summary


def sweep_failure(sweeps: dict, exc: Exception) -> str:
    """Where the sweeps stopped, and why."""
    where = "before the first sweep"
    for name, sweep in sweeps.items():
        done = min(len(v) for k, v in sweep.items() if k != "x")
        where = (f"in the {name} sweep at {sweep['x'][done]}" if done < len(sweep["x"]) else
                 f"after the {name} sweep")
    return f"the sweeps failed {where}: {exc!r}; the points before are kept"


def write_report(args, summary: dict, record: Record, sweeps: dict, status: dict, rounds: int,
                 sweeps_failure: str | None) -> None:
    out = args.out
    (out / "results.json").write_text(json.dumps({"summary": summary, "rounds": record.values,
                                                 "failures": record.failures, "sweeps": sweeps,
                                                 "sweeps_failure": sweeps_failure}, indent=1))
    names = [name for name in summary if name != "in-process"]
    lines = [
        f"# bert-serving benchmark, {datetime.now():%Y-%m-%d %H:%M}",
        "",
        f"`{' '.join(sys.argv)}`: {os.cpu_count()} cores, {platform.machine()}; model {status['model_name']}; "
        f"{rounds} interleaved rounds, medians; single-sentence percentiles over all rounds. Every process's "
        f"output: `{out / 'logs'}`.",
        "",
        "| measurement | sentence-transformers in process (`encode(batch_size=32)`) | " + " | ".join(
            f"{name} (`{summary[name]['setup']}`)" for name in names) + " |",
        "|---|---|" + "---|" * len(names),
        *table_rows(summary, names),
        "",
        *ratio_rows(summary, names),
        "",
        *failure_lines(summary, rounds),
        "Average batch the servers ran: " + ", ".join(f"{n} {summary[n]['avg_batch_size']:.1f}" for n in names
                                                      if summary[n]["avg_batch_size"] is not None) + " sentences.",
    ]
    for name, sweep in sweeps.items():
        lines += ["", f"## Throughput against {name.replace('_', ' ')} (sentences/s)", "",
                  f"| {name} | " + " | ".join(k for k in sweep if k != "x") + " |",
                  "|---" * len(sweep) + "|"]
        for i, x in enumerate(sweep["x"]):
            lines.append(f"| {x} | " + " | ".join(f"{sweep[k][i]:.0f}" if i < len(sweep[k]) else "-"
                                                  for k in sweep if k != "x") + " |")
        plot(out / f"{name}.png", name, sweep)
        lines += ["", f"![{name}]({name}.png)"]
    if sweeps_failure:
        lines += ["", f"Sweeps: {sweeps_failure}."]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten to {out}")


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def table_rows(summary: dict, names: list[str]) -> list[str]:
    """The table's rows: each contender's figure, against in-process sentence-transformers in
    parentheses (32 clients: against its own bulk); a step with no figure says whether it failed."""
    st = summary["in-process"]

    def cell(name: str, key: str, step: str, digits: int, against: float | None) -> str:
        value = summary[name][key]
        if value is None:
            return "failed" if step in summary[name]["failed_steps"] else "-"
        return f"{value:.{digits}f}" + (f" ({ratio(value, against)})" if against is not None else "")

    rows = (("bulk, sentences/s", "bulk", "bulk", 0, lambda n: st["bulk"]),
            ("32 clients x 1 sentence per request, sentences/s (x of its bulk)", "small_32_clients", "small", 0,
             lambda n: summary[n]["bulk"]),
            ("single sentence, p50 ms", "single_p50_ms", "single", 2, lambda n: st["single_p50_ms"]),
            ("single sentence, p99 ms", "single_p99_ms", "single", 2, lambda n: None))
    return [f"| {label} | {cell('in-process', key, step, digits, None)} | "
            + " | ".join(cell(n, key, step, digits, against(n)) for n in names) + " |"
            for label, key, step, digits, against in rows]


def ratio_rows(summary: dict, names: list[str]) -> list[str]:
    """Our server (ZeroMQ, and HTTP when measured) against every other contender of the run:
    throughputs ours / theirs (above 1: ours is faster), latencies ours / theirs (below 1: ours is faster)."""
    ours = [n for n in names if n.startswith("server")]
    theirs = ["in-process", *(n for n in names if not n.startswith("server"))]
    lines = ["| ours / theirs | bulk | 32 clients x 1 | single p50 | single p99 |", "|---|---|---|---|---|"]
    for a in ours:
        for b in theirs:
            lines.append(f"| {a} / {'sentence-transformers in process' if b == 'in-process' else b} | " + " | ".join(
                ratio(summary[a][key], summary[b][key])
                for key in ("bulk", "small_32_clients", "single_p50_ms", "single_p99_ms")) + " |")
    return lines


def failure_lines(summary: dict, rounds: int) -> list[str]:
    lines = []
    for name, figures in summary.items():
        for step, why in figures["failed_steps"].items():
            done = figures["rounds"][step]
            lines.append(f"- {name}: the {STEPS[step]} step failed in {why}; "
                         + (f"its {STEPS[step]} figures are from the {done} of {rounds} rounds before." if done else
                            f"no {STEPS[step]} figure.") + " Its other steps keep theirs.")
    return [*lines, ""] if lines else []


def plot(path: Path, name: str, sweep: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for label, values in sweep.items():
        if label != "x":
            ax.plot(sweep["x"][: len(values)], values, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(name.replace("_", " "))
    ax.set_ylabel("sentences / s")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
