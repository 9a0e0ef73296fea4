"""Reference network: camera masking in the lift, in-graph warp of the recurrent state."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bev_quant_ros.errors import ConfigError
from bev_quant_ros.model.dataset import compose_ego_motion
from bev_quant_ros.model.network import BEVDetector, base_grid, height_weighted_lift, lift_to_bev, warp_bev
from bev_quant_ros.perception.model_config import example_inputs
from bev_quant_ros.perception.preprocess import canvas_x, ego_motion_affine
from tiny_model import tiny_config

TINY = tiny_config()


def _batched(cfg, seed=0):
    return [torch.from_numpy(v).unsqueeze(0) for v in example_inputs(cfg, seed).values()]


def test_masked_camera_has_no_influence_on_lift_or_outputs():
    torch.manual_seed(0)
    net = BEVDetector(TINY).eval()
    inputs = _batched(TINY)
    inputs[1][0, 2] = 0.0  # camera 2 invalid
    changed = [t.clone() for t in inputs]
    changed[0][0, 2] = torch.rand_like(changed[0][0, 2]) * 255
    feats = torch.randn(1, 6, 4, 8, 16)
    feats_changed = feats.clone()
    feats_changed[0, 2] += 5.0
    with torch.no_grad():
        lifted = lift_to_bev(feats, inputs[2], inputs[1], TINY.Z)
        assert torch.equal(lifted, lift_to_bev(feats_changed, inputs[2], inputs[1], TINY.Z))
        for a, b in zip(net(*inputs), net(*changed)):
            assert torch.equal(a, b)
        # control: with the camera valid the same change does alter the lift
        inputs[1][0, 2] = 1.0
        assert not torch.equal(lift_to_bev(feats, inputs[2], inputs[1], TINY.Z),
                               lift_to_bev(feats_changed, inputs[2], inputs[1], TINY.Z))


@pytest.mark.parametrize("camera", [0, 2, 5])
def test_lift_samples_each_camera_from_its_slot_on_the_canvas(camera):
    # camera c's features are the constant c + 1, so a sample shows which camera it came from
    feats = torch.stack([torch.full((1, 2, 4), float(c + 1)) for c in range(6)]).unsqueeze(0)  # [1,6,1,2,4]
    grid = torch.tensor([[[[float(canvas_x(camera, 0.0)), 0.0], [-2.0, -2.0]]]], dtype=torch.float32)  # [1,1,2,2]
    valid = torch.ones(1, 6)
    lifted = lift_to_bev(feats, grid, valid, 1)
    assert lifted.shape == (1, 1, 1, 2)
    assert lifted[0, 0, 0, 0].item() == pytest.approx(camera + 1)
    assert lifted[0, 0, 0, 1].item() == 0.0  # OUTSIDE_IMAGE: seen by no camera
    valid[0, camera] = 0.0
    assert lift_to_bev(feats, grid, valid, 1)[0, 0, 0, 0].item() == 0.0


def test_warp_grid_equals_torch_affine_grid():
    theta = torch.tensor([[[0.9, -0.2, 0.1], [0.25, 1.1, -0.3]]])
    ours = torch.matmul(base_grid(6, 10), theta.transpose(1, 2)).reshape(1, 6, 10, 2)
    torch.testing.assert_close(ours, F.affine_grid(theta, [1, 1, 6, 10], align_corners=False))


def test_identity_warp_leaves_state_unchanged():
    state = torch.randn(1, 8, 32, 32)
    theta = torch.from_numpy(ego_motion_affine(np.eye(4), np.eye(4), TINY)).unsqueeze(0)
    torch.testing.assert_close(warp_bev(state, theta, base_grid(32, 32)), state, atol=1e-6, rtol=0)


@pytest.mark.parametrize("k", [1, 3])
def test_forward_ego_translation_of_k_cells_shifts_state_k_rows(k):
    n = TINY.Ho  # the state lives on the head grid
    state = torch.randn(1, 8, n, TINY.Wo)
    T_curr = np.eye(4)
    T_curr[0, 3] = k * TINY.cell_x_m * TINY.output_stride  # ego drove k state cells forward
    theta = torch.from_numpy(ego_motion_affine(np.eye(4), T_curr, TINY)).unsqueeze(0)
    warped = warp_bev(state, theta, base_grid(n, TINY.Wo))
    # a static object k cells ahead is now k cells closer: row h shows what was at row h + k
    torch.testing.assert_close(warped[:, :, :n - k], state[:, :, k:], atol=1e-5, rtol=0)
    assert warped[:, :, n - k:].abs().max() == 0.0  # newly uncovered rows are empty


def test_previous_state_counts_only_when_valid():
    torch.manual_seed(0)
    net = BEVDetector(TINY).eval()
    inputs = _batched(TINY)  # prev_valid = 1
    other = [t.clone() for t in inputs]
    other[4] = torch.randn_like(other[4]) * 10
    with torch.no_grad():
        # a valid previous state reaches every output (through the gated temporal update)
        for a, b in zip(net(*inputs), net(*other)):
            assert (a - b).abs().max() > 1e-3
        inputs[6][:] = 0.0
        other[6][:] = 0.0
        for a, b in zip(net(*inputs), net(*other)):
            assert torch.equal(a, b)


# ---- network version 3 ----------------------------------------------------------------------------
TINY_V3 = dataclasses.replace(TINY, network=dataclasses.replace(TINY.network, version=3),
                              optional_inputs=("dt", "lidar_valid"))


def _batched_v3(seed: int = 0) -> list[torch.Tensor]:
    return [torch.from_numpy(v).unsqueeze(0) for v in example_inputs(TINY_V3, seed=seed).values()]


def test_v3_needs_its_optional_inputs_declared():
    with pytest.raises(ConfigError, match="version 3 needs inputs.optional"):
        dataclasses.replace(TINY_V3, optional_inputs=())


def test_v3_aux_camera_head_exists_only_in_training():
    torch.manual_seed(0)
    net = BEVDetector(TINY_V3)
    aux = net.train().forward_logits(*_batched_v3()).aux
    assert aux is not None and aux[0].shape == (1, TINY.K, TINY.Ho, TINY.Wo) and aux[1].shape[1] == TINY.R
    assert net.eval().forward_logits(*_batched_v3()).aux is None
    assert BEVDetector(TINY).train().forward_logits(*_batched(TINY)).aux is None  # v2 has none


def test_v3_dt_changes_the_output_and_only_with_a_valid_state():
    torch.manual_seed(0)
    net = BEVDetector(TINY_V3).eval()
    inputs = _batched_v3()
    slower = [t.clone() for t in inputs]
    slower[7][:] = 3 / 30  # 10 Hz instead of 30 Hz
    with torch.no_grad():
        for a, b in zip(net(*inputs), net(*slower)):
            assert (a - b).abs().max() > 1e-4
        inputs[6][:], slower[6][:] = 0.0, 0.0  # no previous state: dt has nothing to scale
        slower[7][:] = 0.0
        inputs[7][:] = 0.0
        for a, b in zip(net(*inputs), net(*slower)):
            assert torch.equal(a, b)


def test_v3_lidar_raster_has_no_influence_when_lidar_is_not_valid():
    torch.manual_seed(0)
    net = BEVDetector(TINY_V3).eval()
    inputs = _batched_v3()
    other = [t.clone() for t in inputs]
    other[3] = torch.rand_like(other[3]) * 5
    with torch.no_grad():
        assert not torch.equal(net(*inputs)[0], net(*other)[0])
        inputs[8][:], other[8][:] = 0.0, 0.0
        for a, b in zip(net(*inputs), net(*other)):
            assert torch.equal(a, b)


def test_height_weighted_lift_puts_a_pixel_on_the_slice_it_predicts():
    """One camera pixel sampled by every slice: the slice with the dominant logit gets the feature."""
    feats = torch.ones(1, 6, 2, 4, 4)
    logits = torch.zeros(1, 6, 3, 4, 4)
    logits[:, :, 1] = 20.0  # every pixel says: slice 1
    grid = torch.zeros(1, 3 * 2, 2, 2)  # Z=3 slices x 2 rows, 2 columns: every cell samples camera 0's centre
    grid[..., 0] = float(canvas_x(0, 0.0))
    lifted = height_weighted_lift(feats, logits, grid, torch.ones(1, 6), 3).reshape(1, 2, 3, 2, 2)
    assert lifted[:, :, 1].min() > 0.99 and lifted[:, :, [0, 2]].max() < 1e-6


def test_v3_backprop_through_time_reaches_the_first_frame():
    torch.manual_seed(0)
    net = BEVDetector(TINY_V3).train()

    def first_frame_grad(prev_valid: float) -> torch.Tensor:
        first, second = _batched_v3(0), _batched_v3(1)
        first[0].requires_grad_(True)
        first[6][:] = 0.0
        state = net.forward_logits(*first).bev_state
        second[4], second[6][:] = state, prev_valid
        net.forward_logits(*second).heatmap.sum().backward()  # a loss on the second frame only
        return first[0].grad

    assert first_frame_grad(1.0).abs().max() > 0
    assert first_frame_grad(0.0).abs().max() == 0  # control: without the state no path to frame 1


def test_composed_ego_motion_equals_the_motion_between_the_end_frames():
    """Windows at 15 / 10 Hz chain the stored 30 Hz motions."""
    def pose(x: float, y: float, yaw: float) -> np.ndarray:
        T = np.eye(4)
        T[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
        T[:2, 3] = x, y
        return T

    poses = [pose(0, 0, 0), pose(1.0, 0.2, 0.05), pose(2.1, 0.5, 0.12), pose(3.0, 1.1, 0.2)]
    motions = np.stack([ego_motion_affine(poses[i - 1], poses[i], TINY) for i in range(1, 4)])
    np.testing.assert_allclose(compose_ego_motion(motions), ego_motion_affine(poses[0], poses[3], TINY), atol=1e-6)
    assert np.abs(compose_ego_motion(motions[::-1]) - ego_motion_affine(poses[0], poses[3], TINY)).max() > 1e-4


def test_model_eval_feeds_v3_its_optional_inputs_and_scores_every_ablation():
    from bev_quant_ros.model.validate import ABLATIONS, evaluate_checkpoint

    torch.manual_seed(0)
    results = evaluate_checkpoint(BEVDetector(TINY_V3), "day", num_sequences=1, frames_per_sequence=2)
    assert set(results) == set(ABLATIONS) and all(r["frames"] == 2 for r in results.values())
    # camera_only really switches the v3 network to its camera path: different detections, different NDS inputs
    assert results["camera_only"]["per_class"] != results["full"]["per_class"]


@pytest.mark.parametrize(("rate", "dt_s"), [("30hz", 1 / 30), ("15hz", 2 / 30), ("12hz", 1 / 12)])
def test_model_eval_at_a_lower_frame_rate_feeds_the_longer_dt(rate, dt_s):
    from bev_quant_ros.model.validate import evaluate_checkpoint

    fed: list[float] = []

    class Recording(BEVDetector):
        def forward(self, *inputs):
            fed.append(float(inputs[7]))
            return super().forward(*inputs)

    torch.manual_seed(0)
    results = evaluate_checkpoint(Recording(TINY_V3), "day", 1, 3, ("full",), frame_rate=rate)
    assert results["full"]["frames"] == 3
    np.testing.assert_allclose(fed, [0.0, dt_s, dt_s], rtol=1e-6)


def test_rectangular_attention_pool_halves_the_tokens_and_exports(tmp_path):
    """Pruning's halved queries: (rows, cols) pooling; the config round-trips and ONNX matches torch."""
    from bev_quant_ros.model.export import compare_with_torch, export_onnx
    from bev_quant_ros.perception.model_config import model_config_from_dict

    side = TINY.network.attention_pool
    halved = dataclasses.replace(TINY, network=dataclasses.replace(TINY.network, attention_pool=(side, 2 * side)))
    assert model_config_from_dict(halved.to_dict()) == halved
    tokens = {}
    for cfg in (TINY, halved):
        net = BEVDetector(cfg).eval()
        seen = []
        hook = net.attention.qkv.register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out.shape))
        with torch.no_grad():
            net(*_batched(cfg))
        hook.remove()
        tokens[cfg.network.attention_pool] = seen[0][2] * seen[0][3]
    assert tokens[(side, 2 * side)] * 2 == tokens[side]
    torch.manual_seed(0)
    net = BEVDetector(halved).eval()
    path = export_onnx(net, tmp_path / "halved.onnx")
    assert max(compare_with_torch(net, path, example_inputs(halved)).values()) < 1e-4
    with pytest.raises(ConfigError, match="attention_pool"):
        dataclasses.replace(TINY, network=dataclasses.replace(TINY.network, attention_pool=(side, 3)))
