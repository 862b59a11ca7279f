"""One metric-attention step as a drift-diffusion step (Theorem 3), estimated and measured.

With the kernel k(x, y) = exp(-||x - y||^2 / (2 eps)) and S its row-normalised matrix on
N samples of a density p on a d-dimensional manifold,

    (S H - H) / (eps / 2)  ->  L H = Laplace-Beltrami H + 2 <grad log p, grad H>

as eps -> 0 and N eps^(d/2 + 1) -> infinity. Why the constant is 1 (and 2 for the drift):
in normal coordinates the kernel is a Gaussian of variance eps per direction, so
  int k(x, y) F(y) dV(y) = (2 pi eps)^(d/2) [F + (eps/2) (Delta F + E F) + O(eps^2)],
with E(x) a curvature term (intrinsic and extrinsic) that is the same for every F. Taking
F = H p over F = p, the E terms cancel and
  S H = H + (eps/2) (Delta(H p) - H Delta p) / p + O(eps^2) = H + (eps/2) L H + O(eps^2).
`population_estimate` checks this numerically by quadrature (no sampling noise).

All sampled estimates go through the project's `l2_attention` (float32 logits), one block of
queries at a time against all keys, so N = 50,000 never forms the N x N matrix.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from metricattn.attention import l2_attention


@jax.jit
def _attend_block(q: jax.Array, k: jax.Array, v: jax.Array, scale: jax.Array) -> jax.Array:
  """q [B, D], k [N, D], v [N, m] -> S v [B, m] with S = softmax(-scale ||q - k||^2)."""
  out = l2_attention(q[None, :, None, :], k[None, :, None, :], v[None, :, None, :],
                     scale=scale)
  return out[0, :, 0, :]


def attention_step(x: np.ndarray, values: np.ndarray, eps: float, *,
                   queries: np.ndarray | None = None, block: int = 1024) -> np.ndarray:
  """S H for the kernel exp(-||x_i - x_j||^2 / (2 eps)), blockwise over queries.

  Args:
    x: keys (the samples) [N, D].
    values: H at the samples [N, m].
    eps: kernel bandwidth; the attention scale is 1 / (2 eps).
    queries: query points [Q, D] (default: x itself, i.e. the attention matrix S on x).
    block: queries per block; memory is about 3 * block * N float32.
  Returns:
    [Q, m] float64.
  """
  q = x if queries is None else queries
  n_q = q.shape[0]
  pad = (-n_q) % block if n_q > block else 0
  q32 = np.concatenate([q, np.repeat(q[:1], pad, axis=0)]).astype(np.float32)
  k, v = jnp.asarray(x, jnp.float32), jnp.asarray(values, jnp.float32)
  scale = jnp.float32(1.0 / (2.0 * eps))
  size = min(block, q32.shape[0])
  outs = [np.asarray(_attend_block(jnp.asarray(q32[i:i + size]), k, v, scale))
          for i in range(0, q32.shape[0], size)]
  return np.concatenate(outs)[:n_q].astype(np.float64)


def diffusion_estimate(x: np.ndarray, h: np.ndarray, eps: float, *,
                       queries: slice | None = None, block: int = 1024) -> np.ndarray:
  """(S H - H) / (eps / 2) at the samples x[queries] (default all), [Q, m]."""
  sel = slice(None) if queries is None else queries
  sh = attention_step(x, h, eps, queries=x[sel], block=block)
  return (sh - h[sel]) / (eps / 2)


def population_estimate(manifold, queries: np.ndarray, eps: float, *, res: int | None = None,
                        block: int = 256) -> np.ndarray:
  """The N = infinity limit of `diffusion_estimate`: quadrature against p, in float64.

  ((K_eps (H p) / K_eps p) - H) / (eps / 2) at the query points [Q, D] -> [Q, m].
  """
  y, w = manifold.quadrature() if res is None else manifold.quadrature(res)
  hy = manifold.functions(y)
  hq = manifold.functions(queries)
  out = []
  for i in range(0, queries.shape[0], block):
    qb = queries[i:i + block]
    d2 = np.maximum(2.0 - 2.0 * qb @ y.T, 0.0)              # unit-norm manifolds
    kern = np.exp(-(d2 - d2.min(axis=1, keepdims=True)) / (2 * eps)) * w[None, :]
    out.append((kern @ hy) / kern.sum(axis=1, keepdims=True))
  return (np.concatenate(out) - hq) / (eps / 2)


def relative_error(est: np.ndarray, ref: np.ndarray) -> float:
  """||est - ref||_F / ||ref||_F over points and test functions."""
  return float(np.linalg.norm(est - ref) / np.linalg.norm(ref))


def fit_constants(manifold, x: np.ndarray, est: np.ndarray) -> tuple[float, float]:
  """Least-squares (alpha, beta) in est ~ alpha * Delta H + beta * <grad log p, grad H>.

  Delta H and the drift term are split from the analytic operator with the uniform density
  (a = 0 gives Delta H alone). Theorem 3 with step eps/2 predicts alpha = 1, beta = 2.
  """
  lap = dataclasses.replace(manifold, a=0.0).operator(x)
  drift = (manifold.operator(x) - lap) / 2.0
  design = np.stack([lap.reshape(-1), drift.reshape(-1)], axis=1)
  coef, *_ = np.linalg.lstsq(design, est.reshape(-1), rcond=None)
  return float(coef[0]), float(coef[1])
