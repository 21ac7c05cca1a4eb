"""Parameters of the perception node: declared with descriptors, validated in one place.

Defaults live in ``config/perception.yaml`` (the same values as :data:`SPECS` here, so the node
also starts without the file). :func:`config_from_values` is ROS-free apart from the descriptor
types and raises ``ValueError`` naming the parameter and what is allowed; the node calls it on
``configure`` and from its set-parameters callback, so a bad value is refused when it is set.

``LIVE`` parameters take effect at once while the node runs; the others (model, QoS, topics)
take effect at the next ``configure`` (the node logs that when one is set while configured).

Integers are accepted for float parameters everywhere (``score_threshold: 0`` in a params file,
``-p image_stall_warn_s:=2``, ``ros2 param set ... 0``): :func:`declare_all` coerces overrides
before declaring, :func:`coerce_numbers` (a pre-set callback) values set later. An override of
the wrong kind or out of range does not stop the process: :func:`declare_all` declares the
default instead and returns the error, which makes ``configure`` fail with that message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.parameter import Parameter

from ..checks import DTYPE_NAMES
from ..goals import GoalError, check_grid

ENGINES = ("torch", "onnxruntime", "tensorrt")  # text4seg_ros.engines.ENGINES (no torch here)
DTYPES = DTYPE_NAMES
DESCRIPTORS = ("isd", "bsd")
REFINERS = ("auto", "none", "sam", "grabcut")
RELIABILITIES = ("best_effort", "reliable")
MASK_MODES = ("union", "label_map")


@dataclass(frozen=True)
class NodeConfig:
    """Validated parameter values (see :data:`SPECS` for meaning, units and ranges)."""

    model_path: str = ""
    backbone: str = ""
    engine: str = "torch"
    cuda_graphs: bool = False
    device: str = "cpu"
    cpu_threads: int = 0  # 0: the libraries' default
    dtype: str = "float32"
    grid: int = 0  # 0: the model's grid (text4seg.json), 16 when it names none
    descriptor: str = "isd"
    refiner: str = "auto"  # the model's own (text4seg.json), else none
    refiner_path: str = ""
    max_goals: int = 8
    max_goal_chars: int = 256
    score_threshold: float = 0.0
    min_mask_pixels: int = 0
    max_image_pixels: int = 3840 * 2160
    compressed: bool = False
    image_qos_depth: int = 1
    image_qos_reliability: str = "best_effort"
    image_stall_warn_s: float = 5.0
    output_qos_depth: int = 5
    output_qos_reliability: str = "reliable"
    mask_mode: str = "union"
    publish_overlay: bool = True
    diagnostics_period_s: float = 1.0
    inference_timeout_s: float = 30.0


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its description, numeric range and value check."""

    description: str
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], str | None] | None = None  # returns an error text or None
    live: bool = False

    def descriptor(self, name: str) -> ParameterDescriptor:
        """The ``ParameterDescriptor`` declared for ``name``."""
        desc = ParameterDescriptor(name=name, description=self.description)
        if self.int_range is not None:
            desc.integer_range = [
                IntegerRange(from_value=self.int_range[0], to_value=self.int_range[1])
            ]
        if self.float_range is not None:
            desc.floating_point_range = [
                FloatingPointRange(from_value=self.float_range[0], to_value=self.float_range[1])
            ]
        if self.choices is not None:
            desc.additional_constraints = "one of: " + ", ".join(self.choices)
        return desc


def _check_engine(value: str) -> str | None:
    if value in ENGINES:
        return None
    return f"unknown engine {value!r}; allowed: {', '.join(ENGINES)}"


def _check_device(value: str) -> str | None:
    if value == "cpu" or value == "cuda":
        return None
    if value.startswith("cuda:") and value[5:].isdigit():
        return None
    return f"device must be 'cpu', 'cuda' or 'cuda:N', got {value!r}"


def _check_grid(value: int) -> str | None:
    try:  # the CLI's rule (text4seg_ros.goals), plus 0 for the model's own grid
        check_grid(value, model_default=True)
    except GoalError as exc:
        return str(exc)
    return None


SPECS: dict[str, ParamSpec] = {
    "model_path": ParamSpec(
        "Model directory (HF layout or base + LoRA); empty: the shipped demo model (models/demo)"
    ),
    "backbone": ParamSpec(
        "Backbone name (qwen2_vl, llava, internvl); empty: from the model config"
    ),
    "engine": ParamSpec(
        "Decode engine: torch (reference), onnxruntime or tensorrt (exported ONNX graphs; "
        "tensorrt needs an NVIDIA GPU and the tensorrt package)",
        choices=ENGINES,
        check=_check_engine,
    ),
    "cuda_graphs": ParamSpec(
        "torch engine only: capture the decoder step in CUDA graphs (static KV cache, replayed "
        "per step); without a CUDA device it logs so and decodes eagerly"
    ),
    "device": ParamSpec("Torch device: cpu, cuda or cuda:N", check=_check_device),
    "cpu_threads": ParamSpec(
        "Intra-op CPU threads of inference (torch, and ONNX Runtime's sessions), set at"
        " configure; 0: the libraries' default (one per core); 1 on a small shared CPU",
        int_range=(0, 256),
    ),
    "dtype": ParamSpec("Model weights dtype", choices=DTYPES),
    "grid": ParamSpec(
        "Descriptor grid size G (G x G cells); 0: the model's own grid (text4seg.json, else 16)",
        int_range=(0, 64),
        check=_check_grid,
    ),
    "descriptor": ParamSpec(
        "Descriptor kind: isd (image-wise) or bsd (box-wise)", choices=DESCRIPTORS
    ),
    "refiner": ParamSpec(
        "Mask refiner; auto: the one the model names (text4seg.json), else none; sam: SAM "
        "weights at refiner_path; grabcut: OpenCV, no weights",
        choices=REFINERS,
    ),
    "refiner_path": ParamSpec("SAM model directory when refiner is sam"),
    "max_goals": ParamSpec("Most active goals; more are rejected", int_range=(1, 64), live=True),
    "max_goal_chars": ParamSpec(
        "Longest goal text in characters; longer is rejected", int_range=(1, 4096), live=True
    ),
    "score_threshold": ParamSpec(
        "Detections below this score are not published on `detections` (segmentations always are)",
        float_range=(0.0, 1.0),
        live=True,
    ),
    "min_mask_pixels": ParamSpec(
        "Masks with fewer pixels are reported empty", int_range=(0, 1 << 30), live=True
    ),
    "max_image_pixels": ParamSpec(
        "Largest accepted image (width x height); bigger frames are rejected",
        int_range=(1, 1 << 31),
        live=True,
    ),
    "compressed": ParamSpec("Subscribe image/compressed (JPEG/PNG) instead of image"),
    "image_qos_depth": ParamSpec(
        "Camera subscription queue depth (1: newest only)", int_range=(1, 100)
    ),
    "image_qos_reliability": ParamSpec(
        "Camera subscription reliability (best_effort also matches reliable cameras)",
        choices=RELIABILITIES,
    ),
    "image_stall_warn_s": ParamSpec(
        "Seconds without a camera frame, while a camera publisher is matched, before /diagnostics"
        " warns (likely best-effort large frames lost in transport; see fastdds_large_frames.xml)",
        float_range=(0.5, 3600.0),
        live=True,
    ),
    "output_qos_depth": ParamSpec("Depth of the result publishers", int_range=(1, 100)),
    "output_qos_reliability": ParamSpec(
        "Reliability of the result publishers", choices=RELIABILITIES
    ),
    "mask_mode": ParamSpec(
        "`mask` topic: union (255 = any goal) or label_map (pixel = goal index + 1)",
        choices=MASK_MODES,
        live=True,
    ),
    "publish_overlay": ParamSpec("Publish the rgb8 debug `overlay` image", live=True),
    "diagnostics_period_s": ParamSpec(
        "Seconds between /diagnostics messages", float_range=(0.05, 60.0)
    ),
    "inference_timeout_s": ParamSpec(
        "Seconds one frame's inference may run before /diagnostics reports the inference thread"
        " stuck (ERROR) and its decode is cancelled at the next model call",
        float_range=(0.1, 3600.0),
        live=True,
    ),
}
LIVE = frozenset(name for name, spec in SPECS.items() if spec.live)
DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(NodeConfig)}
assert set(SPECS) == set(DEFAULTS), "every NodeConfig field needs a ParamSpec"


def check_value(name: str, value: Any) -> Any:
    """Validate one parameter value; return it (ints accepted for floats); ValueError otherwise."""
    if name not in SPECS:
        raise ValueError(f"unknown parameter {name!r}; known: {', '.join(SPECS)}")
    spec, default = SPECS[name], DEFAULTS[name]
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not kind:
        raise ValueError(f"parameter {name} must be {kind.__name__}, got {value!r}")
    if spec.int_range is not None and not spec.int_range[0] <= value <= spec.int_range[1]:
        raise ValueError(
            f"parameter {name}={value} outside [{spec.int_range[0]}, {spec.int_range[1]}]"
        )
    if spec.float_range is not None and not spec.float_range[0] <= value <= spec.float_range[1]:
        lo, hi = spec.float_range
        raise ValueError(f"parameter {name}={value} outside [{lo}, {hi}]")
    if spec.check is not None:
        error = spec.check(value)
        if error:
            raise ValueError(f"parameter {name}: {error}")
    elif spec.choices is not None and value not in spec.choices:
        raise ValueError(f"parameter {name}={value!r}; allowed: {', '.join(spec.choices)}")
    return value


def config_from_values(values: Mapping[str, Any]) -> NodeConfig:
    """A :class:`NodeConfig` from parameter values (missing names take their defaults)."""
    merged = {**DEFAULTS, **values}
    checked = {name: check_value(name, merged[name]) for name in SPECS}
    if checked["refiner"] == "sam" and not checked["refiner_path"]:
        raise ValueError("parameter refiner_path is required when refiner is 'sam'")
    return NodeConfig(**checked)


def _as_float_parameter(param: Parameter) -> Parameter:
    """``param`` as a DOUBLE parameter when it is an integer for a float parameter, else as is."""
    spec_default = DEFAULTS.get(param.name)
    value = param.value
    if type(spec_default) is float and isinstance(value, int) and not isinstance(value, bool):
        return Parameter(param.name, Parameter.Type.DOUBLE, float(value))
    return param


def coerce_numbers(params: list[Parameter]) -> list[Parameter]:
    """Pre-set-parameters callback: integers for float parameters become floats."""
    return [_as_float_parameter(p) for p in params]


def declare_all(node: Any) -> dict[str, str]:
    """Declare every parameter of :data:`SPECS` on ``node`` (an rclpy ``Node``).

    Overrides (params file, ``-p``) that are integers for float parameters are coerced; an
    override that fails :func:`check_value` (wrong kind, out of range, unknown choice) is not
    applied: the default is declared and ``{name: error}`` returned for ``configure`` to report.
    """
    errors: dict[str, str] = {}
    # rclpy (Jazzy) keeps -p / params-file values in this dict and raises at declare time for
    # a wrong type or range; check them first so no override can end the process.
    overrides = getattr(node, "_parameter_overrides", None)
    if isinstance(overrides, dict):
        for name in SPECS:
            if name not in overrides:
                continue
            param = _as_float_parameter(overrides[name])
            try:
                check_value(name, param.value)
            except ValueError as exc:
                errors[name] = f"{exc} (from the parameter overrides; the default was declared)"
                del overrides[name]
            else:
                overrides[name] = param
    for name, spec in SPECS.items():
        try:
            node.declare_parameter(name, DEFAULTS[name], spec.descriptor(name))
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            errors[name] = f"parameter {name}: {exc} (the default was declared)"
            desc = spec.descriptor(name)
            node.declare_parameter(name, DEFAULTS[name], desc, ignore_override=True)
    return errors
