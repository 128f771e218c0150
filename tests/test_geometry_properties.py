"""Property tests (hypothesis) of the pose arithmetic behind the built-in modalities."""

import numpy as np
import quaternion
from astra_experts.camera import CameraSE3
from astra_experts.geometry import (
    make_pose,
    quat_wxyz_to_rotmat,
    rotmat_to_rotvec,
    rotvec_to_rotmat,
    wxyz_to_xyzw,
    xyzw_to_wxyz,
)
from astra_experts.vehicle import VehiclePose
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

finite = st.floats(-3, 3, allow_nan=False, allow_infinity=False)
rotvecs = arrays(np.float64, (6, 3), elements=finite)
translations = arrays(np.float64, (6, 3), elements=st.floats(-50, 50, allow_nan=False))


@settings(max_examples=40, deadline=None)
@given(rotvecs, translations)
def test_camera_relative_poses_compose_back_to_the_trajectory(rv, t):
    poses = make_pose(rotvec_to_rotmat(rv), t)
    aligned = CameraSE3().align(poses, 1)
    rebuilt = CameraSE3.integrate(aligned.actions.astype(np.float64), poses[0])
    assert np.allclose(rebuilt, poses, atol=1e-3 * (1 + np.abs(t).max()))


@settings(max_examples=40, deadline=None)
@given(rotvecs, translations)
def test_vehicle_relative_poses_compose_back_to_the_trajectory(rv, t):
    q = quaternion.as_float_array(quaternion.from_rotation_vector(rv))  # (w, x, y, z)
    aligned = VehiclePose().align({"translation": t, "rotation": q}, 1)
    rebuilt = VehiclePose.integrate(aligned.actions.astype(np.float64), make_pose(quat_wxyz_to_rotmat(q[0]), t[0]))
    assert np.allclose(rebuilt, make_pose(quat_wxyz_to_rotmat(q), t), atol=1e-3 * (1 + np.abs(t).max()))


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (4,), elements=st.floats(-1, 1, allow_nan=False)).filter(lambda q: np.linalg.norm(q) > 0.1))
def test_quaternion_order_conversions_round_trip(q):
    assert np.array_equal(xyzw_to_wxyz(wxyz_to_xyzw(q)), q)
    assert np.array_equal(wxyz_to_xyzw(xyzw_to_wxyz(q)), q)
    # same rotation whichever library reads it
    ref = quaternion.as_rotation_matrix(quaternion.from_float_array(q / np.linalg.norm(q)))
    assert np.allclose(quat_wxyz_to_rotmat(q), ref, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, (3,), elements=st.floats(-1, 1, allow_nan=False)).filter(lambda a: np.linalg.norm(a) > 0.1),
    st.floats(0, 1e-4),
)
def test_rotations_near_pi_stay_finite_and_correct(axis, gap):
    axis = axis / np.linalg.norm(axis)
    angle = np.pi - gap
    r = rotvec_to_rotmat(axis * angle)
    v = rotmat_to_rotvec(r)
    assert np.isfinite(v).all()
    assert abs(np.linalg.norm(v) - angle) < 1e-5
    assert np.allclose(rotvec_to_rotmat(v), r, atol=1e-6)
