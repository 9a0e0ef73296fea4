"""BevPipeline equals preprocess + ONNX Runtime + decode composed by hand, frame after frame."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest

from bev_quant_ros.errors import InvalidMessageError, ModelContractError
from bev_quant_ros.perception.box_decoding import decode
from bev_quant_ros.perception.geometry import load_rig
from bev_quant_ros.perception.pipeline import BevPipeline, SensorFrame
from bev_quant_ros.perception.preprocess import camera_sampling_grid, ego_motion_affine, lidar_bev, prepare_images
from bev_quant_ros.perception.temporal import ResetReason
from tiny_model import write_contract_model

VELOCITY = np.array([8.0, 0.5, 0.1])  # (vx, vy, yaw rate) for intra-sweep compensation


def sensor_frame(sim_frame, drop_camera: int | None = None) -> SensorFrame:
    images = [None if i == drop_camera else image for i, image in enumerate(sim_frame.images)]
    return SensorFrame(sim_frame.stamp_ns, images, sim_frame.points, sim_frame.lidar_stamp_ns,
                       sim_frame.ego_pose, sim_frame.lidar_ego_pose, VELOCITY)


def by_hand(session, cfg, rig, frames, decode_config):
    """Reference: the contract fed manually, state carried by hand."""
    prev = np.zeros(session.get_inputs()[4].shape, np.float32)
    results = []
    for k, f in enumerate(frames):
        feeds = {
            "images": prepare_images(f.images, cfg),
            "camera_valid": np.ones(6, np.float32),
            "cam_grid": camera_sampling_grid(rig, cfg),
            "lidar_bev": lidar_bev(f.points, rig.T_ego_lidar, f.lidar_ego_pose, f.ego_pose,
                                   (f.stamp_ns - f.lidar_stamp_ns) / 1e9, cfg, ego_velocity_xy_yawrate=VELOCITY),
            "prev_bev": prev,
            "ego_motion": (np.array([[1, 0, 0], [0, 1, 0]], np.float32) if k == 0
                           else ego_motion_affine(frames[k - 1].ego_pose, f.ego_pose, cfg)),
            "prev_valid": np.array([0.0 if k == 0 else 1.0], np.float32),
        }
        heatmap, box_reg, prev = session.run(["heatmap", "box_reg", "bev_state"], feeds)
        results.append(decode(heatmap, box_reg, decode_config))
    return results


def test_pipeline_matches_manual_composition(tiny_model_path, tiny_model_config, day_frames):
    pipeline = BevPipeline.from_model(tiny_model_path, backend="onnxruntime", score_threshold=0.05)
    results = [pipeline.process(sensor_frame(f)) for f in day_frames]
    session = ort.InferenceSession(str(tiny_model_path), providers=["CPUExecutionProvider"])
    expected = by_hand(session, tiny_model_config, load_rig(), day_frames, pipeline.decode_config)
    assert [r.reset_reason for r in results] == [ResetReason.FIRST_FRAME, None, None, None]
    for got, want in zip(results, expected):
        assert len(got.detections) == len(want) > 0
        np.testing.assert_allclose(got.detections.centers, want.centers, atol=1e-5)
        np.testing.assert_allclose(got.detections.scores, want.scores, atol=1e-6)
    assert all(r.lidar_used and r.timings.engine_ms > 0 and r.timings.total_ms >= r.timings.engine_ms
               for r in results)


def test_preparing_ahead_of_inference_changes_nothing(tiny_model_path, day_frames):
    """The node prepares frame N+1 while frame N is in the engine: preparation must not touch the state."""
    sequential = BevPipeline.from_model(tiny_model_path, backend="onnxruntime", score_threshold=0.05)
    expected = [sequential.process(sensor_frame(f)) for f in day_frames]
    overlapped = BevPipeline.from_model(tiny_model_path, backend="onnxruntime", score_threshold=0.05)
    prepared = [overlapped.prepare(sensor_frame(f)) for f in day_frames]  # all prepared before any inference
    got = [overlapped.infer(p) for p in prepared]
    assert [r.reset_reason for r in got] == [r.reset_reason for r in expected]
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a.detections.scores, b.detections.scores)
        np.testing.assert_array_equal(a.detections.centers, b.detections.centers)
    assert all(p.preprocess_ms > 0 for p in prepared)


def test_requested_reset_reproduces_a_fresh_start(tiny_model_path, day_frames):
    pipeline = BevPipeline.from_model(tiny_model_path, backend="onnxruntime", score_threshold=0.05)
    for f in day_frames[:3]:
        pipeline.process(sensor_frame(f))
    pipeline.request_reset()
    after_reset = pipeline.process(sensor_frame(day_frames[3]))
    fresh = BevPipeline.from_model(tiny_model_path, backend="onnxruntime", score_threshold=0.05)
    first = fresh.process(sensor_frame(day_frames[3]))
    assert after_reset.reset_reason is ResetReason.REQUESTED
    np.testing.assert_array_equal(after_reset.detections.scores, first.detections.scores)


def test_missing_camera_is_masked_and_no_sensor_is_an_error(tiny_model_path, day_frames):
    pipeline = BevPipeline.from_model(tiny_model_path, backend="onnxruntime")
    result = pipeline.process(sensor_frame(day_frames[0], drop_camera=3))
    assert result.camera_valid.tolist() == [1, 1, 1, 0, 1, 1]
    with pytest.raises(InvalidMessageError, match="at least one camera image or a lidar sweep") as info:
        pipeline.process(SensorFrame(day_frames[1].stamp_ns, [None] * 6))
    assert info.value.cause == "no_sensor_data"
    images = list(day_frames[1].images)
    images[2] = images[2][:100]  # one camera of another resolution is resized on its own
    assert pipeline.process(SensorFrame(day_frames[1].stamp_ns, images)).camera_valid.tolist() == [1] * 6
    images[2] = images[2][:, :, 0]
    with pytest.raises(InvalidMessageError, match=r"must be \[h, w, 3\] uint8") as info:
        pipeline.process(SensorFrame(day_frames[1].stamp_ns, images))
    assert info.value.cause == "image_not_rgb"


def test_frame_without_lidar_or_pose_runs_without_state(tiny_model_path, day_frames):
    pipeline = BevPipeline.from_model(tiny_model_path, backend="onnxruntime")
    pipeline.process(sensor_frame(day_frames[0]))
    result = pipeline.process(SensorFrame(day_frames[1].stamp_ns, list(day_frames[1].images)))
    assert not result.lidar_used
    assert result.reset_reason is ResetReason.NO_EGO_POSE


def test_frame_without_cameras_runs_lidar_only_with_every_camera_masked(tiny_model_path, day_frames):
    pipeline = BevPipeline.from_model(tiny_model_path, backend="onnxruntime", score_threshold=0.05)
    frame = dataclasses.replace(sensor_frame(day_frames[0]), images=[None] * 6)
    prepared = pipeline.prepare(frame)
    assert prepared.inputs["camera_valid"].tolist() == [0.0] * 6 and not prepared.inputs["images"].any()
    result = pipeline.infer(prepared)
    assert result.lidar_used and len(result.detections) > 0
    # the same frame with cameras gives other detections: the masked cameras really are off
    with_cameras = BevPipeline.from_model(tiny_model_path, backend="onnxruntime", score_threshold=0.05)
    assert not np.array_equal(with_cameras.process(sensor_frame(day_frames[0])).detections.scores,
                              result.detections.scores)


@pytest.fixture(scope="module")
def echo_model_path(tiny_model_config, tmp_path_factory):
    """A graph declaring dt and lidar_valid that echoes them in box_reg's vel_x / vel_y."""
    cfg = dataclasses.replace(tiny_model_config, optional_inputs=("dt", "lidar_valid"))
    return write_contract_model(cfg, tmp_path_factory.mktemp("echo") / "echo.onnx")


def test_model_declaring_dt_and_lidar_valid_gets_their_values(echo_model_path, day_frames):
    pipeline = BevPipeline.from_model(echo_model_path, backend="onnxruntime", score_threshold=0.05)
    frames = [sensor_frame(f) for f in day_frames]
    frames[2] = dataclasses.replace(frames[2], points=None, lidar_stamp_ns=None)  # camera-only frame
    results = [pipeline.process(f) for f in frames]
    for k, r in enumerate(results):
        assert len(r.detections) > 0
        dt = 0.0 if k == 0 else (frames[k].stamp_ns - frames[k - 1].stamp_ns) / 1e9  # 0 on the first frame
        np.testing.assert_allclose(r.detections.velocities[:, 0], dt, rtol=1e-6)
        np.testing.assert_array_equal(r.detections.velocities[:, 1], 0.0 if k == 2 else 1.0)
    assert 0.03 < results[1].detections.velocities[0, 0] < 0.04  # 30 Hz cameras
    pipeline.request_reset()  # after a reset dt is 0 again
    np.testing.assert_array_equal(pipeline.process(sensor_frame(day_frames[3])).detections.velocities[:, 0], 0.0)


def test_v2_graph_gets_no_optional_inputs(tiny_model_path, day_frames):
    pipeline = BevPipeline.from_model(tiny_model_path, backend="onnxruntime")
    assert set(pipeline.prepare(sensor_frame(day_frames[0])).inputs) == {"images", "camera_valid", "cam_grid",
                                                                        "lidar_bev"}


def test_graph_and_config_disagreeing_on_optional_inputs_is_a_contract_error(echo_model_path, tmp_path):
    import onnx
    onnx.save(onnx.load(echo_model_path), tmp_path / "m.onnx")
    (tmp_path / "m.yaml").write_text(echo_model_path.with_suffix(".yaml").read_text().replace(
        "optional: [dt, lidar_valid]", "optional: [dt]"))
    with pytest.raises(ModelContractError, match="optional inputs"):
        BevPipeline.from_model(tmp_path / "m.onnx", backend="onnxruntime")


def test_warmup_leaves_the_recurrent_state_alone(tiny_model_path, day_frames):
    warmed = BevPipeline.from_model(tiny_model_path, backend="onnxruntime", score_threshold=0.05)
    warmed.warmup()
    cold = BevPipeline.from_model(tiny_model_path, backend="onnxruntime", score_threshold=0.05)
    for frame in day_frames[:2]:
        a, b = warmed.process(sensor_frame(frame)), cold.process(sensor_frame(frame))
        assert a.reset_reason == b.reset_reason
        np.testing.assert_array_equal(a.detections.scores, b.detections.scores)
