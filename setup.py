"""ament_python package text4seg_ros (also installable with pip for the ROS-free core)."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "text4seg_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*", "training", "training.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        # the shipped demo model, the default model (text4seg_ros.model.meta)
        (f"share/{PACKAGE}/models/demo", [p for p in glob("models/demo/*") if Path(p).is_file()]),
    ],
    package_data={"training": ["configs/*.json"]},
    python_requires=">=3.10",
    install_requires=["numpy", "pillow"],
    # TensorRT engine (text4seg_ros.engines.tensorrt_engine): NVIDIA GPU machines only
    extras_require={"tensorrt": ["tensorrt"]},
    zip_safe=True,
    maintainer="text4seg_ros developers",
    maintainer_email="dev@text4seg-ros.invalid",
    description="Language-goal segmentation for ROS 2 with Text4Seg semantic descriptors",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "perception_node = text4seg_ros.ros.node:main",
            "text4seg-segment = text4seg_ros.cli:main",
            "text4seg-bag = text4seg_ros.bag.cli:main",
            "text4seg-goal = text4seg_ros.ros.goal_client:main",
            "text4seg-export = text4seg_ros.export_cli:main",
        ],
    },
)
