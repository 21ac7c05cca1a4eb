"""Heap freezing around the node's model lifetime (text4seg_ros.ros.model_loader)."""

from __future__ import annotations

import gc
import weakref

from text4seg_ros.ros.model_loader import free_memory, freeze_heap


class _Cycle:
    """An object in a reference cycle: only the cyclic collector can free it."""

    def __init__(self) -> None:
        self.me = self


def test_freeze_hides_live_objects_and_free_memory_collects_them_again() -> None:
    model = _Cycle()
    ref = weakref.ref(model)
    freeze_heap()
    try:
        assert gc.get_freeze_count() > 0
        del model
        gc.collect()
        assert ref() is not None, "a frozen object must survive full collections"
    finally:
        free_memory()
    assert gc.get_freeze_count() == 0
    assert ref() is None, "after free_memory the dropped model is collected"
