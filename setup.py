"""ament_python package definition; exact versions live in requirements/venv.txt only."""

import os
from glob import glob

from setuptools import find_packages, setup
from setuptools.command.install_scripts import install_scripts

PACKAGE = "bev_quant_ros"
# setup.cfg puts console scripts in lib/<pkg>, where `ros2 run` looks; these are user tools
# and go to <prefix>/bin instead, so they are on PATH once the install is sourced.
PATH_SCRIPTS = frozenset({"bev-quant"})


class InstallScripts(install_scripts):
    """`setup.py install` (colcon): PATH_SCRIPTS into <prefix>/bin, the rest into lib/<pkg>.

    A wheel (pip) writes no scripts here: pip puts every console script in bin/.
    """

    def write_script(self, script_name: str, contents: str, mode: str = "t", *ignored) -> None:
        scripts_dir = self.install_dir
        if script_name in PATH_SCRIPTS:
            # install_data is the prefix (re-rooted under --root), so this is <prefix>/bin.
            self.install_dir = os.path.join(self.get_finalized_command("install").install_data, "bin")
        try:
            super().write_script(script_name, contents, mode, *ignored)
        finally:
            self.install_dir = scripts_dir


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
        _share("schema", "*.json"),
    ],
    cmdclass={"install_scripts": InstallScripts},
    install_requires=[
        "numpy",
        "opencv-python-headless",
        "onnx",
        "onnxruntime",
        "rosbags",
        "numba",
        "PyYAML",
        "tqdm",
    ],
    extras_require={"train": ["torch"], "report": ["matplotlib"], "test": ["pytest"], "fleet": ["ray"],
                    "qat": ["torch", "nvidia-modelopt", "requests", "huggingface_hub"]},
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
