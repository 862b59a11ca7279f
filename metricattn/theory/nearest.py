"""Dot-product attention moves a token toward its "nearest point", not its neighbours (Thms 5-6).

For the pseudo-metric f(x, y) = -x^T A y restricted to the unit sphere (or circle),

    n(x) = argmin_{||y|| = 1} f(x, y) = A^T x / ||A^T x||

since -x^T A y = -(A^T x) . y is least where y is the unit vector along A^T x. One attention
step with the kernel exp(-f / (2 eps)) = exp(x^T A y / (2 eps)) is the dot-product attention
of the query A^T x against the keys y: it averages the samples near n(x), a point that need
not be x (it is x only when A^T x is parallel to x, e.g. A = c I). The metric kernel
exp(-||x - y||^2 / (2 eps)) instead averages the samples near x itself.

Shapes: x, y [n, D] points on the unit sphere of R^D; A [D, D].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from metricattn.attention import dot_product_attention, l2_attention


def nearest_point(a: np.ndarray, x: np.ndarray) -> np.ndarray:
  """Analytic argmin over the unit sphere of -x^T A y: A^T x / ||A^T x||, [n, D]."""
  v = x @ a                                      # row i is (A^T x_i)^T
  return v / np.linalg.norm(v, axis=-1, keepdims=True)


def sample_nearest_point(a: np.ndarray, x: np.ndarray, y: np.ndarray,
                         block: int = 4096) -> np.ndarray:
  """argmin over the samples y_j of -x_i^T A y_j, [n, D]."""
  idx = [np.argmax((x[i:i + block] @ a) @ y.T, axis=1) for i in range(0, len(x), block)]
  return y[np.concatenate(idx)]


@jax.jit
def _dot_step(q: jax.Array, k: jax.Array, scale: jax.Array) -> jax.Array:
  return dot_product_attention(q[None, :, None], k[None, :, None], k[None, :, None],
                               scale=scale)[0, :, 0]


@jax.jit
def _l2_step(q: jax.Array, k: jax.Array, scale: jax.Array) -> jax.Array:
  return l2_attention(q[None, :, None], k[None, :, None], k[None, :, None], scale=scale)[0, :, 0]


def dot_step(a: np.ndarray, x: np.ndarray, eps: float) -> np.ndarray:
  """One dot-product self-attention step on the features x with f = -x^T A y, [n, D].

  Queries A^T x_i, keys and values x_j, logits x_i^T A x_j / (2 eps).
  """
  scale = jnp.float32(1.0 / (2.0 * eps))
  return np.asarray(_dot_step(jnp.asarray(x @ a, jnp.float32), jnp.asarray(x, jnp.float32),
                              scale), np.float64)


def l2_step(x: np.ndarray, eps: float) -> np.ndarray:
  """One metric (L2) self-attention step, kernel exp(-||x_i - x_j||^2 / (2 eps)), [n, D]."""
  scale = jnp.float32(1.0 / (2.0 * eps))
  xs = jnp.asarray(x, jnp.float32)
  return np.asarray(_l2_step(xs, xs, scale), np.float64)


def angle_deg(u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Angle in degrees between the directions of the rows of u and v, [n]."""
  cos = np.sum(u * v, axis=-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
  return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def displacement(a: np.ndarray, x: np.ndarray, eps: float) -> dict[str, float]:
  """Mean displacement of one step of each kernel, for the samples x [n, D].

  Keys: `<kind>_move` mean ||out - x||, `<kind>_to_x` mean angle(out, x) in degrees,
  `<kind>_to_n` mean angle(out, n(x)), for kind in (dot, l2); `x_to_n` mean angle(x, n(x)).
  """
  n = nearest_point(a, x)
  out = {"x_to_n": float(np.mean(angle_deg(x, n)))}
  for kind, y in (("dot", dot_step(a, x, eps)), ("l2", l2_step(x, eps))):
    out[f"{kind}_move"] = float(np.mean(np.linalg.norm(y - x, axis=-1)))
    out[f"{kind}_to_x"] = float(np.mean(angle_deg(y, x)))
    out[f"{kind}_to_n"] = float(np.mean(angle_deg(y, n)))
  return out


def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
  """Rotation matrix about `axis` (R^3) by `angle` radians (Rodrigues), [3, 3]."""
  k = np.asarray(axis, np.float64) / np.linalg.norm(axis)
  kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
  return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def rotation2(angle: float) -> np.ndarray:
  """Rotation of the plane by `angle` radians, [2, 2]."""
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, -s], [s, c]])
