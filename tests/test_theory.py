"""Tests of the theory probes (metricattn.theory): seeded, CPU, a few seconds each."""

from __future__ import annotations

import numpy as np
import pytest

from metricattn.theory import depth as depth_lib
from metricattn.theory import nearest as nl
from metricattn.theory import operator as op
from metricattn.theory.manifolds import Circle, Sphere


def test_samples_follow_the_density():
  """E[cos theta] = a/2 on the circle, E[z] = a/3 on the sphere (p = 1 + a cos / 1 + a z)."""
  c, s = Circle(a=0.5), Sphere(a=0.5)
  assert abs(c.sample(100_000, 0)[:, 0].mean() - 0.25) < 0.01
  assert abs(s.sample(100_000, 0)[:, 2].mean() - 0.5 / 3) < 0.01
  np.testing.assert_allclose(np.linalg.norm(s.sample(100, 1), axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("manifold", [Circle(), Sphere()], ids=["circle", "sphere"])
def test_analytic_operator_matches_finite_differences(manifold):
  """L H from the closed form against central differences of p^-2 div(p^2 grad H)."""
  x = manifold.sample(500, 3)
  if manifold.name == "sphere":
    x = x[np.abs(x[:, 2]) < 0.95]                       # polar coordinates are singular there
  exact, fd = manifold.operator(x), manifold.operator_fd(x, h=1e-3)
  assert np.max(np.abs(exact - fd)) < 1e-4 * np.max(np.abs(exact))


@pytest.mark.parametrize("manifold,eps", [(Circle(), 2.0 ** -10), (Sphere(), 2.0 ** -8)],
                         ids=["circle", "sphere"])
def test_population_limit_has_unit_laplacian_and_double_drift(manifold, eps):
  """N = infinity: (S H - H)/(eps/2) -> Delta H + 2 <grad log p, grad H>, error O(eps)."""
  x = manifold.sample(200, 5)
  lh = manifold.operator(x)
  small = op.population_estimate(manifold, x, eps)
  alpha, beta = op.fit_constants(manifold, x, small)
  assert abs(alpha - 1.0) < 0.01 and abs(beta - 2.0) < 0.03
  err_small = op.relative_error(small, lh)
  err_big = op.relative_error(op.population_estimate(manifold, x, 4 * eps), lh)
  assert 3.0 < err_big / err_small < 5.0                # bias linear in eps


def test_blockwise_step_matches_dense_float64():
  """The blockwise l2_attention step (with a padded last block) equals the dense formula."""
  man = Circle()
  x = man.sample(300, 2)
  h = man.functions(x)
  eps = 0.01
  d2 = np.sum((x[:, None] - x[None]) ** 2, axis=-1)
  k = np.exp(-(d2 - d2.min(1, keepdims=True)) / (2 * eps))
  dense = (k @ h) / k.sum(1, keepdims=True)
  np.testing.assert_allclose(op.attention_step(x, h, eps, block=64), dense, atol=2e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_circle_error_shrinks_with_n_at_fixed_eps(seed):
  """eps = 2^-6 fixed: the error at N = 6000 is well below the error at N = 300."""
  man, eps = Circle(), 2.0 ** -6
  x = man.sample(6000, seed)
  h, lh = man.functions(x), man.operator(x)
  err = {n: op.relative_error(op.diffusion_estimate(x[:n], h[:n], eps), lh[:n])
         for n in (300, 6000)}
  assert err[6000] < 0.5 * err[300]


def test_nearest_point_known_rotation():
  """A = c R: argmin_y -x^T A y over the circle/sphere is R^T x, from formula and samples."""
  x2 = Circle().sample(400, 0)
  a2 = 2.0 * nl.rotation2(np.pi / 3)
  np.testing.assert_allclose(nl.nearest_point(a2, x2), x2 @ nl.rotation2(-np.pi / 3).T,
                             atol=1e-12)
  r3 = nl.rotation([0.0, 0.0, 1.0], np.pi / 2)            # z-axis quarter turn
  x3 = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
  np.testing.assert_allclose(nl.nearest_point(3.0 * r3, x3),
                             [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], atol=1e-12)
  y = Sphere().sample(20_000, 1)
  x = Sphere().sample(50, 2)
  got = nl.sample_nearest_point(3.0 * r3, x, y)
  assert np.max(nl.angle_deg(got, x @ r3)) < 5.0


def test_dot_step_moves_to_nearest_point_l2_stays():
  """Small eps: the dot-product step lands near n(x) = R^T x, 60 degrees away; L2 stays at x."""
  x = Circle().sample(2000, 4)
  d = nl.displacement(2.0 * nl.rotation2(np.pi / 3), x, eps=1 / 32)
  assert abs(d["x_to_n"] - 60.0) < 1e-6
  assert d["dot_to_n"] < 3.0 and d["dot_to_x"] > 55.0
  assert d["l2_to_x"] < 3.0 and d["l2_to_n"] > 55.0


def test_dot_equals_l2_for_scaled_identity_on_sphere():
  """On the unit sphere x.(2y)/(2 eps) = -||x - y||^2/(2 eps) + const: the two steps agree."""
  x = Sphere().sample(500, 6)
  np.testing.assert_allclose(nl.dot_step(2.0 * np.eye(3), x, 0.1), nl.l2_step(x, 0.1),
                             atol=1e-5)


def test_depth_softmax_collapses_and_l2_keeps_planted_clusters():
  """Without skips, random softmax layers collapse to rank 1; l2 layers with scale 1 settle
  on the 6 planted blobs, with one eigenvalue of S near 1 per cluster."""
  x = depth_lib.blob_data(120, 16, seed=0)
  soft = depth_lib.run_depth(x, "softmax", depth=6, seed=100, scale=None)
  assert soft.rank[-1] == 1 and soft.clusters[-1] == 1
  l2 = depth_lib.run_depth(x, "l2", depth=6, seed=100, scale=1.0)
  assert l2.clusters[-1] == 6 and l2.near_one[-1] == 6 and l2.rank[-1] == 6
