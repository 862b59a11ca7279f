"""Known manifolds with known non-uniform densities and test functions (Theorem 3 probes).

Each manifold provides, for points `x` [n, D] on it (D the ambient dimension):
  sample(n, seed)     i.i.d. points drawn from the density p, [n, D] float64
  density(x)          p(x) (normalised w.r.t. the Riemannian volume), [n]
  functions(x)        test functions H, [n, m]
  operator(x)         analytic  L H = Laplace-Beltrami H + 2 <grad log p, grad H>,  [n, m]
  operator_fd(x, h)   the same operator by central differences of the divergence form
                      L H = p^-2 div(p^2 grad H)  (an independent check of `operator`)
  quadrature(res)     nodes [M, D] and weights [M] with sum_k w_k F(y_k) ~ int F p dV

The Laplace-Beltrami operator is the negative semi-definite one (d^2/dtheta^2 on the circle).
"""

from __future__ import annotations

import dataclasses

import numpy as np


def _circle_points(theta: np.ndarray) -> np.ndarray:
  """theta [n] -> [n, 2]."""
  return np.stack([np.cos(theta), np.sin(theta)], axis=-1)


def _sphere_points(polar: np.ndarray, azim: np.ndarray) -> np.ndarray:
  """polar, azim [...] -> [..., 3]."""
  polar, azim = np.broadcast_arrays(polar, azim)
  s = np.sin(polar)
  return np.stack([s * np.cos(azim), s * np.sin(azim), np.cos(polar)], axis=-1)


@dataclasses.dataclass(frozen=True)
class Circle:
  """Unit circle in R^2 with density p(theta) = (1 + a cos theta) / (2 pi).

  Test functions: cos(k theta), sin(k theta) for k in `modes`.
  """
  a: float = 0.5
  modes: tuple[int, ...] = (1, 2, 3)
  name: str = "circle"
  dim: int = 1
  ambient: int = 2

  @property
  def function_names(self) -> list[str]:
    return [f"{f}({k}t)" for k in self.modes for f in ("cos", "sin")]

  def sample(self, n: int, seed: int) -> np.ndarray:
    """n i.i.d. points from p by rejection from the uniform law, [n, 2]."""
    rng = np.random.default_rng([seed, 1])
    out = np.empty(0)
    while out.size < n:
      theta = rng.uniform(0.0, 2 * np.pi, 2 * n)
      keep = rng.uniform(0.0, 1.0 + self.a, 2 * n) < 1.0 + self.a * np.cos(theta)
      out = np.concatenate([out, theta[keep]])
    return _circle_points(out[:n])

  @staticmethod
  def angle(x: np.ndarray) -> np.ndarray:
    """x [n, 2] -> theta [n]."""
    return np.arctan2(x[:, 1], x[:, 0])

  def density(self, x: np.ndarray) -> np.ndarray:
    return (1.0 + self.a * np.cos(self.angle(x))) / (2 * np.pi)

  def _h(self, theta: np.ndarray) -> np.ndarray:
    """H(theta) [n, m]."""
    return np.stack([f(k * theta) for k in self.modes for f in (np.cos, np.sin)], axis=-1)

  def functions(self, x: np.ndarray) -> np.ndarray:
    return self._h(self.angle(x))

  def operator(self, x: np.ndarray) -> np.ndarray:
    """H'' + 2 (log p)' H', [n, m]."""
    t = self.angle(x)
    cols = []
    dlogp = -self.a * np.sin(t) / (1.0 + self.a * np.cos(t))
    for k in self.modes:
      c, s = np.cos(k * t), np.sin(k * t)
      cols += [-k * k * c + 2 * dlogp * (-k * s), -k * k * s + 2 * dlogp * (k * c)]
    return np.stack(cols, axis=-1)

  def operator_fd(self, x: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """p^-2 d/dtheta (p^2 dH/dtheta) by central differences, [n, m]."""
    t = self.angle(x)
    p2 = lambda u: ((1.0 + self.a * np.cos(u)) ** 2)[:, None]
    hp, h0, hm = self._h(t + h), self._h(t), self._h(t - h)
    flux = p2(t + h / 2) * (hp - h0) - p2(t - h / 2) * (h0 - hm)
    return flux / (h * h * p2(t))

  def quadrature(self, res: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Trapezoid rule in theta (spectrally accurate for periodic integrands)."""
    theta = np.arange(res) * (2 * np.pi / res)
    y = _circle_points(theta)
    return y, self.density(y) * (2 * np.pi / res)


# Spherical harmonics of degree l as harmonic homogeneous polynomials in (x, y, z):
# name, degree, value, ambient gradient.
_HARMONICS = (
    ("z", 1, lambda x, y, z: z, lambda x, y, z: (0 * x, 0 * x, 1 + 0 * x)),
    ("x", 1, lambda x, y, z: x, lambda x, y, z: (1 + 0 * x, 0 * x, 0 * x)),
    ("xz", 2, lambda x, y, z: x * z, lambda x, y, z: (z, 0 * x, x)),
    ("xy", 2, lambda x, y, z: x * y, lambda x, y, z: (y, x, 0 * x)),
    ("3z^2-1", 2, lambda x, y, z: 2 * z * z - x * x - y * y,
     lambda x, y, z: (-2 * x, -2 * y, 4 * z)),
)


@dataclasses.dataclass(frozen=True)
class Sphere:
  """Unit sphere S^2 in R^3 with density p = (1 + a z) / (4 pi), varying with latitude.

  Test functions: the spherical harmonics z, x (l = 1) and xz, xy, 3z^2 - 1 (l = 2), the last
  written as the harmonic polynomial 2z^2 - x^2 - y^2, equal to 3z^2 - 1 on the sphere.
  """
  a: float = 0.5
  name: str = "sphere"
  dim: int = 2
  ambient: int = 3

  @property
  def function_names(self) -> list[str]:
    return [h[0] for h in _HARMONICS]

  def sample(self, n: int, seed: int) -> np.ndarray:
    """n i.i.d. points from p: z by the inverse CDF of (1 + a z)/2 on [-1, 1], azimuth uniform."""
    rng = np.random.default_rng([seed, 2])
    u, azim = rng.uniform(0.0, 1.0, n), rng.uniform(0.0, 2 * np.pi, n)
    # (a/2) z^2 + z + (1 - a/2) - 2u = 0, root in [-1, 1].
    a = self.a
    z = (-1.0 + np.sqrt(1.0 - 2 * a * (1.0 - a / 2 - 2 * u))) / a if a else 2 * u - 1
    return _sphere_points(np.arccos(np.clip(z, -1.0, 1.0)), azim)

  def density(self, x: np.ndarray) -> np.ndarray:
    return (1.0 + self.a * x[..., 2]) / (4 * np.pi)

  def functions(self, x: np.ndarray) -> np.ndarray:
    return np.stack([h[2](*x.T) for h in _HARMONICS], axis=-1)

  def operator(self, x: np.ndarray) -> np.ndarray:
    """-l(l+1) H + 2 <P grad log p, grad H>, P the tangent projection, [n, m]."""
    g = np.zeros_like(x)
    g[:, 2] = self.a / (1.0 + self.a * x[:, 2])            # ambient grad of log p
    g_tan = g - np.sum(g * x, axis=-1, keepdims=True) * x
    cols = []
    for _, deg, fn, grad in _HARMONICS:
      dh = np.stack(grad(*x.T), axis=-1)
      cols.append(-deg * (deg + 1) * fn(*x.T) + 2 * np.sum(g_tan * dh, axis=-1))
    return np.stack(cols, axis=-1)

  def operator_fd(self, x: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """p^-2 div(p^2 grad H) in (polar, azimuth) coordinates by central differences, [n, m].

    Valid away from the poles (the coordinates are singular there).
    """
    polar, azim = np.arccos(np.clip(x[:, 2], -1, 1)), np.arctan2(x[:, 1], x[:, 0])
    hf = lambda t, f: self.functions(_sphere_points(t, f))
    p2 = lambda t: ((1.0 + self.a * np.cos(t)) ** 2)[:, None]
    sn = lambda t: np.sin(t)[:, None]
    h0 = hf(polar, azim)
    d_polar = (sn(polar + h / 2) * p2(polar + h / 2) * (hf(polar + h, azim) - h0)
               - sn(polar - h / 2) * p2(polar - h / 2) * (h0 - hf(polar - h, azim)))
    d_polar /= h * h * sn(polar) * p2(polar)
    d_azim = (hf(polar, azim + h) - 2 * h0 + hf(polar, azim - h)) / (h * h * sn(polar) ** 2)
    return d_polar + d_azim

  def quadrature(self, res: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre in z (res nodes) times the trapezoid rule in azimuth (2 res nodes)."""
    z, wz = np.polynomial.legendre.leggauss(res)
    azim = np.arange(2 * res) * (np.pi / res)
    y = _sphere_points(np.arccos(z)[:, None], azim[None, :]).reshape(-1, 3)
    w = (wz[:, None] * np.full(2 * res, np.pi / res)[None, :]).reshape(-1)
    return y, w * self.density(y)
