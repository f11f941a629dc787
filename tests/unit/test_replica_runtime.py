"""What every replica does around its batches: give its fragmented heap back (`HeapTrimmer`; the
soak's workers grew by 0.4 GB in seven minutes without it) and run small batches on one thread
(`CpuThreads`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from bert_serving.server.replicas.runtime import HeapTrimmer

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@glibc
def test_trims_at_most_once_per_interval():
    clock = Clock()
    trimmer = HeapTrimmer(every_s=10, clock=clock)
    assert not trimmer.maybe_trim()  # just started
    clock.now += 9.9
    assert not trimmer.maybe_trim()
    clock.now += 0.2
    assert trimmer.maybe_trim()
    assert not trimmer.maybe_trim()  # the interval starts again
    clock.now += 10
    assert trimmer.maybe_trim()


@glibc
def test_a_fragmented_heap_is_given_back():
    # Big buffers freed between small live ones stay in the process (glibc keeps them) until a trim.
    script = textwrap.dedent("""
        import numpy as np
        from bert_serving.server.replicas.runtime import HeapTrimmer

        def rss_mb():
            return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

        clock = [0.0]
        trimmer = HeapTrimmer(every_s=10, clock=lambda: clock[0])
        first = np.ones(1 << 20, np.uint8); del first  # a freed mmap chunk lifts glibc's mmap threshold
        big, small = [], []
        for i in range(200):
            big.append(np.ones(1 << 20, np.uint8))
            small.append(np.ones(5000, np.uint8) + i)
        del big
        freed = rss_mb()
        clock[0] = 10.0
        assert trimmer.maybe_trim()
        print(freed, rss_mb())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    freed, trimmed = map(float, done.stdout.split())
    assert freed - trimmed > 150, (freed, trimmed)


def test_small_batches_run_on_one_thread_big_ones_on_all():
    torch = pytest.importorskip("torch")
    from bert_serving.server.replicas.runtime import CpuThreads

    before = torch.get_num_threads()
    try:
        tiny = CpuThreads(2, hidden_size=32)  # the overhead benchmark's negligible model
        assert tiny.for_batch(30) == 1 and torch.get_num_threads() == 1
        assert tiny.for_batch(1024) == 1  # 25 MFLOP a layer: a second thread costs the server more than it saves
        assert tiny.for_batch(5000) == 2 and torch.get_num_threads() == 2  # a bulk batch, 123 MFLOP a layer
        minilm = CpuThreads(2, hidden_size=384)
        assert minilm.for_batch(5) == 1
        assert minilm.for_batch(30) == 2  # one sentence, 106 MFLOP a layer
        assert CpuThreads(1, hidden_size=768).for_batch(100_000) == 1  # never above -worker_threads
    finally:
        torch.set_num_threads(before)


def test_a_frozen_heap_leaves_full_collections_nothing_old_to_walk_and_new_garbage_is_still_collected():
    # in a process of its own: freezing is for a whole process (the server's, a worker's), not pytest's
    script = textwrap.dedent("""
        import gc, time, weakref
        import torch, fastapi  # a server's worth of modules
        from bert_serving.server.replicas.runtime import freeze_heap

        def full_collection_ms():
            started = time.perf_counter()
            gc.collect()
            return (time.perf_counter() - started) * 1000

        before = full_collection_ms()
        frozen = freeze_heap()
        after = full_collection_ms()

        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle made after the freeze
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        print(frozen, len(gc.get_objects()), before, after, gone() is None)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    frozen, tracked, before_ms, after_ms, collected = out.stdout.split()
    assert int(frozen) > 50_000 > 10 * int(tracked)  # nearly every object is out of the collector's sight
    assert float(after_ms) < float(before_ms) / 5  # a full collection no longer walks them
    assert collected == "True"  # garbage made later is still collected
