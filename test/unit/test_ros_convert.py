"""msg_decode and ros_convert on real rclpy message classes, including bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from nav_msgs.msg import Odometry
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from vision_msgs.msg import Detection3DArray

from bev_quant_ros.errors import InvalidMessageError
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.perception.geometry import quaternion_to_yaw
from bev_quant_ros.ros.detection_encoding import detection_array_to_boxes
from bev_quant_ros.ros.message_decoding import (
    ScaledImageDecoder,
    camera_info_to_intrinsics,
    compressed_to_rgb,
    image_to_rgb,
    odometry_to_pose,
    pointcloud_to_points,
    stamp_to_ns,
)
from bev_quant_ros.ros.message_encoding import (
    boxes_to_detection_array,
    boxes_to_markers,
    ns_to_stamp,
    points_to_pointcloud,
    rgb_to_image,
)

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (45, 80, 3), dtype=np.uint8)


def test_stamp_round_trip():
    assert stamp_to_ns(ns_to_stamp(1_700_000_000_123_456_789)) == 1_700_000_000_123_456_789


def test_rgb8_image_round_trips_through_cdr():
    msg = deserialize_message(serialize_message(rgb_to_image(RGB, 5, "cam")), Image)
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


@pytest.mark.parametrize("encoding, make", [
    ("bgr8", lambda rgb: rgb[..., ::-1]),
    ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])),
    ("bgra8", lambda rgb: np.dstack([rgb[..., ::-1], np.zeros(rgb.shape[:2], np.uint8)])),
])
def test_other_encodings_convert_to_rgb(encoding, make):
    pixels = np.ascontiguousarray(make(RGB))
    msg = Image(height=45, width=80, encoding=encoding, step=80 * pixels.shape[2], data=pixels.tobytes())
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


def test_padded_rows_are_cropped():
    padded = np.zeros((45, 80 * 3 + 16), np.uint8)
    padded[:, :240] = RGB.reshape(45, 240)
    msg = Image(height=45, width=80, encoding="rgb8", step=256, data=padded.tobytes())
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


@pytest.mark.parametrize("kwargs, cause", [
    (dict(encoding="yuv422", step=240), "unsupported image encoding 'yuv422'"),
    (dict(encoding="rgb8", step=100), "inconsistent"),
    (dict(encoding="rgb8", step=240, truncate=True), "bytes, expected"),
])
def test_bad_images_raise_with_cause(kwargs, cause):
    data = RGB.tobytes()[:-10] if kwargs.pop("truncate", False) else RGB.tobytes()
    with pytest.raises(InvalidMessageError, match=cause):
        image_to_rgb(Image(height=45, width=80, data=data, **kwargs))


def test_jpeg_decodes_to_rgb_and_garbage_raises():
    ok, jpeg = cv2.imencode(".png", cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(compressed_to_rgb(CompressedImage(format="png", data=jpeg.tobytes())), RGB)
    with pytest.raises(InvalidMessageError, match="could not be decoded"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"\xff\xd8not a jpeg"))


def _jpeg(rgb: np.ndarray) -> CompressedImage:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return CompressedImage(format="jpeg", data=data.tobytes())


def test_scaled_decoder_learns_the_largest_reduction_that_covers_the_model_input():
    smooth = cv2.resize(RGB, (800, 448), interpolation=cv2.INTER_CUBIC)  # camera-like 800 x 448
    decoder = ScaledImageDecoder(min_width=176, min_height=96)
    first = decoder.decode(_jpeg(smooth))
    assert first.shape == (448, 800, 3) and decoder.reduction == 4  # 800/4 = 200 >= 176, 448/4 = 112 >= 96
    second = decoder.decode(_jpeg(smooth))
    assert second.shape == (112, 200, 3)
    # same picture as the full decode shrunk to that size (JPEG's scaled IDCT ~ a box filter)
    reference = cv2.resize(first, (200, 112), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert np.abs(second.astype(np.float32) - reference).mean() < 3.0
    # the camera switches to a smaller resolution: that frame is decoded again at full size
    small = decoder.decode(_jpeg(cv2.resize(smooth, (352, 192))))
    assert small.shape == (192, 352, 3) and decoder.reduction == 2
    assert decoder.decode(_jpeg(cv2.resize(smooth, (352, 192)))).shape == (96, 176, 3)


def test_scaled_decoder_starts_from_the_expected_camera_size():
    smooth = cv2.resize(RGB, (800, 448), interpolation=cv2.INTER_CUBIC)
    decoder = ScaledImageDecoder(min_width=176, min_height=96, expected_width=800, expected_height=448)
    assert decoder.decode(_jpeg(smooth)).shape == (112, 200, 3)  # the first frame is not decoded at full size
    # a camera smaller than the rig says is still decoded large enough for the model input
    small = ScaledImageDecoder(min_width=176, min_height=96, expected_width=800, expected_height=448)
    assert small.decode(_jpeg(cv2.resize(smooth, (352, 192)))).shape == (192, 352, 3)
    assert small.reduction == 2


def test_scaled_decoder_never_shrinks_below_the_model_input():
    decoder = ScaledImageDecoder(min_width=176, min_height=96)
    for _ in range(2):
        assert decoder.decode(_jpeg(RGB)).shape == RGB.shape  # 80 x 45 is already smaller
    assert decoder.reduction == 1


def test_pointcloud_round_trip_and_nan_points_dropped():
    points = RNG.normal(size=(100, 5)).astype(np.float32)
    points[3, 0] = np.nan
    msg = deserialize_message(serialize_message(points_to_pointcloud(points, 7, "lidar_top")), PointCloud2)
    back = pointcloud_to_points(msg)
    assert back.shape == (99, 5)
    np.testing.assert_array_equal(back, np.delete(points, 3, axis=0))


def test_pointcloud_with_other_layout_and_without_time_field():
    # x, y, z float64, intensity uint8 at odd offsets, no t field, big-endian
    dtype = np.dtype({"names": ["x", "y", "z", "intensity"], "formats": [">f8", ">f8", ">f8", "u1"],
                      "offsets": [0, 8, 16, 26], "itemsize": 32})
    records = np.zeros(4, dtype)
    records["x"], records["y"], records["z"], records["intensity"] = [1, 2, 3, 4], 5.5, -1.0, [10, 20, 30, 40]
    fields = [PointField(name="x", offset=0, datatype=PointField.FLOAT64, count=1),
              PointField(name="y", offset=8, datatype=PointField.FLOAT64, count=1),
              PointField(name="z", offset=16, datatype=PointField.FLOAT64, count=1),
              PointField(name="intensity", offset=26, datatype=PointField.UINT8, count=1)]
    msg = PointCloud2(height=1, width=4, fields=fields, is_bigendian=True, point_step=32, row_step=128,
                      data=records.tobytes())
    points = pointcloud_to_points(msg)
    np.testing.assert_array_equal(points[:, 0], [1, 2, 3, 4])
    np.testing.assert_array_equal(points[:, 3], [10, 20, 30, 40])
    np.testing.assert_array_equal(points[:, 4], 0.0)


def test_bad_pointclouds_raise_with_cause():
    good = points_to_pointcloud(np.zeros((10, 5), np.float32), 0, "l")
    no_z = points_to_pointcloud(np.zeros((10, 5), np.float32), 0, "l")
    no_z.fields = [f for f in no_z.fields if f.name != "z"]
    with pytest.raises(InvalidMessageError, match="no 'z' field"):
        pointcloud_to_points(no_z)
    good.width = 11  # claims more points than its row_step (and data) holds
    with pytest.raises(InvalidMessageError, match="cannot hold 11 points") as info:
        pointcloud_to_points(good)
    assert info.value.cause == "bad_point_step"


def test_camera_info_and_odometry():
    info = CameraInfo(k=[500.0, 0, 400, 0, 500.0, 225, 0, 0, 1])
    assert camera_info_to_intrinsics(info)[0, 2] == 400
    with pytest.raises(InvalidMessageError, match="no valid intrinsics"):
        camera_info_to_intrinsics(CameraInfo())
    odom = Odometry()
    odom.pose.pose.position.x, odom.pose.pose.orientation.z, odom.pose.pose.orientation.w = 3.0, 0.6, 0.8
    T = odometry_to_pose(odom)
    assert T[0, 3] == 3.0 and np.arctan2(T[1, 0], T[0, 0]) == pytest.approx(2 * np.arctan2(0.6, 0.8))
    odom.pose.pose.orientation.w = 0.0
    with pytest.raises(InvalidMessageError, match="not unit"):
        odometry_to_pose(odom)


def test_boxes_to_detection_array_and_markers():
    boxes = Boxes3D(np.array([[10.0, -2.0, 0.8], [4.0, 3.0, 0.9]]), np.array([[4.5, 1.9, 1.6], [0.7, 0.7, 1.8]]),
                    np.array([0.5, -3.0]), np.array([[8.0, -0.5], [1.2, 0.0]]), ["car", "pedestrian"],
                    np.array([0.9, 0.4]))
    msg = deserialize_message(serialize_message(boxes_to_detection_array(boxes, 1_000_000_033, "base_link")),
                              Detection3DArray)
    assert msg.header.frame_id == "base_link" and stamp_to_ns(msg.header.stamp) == 1_000_000_033
    assert [d.results[0].hypothesis.class_id for d in msg.detections] == ["car", "pedestrian"]
    assert msg.detections[1].results[0].hypothesis.score == pytest.approx(0.4)
    q = msg.detections[1].bbox.center.orientation
    assert quaternion_to_yaw([q.x, q.y, q.z, q.w]) == pytest.approx(-3.0)
    assert msg.detections[0].bbox.size.x == 4.5 and msg.detections[0].bbox.center.position.y == -2.0
    back = detection_array_to_boxes(msg, with_scores=True)  # the evaluation's decoder
    np.testing.assert_allclose(back.velocities, boxes.velocities)
    np.testing.assert_allclose(back.yaws, boxes.yaws)
    np.testing.assert_allclose(back.scores, boxes.scores)
    assert back.class_names == boxes.class_names
    markers = boxes_to_markers(boxes, 5, "base_link")
    assert len(markers.markers) == 3 and markers.markers[2].ns == "pedestrian"
