"""Triangle-mesh geometry and the per-mesh record shared by the two human-segmentation sources:
the procedural bodies (meshes.py) and the real set of Maron et al. (maron.py).

Geometry: `normalize` (DiffusionNet's centring and unit max radius), `face_areas`,
`is_closed_manifold`, `clean` (merge near vertices, drop degenerate faces, keep the largest
component), the cotangent `laplacian` with lumped mass, the heat kernel signature `hks`,
`mesh_edges` (the graph) and `face_mean` (the fixed face aggregation).

Features follow DiffusionNet: `xyz` are the vertex positions centred on their mean and
scaled to unit max radius; `hks` is the heat kernel signature from the smallest `k_eig`
eigenpairs of the cotangent Laplacian with lumped mass, at `num_times` times
logspace(-2, 0) on the normalised mesh.

A mesh's record (`mesh_record`) is a dict of arrays: verts, faces, face_labels, hks,
receivers, senders. A `MeshSet` holds one list entry per mesh:
  verts[i]        float32 [V, 3]  normalised positions (centred, unit max radius)
  faces[i]        int32 [F, 3]    vertex ids of each triangle (outward orientation); also
                                  the indices for the fixed face aggregation (`face_mean`)
  face_labels[i]  int32 [F]       part label in [0, 8), order `meshes.LABELS`
  features[i]     float32 [V, C]  C = 3 for xyz, `num_times` for hks and hks_noisy,
                                  HKS_SHORT_TIMES for hks_short (`vertex_features`)
  receivers[i], senders[i]  int32 [E]  directed mesh edges, both directions of every edge,
                                  deduplicated, sorted by (receiver, sender)
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import zlib
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import eigsh
from threadpoolctl import threadpool_limits

from metricattn.errors import UserError

FEATURES = ("xyz", "hks", "hks_short", "hks_noisy")
# The variants made from the stored HKS (no regeneration; counts chosen by measurement,
# docs/graph.md "Which features test the graph"): `hks_short` is its first HKS_SHORT_TIMES
# columns (the shortest times), `hks_noisy` adds to each vertex Gaussian noise of HKS_NOISE
# times each column's standard deviation over the mesh's vertices.
HKS_SHORT_TIMES = 3
HKS_NOISE = 1.0


# ---------------------------------------------------------------- geometry

def normalize(verts: np.ndarray) -> np.ndarray:
  """Centred on the mean vertex and scaled to unit max radius (DiffusionNet's normalisation)."""
  v = verts - verts.mean(0)
  return v / np.linalg.norm(v, axis=1).max()


def face_areas(verts, faces):
  v = verts[faces]
  return 0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1)


def is_closed_manifold(faces: np.ndarray) -> bool:
  """True when every directed edge occurs once and its reverse once: each edge is shared by
  exactly two consistently oriented faces (closed, edge-manifold, oriented)."""
  e = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
  key = e[:, 0].astype(np.int64) * (faces.max() + 1) + e[:, 1]
  rev = e[:, 1].astype(np.int64) * (faces.max() + 1) + e[:, 0]
  return len(np.unique(key)) == len(key) and np.array_equal(np.sort(key), np.sort(rev))


def clean(verts, faces, tol):
  """Merges vertices closer than `tol`, drops faces with a repeated vertex, keeps the largest
  connected component and only the vertices it uses."""
  _, inverse = np.unique(np.round(verts / tol).astype(np.int64), axis=0, return_inverse=True)
  inverse = inverse.ravel()
  merged = np.zeros((inverse.max() + 1, 3))
  merged[inverse] = verts
  faces = inverse[faces]
  faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])]
  n = len(merged)
  e = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
  adj = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
  _, comp = connected_components(adj, directed=False)
  biggest = np.bincount(comp[faces[:, 0]]).argmax()
  faces = faces[comp[faces[:, 0]] == biggest]
  used = np.unique(faces)
  remap = np.full(n, -1)
  remap[used] = np.arange(len(used))
  return merged[used], remap[faces]


def laplacian(verts: np.ndarray, faces: np.ndarray):
  """(cotangent Laplacian L [V, V], positive semi-definite, csr; lumped mass [V]: a third of
  the area of the faces around each vertex)."""
  n = len(verts)
  v = np.asarray(verts, np.float64)[faces]
  rows, cols, vals = [], [], []
  for i in range(3):
    j, k = (i + 1) % 3, (i + 2) % 3
    e1, e2 = v[:, j] - v[:, i], v[:, k] - v[:, i]
    w = 0.5 * (e1 * e2).sum(1) / np.linalg.norm(np.cross(e1, e2), axis=1)  # half cot of angle at i
    rows += [faces[:, j], faces[:, k]]
    cols += [faces[:, k], faces[:, j]]
    vals += [-w, -w]
  off = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()
  lap = off - sp.diags(np.asarray(off.sum(1)).ravel())
  mass = np.bincount(faces.ravel(), np.repeat(face_areas(verts, faces) / 3, 3), minlength=n)
  return lap.tocsr(), mass


def hks(verts: np.ndarray, faces: np.ndarray, k_eig: int = 64, num_times: int = 16) -> np.ndarray:
  """Heat kernel signature [V, num_times] from the `k_eig` smallest eigenpairs of L phi =
  lambda M phi (phi M-orthonormal), at times logspace(-2, 0), as DiffusionNet computes it.

  ARPACK starts from a fixed pseudo-random vector, so the result is a function of the mesh
  alone (scipy's default start is fresh OS entropy on every call). Where the eigenpairs are
  distinct the start moves the float64 result by ~1e-15 relative, below float32's rounding;
  where `k_eig` cuts through a repeated eigenvalue (tiny symmetric test meshes) it chose
  the basis, and with it the HKS."""
  lap, mass = laplacian(verts, faces)
  mass = mass + 1e-8 * mass.mean()
  k = min(k_eig, len(verts) - 2)
  v0 = np.random.default_rng(0).uniform(-1.0, 1.0, len(verts))
  evals, evecs = eigsh(lap, k=k, M=sp.diags(mass), sigma=-0.01, v0=v0)
  times = np.logspace(-2, 0, num_times)
  return (evecs ** 2) @ np.exp(-np.outer(np.clip(evals, 0, None), times))


def mesh_edges(faces: np.ndarray):
  """(receivers [E], senders [E]) int32: both directions of every mesh edge, deduplicated,
  sorted by (receiver, sender)."""
  e = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
  e = np.unique(np.concatenate([e, e[:, ::-1]]), axis=0).astype(np.int32)
  return e[:, 0], e[:, 1]


def face_mean(values: np.ndarray, faces: np.ndarray) -> np.ndarray:
  """The paper's fixed face aggregation: the mean of a face's three vertex values, [F, C]."""
  return values[faces].mean(1)


# ---------------------------------------------------------------- records and mesh sets

def mesh_record(verts, faces, labels, k_eig, num_times) -> dict:
  """Normalised verts, faces, labels, HKS and edges of one mesh, as arrays."""
  verts = normalize(verts)
  receivers, senders = mesh_edges(faces)
  return dict(verts=verts.astype(np.float32), faces=faces.astype(np.int32), face_labels=labels.astype(np.int32),
              hks=hks(verts, faces, k_eig, num_times).astype(np.float32), receivers=receivers, senders=senders)


@dataclasses.dataclass
class MeshSet:
  """Per-mesh lists; see the module docstring for shapes."""
  verts: list
  faces: list
  face_labels: list
  features: list
  receivers: list
  senders: list

  def __len__(self):
    return len(self.verts)


def check_features(features: str) -> None:
  if features not in FEATURES:
    raise UserError(f"unknown mesh features {features!r}; allowed: {', '.join(FEATURES)}")


def vertex_features(record: dict, features: str) -> np.ndarray:
  """A record's vertex features [V, C] (see FEATURES): its positions for `xyz`, its HKS for
  `hks`, the HKS's first HKS_SHORT_TIMES columns (the shortest times) for `hks_short`, the
  HKS plus noise for `hks_noisy` (a function of the mesh alone: the generator is seeded by
  the CRC-32 of its positions)."""
  if features == "xyz":
    return record["verts"]
  if features == "hks_short":
    return record["hks"][:, :HKS_SHORT_TIMES]
  if features == "hks_noisy":
    h = record["hks"]
    rng = np.random.default_rng(zlib.crc32(record["verts"].tobytes()))
    return (h + HKS_NOISE * h.std(0) * rng.standard_normal(h.shape)).astype(np.float32)
  return record["hks"]


def to_mesh_set(records, features: str) -> MeshSet:
  check_features(features)
  return MeshSet(verts=[r["verts"] for r in records], faces=[r["faces"] for r in records],
                 face_labels=[r["face_labels"] for r in records],
                 features=[vertex_features(r, features) for r in records],
                 receivers=[r["receivers"] for r in records], senders=[r["senders"] for r in records])


def parallel_map(fn, items, workers=None):
  """`map` over a process pool of `workers` (default: the usable cores) when it pays (the
  records of many meshes). BLAS runs single-threaded: on these small matrices its threads
  only cost time (4x here). The pool spawns (JAX's threads make fork unsafe), so a script
  calling this needs the usual `if __name__ == "__main__":` guard."""
  workers = workers or len(os.sched_getaffinity(0))
  if workers <= 1 or len(items) < 16:
    with threadpool_limits(1):
      return [fn(x) for x in items]
  with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                           initializer=threadpool_limits, initargs=(1,)) as pool:
    return list(pool.map(fn, items, chunksize=max(1, len(items) // (4 * workers))))
