"""vision_msgs (built from interfaces/ or from the distro) round-trips through CDR."""

from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from rclpy.serialization import deserialize_message, serialize_message
from vision_msgs.msg import BoundingBox3D, Detection3D, Detection3DArray, ObjectHypothesis, ObjectHypothesisWithPose


def _detection(class_id: str, score: float, x: float) -> Detection3D:
    hypothesis = ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=class_id, score=score))
    hypothesis.pose.pose.position = Point(x=x, y=-2.0, z=0.9)
    box = BoundingBox3D(center=Pose(position=Point(x=x, y=-2.0, z=0.9),
                                    orientation=Quaternion(z=0.3826834, w=0.9238795)),
                        size=Vector3(x=4.5, y=1.9, z=1.6))
    return Detection3D(results=[hypothesis], bbox=box, id=f"{class_id}-{x:g}")


def test_detection3darray_round_trips_through_cdr():
    msg = Detection3DArray(detections=[_detection("car", 0.875, 12.5), _detection("pedestrian", 0.5, 3.0)])
    msg.header.frame_id = "base_link"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1700000000, 33_000_000
    data = serialize_message(msg)
    back = deserialize_message(data, Detection3DArray)
    assert back == msg
    assert back.header.stamp.nanosec == 33_000_000
    assert [d.results[0].hypothesis.class_id for d in back.detections] == ["car", "pedestrian"]
    assert back.detections[0].bbox.size.x == 4.5
    assert back.detections[0].bbox.center.orientation.z == 0.3826834
    assert len(data) > 200  # two detections with covariance blocks, not an empty message


def test_tfmessage_round_trips_through_cdr():
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    transform = TransformStamped(child_frame_id="CAM_FRONT")
    transform.header.frame_id = "base_link"
    transform.transform.translation.x = 1.7
    msg = TFMessage(transforms=[transform])
    back = deserialize_message(serialize_message(msg), TFMessage)
    assert back == msg
    assert back.transforms[0].transform.translation.x == 1.7
