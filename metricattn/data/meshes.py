"""Procedural human meshes for part segmentation (a stand-in for Maron et al. 2017, 8 labels).

A body is an implicit surface: the smooth union (exponential smooth-min) of capsule and
ellipsoid signed-distance fields along a posed skeleton, plus a little smooth noise, meshed
by marching cubes into one closed, consistently oriented triangle mesh of about 1,000-2,000
vertices. Each face takes the label of the part whose SDF is smallest at the face centroid.
Everything about a body (pose, limb lengths and girths, scale, yaw, grid spacing, noise)
comes from `np.random.default_rng([seed, stream, index])`, so a data set is a pure function
of its seed.

The records of the bodies (normalised positions, faces, labels, HKS features, edges), their
`MeshSet` and the geometry behind them are those of mesh_geometry.py, which the real set
(maron.py) shares. Generated sets are cached in $METRICATTN_DATA/meshes, one .npz per split
named by every setting (`load_split`); a cache file that does not read back whole is moved
aside and generated again (data/cache.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from scipy.special import logsumexp
from skimage.measure import marching_cubes

from metricattn.data.cache import DATA_ENV, data_root  # noqa: F401 (DATA_ENV)
from metricattn.data.cache import CorruptFile, load_guarded, load_npz, save_npz
from metricattn.data.mesh_geometry import (MeshSet, check_features, clean, face_areas, is_closed_manifold,
                                           mesh_record, parallel_map, to_mesh_set)
from metricattn.errors import UserError

LABELS = ("head", "torso", "upper_arm", "forearm", "hand", "thigh", "lower_leg", "foot")
NUM_CLASSES = len(LABELS)
VERSION = 1  # bump when the generator changes: it is part of the cache file name
HEAD, TORSO, UPPER_ARM, FOREARM, HAND, THIGH, LOWER_LEG, FOOT = range(NUM_CLASSES)


@dataclasses.dataclass(frozen=True)
class Settings:
  """Generator settings; all of them name the cache file."""
  spacing: tuple = (0.038, 0.047)  # marching-cubes grid step range, metres (times the body scale)
  noise: float = 0.004             # amplitude of the smooth surface noise, metres
  blend: float = 0.015             # smooth-min radius, metres
  k_eig: int = 64                  # Laplacian eigenpairs for the HKS
  num_times: int = 16              # HKS times, logspace(-2, 0)


@dataclasses.dataclass
class Body:
  """A posed body in its own frame (z up, y forward); world = rotation @ body frame."""
  cap_a: np.ndarray      # [C, 3] capsule ends
  cap_b: np.ndarray      # [C, 3]
  cap_ra: np.ndarray     # [C] radius at a (linearly tapered to rb at b)
  cap_rb: np.ndarray     # [C]
  cap_label: np.ndarray  # [C]
  ell_c: np.ndarray      # [S, 3] ellipsoid centres
  ell_r: np.ndarray      # [S, 3] axis-aligned radii
  ell_label: np.ndarray  # [S]
  rotation: np.ndarray   # [3, 3] yaw about z
  spacing: float         # grid step
  blend: float
  noise_w: np.ndarray    # [M, 3] noise wave vectors
  noise_phase: np.ndarray  # [M]
  noise_amp: float


# ---------------------------------------------------------------- body sampling

def _rot(axis, angle):
  """Rotation matrix about a unit axis (Rodrigues)."""
  x, y, z = axis
  k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
  return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _unit(v):
  return v / np.linalg.norm(v)


def _bend(d, toward, angle):
  """`d` turned by `angle` towards `toward` (both unit vectors)."""
  b = toward - (toward @ d) * d
  b = _unit(b) if np.linalg.norm(b) > 1e-6 else _unit(np.cross(d, [1.0, 0, 0]))
  return np.cos(angle) * d + np.sin(angle) * b


def _limb_dir(side, abduct, flex):
  """Hanging-down direction swung out sideways by `abduct` and forwards by `flex`."""
  return np.array([side * np.sin(abduct), np.cos(abduct) * np.sin(flex), -np.cos(abduct) * np.cos(flex)])


def sample_body(seed: int, index: int, settings: Settings = Settings(), stream: int = 0) -> Body:
  """The body `index` of stream `stream` of seed `seed`."""
  rng = np.random.default_rng([seed, stream, index])
  u = lambda lo, hi: rng.uniform(lo, hi)
  deg = np.pi / 180
  scale = u(0.85, 1.15)
  arm_len, leg_len, girth = u(0.9, 1.1), u(0.9, 1.1), u(0.85, 1.2)
  caps, ells = [], []

  def cap(a, b, ra, rb, label):
    caps.append((a, b, ra * girth, rb * girth, label))

  # torso: pelvis and chest ellipsoids; width and depth vary
  width, depth = u(0.9, 1.15), u(0.85, 1.2)
  hip_z = 0.92 * leg_len
  chest_z = hip_z + 0.36 * u(0.92, 1.08)
  ells.append(((0, 0, hip_z + 0.07), (0.15 * width, 0.1 * depth, 0.13), TORSO))
  ells.append(((0, 0, chest_z), (0.17 * width, 0.11 * depth, 0.22), TORSO))
  top = np.array([0, 0, chest_z + 0.19])
  # neck and head (the neck counts as head)
  neck = _unit(_rot([1.0, 0, 0], -u(-30, 40) * deg) @ _rot([0, 1.0, 0], u(-25, 25) * deg) @ [0, 0, 1.0])
  head_c = top + 0.16 * neck
  cap(top - 0.03 * neck, top + 0.09 * neck, 0.055, 0.05, HEAD)
  hr = u(0.92, 1.08)
  ells.append((tuple(head_c), (0.085 * hr, 0.1 * hr, 0.115 * hr), HEAD))
  for side in (1, -1):
    # arm: shoulder, elbow (bends forwards), wrist
    shoulder = np.array([side * 0.19 * width, 0, chest_z + 0.14])
    d = _limb_dir(side, u(5, 100) * deg, u(-40, 80) * deg)
    elbow = shoulder + 0.29 * arm_len * d
    fwd = _rot(d, side * u(-30, 30) * deg) @ np.array([0, 1.0, 0])
    d2 = _bend(d, fwd, u(0, 130) * deg)
    wrist = elbow + 0.26 * arm_len * d2
    d3 = _bend(d2, fwd, u(-20, 40) * deg)
    cap(shoulder, elbow, 0.052, 0.042, UPPER_ARM)
    cap(elbow, wrist, 0.04, 0.031, FOREARM)
    cap(wrist + 0.03 * d3, wrist + 0.16 * arm_len * d3, 0.04, 0.034, HAND)
    # leg: hip, knee (bends backwards), ankle, foot (forwards)
    hip = np.array([side * 0.095 * width, 0, hip_z])
    d = _limb_dir(side, u(-5, 30) * deg, u(-20, 70) * deg)
    knee = hip + 0.44 * leg_len * d
    d2 = _bend(d, np.array([0, -1.0, 0]), u(0, 110) * deg)
    ankle = knee + 0.42 * leg_len * d2
    toe = _bend(d2, np.array([0, 1.0, 0]), (90 + u(-20, 25)) * deg)
    cap(hip, knee, 0.085, 0.056, THIGH)
    cap(knee, ankle, 0.054, 0.037, LOWER_LEG)
    cap(ankle + 0.03 * d2 - 0.04 * toe, ankle + 0.03 * d2 + 0.17 * leg_len * toe, 0.04, 0.034, FOOT)
  m = 8
  return Body(
      cap_a=scale * np.array([c[0] for c in caps], float), cap_b=scale * np.array([c[1] for c in caps], float),
      cap_ra=scale * np.array([c[2] for c in caps]), cap_rb=scale * np.array([c[3] for c in caps]),
      cap_label=np.array([c[4] for c in caps]),
      ell_c=scale * np.array([e[0] for e in ells], float), ell_r=scale * np.array([e[1] for e in ells], float),
      ell_label=np.array([e[2] for e in ells]),
      rotation=_rot([0, 0, 1.0], u(0, 2 * np.pi)), spacing=scale * u(*settings.spacing),
      blend=scale * settings.blend,
      noise_w=rng.normal(size=(m, 3)) * 2 * np.pi / (0.2 * scale), noise_phase=rng.uniform(0, 2 * np.pi, m),
      noise_amp=scale * settings.noise / np.sqrt(m / 2))


# ---------------------------------------------------------------- fields and meshing

def part_labels(body: Body) -> np.ndarray:
  """Label of each part, in the row order of `part_sdf`."""
  return np.concatenate([body.cap_label, body.ell_label])


def part_sdf(body: Body, points: np.ndarray) -> np.ndarray:
  """Signed distance of world `points` [N, 3] to each part: float32 [P, N] (capsules, then
  ellipsoids; a capsule's radius tapers linearly, the ellipsoid SDF is the usual k0 (k0 - 1) / k1
  approximation)."""
  f32 = lambda x: np.asarray(x, np.float32)
  q = f32(points @ body.rotation).T  # world -> body frame, [3, N]
  a, ab = f32(body.cap_a)[:, :, None], f32(body.cap_b - body.cap_a)[:, :, None]
  aq = [q[i] - a[:, i] for i in range(3)]
  t = np.clip(sum(aq[i] * ab[:, i] for i in range(3)) / (ab[:, :, 0] ** 2).sum(1, keepdims=True), 0, 1)
  dist = np.sqrt(sum((aq[i] - t * ab[:, i]) ** 2 for i in range(3)))
  caps = dist - f32(body.cap_ra)[:, None] - t * f32(body.cap_rb - body.cap_ra)[:, None]
  c, r = f32(body.ell_c)[:, :, None], f32(body.ell_r)[:, :, None]
  p = [(q[i] - c[:, i]) / r[:, i] for i in range(3)]
  k0 = np.sqrt(sum(x * x for x in p))
  k1 = np.sqrt(sum((p[i] / r[:, i]) ** 2 for i in range(3)))
  return np.concatenate([caps, k0 * (k0 - 1) / np.maximum(k1, 1e-12)])


def body_sdf(body: Body, points: np.ndarray) -> np.ndarray:
  """Smooth union of the parts plus smooth noise: [N]."""
  union = -body.blend * logsumexp(-part_sdf(body, points) / body.blend, axis=0)
  q = points @ body.rotation
  return union + body.noise_amp * np.sin(q @ body.noise_w.T + body.noise_phase).sum(1)


def body_mesh(body: Body, max_tries: int = 4):
  """(verts [V, 3] float64 world coords, faces [F, 3] int32, face_labels [F] int32).

  Marching cubes on the body SDF; field values within 5% of a grid step from zero are pushed
  off it, so vertices keep away from grid corners and no face is degenerate. If a mesh is not
  a closed manifold with all 8 labels, the grid is shifted by a fraction of a step and retried."""
  h = body.spacing
  ends = np.concatenate([body.cap_a, body.cap_b, body.ell_c]) @ body.rotation.T
  pad = max(body.cap_ra.max(), body.ell_r.max()) + 3 * h
  lo, hi = ends.min(0) - pad, ends.max(0) + pad
  for attempt in range(max_tries):
    origin = lo - h * attempt / max_tries
    axes = [origin[i] + h * np.arange(int(np.ceil((hi[i] - origin[i]) / h)) + 1) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    field = body_sdf(body, grid.reshape(-1, 3)).reshape(grid.shape[:3])
    near = np.abs(field) < 0.05 * h
    field[near] = np.where(field[near] < 0, -0.05, 0.05) * h
    # "descent" orients these faces outward (positive signed volume; tested)
    verts, faces, _, _ = marching_cubes(field, 0.0, spacing=(h, h, h), gradient_direction="descent")
    verts, faces = clean(verts + origin, faces, 1e-6 * h)
    labels = part_labels(body)[part_sdf(body, verts[faces].mean(1)).argmin(0)]
    if (is_closed_manifold(faces) and face_areas(verts, faces).min() > 1e-9 * h * h
        and len(np.unique(labels)) == NUM_CLASSES):
      return verts, faces.astype(np.int32), labels.astype(np.int32)
  raise RuntimeError(f"no clean mesh after {max_tries} grid shifts")


# ---------------------------------------------------------------- data sets

def _make(args) -> dict:
  seed, stream, index, settings = args
  verts, faces, labels = body_mesh(sample_body(seed, index, settings, stream))
  return mesh_record(verts, faces, labels, settings.k_eig, settings.num_times)


def generate_records(num_bodies: int, seed: int, stream: int = 0, settings: Settings = Settings(),
                     workers: int | None = None) -> list:
  return parallel_map(_make, [(seed, stream, i, settings) for i in range(num_bodies)], workers)


def generate(num_bodies: int, seed: int, features: str = "hks", stream: int = 0,
             settings: Settings = Settings(), workers: int | None = None) -> MeshSet:
  """`num_bodies` bodies of stream `stream` (0 train, 1 test) of `seed`; deterministic."""
  check_features(features)
  return to_mesh_set(generate_records(num_bodies, seed, stream, settings, workers), features)


KEYS = ("verts", "faces", "face_labels", "hks", "receivers", "senders")
COUNTS = {"verts": "verts", "faces": "faces", "face_labels": "faces", "hks": "verts",
          "receivers": "edges", "senders": "edges"}
NUM_KEYS = ("num_verts", "num_faces", "num_edges")


def save_records(path: Path, records) -> None:
  """One .npz: each array concatenated over meshes, with num_verts/num_faces/num_edges [N]."""
  arrays = {k: np.concatenate([r[k] for r in records]) for k in KEYS}
  arrays["num_verts"] = np.array([len(r["verts"]) for r in records])
  arrays["num_faces"] = np.array([len(r["faces"]) for r in records])
  arrays["num_edges"] = np.array([len(r["receivers"]) for r in records])
  save_npz(path, arrays)


def load_records(path: Path, num_bodies: int | None = None) -> list:
  """The records `save_records` wrote, each array read whole; a CorruptFile (or the error of
  the zip or npy reader) when the file is not whole: an array missing, the counts not adding
  up to the arrays' lengths, or not `num_bodies` meshes."""
  z = load_npz(path, KEYS + NUM_KEYS)
  for k in KEYS:
    counts = z[f"num_{COUNTS[k]}"]
    if counts.ndim != 1 or (counts < 0).any() or counts.sum() != len(z[k]):
      raise CorruptFile(f"{k} has {len(z[k])} rows, num_{COUNTS[k]} sums to {counts.sum()}")
  if len({len(z[k]) for k in NUM_KEYS}) != 1 or num_bodies not in (None, len(z["num_verts"])):
    raise CorruptFile(f"counts for {', '.join(str(len(z[k])) for k in NUM_KEYS)} meshes, not {num_bodies}")
  split = {k: np.split(z[k], np.cumsum(z[f"num_{COUNTS[k]}"])[:-1]) for k in KEYS}
  return [dict(zip(KEYS, values)) for values in zip(*(split[k] for k in KEYS))]


def cache_dir() -> Path:
  return data_root() / "meshes"


def cache_path(split: str, num_bodies: int, seed: int, settings: Settings) -> Path:
  s = settings
  name = (f"v{VERSION}-{split}-n{num_bodies}-seed{seed}-h{s.spacing[0]}-{s.spacing[1]}-noise{s.noise}"
          f"-blend{s.blend}-k{s.k_eig}-t{s.num_times}.npz")
  return cache_dir() / name


SPLITS = {"train": 0, "test": 1}


def load_split(split: str, features: str = "hks", seed: int = 0, num_train: int = 380, num_test: int = 20,
               settings: Settings = Settings(), workers: int | None = None) -> MeshSet:
  """The procedural data set's `split` ("train": `num_train` bodies of stream 0, "test":
  `num_test` of stream 1), generated on first use and cached as one .npz per split (a broken
  cache file is moved aside and generated again: data/cache.py)."""
  if split not in SPLITS:
    raise UserError(f"unknown mesh split {split!r}; allowed: {', '.join(SPLITS)}")
  check_features(features)
  n = num_train if split == "train" else num_test
  path = cache_path(split, n, seed, settings)
  records = load_guarded(path, lambda p: load_records(p, n))
  if records is None:
    records = generate_records(n, seed, SPLITS[split], settings, workers)
    save_records(path, records)
  return to_mesh_set(records, features)
