"""The parameter table, its validation, and the shipped params file agree."""

from pathlib import Path

import pytest
import yaml

from bev_quant_ros.errors import ConfigError
from bev_quant_ros.ros.parameters import NODE_PARAMS, validate

CONFIG = Path(__file__).resolve().parents[2] / "config" / "bev_perception.yaml"


def test_shipped_params_file_equals_declared_defaults():
    values = yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"]
    assert set(values) == {spec.name for spec in NODE_PARAMS}
    for spec in NODE_PARAMS:
        assert values[spec.name] == spec.default, spec.name
    assert validate(values)["sync_slop_s"] == 0.02


@pytest.mark.parametrize("values, name", [
    ({"sync_slop_s": -0.01}, "sync_slop_s"),
    ({"score_threshold": 1.5}, "score_threshold"),
    ({"precision": "int4"}, "precision"),
    ({"camera_names": ["A", "B"]}, "camera_names"),
    ({"camera_names": ["A", "A", "B", "C", "D", "E"]}, "camera_names"),
    ({"max_gap_s": "1"}, "max_gap_s"),
    ({"lidar_top": "/x"}, "lidar_top"),
])
def test_invalid_values_name_the_parameter(values, name):
    with pytest.raises(ConfigError, match=name):
        validate(values)


def test_integers_are_accepted_for_float_parameters():
    assert validate({"max_gap_s": 2})["max_gap_s"] == 2.0
    assert isinstance(validate({"max_gap_s": 2})["max_gap_s"], float)
