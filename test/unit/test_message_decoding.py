"""Message decoders: one typed error with its own cause per fault, never anything else."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bev_quant_ros.errors import InvalidMessageError
from bev_quant_ros.ros.message_decoding import (
    camera_info_to_intrinsics,
    compressed_to_rgb,
    image_to_rgb,
    odometry_to_pose,
    pointcloud_to_points,
)
from bev_quant_ros.ros.runtime_stats import LogThrottle

FLOAT32, FLOAT64, INT16, INT32 = 7, 8, 3, 5


def _field(name: str, offset: int, datatype: int = FLOAT32, count: int = 1) -> SimpleNamespace:
    return SimpleNamespace(name=name, offset=offset, datatype=datatype, count=count)


def _cloud(points: np.ndarray, *, dtype: str = "<f4", datatype: int = FLOAT32, fields=("x", "y", "z"),
           height: int = 1, row_pad: int = 0, bigendian: bool = False) -> SimpleNamespace:
    """A PointCloud2-shaped message of ``points`` [N, len(fields)] in ``dtype``."""
    points = np.asarray(points)
    item = np.dtype(dtype).itemsize
    width = len(points) // height
    rows = points.astype(dtype).reshape(height, width * len(fields)).view(np.uint8)
    rows = np.concatenate([rows, np.zeros((height, row_pad), np.uint8)], axis=1)
    return SimpleNamespace(fields=[_field(n, i * item, datatype) for i, n in enumerate(fields)],
                           width=width, height=height, point_step=item * len(fields),
                           row_step=width * item * len(fields) + row_pad, is_bigendian=bigendian,
                           data=rows.tobytes())


def _cause(call, *args) -> str:
    with pytest.raises(InvalidMessageError) as info:
        call(*args)
    return info.value.cause


def test_each_point_cloud_fault_has_its_own_cause():
    good = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert _cause(pointcloud_to_points, _cloud(good[:, :2], fields=("x", "y"))) == "missing_z_field"
    assert _cause(pointcloud_to_points, _cloud(good, dtype="<i2", datatype=INT16)) == "non_float_coordinates"
    assert _cause(pointcloud_to_points, _cloud(good, dtype="<i4", datatype=INT32)) == "non_float_coordinates"
    truncated = _cloud(good)
    truncated.data = truncated.data[:-4]
    assert _cause(pointcloud_to_points, truncated) == "truncated"
    bad_step = _cloud(good)
    bad_step.point_step = 0
    assert _cause(pointcloud_to_points, bad_step) == "bad_point_step"
    assert _cause(pointcloud_to_points, _cloud(np.zeros((0, 3), np.float32))) == "empty_cloud"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no bare numpy RuntimeWarning may reach stderr
        nan_only = np.full((4, 3), np.nan, np.float32)
        nan_only[0] = [np.inf, -np.inf, 0]
        assert _cause(pointcloud_to_points, _cloud(nan_only)) == "no_finite_points"


def test_float64_big_endian_and_padded_rows_decode_to_the_same_points():
    points = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    reference = pointcloud_to_points(_cloud(points))
    np.testing.assert_array_equal(reference[:, :3], points)
    assert np.all(reference[:, 3:] == 0)  # no intensity / t fields: zeros
    for variant in (_cloud(points, dtype="<f8", datatype=FLOAT64), _cloud(points, dtype=">f4", bigendian=True),
                    _cloud(points, height=2, row_pad=8)):
        np.testing.assert_array_equal(pointcloud_to_points(variant), reference)


def test_image_faults_have_their_own_causes_and_a_padded_step_decodes():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    padded = np.concatenate([rgb.reshape(2, 9), np.full((2, 3), 255, np.uint8)], axis=1)
    msg = SimpleNamespace(height=2, width=3, encoding="rgb8", step=12, is_bigendian=0, data=padded.tobytes())
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)
    assert _cause(image_to_rgb, SimpleNamespace(**{**vars(msg), "encoding": "yuv422"})) == "unsupported_encoding"
    assert _cause(image_to_rgb, SimpleNamespace(**{**vars(msg), "data": msg.data[:-1]})) == "truncated"
    assert _cause(image_to_rgb, SimpleNamespace(**{**vars(msg), "step": 4})) == "inconsistent_size"
    assert _cause(compressed_to_rgb, SimpleNamespace(format="jpeg", data=b"\xff\xd8 not a jpeg")) == "undecodable"


def test_camera_info_and_odometry_faults():
    header = SimpleNamespace(frame_id="cam")
    assert _cause(camera_info_to_intrinsics, SimpleNamespace(k=[0.0] * 9, header=header)) == "invalid_intrinsics"
    nan_k = [np.nan, 0, 1, 0, 100, 1, 0, 0, 1]
    assert _cause(camera_info_to_intrinsics, SimpleNamespace(k=nan_k, header=header)) == "invalid_intrinsics"
    pose = SimpleNamespace(position=SimpleNamespace(x=0.0, y=0.0, z=0.0),
                           orientation=SimpleNamespace(x=0.0, y=0.0, z=0.0, w=2.0))
    odom = SimpleNamespace(pose=SimpleNamespace(pose=pose))
    assert _cause(odometry_to_pose, odom) == "invalid_pose"


def test_log_throttle_is_per_cause():
    now = [0.0]
    throttle = LogThrottle(5.0, clock=lambda: now[0])
    assert throttle.allow("/lidar/points: missing_z_field")
    assert throttle.allow("/lidar/points: truncated")  # another cause within the period still logs
    assert not throttle.allow("/lidar/points: missing_z_field")
    now[0] = 5.0
    assert throttle.allow("/lidar/points: missing_z_field")


_any_field = st.builds(_field, st.sampled_from(["x", "y", "z", "intensity", "t", "ring"]),
                       st.integers(-4, 40), st.integers(0, 10), st.integers(0, 3))
# x, y, z nearly always present (else every example stops at the first check), plus random extras
_fields = st.tuples(*(st.builds(_field, st.just(name), st.integers(-4, 40), st.sampled_from([7, 7, 8, 2, 5, 9]),
                                st.sampled_from([1, 1, 1, 0, 2])) for name in "xyz"),
                    st.lists(_any_field, max_size=3)).map(lambda t: [*t[:3], *t[3]])


@settings(max_examples=300, deadline=None)
@given(fields=_fields, width=st.integers(-2, 20), height=st.integers(-1, 3), point_step=st.integers(-4, 40),
       row_step=st.integers(-4, 400), bigendian=st.booleans(), data=st.binary(max_size=600))
def test_random_point_clouds_give_points_or_the_typed_error(fields, width, height, point_step, row_step, bigendian,
                                                             data):
    msg = SimpleNamespace(fields=fields, width=width, height=height, point_step=point_step, row_step=row_step,
                          is_bigendian=bigendian, data=data)
    try:
        points = pointcloud_to_points(msg)
    except InvalidMessageError:
        return
    assert points.ndim == 2 and points.shape[1] == 5 and len(points) > 0
    assert np.isfinite(points[:, :3]).all()


@settings(max_examples=300, deadline=None)
@given(encoding=st.sampled_from(["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422", ""]),
       width=st.integers(-2, 8), height=st.integers(-2, 8), step=st.integers(-4, 40), data=st.binary(max_size=400))
def test_random_images_give_rgb_or_the_typed_error(encoding, width, height, step, data):
    msg = SimpleNamespace(height=height, width=width, encoding=encoding, step=step, is_bigendian=0, data=data)
    try:
        image = image_to_rgb(msg)
    except InvalidMessageError:
        return
    assert image.shape == (height, width, 3) and image.dtype == np.uint8


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300), fmt=st.sampled_from(["jpeg", "png", ""]))
def test_random_compressed_bytes_give_rgb_or_the_typed_error(data, fmt):
    try:
        image = compressed_to_rgb(SimpleNamespace(format=fmt, data=data))
    except InvalidMessageError:
        return
    assert image.ndim == 3 and image.shape[2] == 3
