"""launch/perception.launch.py: compiles, builds its description, declares only real things.

``launch`` / ``launch_ros`` are not installable here (../shared/ROS2_BUILD.md), so the file runs
against recording stand-ins of the few classes it uses. Each stand-in binds its arguments to the
real class's constructor signature (copied from launch / launch_ros, Jazzy), so a misspelt or
missing keyword fails here as it would under ``ros2 launch``. The node it declares must resolve
through the real ament index to an installed executable and an existing params file. Where
launch_ros imports, a real launch test runs the file.
"""

from __future__ import annotations

import ast
import inspect
import os
import sys
import types
from pathlib import Path

import pytest
import yaml

from text4seg_ros.ros.install_layout import install_layout
from text4seg_ros.ros.params import DEFAULTS

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "perception.launch.py"


# --- stand-ins: (module, name, signature of the real constructor / function) ---------------
def _sig(fn):
    return inspect.signature(fn)


def _lifecycle_node(
    *, name, namespace, executable, package=None, exec_name=None, parameters=None,
    remappings=None, ros_arguments=None, arguments=None, **kwargs,
): ...  # fmt: skip


def _on_state_transition(
    *, entities, target_lifecycle_node=None, transition=None, start_state=None, goal_state=None,
    matcher=None, **kwargs,
): ...  # fmt: skip


SIGNATURES = {
    ("launch", "LaunchDescription"): _sig(
        lambda initial_entities=None, *, deprecated_reason=None: 0
    ),
    ("launch.actions", "DeclareLaunchArgument"): _sig(
        lambda name, *, default_value=None, description=None, choices=None, **kwargs: 0
    ),
    ("launch.actions", "EmitEvent"): _sig(lambda *, event, **kwargs: 0),
    ("launch.actions", "GroupAction"): _sig(
        lambda actions, *, scoped=True, forwarding=True, launch_configurations=None, **kwargs: 0
    ),
    ("launch.actions", "SetEnvironmentVariable"): _sig(lambda name, value, **kwargs: 0),
    ("launch.actions", "OpaqueFunction"): _sig(
        lambda *, function, args=None, kwargs=None, **more: 0
    ),
    ("launch.actions", "RegisterEventHandler"): _sig(lambda event_handler, **kwargs: 0),
    ("launch.conditions", "IfCondition"): _sig(lambda predicate_expression: 0),
    ("launch.events", "matches_action"): _sig(lambda target_action: 0),
    ("launch.substitutions", "EnvironmentVariable"): _sig(lambda name, *, default_value=None: 0),
    ("launch.substitutions", "LaunchConfiguration"): _sig(lambda variable_name, *, default=None: 0),
    ("launch.substitutions", "PathJoinSubstitution"): _sig(lambda substitutions: 0),
    ("launch_ros.actions", "LifecycleNode"): _sig(_lifecycle_node),
    ("launch_ros.event_handlers", "OnStateTransition"): _sig(_on_state_transition),
    ("launch_ros.events.lifecycle", "ChangeState"): _sig(
        lambda *, lifecycle_node_matcher, transition_id: 0
    ),
    ("launch_ros.parameter_descriptions", "ParameterValue"): _sig(
        lambda value, *, value_type=None: 0
    ),
    ("launch_ros.substitutions", "FindPackageShare"): _sig(lambda package: 0),
}


class Recorded:
    """What a stand-in was called with (arguments bound by name)."""

    def __init__(self, kind: str, bound: inspect.BoundArguments) -> None:
        self.kind = kind
        self.args = dict(bound.arguments)
        self.args.update(self.args.pop("kwargs", {}))

    def __repr__(self) -> str:
        return f"{self.kind}({self.args})"


def _stand_in(name: str, signature: inspect.Signature):
    def make(*args, **kwargs):
        return Recorded(name, signature.bind(*args, **kwargs))

    return make


@pytest.fixture
def stand_ins(monkeypatch):
    """Install stand-in launch / launch_ros modules; the real lifecycle_msgs stays."""
    modules: dict[str, types.ModuleType] = {}
    for (mod, name), sig in SIGNATURES.items():
        parts = mod.split(".")
        for i in range(1, len(parts) + 1):
            modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        setattr(modules[mod], name, _stand_in(name, sig))
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return modules


def load_description():
    namespace: dict = {"__name__": "perception_launch", "__file__": str(LAUNCH_FILE)}
    exec(compile(LAUNCH_FILE.read_text(), str(LAUNCH_FILE), "exec"), namespace)
    return namespace["generate_launch_description"]()


def expand(description, **launch_arguments: str) -> list:
    """The description's entities with its OpaqueFunctions run on resolved launch arguments."""
    context = types.SimpleNamespace(launch_configurations=launch_arguments)
    out = []
    for entity in description.args["initial_entities"]:
        if entity.kind == "OpaqueFunction":
            out.extend(entity.args["function"](context))
        else:
            out.append(entity)
    return out


def walk(item, seen: set[int] | None = None):
    """Every Recorded object reachable from ``item``, each once."""
    seen = set() if seen is None else seen
    if isinstance(item, Recorded):
        if id(item) in seen:
            return
        seen.add(id(item))
        yield item
        for value in item.args.values():
            yield from walk(value, seen)
    elif isinstance(item, (list, tuple)):
        for value in item:
            yield from walk(value, seen)
    elif isinstance(item, dict):
        for value in item.values():
            yield from walk(value, seen)


def test_launch_file_compiles_and_uses_only_imports_it_declares():
    tree = ast.parse(LAUNCH_FILE.read_text())
    imported = {
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert imported - {("lifecycle_msgs.msg", "Transition")} <= set(SIGNATURES)


@pytest.fixture
def installed_prefix(tmp_path, monkeypatch):
    """The package's ament layout installed into a temporary prefix, first on the index path."""
    prefix = tmp_path / "prefix"
    install_layout(prefix, bin_dir=REPO / ".venv" / "bin")
    venv = str(REPO / ".venv")
    monkeypatch.setenv("AMENT_PREFIX_PATH", os.pathsep.join([str(prefix), venv]))
    return prefix


def test_description_declares_the_lifecycle_node_with_real_executable_and_params(
    stand_ins, installed_prefix
):
    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    description = load_description()
    assert description.kind == "LaunchDescription"
    entities = expand(description, model_path="/models/m", use_sim_time="false")
    arguments = {e.args["name"]: e for e in entities if e.kind == "DeclareLaunchArgument"}
    assert set(arguments) == {
        "params_file", "model_path", "image", "namespace", "use_sim_time", "autostart",
        "dds_profile",
    }  # fmt: skip
    assert all(a.args["description"] for a in arguments.values())
    nodes = [r for r in walk(entities) if r.kind == "LifecycleNode"]
    assert len(nodes) == 1
    node = nodes[0].args
    # the executable resolves as launch_ros does: <package prefix>/lib/<package>/<executable>
    exe = Path(get_package_prefix(node["package"])) / "lib" / node["package"] / node["executable"]
    assert exe.is_file() and os.access(exe, os.X_OK), exe
    assert "text4seg_ros.ros.node" in exe.read_text(), "must be the perception_node entry point"
    # default params file: PathJoinSubstitution([FindPackageShare(pkg), "config", file])
    join = arguments["params_file"].args["default_value"]
    share, *rest = join.args["substitutions"]
    assert share.kind == "FindPackageShare"
    params_file = Path(get_package_share_directory(share.args["package"]), *rest)
    assert params_file.is_file()
    assert params_file.read_text() == (REPO / "config" / "perception.yaml").read_text()
    params = yaml.safe_load(params_file.read_text())["/**"]["ros__parameters"]
    assert params == DEFAULTS, "config/perception.yaml must list every parameter's default"
    # parameters: the file first, then the launch-argument overrides
    file_arg, overrides = node["parameters"]
    assert (
        file_arg.kind == "LaunchConfiguration" and file_arg.args["variable_name"] == "params_file"
    )
    assert overrides["model_path"] == "/models/m"
    assert overrides["use_sim_time"].args["value_type"] is bool
    raw, compressed = node["remappings"]
    assert raw[0] == "image" and raw[1].args["variable_name"] == "image"
    # compressed: true subscribes image/compressed: it follows the image argument too
    assert compressed[0] == "image/compressed"
    image_arg, suffix = compressed[1]
    assert image_arg.args["variable_name"] == "image" and suffix == "/compressed"
    assert node["namespace"].args["variable_name"] == "namespace"
    # autostart: configure now, activate when it reaches inactive
    changes = [r for r in walk(entities) if r.kind == "ChangeState"]
    from lifecycle_msgs.msg import Transition

    assert sorted(c.args["transition_id"] for c in changes) == sorted(
        [Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE]
    )
    handler = next(r for r in walk(entities) if r.kind == "OnStateTransition")
    assert handler.args["target_lifecycle_node"] is nodes[0]
    assert handler.args["goal_state"] == "inactive"


def test_empty_model_path_argument_keeps_the_params_file_value(stand_ins):
    entities = expand(load_description(), model_path="", use_sim_time="false")
    (node,) = [r for r in walk(entities) if r.kind == "LifecycleNode"]
    _, overrides = node.args["parameters"]
    assert "model_path" not in overrides and "use_sim_time" in overrides


def _share_path(join) -> Path:
    """Resolve a stand-in ``PathJoinSubstitution([FindPackageShare(pkg), ...])``."""
    from ament_index_python.packages import get_package_share_directory

    share, *rest = join.args["substitutions"]
    assert share.kind == "FindPackageShare"
    return Path(get_package_share_directory(share.args["package"]), *rest)


def test_dds_profile_defaults_to_the_shipped_large_frame_profile(stand_ins, installed_prefix):
    description = load_description()
    (arg,) = [
        e
        for e in description.args["initial_entities"]
        if e.kind == "DeclareLaunchArgument" and e.args["name"] == "dds_profile"
    ]
    # an exported FASTRTPS_DEFAULT_PROFILES_FILE wins; else the package's profile
    default = arg.args["default_value"]
    assert default.kind == "EnvironmentVariable"
    assert default.args["name"] == "FASTRTPS_DEFAULT_PROFILES_FILE"
    profile = _share_path(default.args["default_value"])
    assert profile.is_file() and profile.name == "fastdds_large_frames.xml"
    assert profile.read_text() == (REPO / "config" / "fastdds_large_frames.xml").read_text()
    # resolved: the node (only it, in a scoped group) gets the variable
    entities = expand(description, dds_profile=str(profile), use_sim_time="false")
    (group,) = [e for e in entities if e.kind == "GroupAction"]
    assert group.args["scoped"] is True
    setenv, node = group.args["actions"]
    assert setenv.kind == "SetEnvironmentVariable" and node.kind == "LifecycleNode"
    assert setenv.args == {"name": "FASTRTPS_DEFAULT_PROFILES_FILE", "value": str(profile)}


def test_empty_dds_profile_leaves_the_environment_alone(stand_ins):
    entities = expand(load_description(), dds_profile="", use_sim_time="false")
    assert not [r for r in walk(entities) if r.kind == "SetEnvironmentVariable"]
    (group,) = [e for e in entities if e.kind == "GroupAction"]
    assert [a.kind for a in group.args["actions"]] == ["LifecycleNode"]


def test_large_frame_profile_is_valid_fast_dds_xml_with_a_large_shm_segment():
    import xml.etree.ElementTree as ET

    ns = {"p": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
    root = ET.parse(REPO / "config" / "fastdds_large_frames.xml").getroot()
    kinds = {
        d.findtext("p:transport_id", namespaces=ns): d
        for d in root.iterfind("p:transport_descriptors/p:transport_descriptor", ns)
    }
    (participant,) = root.iterfind("p:participant", ns)
    assert participant.get("is_default_profile") == "true"
    used = [t.text for t in participant.iterfind("p:rtps/p:userTransports/p:transport_id", ns)]
    assert set(used) == set(kinds)
    assert participant.findtext("p:rtps/p:useBuiltinTransports", namespaces=ns) == "false"
    types = {kinds[t].findtext("p:type", namespaces=ns): kinds[t] for t in used}
    assert set(types) == {"SHM", "UDPv4"}, "UDPv4 stays for discovery and other hosts"
    segment = int(types["SHM"].findtext("p:segment_size", namespaces=ns))
    assert segment > 3840 * 2160 * 3, "one 4K rgb8 frame (the default max_image_pixels) fits"


def test_stand_ins_refuse_arguments_the_real_classes_do_not_take(stand_ins):
    from launch_ros.actions import LifecycleNode

    with pytest.raises(TypeError):
        LifecycleNode(package="p", executable="e", name="n")  # namespace is required in Jazzy
    with pytest.raises(TypeError):
        LifecycleNode("p", "e", name="n", namespace="")  # keyword-only


def test_install_layout_needs_the_console_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="perception_node"):
        install_layout(tmp_path / "prefix", bin_dir=tmp_path / "no_bin")


def test_real_launch_starts_the_node_when_launch_ros_is_installed(installed_prefix):
    pytest.importorskip("launch_ros", reason="launch_ros is not installable from PyPI here")
    from launch import LaunchService
    from launch.actions import Shutdown, TimerAction

    description = load_description()
    description.add_action(TimerAction(period=8.0, actions=[Shutdown()]))
    service = LaunchService(argv=["model_path:=/nonexistent", "autostart:=false"])
    service.include_launch_description(description)
    assert service.run() == 0


def test_install_layout_links_the_shipped_demo_model_where_the_node_looks(installed_prefix):
    """The node's default model (empty model_path) is found through the ament share folder."""
    from text4seg_ros.model import meta

    link = installed_prefix / "share" / "text4seg_ros" / "models" / "demo"
    assert link.is_symlink() and link.resolve() == (REPO / "models" / "demo").resolve()
    assert link in meta.demo_model_candidates()
