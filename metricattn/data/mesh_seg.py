"""Human-mesh segmentation (the paper's third IPN task, Maron et al. 2017): a batch is a few
meshes as one graph, and the model labels every face with one of 8 body parts.

Source (`config.data.source`): `procedural` (metricattn.data.meshes: bodies generated from a
seed, cached on first use; offline) or `maron` (the real set in DiffusionNet's layout under
`config.data.data_dir`). Features (`config.data.features`): `hks`, `hks_short`, `hks_noisy` or
`xyz` (mesh_geometry.FEATURES).

Batch layout (one compiled shape for every batch, train and test): the `batch_size` meshes
of a batch are one disjoint graph, padded to the largest meshes of the data set; node
`nodes - 1` is a padding node that only attends to itself. The graph is each vertex's
distinct mesh neighbours and itself, in the form `config.data.graph_form` names (the two
forms of metricattn/attention/graph.py; both give the same attention):
  "ell" (neighbour lists, the default: the faster kernel, docs/graph.md)
  receivers  int32 [nodes, max_degree]    row v: v in its filled slots, then -1
  senders    int32 [nodes, max_degree]    row v: v's senders ascending, then -1 (max_degree:
                                          the largest of the data set, self included)
  "segment" (a sorted edge list; what runs made before neighbour lists used)
  receivers  int32 [edges]                node receivers[e] attends to node senders[e],
  senders    int32 [edges]                sorted by (receiver, sender), then padding edges
                                          (-1, -1) up to the batch's fixed length
and in both:
  x          float32 [nodes, features]   vertex features (0 for padding)
  faces      int32 [faces, 3]             vertex ids of each face (padding: the padding node)
  y          int32 [faces]                part label of each face
  weight     float32 [faces]              1 for real faces, 0 for padding
A config without `data.graph_form` (a run made before it existed) gets "segment", so that it
resumes and evaluates as it ran.
"""

from __future__ import annotations

import numpy as np

from metricattn.data import meshes
from metricattn.data.mesh_geometry import MeshSet
from metricattn.data.sampling import batch_indices
from metricattn.errors import UserError

SOURCES = ("procedural", "maron")
GRAPH_FORMS = ("ell", "segment")


def load(config, split: str) -> MeshSet:
  d = config.data
  if d.source == "procedural":
    return meshes.load_split(split, d.features, seed=d.seed, num_train=d.num_train,
                             num_test=d.num_test)
  if d.source == "maron":
    from metricattn.data.maron import load_maron
    return load_maron(split, d.features, root=d.data_dir or None)
  raise UserError(f"unknown mesh data source {d.source!r}; allowed: {', '.join(SOURCES)}")


def self_and_neighbours(receivers, senders, num_verts: int) -> tuple[np.ndarray, np.ndarray]:
  """(receivers, senders) int32 [edges]: each vertex's distinct mesh neighbours and itself,
  sorted by receiver, then sender (the "segment" form of metricattn/attention/graph.py,
  `sort_edges`; built once per mesh when the data set is made). Rows of them are also the
  "ell" form's neighbour lists (tests/test_mesh_seg.py)."""
  loops = np.arange(num_verts, dtype=np.int64)
  key = np.unique(np.concatenate([np.asarray(receivers, np.int64), loops]) * num_verts
                  + np.concatenate([np.asarray(senders, np.int64), loops]))
  return (key // num_verts).astype(np.int32), (key % num_verts).astype(np.int32)


def neighbour_rows(receivers, senders, num_verts: int, width: int) -> np.ndarray:
  """int32 [num_verts, width]: row v holds v's senders in the order of the edges (sorted by
  receiver, then sender, as `self_and_neighbours` gives them), then -1: the "ell" form's
  neighbour lists (tests/test_mesh_seg.py)."""
  degree = np.bincount(receivers, minlength=num_verts)
  slot = np.arange(len(receivers)) - np.repeat(np.cumsum(degree) - degree, degree)
  rows = np.full((num_verts, width), -1, np.int32)
  rows[receivers, slot] = senders
  return rows


class MeshSegData:
  """Per-face classification of meshes; batches are padded disjoint unions of meshes."""

  eval_splits = ("test",)

  def __init__(self, config):
    self.seed, self.batch_size = int(config.seed), int(config.data.batch_size)
    self.splits = {s: load(config, s) for s in ("train", "test")}
    every = [m for s in self.splits.values() for m in zip(s.features, s.faces)]
    self.max_verts = max(len(f) for f, _ in every)
    self.max_faces = max(len(fa) for _, fa in every)
    self.edges = {name: [self_and_neighbours(r, t, len(f)) for r, t, f in
                         zip(s.receivers, s.senders, s.features)]
                  for name, s in self.splits.items()}
    self.max_edges = max(len(r) for edges in self.edges.values() for r, _ in edges)
    self.graph_form = config.data.get("graph_form", "segment")
    if self.graph_form not in GRAPH_FORMS:
      raise UserError(f"unknown data.graph_form {self.graph_form!r}; allowed: "
                      f"{', '.join(GRAPH_FORMS)}")
    self.max_degree = max(int(np.bincount(r).max()) for edges in self.edges.values()
                          for r, _ in edges)
    num_train = len(self.splits["train"].faces)
    if not 0 < self.batch_size <= num_train:
      raise UserError(f"data.batch_size {self.batch_size} must be in 1..{num_train} (the "
                      "training meshes)")
    self.info = {"num_classes": meshes.NUM_CLASSES,
                 "input_shape": (every[0][0].shape[1],), "graph": True,
                 # batch(): each mesh's edges sorted, meshes in order
                 "sorted_edges": self.graph_form == "segment"}

  def batch(self, split: str, ids) -> dict:
    """The meshes `ids` of `split` as one padded graph (see the module docstring)."""
    s, b = self.splits[split], self.batch_size
    nodes = b * self.max_verts + 1
    pad = nodes - 1
    x = np.zeros((nodes, self.info["input_shape"][0]), np.float32)
    receivers = np.full(b * self.max_edges + 1, -1, np.int32)
    senders = receivers.copy()
    faces = np.full((b * self.max_faces, 3), pad, np.int32)
    y = np.zeros(b * self.max_faces, np.int32)
    weight = np.zeros(b * self.max_faces, np.float32)
    v0 = e0 = f0 = 0
    for i in ids:
      feats, nv = s.features[i], len(s.features[i])
      r, t = (e + v0 for e in self.edges[split][i])
      x[v0:v0 + nv] = feats
      receivers[e0:e0 + len(r)], senders[e0:e0 + len(t)] = r, t
      nf = len(s.faces[i])
      faces[f0:f0 + nf] = s.faces[i] + v0
      y[f0:f0 + nf] = s.face_labels[i]
      weight[f0:f0 + nf] = 1.0
      v0, e0, f0 = v0 + nv, e0 + len(r), f0 + nf
    receivers[e0], senders[e0] = pad, pad  # after every mesh's edges: the order stays sorted
    if self.graph_form == "ell":
      senders = neighbour_rows(receivers[:e0 + 1], senders[:e0 + 1], nodes, self.max_degree)
      receivers = np.where(senders >= 0, np.arange(nodes, dtype=np.int32)[:, None],
                           np.int32(-1))
    return {"x": x, "receivers": receivers, "senders": senders, "faces": faces, "y": y,
            "weight": weight}

  def train_batch(self, step: int) -> dict:
    n = len(self.splits["train"].faces)
    return self.batch("train", batch_indices(n, self.batch_size, self.seed, step))

  def eval_batches(self, split: str):
    n = len(self.splits[split].faces)
    for start in range(0, n, self.batch_size):
      yield self.batch(split, range(start, min(start + self.batch_size, n)))
