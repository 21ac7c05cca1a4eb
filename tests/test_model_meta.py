"""A model carries its grid (text4seg.json) and the shipped demo model is the default model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from text4seg_ros.model import meta


def test_grid_is_read_from_text4seg_json(tmp_path: Path) -> None:
    assert meta.read_meta(tmp_path) == {} and meta.model_grid(tmp_path) is None
    assert meta.resolve_grid(tmp_path, None) == meta.DEFAULT_GRID == 16
    meta.write_meta(tmp_path, grid=8, note="demo")
    assert json.loads((tmp_path / "text4seg.json").read_text()) == {"grid": 8, "note": "demo"}
    assert meta.model_grid(tmp_path) == 8
    assert meta.resolve_grid(tmp_path, None) == 8
    assert meta.resolve_grid(tmp_path, 4) == 4  # an explicit grid wins


def test_copy_meta_carries_a_models_settings_and_nothing_when_it_has_none(tmp_path) -> None:
    src, dst, bare = tmp_path / "src", tmp_path / "dst", tmp_path / "bare"
    for d in (src, dst, bare):
        d.mkdir()
    meta.write_meta(src, grid=8, prompt="question_first")
    assert meta.copy_meta(src, dst) == dst / meta.META_FILE
    assert meta.read_meta(dst) == {"grid": 8, "prompt": "question_first"}
    assert meta.copy_meta(bare, tmp_path / "none") is None
    assert not (tmp_path / "none").exists()


def test_a_model_names_its_refiner_and_update_meta_keeps_the_rest(tmp_path) -> None:
    assert meta.model_refiner(tmp_path) == "none"  # no file: no refiner
    meta.write_meta(tmp_path, grid=8, prompt="question_first")
    assert meta.model_refiner(tmp_path) == "none"
    meta.update_meta(tmp_path, refiner="grabcut")
    assert meta.read_meta(tmp_path) == {"grid": 8, "prompt": "question_first", "refiner": "grabcut"}
    assert meta.model_refiner(tmp_path) == "grabcut"
    assert meta.resolve_refiner(tmp_path, "auto") == "grabcut"
    assert meta.resolve_refiner(tmp_path, "none") == "none"  # a given refiner is used as it is
    assert meta.resolve_refiner(tmp_path, None) is None
    with pytest.raises(ValueError, match="refiner must be one of"):
        meta.update_meta(tmp_path, refiner="crf")
    assert meta.model_refiner(tmp_path) == "grabcut"  # a refused value is never written


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{", "not valid JSON"),
        ("[16]", "must hold a JSON object"),
        ('{"grid": "16"}', "grid must be an int"),
        ('{"grid": 1}', r"grid must be an int in \[2, 64\]"),
        ('{"grid": true}', "grid must be an int"),
        ('{"refiner": "sam"}', "refiner must be one of none, grabcut"),
    ],
)
def test_bad_text4seg_json_is_refused_with_the_file_named(tmp_path, text, match) -> None:
    (tmp_path / "text4seg.json").write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        meta.model_grid(tmp_path)
    assert "text4seg.json" in str(err.value)


def test_empty_model_means_the_shipped_demo_model(tmp_path, monkeypatch) -> None:
    src, share = tmp_path / "src" / "models" / "demo", tmp_path / "share" / "models" / "demo"
    monkeypatch.setattr(meta, "demo_model_candidates", lambda: [src, share])
    with pytest.raises(FileNotFoundError, match="shipped demo model is missing") as err:
        meta.resolve_model(None)
    assert str(src) in str(err.value) and "make demo-model" in str(err.value)
    share.mkdir(parents=True)
    (share / "config.json").write_text("{}")
    assert meta.resolve_model("") == share == meta.resolve_model(None)
    assert meta.resolve_model("~/m") == Path.home() / "m"  # a given path is used as it is


def test_demo_model_is_searched_in_the_source_tree_then_the_ament_share(monkeypatch) -> None:
    monkeypatch.setenv("AMENT_PREFIX_PATH", "/opt/a:/opt/b")
    found = meta.demo_model_candidates()
    assert found[0] == meta.REPO / "models" / "demo"
    assert Path("/opt/a/share/text4seg_ros/models/demo") in found
    assert Path("/opt/b/share/text4seg_ros/models/demo") in found


def test_segmenter_uses_the_models_grid_unless_told_otherwise(tmp_path: Path) -> None:
    from text4seg_ros.model.segmenter import Segmenter
    from text4seg_ros.model.tiny import build_tiny_model

    model = build_tiny_model("llava", tmp_path / "tiny", grid=4)
    assert Segmenter.from_pretrained(model).grid == 16  # no text4seg.json: the paper's 16
    meta.write_meta(model, grid=4)
    assert Segmenter.from_pretrained(model).grid == 4
    with pytest.warns(UserWarning, match="grid 8 differs from the grid 4"):
        assert Segmenter.from_pretrained(model, grid=8).grid == 8
