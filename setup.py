"""ament_python package definition; exact versions live in requirements/venv.txt only."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "bev_quant_ros"


def _share(subdir: str, pattern: str) -> tuple[str, list[str]]:
    return (f"share/{PACKAGE}/{subdir}", sorted(glob(f"{subdir}/{pattern}")))


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        _share("launch", "*.launch.py"),
        _share("config", "*.yaml"),
        _share("models", "*"),
    ],
    install_requires=[
        "numpy",
        "opencv-python-headless",
        "onnx",
        "onnxruntime",
        "rosbags",
        "numba",
        "PyYAML",
    ],
    extras_require={"train": ["torch"], "report": ["matplotlib"], "test": ["pytest"]},
    zip_safe=False,
    maintainer="bev_quant_ros developers",
    maintainer_email="dev@bev-quant-ros.local",
    description="INT8 BEV 3D detection for ROS 2 with a quantization toolkit.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "bev_perception_node = bev_quant_ros.ros.node:main",
            "bev-quant = bev_quant_ros.cli:main",
        ],
    },
)
