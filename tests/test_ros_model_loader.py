"""Model loading from the node's parameters and heap freezing (text4seg_ros.ros.model_loader)."""

from __future__ import annotations

import gc
import weakref

import pytest

from text4seg_ros.ros.model_loader import free_memory, freeze_heap, load_segmenter
from text4seg_ros.ros.params import NodeConfig, config_from_values


def test_load_segmenter_passes_the_model_parameters_to_from_pretrained(tmp_path, monkeypatch):
    from text4seg_ros.model.segmenter import Segmenter

    calls = []

    def fake(path, **kwargs):
        calls.append((path, kwargs))
        return "segmenter"

    monkeypatch.setattr(Segmenter, "from_pretrained", staticmethod(fake))
    config = NodeConfig(
        model_path=str(tmp_path), device="cuda:1", dtype="bfloat16", grid=24, descriptor="isd"
    )
    assert load_segmenter(config) == "segmenter"
    ((path, kwargs),) = calls
    assert path == str(tmp_path)
    assert kwargs == {
        "backbone": None,  # empty: read from the model config
        "device": "cuda:1", "dtype": "bfloat16", "grid": 24, "descriptor": "isd",
        "engine": config.engine, "refiner": "auto", "refiner_path": "",
    }  # fmt: skip
    load_segmenter(NodeConfig(model_path=str(tmp_path), backbone="qwen2-vl"))
    assert calls[-1][1]["backbone"] == "qwen2-vl"


def test_cuda_graphs_parameter_asks_the_torch_engine_for_its_graph_mode(tmp_path, monkeypatch):
    from text4seg_ros.model.segmenter import Segmenter

    calls = []
    monkeypatch.setattr(
        Segmenter, "from_pretrained", staticmethod(lambda p, **kw: calls.append(kw))
    )
    load_segmenter(NodeConfig(model_path=str(tmp_path), cuda_graphs=True))
    assert calls[-1]["engine"] == "torch"
    assert calls[-1]["engine_options"] == {"cuda_graphs": True}
    with pytest.raises(ValueError, match="cuda_graphs is a mode of the torch engine"):
        load_segmenter(NodeConfig(model_path=str(tmp_path), cuda_graphs=True, engine="tensorrt"))


def test_grid_0_means_the_models_grid_and_empty_model_path_the_shipped_model(tmp_path, monkeypatch):
    from text4seg_ros.model import meta
    from text4seg_ros.model.segmenter import Segmenter

    calls = []
    monkeypatch.setattr(
        Segmenter, "from_pretrained", staticmethod(lambda p, **kw: calls.append((p, kw)))
    )
    demo = tmp_path / "share" / "text4seg_ros" / "models" / "demo"
    demo.mkdir(parents=True)
    (demo / "config.json").write_text("{}")
    monkeypatch.setattr(meta, "demo_model_candidates", lambda: [tmp_path / "src", demo])
    load_segmenter(NodeConfig())  # the defaults: model_path "" and grid 0
    ((path, kwargs),) = calls
    assert path == str(demo) and kwargs["grid"] is None  # None: from_pretrained reads the model


def test_load_segmenter_refuses_a_missing_model_directory(tmp_path, monkeypatch):
    from text4seg_ros.model import meta

    monkeypatch.setattr(meta, "demo_model_candidates", lambda: [tmp_path / "models" / "demo"])
    with pytest.raises(ValueError, match="model_path is empty and .*demo model is missing"):
        load_segmenter(NodeConfig(model_path=""))
    with pytest.raises(ValueError, match="is not a directory"):
        load_segmenter(NodeConfig(model_path=str(tmp_path / "nope")))


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


def test_cpu_threads_sets_the_intra_op_threads_before_loading(tmp_path, monkeypatch):
    import torch

    from text4seg_ros.model.segmenter import Segmenter

    seen = []
    monkeypatch.setattr(
        Segmenter,
        "from_pretrained",
        staticmethod(lambda *a, **k: seen.append(torch.get_num_threads())),
    )
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        load_segmenter(NodeConfig(model_path=str(tmp_path)))  # 0: left as it is
        load_segmenter(NodeConfig(model_path=str(tmp_path), cpu_threads=1))
        assert seen == [2, 1]
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="cpu_threads"):
        config_from_values({"cpu_threads": -1})
