"""``--data`` strings -> drives: a rosbag2 directory, a directory of bags (one drive each), or
``synth:<condition>:<seed>:<frames>``."""

from __future__ import annotations

from pathlib import Path

from bev_quant_ros.drives.bag import BagDrive
from bev_quant_ros.drives.frames import Drive
from bev_quant_ros.drives.settings import ReaderSettings
from bev_quant_ros.drives.synth import SYNTH_PREFIX, SynthDrive, SynthSpec
from bev_quant_ros.errors import ConfigError


def drive_sources(data: str | Path) -> list[str]:
    """The ``--data`` value as one source per drive, without opening any (a fleet task opens its
    own, so a corrupt bag fails its task only): a bag directory, a directory of bags, synth:..."""
    text = str(data)
    path = Path(text)
    if text.startswith(SYNTH_PREFIX) or (path / "metadata.yaml").is_file():
        return [text]
    if not path.is_dir():
        raise ConfigError(f"{path} does not exist (expected a rosbag2 directory, a directory of bags, "
                          f"or {SYNTH_PREFIX}<condition>:<seed>:<frames>)")
    bags = sorted(str(p) for p in path.iterdir() if (p / "metadata.yaml").is_file())
    if not bags:
        raise ConfigError(f"{path} is neither a rosbag2 directory nor a directory of bags (no metadata.yaml)")
    return bags


def open_drives(data: str | Path, settings: ReaderSettings | None = None, condition: str = "bag",
                progress: bool = True) -> list[Drive]:
    """The drives of one ``--data`` value, read with ``settings`` (default: the node's defaults)."""
    settings = settings or ReaderSettings.from_params()
    return [SynthDrive(SynthSpec.parse(source)) if source.startswith(SYNTH_PREFIX)
            else BagDrive(source, settings, condition, progress) for source in drive_sources(data)]
