"""Launch the text4seg_ros perception node (a lifecycle node), configured and activated.

    ros2 launch text4seg_ros perception.launch.py model_path:=/models/text4seg \\
        image:=/camera/color/image_raw namespace:=arm_camera

Arguments: ``params_file`` (default: the package's config/perception.yaml), ``model_path``
(default empty: the params file's ``model_path``, whose empty default is the shipped demo model
``share/text4seg_ros/models/demo``),
``image`` (the camera topic the node's ``image`` input is remapped to; ``image/compressed``
goes to ``<image>/compressed``, what the node reads with ``compressed: true``), ``namespace``,
``use_sim_time``, ``autostart`` (configure then activate; false leaves the node unconfigured
for ``ros2 lifecycle set``), ``dds_profile`` (Fast DDS XML profile for the node's process,
default: the package's config/fastdds_large_frames.xml, or ``$FASTRTPS_DEFAULT_PROFILES_FILE``
when that is set; ``none``, or empty from an including launch file: the environment is left
as it is; ``ros2 launch`` refuses an empty ``name:=``). The node runs as
``lib/text4seg_ros/perception_node --ros-args -r __node:=perception_node -r __ns:=/NS
--params-file FILE --params-file <launch_ros' file with model_path and use_sim_time>
-r image:=TOPIC -r image/compressed:=TOPIC/compressed``, the equivalent of ``-p model_path:=...``.
An empty ``model_path`` (the default) overrides nothing, so a ``model_path`` set in the params
file is kept; that is why the node is declared in an ``OpaqueFunction``, which sees the
resolved launch arguments. The profile is set with ``SetEnvironmentVariable`` inside a scoped
``GroupAction``: only the node gets it, not the rest of a launch that includes this file.
"""

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    GroupAction,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

PACKAGE = "text4seg_ros"
# Fast DDS 2.x (Jazzy) reads its XML profiles from this variable when a process starts.
PROFILES_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"


def generate_launch_description() -> LaunchDescription:
    """The launch description: arguments, the lifecycle node, and its autostart transitions."""
    arguments = [
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution(
                [FindPackageShare(PACKAGE), "config", "perception.yaml"]
            ),
            description="YAML file with the node's parameters",
        ),
        DeclareLaunchArgument(
            "model_path",
            default_value="",
            description="Model directory (overrides params_file); empty: the params file's, "
            "whose default is the shipped demo model (models/demo)",
        ),
        DeclareLaunchArgument(
            "image",
            default_value="image",
            description="Camera topic (Image); compressed: true reads <image>/compressed",
        ),
        DeclareLaunchArgument("namespace", default_value="", description="Node namespace"),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false", description="Use the /clock topic"
        ),
        DeclareLaunchArgument(
            "autostart", default_value="true", description="Configure and activate at start"
        ),
        DeclareLaunchArgument(
            "dds_profile",
            # Best-effort frames above ~0.5 MB are lost between processes with Fast DDS's
            # default shared-memory segment; see the comments in the profile.
            default_value=EnvironmentVariable(
                PROFILES_VARIABLE,
                default_value=PathJoinSubstitution(
                    [FindPackageShare(PACKAGE), "config", "fastdds_large_frames.xml"]
                ),
            ),
            description=(
                "Fast DDS XML profile for the node (large camera frames); run the camera "
                "driver with the same profile; none: leave the environment as it is"
            ),
        ),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=node_and_transitions)])


def node_and_transitions(context) -> list:
    """The lifecycle node and its autostart transitions, with the resolved launch arguments.

    ``context.launch_configurations`` maps argument names to their resolved strings.
    """
    overrides = {
        "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)
    }
    model_path = context.launch_configurations.get("model_path", "")
    if model_path:
        overrides["model_path"] = model_path
    node = LifecycleNode(
        package=PACKAGE,
        executable="perception_node",
        name="perception_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[
            LaunchConfiguration("params_file"),
            overrides,
        ],
        remappings=[
            ("image", LaunchConfiguration("image")),
            # compressed: true subscribes image/compressed (image_transport's naming)
            ("image/compressed", [LaunchConfiguration("image"), "/compressed"]),
        ],
        output="screen",
    )
    profile = context.launch_configurations.get("dds_profile", "")
    keep = profile.strip().lower() in ("", "none")  # `ros2 launch` cannot pass an empty value
    env = [] if keep else [SetEnvironmentVariable(PROFILES_VARIABLE, profile)]
    autostart = IfCondition(LaunchConfiguration("autostart"))
    configure = EmitEvent(
        event=ChangeState(
            lifecycle_node_matcher=matches_action(node),
            transition_id=Transition.TRANSITION_CONFIGURE,
        ),
        condition=autostart,
    )
    activate = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=node,
            start_state="configuring",
            goal_state="inactive",
            entities=[
                EmitEvent(
                    event=ChangeState(
                        lifecycle_node_matcher=matches_action(node),
                        transition_id=Transition.TRANSITION_ACTIVATE,
                    )
                )
            ],
        ),
        condition=autostart,
    )
    return [GroupAction([*env, node], scoped=True), activate, configure]
