"""The attention layer: kinds, tied projections, metric/l2 nesting, softmax/jax match."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from metricattn.errors import UserError
from metricattn.attention import Attention


def layer(kind, **kw):
  args = dict(kind=kind, num_heads=2, qk_features=8, d_mlp=6, v_features=8, out_features=5)
  args.update(kw)
  return Attention(6, rngs=nnx.Rngs(0), **args)


def x_and_mask(n=7):
  x = jax.random.normal(jax.random.key(1), (3, n, 6))
  mask = jax.random.bernoulli(jax.random.key(2), 0.8, (3, 1, n, n)) | jnp.eye(n, dtype=bool)
  return x, mask


def test_metric_with_zero_mlp_output_equals_l2():
  x, mask = x_and_mask()
  metric, l2 = layer("metric"), layer("l2")
  for name in ("q_proj", "v_proj", "out_proj"):  # same P, values and output as the l2 layer
    setattr(metric, name, getattr(l2, name))
  metric.k_proj = metric.q_proj
  assert not np.allclose(metric(x, mask=mask), l2(x, mask=mask))  # g nonlinear by default
  metric.g.out.kernel[...] = jnp.zeros_like(metric.g.out.kernel[...])
  metric.g.out.bias[...] = jnp.zeros_like(metric.g.out.bias[...])
  np.testing.assert_array_equal(metric(x, mask=mask), l2(x, mask=mask))


def test_softmax_matches_jax_dot_product_attention():
  x, mask = x_and_mask()
  m = layer("softmax", v_features=8, out_features=None)
  q, k, v = m.queries(x), m.keys(x), m.values(x)
  ref = jax.nn.dot_product_attention(q, k, v, mask=mask).reshape(3, 7, 8)
  np.testing.assert_allclose(m(x, mask=mask), ref, atol=1e-6)


def test_l2_matches_explicit_distance_of_tied_projection():
  x, _ = x_and_mask()
  m = layer("l2", num_heads=1, out_features=None)
  z = m.q_proj(x)
  d2 = jnp.sum((z[:, :, None] - z[:, None]) ** 2, -1)
  w = jax.nn.softmax(-d2 / jnp.sqrt(8.0), axis=-1)
  np.testing.assert_allclose(m(x), jnp.einsum("bqk,bkd->bqd", w, m.v_proj(x)), atol=1e-5)


def test_tied_and_separate_projections():
  count = lambda m: sum(a.size for a in jax.tree.leaves(nnx.state(m, nnx.Param)))
  p = 6 * 8 + 8  # one projection, kernel + bias
  assert count(layer("softmax")) - count(layer("l2")) == p  # l2 self-attention ties q and k
  assert count(layer("l2", cross=True)) == count(layer("softmax"))  # cross: its own P per side
  mlp = 8 * 6 + 6 + 6 * 8 + 8
  assert count(layer("metric")) - count(layer("l2")) == mlp
  assert count(layer("metric", cross=True)) - count(layer("l2", cross=True)) == mlp  # g shared
  m = layer("l2")
  assert m.q_proj is m.k_proj


def test_cross_attention_shapes():
  m = layer("metric", cross=True, kv_features=4)
  x, y = jnp.ones((2, 3, 6)), jnp.ones((2, 5, 4))
  assert m(x, y).shape == (2, 3, 5)


def test_no_value_projection_propagates_features():
  """H_new = S H_old: with no value/output projection rows of S average the inputs."""
  m = layer("l2", v_features=None, out_features=None)
  x, _ = x_and_mask()
  out = m(x)
  assert out.shape == x.shape
  # Each output is a convex combination of the inputs: inside their coordinate-wise range.
  assert np.all(out <= x.max(1, keepdims=True) + 1e-6)
  assert np.all(out >= x.min(1, keepdims=True) - 1e-6)


def test_unknown_kind_names_the_allowed_kinds():
  with pytest.raises(UserError, match="unknown attention kind 'dot'; allowed: softmax, l2, metric"):
    layer("dot")


def test_heads_must_divide_width():
  with pytest.raises(UserError, match="does not divide into 3 heads"):
    layer("l2", num_heads=3)


def kim_l2_mha(x, wq, wv=None, bv=None, wo=None, bo=None, heads=1, mask=None):
  """Kim, Papamakarios & Mnih (2021), L2-MHA read literally, float64 NumPy, one sequence
  x [N, D]: P_h,ij ∝ exp(-||x_i W_Q,h - x_j W_Q,h||^2 / sqrt(D/H)), A_h = W_Q,h W_Q,h^T /
  sqrt(D/H), f_h = P_h X A_h W_V,h; F = [f_1, ..., f_H] W_O. Without W_V the heads' P_h X A_h
  are averaged (the layer's rule without a value projection)."""
  x, wq = np.float64(x), np.float64(wq)
  dh = wq.shape[1] // heads
  outs = []
  for h in range(heads):
    w = wq[:, h * dh:(h + 1) * dh]
    z = x @ w
    logits = -((z[:, None] - z[None]) ** 2).sum(-1) / np.sqrt(dh)
    if mask is not None:
      logits = np.where(mask, logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    f = p @ x @ (w @ w.T / np.sqrt(dh))
    if wv is not None:
      dv = wv.shape[1] // heads
      f = f @ np.float64(wv)[:, h * dv:(h + 1) * dv] + np.float64(bv)[h * dv:(h + 1) * dv]
    outs.append(f)
  if wv is None:
    return np.mean(outs, axis=0)
  out = np.concatenate(outs, -1)
  return out if wo is None else out @ np.float64(wo) + np.float64(bo)


def test_lipschitz_value_map_is_kims_l2_mha():
  x, mask = x_and_mask()
  m = layer("l2", value_map="lipschitz", qk_features=6, v_features=6, out_features=6)
  got = np.asarray(m(x, mask=mask))
  for b in range(3):
    ref = kim_l2_mha(x[b], m.q_proj.kernel[...], m.v_proj.kernel[...], m.v_proj.bias[...],
                     m.out_proj.kernel[...], m.out_proj.bias[...], heads=2, mask=mask[b, 0])
    np.testing.assert_allclose(got[b], ref, rtol=2e-5, atol=2e-5)
  # The query projection's bias cancels in the distance and is not in A_h.
  m.q_proj.bias[...] = m.q_proj.bias[...] + 3.0
  np.testing.assert_allclose(m(x, mask=mask), got, rtol=1e-4, atol=1e-4)
  # Not the linear value map: the same weights give another output.
  m.value_map = "linear"
  assert not np.allclose(m(x, mask=mask), got, atol=1e-3)


def test_lipschitz_value_map_without_value_projection_is_p_x_a():
  x, _ = x_and_mask()
  m = layer("l2", value_map="lipschitz", v_features=None, out_features=None)  # the IPN's
  got = np.asarray(m(x))
  assert got.shape == (3, 7, 6)
  for b in range(3):
    np.testing.assert_allclose(got[b], kim_l2_mha(x[b], m.q_proj.kernel[...], heads=2),
                               rtol=2e-5, atol=2e-5)


def test_lipschitz_value_map_only_for_l2_self_attention():
  for kw in (dict(kind="metric"), dict(kind="softmax"), dict(kind="l2", cross=True)):
    with pytest.raises(UserError, match="value_map=lipschitz needs l2 self-attention"):
      layer(value_map="lipschitz", **kw)
  with pytest.raises(UserError, match="unknown value map 'affine'; allowed: linear, lipschitz"):
    layer("l2", value_map="affine")
