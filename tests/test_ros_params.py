"""Parameter descriptors and validation (text4seg_ros.ros.params)."""

from __future__ import annotations

import pytest

pytest.importorskip("rcl_interfaces")

from text4seg_ros.ros.params import (  # noqa: E402
    DEFAULTS,
    LIVE,
    SPECS,
    NodeConfig,
    check_value,
    config_from_values,
)


def test_defaults_validate():
    assert config_from_values({}) == NodeConfig()
    cfg = config_from_values({"model_path": "/m", "grid": 24, "device": "cuda:1"})
    assert (cfg.model_path, cfg.grid, cfg.device) == ("/m", 24, "cuda:1")


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("engine", "magic", "unknown engine 'magic'; allowed: torch, onnxruntime, tensorrt"),
        ("device", "gpu", "'cpu', 'cuda' or 'cuda:N'"),
        ("dtype", "int4", "allowed: float32, float16, bfloat16"),
        ("grid", 1, "0 \\(the model's grid\\) or 2..64"),
        ("grid", 65, r"outside \[0, 64\]"),
        ("grid", "16", "must be int"),
        ("descriptor", "rle", "allowed: isd, bsd"),
        ("refiner", "crf", "allowed: auto, none, sam, grabcut"),
        ("max_goals", 0, r"outside \[1, 64\]"),
        ("score_threshold", 1.5, r"outside \[0.0, 1.0\]"),
        ("image_qos_reliability", "sometimes", "allowed: best_effort, reliable"),
        ("compressed", 1, "must be bool"),
        ("nope", 1, "unknown parameter 'nope'"),
    ],
)
def test_bad_values_are_refused_with_what_is_allowed(name, value, match):
    with pytest.raises(ValueError, match=match):
        check_value(name, value)


def test_sam_refiner_needs_a_path():
    with pytest.raises(ValueError, match="refiner_path is required"):
        config_from_values({"refiner": "sam"})
    assert config_from_values({"refiner": "sam", "refiner_path": "/sam"}).refiner == "sam"
    # GrabCut needs no weights, so no path.
    assert config_from_values({"refiner": "grabcut"}).refiner == "grabcut"


def test_ints_are_accepted_for_floats():
    assert check_value("score_threshold", 1) == 1.0


def test_descriptors_carry_ranges_and_choices():
    grid = SPECS["grid"].descriptor("grid")
    assert grid.name == "grid" and grid.description
    assert (grid.integer_range[0].from_value, grid.integer_range[0].to_value) == (0, 64)
    thr = SPECS["score_threshold"].descriptor("score_threshold")
    assert thr.floating_point_range[0].to_value == 1.0
    assert "torch" in SPECS["engine"].descriptor("engine").additional_constraints
    assert all(SPECS[n].description for n in DEFAULTS)
    assert {"max_goals", "score_threshold", "mask_mode"} <= LIVE and "model_path" not in LIVE
