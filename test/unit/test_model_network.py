"""Reference network: camera masking in the lift, in-graph warp of the recurrent state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bev_quant_ros.model.network import BEVDetector, base_grid, lift_to_bev, warp_bev
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
