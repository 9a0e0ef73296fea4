"""The model config shipped next to an ONNX model (e.g. ``models/bev_tiny.yaml``).

It holds every size the runtime needs without importing torch: the BEV grid and its
height slices, the image input size and normalisation, channel counts, output stride,
class list and box_reg layout. It resolves the symbolic shapes of the engine contract
(``engine/contract.py``) so the exporter, the engine and the pipeline agree on one set
of numbers. The ``network`` section holds layer widths used only to rebuild the
PyTorch module (training/export); the runtime ignores it. ``inputs.optional`` lists the
optional contract inputs (``dt``, ``lidar_valid``) the graph declares (absent = none).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bev_quant_ros.engine.contract import (
    BOX_REG_CHANNELS,
    CONTRACT_INPUTS,
    CONTRACT_OUTPUTS,
    DT_INPUT,
    LIDAR_VALID_INPUT,
    NUM_CAMERAS,
    OPTIONAL_INPUTS,
)
from bev_quant_ros.errors import ConfigError
from bev_quant_ros.perception.boxes import CLASS_NAMES

# lidar_bev channel layout: occupancy per lidar height bin, then these summary channels
LIDAR_SUMMARY_CHANNELS: tuple[str, ...] = ("max_intensity", "log_count", "mean_time_lag")


@dataclass(frozen=True)
class NetworkConfig:
    """Layer widths of the reference PyTorch network (not needed at runtime)."""

    image_channels: tuple[int, ...] = (16, 32, 48)  # one stride-2 stage each
    image_convs_per_stage: tuple[int, ...] = (2, 2, 2)  # the stride-2 conv plus stride-1 convs
    lift_channels: int = 16  # image feature channels sampled into the BEV per height slice
    attention_heads: int = 2
    attention_pool: int | tuple[int, int] = 8  # BEV cells per attention token: a side, or (rows, cols)
    # 2: parameter-free lift (the shipped models). 3: per-pixel distribution over the height
    # slices weights the lift, a camera-only path for lidar_valid = 0, dt in the temporal
    # fusion, a camera-only auxiliary head in training (model/network.py); needs inputs dt, lidar_valid
    version: int = 2

    @property
    def attention_pool_hw(self) -> tuple[int, int]:
        """(rows, cols) of BEV cells per token: (8, 16) has half the tokens of 8 (pruning's halved queries)."""
        pool = self.attention_pool
        return (pool, pool) if isinstance(pool, int) else (int(pool[0]), int(pool[1]))


@dataclass(frozen=True)
class ModelConfig:
    """Every size of one BEV model; see the module docstring."""

    name: str
    x_range_m: tuple[float, float]
    y_range_m: tuple[float, float]
    Hb: int
    Wb: int
    z_values_m: tuple[float, ...]  # height of each camera-lift slice, ego frame
    image_height: int
    image_width: int
    image_mean: tuple[float, float, float]  # RGB, in 0..255 pixel units, applied in-graph
    image_std: tuple[float, float, float]
    C: int  # BEV state channels
    lidar_z_edges_m: tuple[float, ...]  # lidar occupancy bins; Cl = bins + summary channels
    lidar_max_time_lag_s: float  # normalises the time-lag channel
    lidar_intensity_max: float  # normalises the intensity channel (sensor units, e.g. 255)
    output_stride: int
    classes: tuple[str, ...] = CLASS_NAMES
    box_reg: tuple[str, ...] = BOX_REG_CHANNELS
    network: NetworkConfig = field(default_factory=NetworkConfig)
    optional_inputs: tuple[str, ...] = ()  # of contract.OPTIONAL_INPUTS the graph declares, in that order

    def __post_init__(self) -> None:
        _check(self.x_range_m[1] > self.x_range_m[0] and self.y_range_m[1] > self.y_range_m[0],
               "bev x_range_m / y_range_m must be increasing [min, max]")
        _check(self.Hb > 0 and self.Wb > 0, "bev Hb and Wb must be positive")
        _check(len(self.z_values_m) > 0, "bev z_values_m needs at least one slice")
        _check(self.image_height > 0 and self.image_width > 0, "image height/width must be positive")
        _check(len(self.image_mean) == 3 and len(self.image_std) == 3 and min(self.image_std) > 0,
               "image mean/std need 3 values, std > 0")
        _check(self.C > 0, "channels C must be positive")
        _check(len(self.lidar_z_edges_m) >= 2 and list(self.lidar_z_edges_m) == sorted(self.lidar_z_edges_m),
               "lidar z_edges_m needs >= 2 increasing values")
        _check(self.lidar_max_time_lag_s > 0, "lidar max_time_lag_s must be positive")
        _check(self.lidar_intensity_max > 0, "lidar intensity_max must be positive")
        _check(self.output_stride > 0 and self.Hb % self.output_stride == 0
               and self.Wb % self.output_stride == 0, "head output_stride must divide Hb and Wb")
        unknown = set(self.classes) - set(CLASS_NAMES)
        _check(len(self.classes) > 0 and not unknown, f"classes must be from {CLASS_NAMES}, got {unknown}")
        _check(tuple(self.box_reg) == BOX_REG_CHANNELS, f"box_reg must be {BOX_REG_CHANNELS}")
        _check(len(self.network.image_convs_per_stage) == len(self.network.image_channels)
               and min(self.network.image_convs_per_stage) >= 1,
               "network image_convs_per_stage needs one count >= 1 per image stage")
        _check(self.network.version in (2, 3), f"network version must be 2 or 3, got {self.network.version}")
        _check(self.optional_inputs == tuple(n for n in OPTIONAL_INPUTS if n in self.optional_inputs)
               and len(set(self.optional_inputs)) == len(self.optional_inputs),
               f"inputs.optional must be a subset of {list(OPTIONAL_INPUTS)} in that order, got {self.optional_inputs}")
        _check(self.network.version < 3 or self.optional_inputs == (DT_INPUT, LIDAR_VALID_INPUT),
               f"network version 3 needs inputs.optional [{DT_INPUT}, {LIDAR_VALID_INPUT}]")
        pool = self.network.attention_pool
        _check(isinstance(pool, int) or len(pool) == 2,
               f"network attention_pool must be a side or [rows, cols], got {pool}")
        rows, cols = self.network.attention_pool_hw
        _check(rows > 0 and cols > 0 and (self.Hb // self.output_stride) % rows == 0
               and (self.Wb // self.output_stride) % cols == 0, "network attention_pool must divide the head grid")

    # derived sizes ---------------------------------------------------------------
    @property
    def Z(self) -> int:
        return len(self.z_values_m)

    @property
    def Cl(self) -> int:
        return len(self.lidar_z_edges_m) - 1 + len(LIDAR_SUMMARY_CHANNELS)

    @property
    def K(self) -> int:
        return len(self.classes)

    @property
    def R(self) -> int:
        return len(self.box_reg)

    @property
    def Ho(self) -> int:
        return self.Hb // self.output_stride

    @property
    def Wo(self) -> int:
        return self.Wb // self.output_stride

    @property
    def cell_x_m(self) -> float:
        return (self.x_range_m[1] - self.x_range_m[0]) / self.Hb

    @property
    def cell_y_m(self) -> float:
        return (self.y_range_m[1] - self.y_range_m[0]) / self.Wb

    def bev_cell_centers(self, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Ego x of each row [Hb/stride] and ego y of each column [Wb/stride] at ``stride``."""
        cx, cy = self.cell_x_m * stride, self.cell_y_m * stride
        xs = self.x_range_m[0] + (np.arange(self.Hb // stride) + 0.5) * cx
        ys = self.y_range_m[0] + (np.arange(self.Wb // stride) + 0.5) * cy
        return xs, ys

    # contract ---------------------------------------------------------------------
    def symbols(self) -> dict[str, int]:
        """Values of the contract's shape symbols."""
        return {"H": self.image_height, "W": self.image_width, "Z": self.Z, "Hb": self.Hb, "Wb": self.Wb,
                "Cl": self.Cl, "C": self.C, "K": self.K, "R": self.R, "Ho": self.Ho, "Wo": self.Wo}

    def resolve(self, symbolic: tuple[str | int, ...]) -> tuple[int, ...]:
        """Concrete shape of a contract shape such as ``(6, "Z*Hb", "Wb", 2)``."""
        values = self.symbols()
        out = []
        for dim in symbolic:
            if isinstance(dim, int):
                out.append(dim)
                continue
            product = 1
            for factor in dim.split("*"):
                if factor not in values:
                    raise ConfigError(f"contract symbol {factor!r} is not defined by the model config")
                product *= values[factor]
            out.append(product)
        return tuple(out)

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Contract inputs, then the optional ones this model declares (the export order)."""
        shapes = {name: self.resolve(shape) for name, shape in CONTRACT_INPUTS.items()}
        return shapes | {name: self.resolve(OPTIONAL_INPUTS[name]) for name in self.optional_inputs}

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: self.resolve(shape) for name, shape in CONTRACT_OUTPUTS.items()}

    # (de)serialisation ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        optional = {"inputs": {"optional": list(self.optional_inputs)}} if self.optional_inputs else {}
        return {
            "name": self.name,
            "bev": {"x_range_m": list(self.x_range_m), "y_range_m": list(self.y_range_m),
                    "Hb": self.Hb, "Wb": self.Wb, "z_values_m": list(self.z_values_m)},
            "image": {"height": self.image_height, "width": self.image_width,
                      "input": f"float32 RGB pixel values 0..255, [{NUM_CAMERAS},3,H,W]; "
                               "mean/std normalisation happens in the graph",
                      "mean": list(self.image_mean), "std": list(self.image_std)},
            "lidar": {"z_edges_m": list(self.lidar_z_edges_m), "max_time_lag_s": self.lidar_max_time_lag_s,
                      "intensity_max": self.lidar_intensity_max,
                      "channels": self.lidar_channel_names()},
            "channels": {"C": self.C, "Cl": self.Cl},
            "head": {"output_stride": self.output_stride, "classes": list(self.classes),
                     "box_reg": list(self.box_reg),
                     "box_reg_units": "offset_x/y: output cells from the cell centre; z: m; "
                                      "log_l/w/h: log m; sin/cos of yaw; vel_x/y: m/s (ego axes)"},
            **optional,
            "network": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.network).items()},
        }

    def lidar_channel_names(self) -> list[str]:
        edges = self.lidar_z_edges_m
        return [f"occupancy_z[{edges[i]:g},{edges[i + 1]:g})" for i in range(len(edges) - 1)] + list(
            LIDAR_SUMMARY_CHANNELS)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100))


def example_inputs(cfg: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random but well-formed contract inputs (all cameras valid, prev state valid), for
    export checks, tests and benchmarks that need no real frame."""
    rng = np.random.default_rng(seed)
    shapes = cfg.input_shapes()
    inputs = {
        "images": rng.uniform(0, 255, shapes["images"]).astype(np.float32),
        "camera_valid": np.ones(shapes["camera_valid"], np.float32),
        "cam_grid": rng.uniform(-1.2, 1.2, shapes["cam_grid"]).astype(np.float32),
        "lidar_bev": rng.uniform(0, 1, shapes["lidar_bev"]).astype(np.float32),
        "prev_bev": rng.normal(0, 1, shapes["prev_bev"]).astype(np.float32),
        "ego_motion": np.array([[1, 0, 0], [0, 1, 0.02]], np.float32),
        "prev_valid": np.ones(shapes["prev_valid"], np.float32),
    }
    optional = {DT_INPUT: np.array([1 / 30], np.float32), LIDAR_VALID_INPUT: np.ones(1, np.float32)}
    return inputs | {name: optional[name] for name in cfg.optional_inputs}


def model_config_from_dict(doc: dict[str, Any], source: str = "<dict>") -> ModelConfig:
    """Build and validate a ModelConfig from the YAML layout written by ``to_dict``."""
    try:
        bev, image, lidar, head = doc["bev"], doc["image"], doc["lidar"], doc["head"]
        config = ModelConfig(
            name=str(doc["name"]),
            x_range_m=_pair(bev["x_range_m"]), y_range_m=_pair(bev["y_range_m"]),
            Hb=int(bev["Hb"]), Wb=int(bev["Wb"]),
            z_values_m=tuple(float(v) for v in bev["z_values_m"]),
            image_height=int(image["height"]), image_width=int(image["width"]),
            image_mean=tuple(float(v) for v in image["mean"]),  # type: ignore[arg-type]
            image_std=tuple(float(v) for v in image["std"]),  # type: ignore[arg-type]
            C=int(doc["channels"]["C"]),
            lidar_z_edges_m=tuple(float(v) for v in lidar["z_edges_m"]),
            lidar_max_time_lag_s=float(lidar["max_time_lag_s"]),
            lidar_intensity_max=float(lidar["intensity_max"]),
            output_stride=int(head["output_stride"]),
            classes=tuple(str(c) for c in head["classes"]),
            box_reg=tuple(str(c) for c in head["box_reg"]),
            network=NetworkConfig(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in doc.get("network", {}).items()}),
            optional_inputs=tuple(str(n) for n in (doc.get("inputs") or {}).get("optional", ())),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"model config {source}: missing or bad field: {exc!r}") from exc
    declared_cl = doc.get("channels", {}).get("Cl")
    if declared_cl is not None and int(declared_cl) != config.Cl:
        raise ConfigError(f"model config {source}: channels.Cl={declared_cl} but lidar z_edges_m give {config.Cl}")
    return config


def load_model_config(path: str | Path) -> ModelConfig:
    """Read a model config YAML, e.g. the one next to an ONNX model."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read model config {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"model config {path} is not a mapping")
    return model_config_from_dict(doc, str(path))


def model_config_for_onnx(onnx_path: str | Path) -> ModelConfig:
    """The config shipped next to an ONNX file (same stem, .yaml)."""
    return load_model_config(Path(onnx_path).with_suffix(".yaml"))


def _pair(values: Any) -> tuple[float, float]:
    a, b = (float(v) for v in values)
    return a, b


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(f"model config: {message}")
