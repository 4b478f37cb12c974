"""The mount's garbage-collector settings (s3encfs/mount_serve.py `tune_gc`): what exists when
the mount starts serving is frozen out of every collection, and collections are rarer."""

from __future__ import annotations

import gc

from s3encfs import mount_serve


def test_tune_gc_freezes_startup_objects_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        gc.unfreeze()
        mount_serve.tune_gc()
        assert gc.get_threshold() == mount_serve.GC_THRESHOLDS
        assert gc.get_threshold()[0] >= 10_000
        assert gc.get_freeze_count() > 10_000  # at least the modules loaded by now
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # cycles made later are still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
