"""The parameter table, its validation, and the files generated from it agree."""

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from bev_quant_ros.errors import ConfigError
from bev_quant_ros.ros import parameter_docs
from bev_quant_ros.ros.parameters import DEFAULT_CAMERA_NAMES, NODE_PARAMS, PARAMS_BY_NAME, resolve_topic, validate

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "bev_perception.param.yaml"
SCHEMA = ROOT / "schema" / "bev_perception.schema.json"
TYPES = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,), "array": (list,),
         "object": (dict,)}


def schema_errors(value: Any, schema: dict, root: dict, path: str = "") -> list[str]:
    """The draft-07 keywords parameter_docs emits, checked by hand (no jsonschema dependency)."""
    if "$ref" in schema:
        schema = root["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
    kind = schema.get("type")
    if kind and (not isinstance(value, TYPES[kind]) or (isinstance(value, bool) and kind != "boolean")):
        return [f"{path}: {value!r} is not {kind}"]
    errors = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in enum")
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: {value!r} < minimum")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{path}: {value!r} > maximum")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{path}: {value!r} does not match pattern")
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{path}: {value!r} too short")
    if kind == "array":
        if not schema["minItems"] <= len(value) <= schema["maxItems"]:
            errors.append(f"{path}: {len(value)} items")
        if schema.get("uniqueItems") and len(set(value)) != len(value):
            errors.append(f"{path}: duplicate items")
        for index, item in enumerate(value):
            errors += schema_errors(item, schema["items"], root, f"{path}[{index}]")
    if kind == "object":
        errors += [f"{path}: missing {key}" for key in schema.get("required", []) if key not in value]
        for key, item in value.items():
            if key in schema["properties"]:
                errors += schema_errors(item, schema["properties"][key], root, f"{path}/{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unknown {key}")
    return errors


def params_document(**overrides: Any) -> dict:
    return {"/**": {"ros__parameters": {**parameter_docs.defaults(), **overrides}}}


@pytest.mark.parametrize("path", sorted(parameter_docs.generated(ROOT)), ids=lambda p: p.name)
def test_committed_file_equals_generated(path):
    expected = parameter_docs.generated(ROOT)[path]
    assert path.is_file() and path.read_text() == expected, (
        f"{path.relative_to(ROOT)} is stale: run `{parameter_docs.WRITE_COMMAND}`")


def test_shipped_params_file_equals_declared_defaults():
    values = yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"]
    assert list(values) == [spec.name for spec in NODE_PARAMS]
    for spec in NODE_PARAMS:
        assert values[spec.name] == spec.default and type(values[spec.name]) is type(spec.default), spec.name
    assert values["camera_image_topics"][1] == "CAM_FRONT_RIGHT/image_raw"
    assert values["lidar_topic"] == "lidar/points" and values["diagnostics_topic"] == "diagnostics"
    assert validate(values)["sync_slop_s"] == 0.02


def test_schema_accepts_the_defaults_and_describes_every_parameter():
    schema = json.loads(SCHEMA.read_text())
    node = schema["definitions"]["bev_perception_node"]["properties"]
    assert list(node) == [spec.name for spec in NODE_PARAMS]
    ros_parameters = schema["properties"]["/**"]["properties"]["ros__parameters"]
    assert ros_parameters == {"$ref": "#/definitions/bev_perception_node"}
    assert node["sync_slop_s"] == {"type": "number", "description": "max stamp spread of one camera set",
                                   "default": 0.02, "minimum": 0.0, "maximum": 0.1}
    assert node["camera_info_topics"]["minItems"] == node["camera_info_topics"]["maxItems"] == 6
    assert node["precision"]["enum"] == ["int8", "fp32"]
    assert all("resolves in the node's namespace" in node[name]["description"]
               for name in PARAMS_BY_NAME if name.endswith(("_topic", "_topics")))
    assert schema_errors(yaml.safe_load(CONFIG.read_text()), schema, schema) == []


@pytest.mark.parametrize("overrides", [
    {"sync_slop_s": 0.5},
    {"max_detections": 0},
    {"max_detections": 1.5},
    {"publish_markers": 1},
    {"backend": "cuda"},
    {"lidar_topic": "lidar//points"},
    {"odom_topic": ""},
    {"camera_names": ["A", "B"]},
    {"camera_image_topics": ["cam/image_raw"] * 6},
    {"camera_info_topics": [f"{name}/camera_info" for name in DEFAULT_CAMERA_NAMES[:5]]},
    {"lidar_top": "/x"},
])
def test_schema_and_validate_both_reject(overrides):
    schema = json.loads(SCHEMA.read_text())
    assert schema_errors(params_document(**overrides), schema, schema)
    with pytest.raises(ConfigError, match=next(iter(overrides))):
        validate(overrides)


@pytest.mark.parametrize("topic", ["/lidar/points", "~/points", "sensors/lidar_top", "_x/y2"])
def test_absolute_private_and_relative_topics_are_accepted(topic):
    schema = json.loads(SCHEMA.read_text())
    assert schema_errors(params_document(lidar_topic=topic), schema, schema) == []
    assert validate({"lidar_topic": topic})["lidar_topic"] == topic


@pytest.mark.parametrize("values, name", [
    ({"sync_slop_s": -0.01}, "sync_slop_s"),
    ({"score_threshold": 1.5}, "score_threshold"),
    ({"precision": "int4"}, "precision"),
    ({"camera_names": ["A", "B"]}, "camera_names"),
    ({"camera_names": ["A", "A", "B", "C", "D", "E"]}, "camera_names"),
    ({"camera_image_topics": ["a", "b", "c", "d", "e"]}, "camera_image_topics"),
    ({"camera_image_topics": ["a", "b", "c", "d", "e", "a"]}, "camera_image_topics"),
    ({"camera_info_topics": ["a", "b", "c", "d", "e", ""]}, "camera_info_topics"),
    ({"camera_info_topics": ["a", "b", "c", "d", "e", "f/"]}, "camera_info_topics"),
    ({"tf_static_topic": "1tf"}, "tf_static_topic"),
    ({"diagnostics_topic": "diag nostics"}, "diagnostics_topic"),
    ({"max_gap_s": "1"}, "max_gap_s"),
    ({"lidar_top": "/x"}, "lidar_top"),
])
def test_invalid_values_name_the_parameter(values, name):
    with pytest.raises(ConfigError, match=name):
        validate(values)


def test_integers_are_accepted_for_float_parameters():
    assert validate({"max_gap_s": 2})["max_gap_s"] == 2.0
    assert isinstance(validate({"max_gap_s": 2})["max_gap_s"], float)


@pytest.mark.parametrize("name, namespace, resolved", [
    ("lidar/points", "/", "/lidar/points"),
    ("diagnostics", "/", "/diagnostics"),
    ("lidar/points", "/car1", "/car1/lidar/points"),
    ("CAM_FRONT/image_raw", "/car1/", "/car1/CAM_FRONT/image_raw"),
    ("/odom", "/car1", "/odom"),
    ("~/markers", "/car1", "/car1/bev_perception_node/markers"),
])
def test_topic_names_resolve_in_the_namespace(name, namespace, resolved):
    assert resolve_topic(name, namespace) == resolved


def test_check_reports_stale_files_and_write_regenerates(tmp_path, capsys):
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    assert parameter_docs.main(["--check", "--root", str(tmp_path)]) == 1
    assert "stale: config/bev_perception.param.yaml" in capsys.readouterr().err
    assert parameter_docs.main(["--write", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "README.md").read_text() == (ROOT / "README.md").read_text()
    assert parameter_docs.main(["--check", "--root", str(tmp_path)]) == 0
    (tmp_path / "schema" / "bev_perception.schema.json").write_text("{}\n")
    assert parameter_docs.stale(tmp_path) == [tmp_path / "schema" / "bev_perception.schema.json"]


def test_readme_without_markers_is_an_error():
    with pytest.raises(ValueError, match="parameters:begin"):
        parameter_docs.with_table("### Parameters\n| name |\n")
