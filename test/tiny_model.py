"""The small model config every test uses: the shipped geometry family at test size.

32 x 32 BEV cells of 3.2 m, 32 x 64 images, 8 state channels: the real network code
and ONNX export, fast enough for unit tests.
"""

import dataclasses
from pathlib import Path

from bev_quant_ros.perception.model_config import ModelConfig, NetworkConfig, load_model_config

SHIPPED_CONFIG = Path(__file__).resolve().parents[1] / "models" / "bev_tiny.yaml"


def tiny_config() -> ModelConfig:
    return dataclasses.replace(load_model_config(SHIPPED_CONFIG), Hb=32, Wb=32, image_height=32,
                               image_width=64, C=8,
                               network=NetworkConfig(image_channels=(8, 8), image_convs_per_stage=(2, 2), lift_channels=4,
                                                     attention_heads=2, attention_pool=4))
