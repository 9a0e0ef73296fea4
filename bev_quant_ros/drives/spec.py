"""``--data`` strings -> drives: a rosbag2 directory, a directory of bags (one drive each), or
``synth:<condition>:<seed>:<frames>``."""

from __future__ import annotations

from pathlib import Path

from bev_quant_ros.drives.bag import BagDrive
from bev_quant_ros.drives.frames import Drive
from bev_quant_ros.drives.settings import ReaderSettings
from bev_quant_ros.drives.synth import SYNTH_PREFIX, SynthDrive, SynthSpec
from bev_quant_ros.errors import ConfigError


def open_drives(data: str | Path, settings: ReaderSettings | None = None, condition: str = "bag",
                progress: bool = True) -> list[Drive]:
    """The drives of one ``--data`` value, read with ``settings`` (default: the node's defaults)."""
    text = str(data)
    if text.startswith(SYNTH_PREFIX):
        return [SynthDrive(SynthSpec.parse(text))]
    path = Path(text)
    settings = settings or ReaderSettings.from_params()
    if (path / "metadata.yaml").is_file():
        return [BagDrive(path, settings, condition, progress)]
    if path.is_dir():
        bags = sorted(p for p in path.iterdir() if (p / "metadata.yaml").is_file())
        if bags:
            return [BagDrive(bag, settings, condition, progress) for bag in bags]
        raise ConfigError(f"{path} is neither a rosbag2 directory nor a directory of bags (no metadata.yaml)")
    raise ConfigError(f"{path} does not exist (expected a rosbag2 directory, a directory of bags, "
                      f"or {SYNTH_PREFIX}<condition>:<seed>:<frames>)")
