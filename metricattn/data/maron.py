"""The real human segmentation set of Maron et al. 2017, in the layout DiffusionNet reads
(experiments/human_segmentation_original: unzip human_benchmark_sig_17.zip so that
`<root>` is its sig17_seg_benchmark folder; default root $METRICATTN_DATA/sig17_seg_benchmark,
else ~/.cache/metricattn/sig17_seg_benchmark):

  meshes/train/adobe/<name>.off                        segs/train/adobe/<name>.txt
  meshes/train/faust/<name>.off                        segs/train/faust/faust_corrected.txt
  meshes/train/MIT_animation/meshes_<pose>/meshes/*.obj segs/train/mit/mit_<pose>_corrected.txt
  meshes/train/scape/<name>.off                        segs/train/scape/scape_corrected.txt
  meshes/test/shrec/<i>.off                            segs/test/shrec/shrec_<i>_full.txt
  (12_fix_orientation.off is shrec 12 and replaces 12.off where both are there)
  any other meshes/<split>/<path>/<name>.off|.obj      segs/<split>/<path>/<name>.txt

FAUST, SCAPE and each MIT pose share one label file, as their meshes share connectivity.
A label file holds one integer per face, 1..8 (returned 0-based, order meshes.LABELS).
Meshes must be triangle meshes; unreferenced vertices are dropped. Positions are centred and
scaled to unit max radius, and features computed, as for the procedural set
(mesh_geometry.py, which both use).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metricattn.data import mesh_geometry as geometry
from metricattn.data.cache import data_root
from metricattn.data.meshes import NUM_CLASSES
from metricattn.errors import UserError

SPLITS = ("train", "test")
SHARED = {"faust": "faust/faust_corrected.txt", "scape": "scape/scape_corrected.txt"}


def default_root() -> Path:
  return data_root() / "sig17_seg_benchmark"


def _triangles(path, faces):
  if any(len(f) != 3 for f in faces):
    raise UserError(f"{path}: only triangle meshes are supported")
  return np.array(faces, dtype=np.int64).reshape(-1, 3)


def read_off(path: Path):
  """(verts [V, 3] float64, faces [F, 3] int64) of an OFF file (0-based ids)."""
  lines = [line.split("#")[0].split() for line in path.read_text().splitlines()]
  lines = [t for t in lines if t]
  if not lines or not lines[0][0].endswith("OFF"):
    raise UserError(f"{path}: not an OFF file (no OFF header)")
  counts, body = lines[0][1:], lines[1:]
  if not counts:
    counts, body = body[0], body[1:]
  nv, nf = int(counts[0]), int(counts[1])
  if len(body) < nv + nf:
    raise UserError(f"{path}: OFF file ends early: header promises {nv} vertices and {nf} faces")
  verts = np.array([t[:3] for t in body[:nv]], dtype=np.float64)
  return verts, _triangles(path, [t[1:1 + int(t[0])] for t in body[nv:nv + nf]])


def read_obj(path: Path):
  """(verts [V, 3] float64, faces [F, 3] int64) of an OBJ file's v and f lines (0-based ids)."""
  verts, faces = [], []
  for line in path.read_text().splitlines():
    t = line.split()
    if t and t[0] == "v":
      verts.append(t[1:4])
    elif t and t[0] == "f":
      faces.append([int(x.split("/")[0]) for x in t[1:]])
  faces = _triangles(path, faces)
  return np.array(verts, dtype=np.float64).reshape(-1, 3), np.where(faces > 0, faces - 1, faces + len(verts))


def read_mesh(path: Path):
  try:
    return read_off(path) if path.suffix.lower() == ".off" else read_obj(path)
  except (ValueError, IndexError) as e:
    raise UserError(f"{path}: unreadable mesh ({e})") from None


def check_mesh(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
  """UserError unless every face has three distinct in-range vertices and a non-zero area."""
  if len(faces) == 0:
    raise UserError(f"{path}: mesh has no faces")
  bad = (faces < 0) | (faces >= len(verts))
  if bad.any():
    raise UserError(f"{path}: face {bad.any(1).argmax()} has a vertex id outside 0..{len(verts) - 1}")
  repeated = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 2] == faces[:, 0])
  if repeated.any():
    raise UserError(f"{path}: face {repeated.argmax()} repeats a vertex")
  diag2 = ((verts.max(0) - verts.min(0)) ** 2).sum()
  flat = geometry.face_areas(verts, faces) <= 1e-12 * diag2
  if flat.any():
    raise UserError(f"{path}: face {flat.argmax()} has zero area")


def label_file(root: Path, split: str, rel: Path) -> Path:
  """The label file of mesh meshes/<split>/<rel>."""
  segs, top = root / "segs" / split, rel.parts[0]
  if top in SHARED:
    return segs / SHARED[top]
  if top == "MIT_animation":
    return segs / "mit" / f"mit_{rel.parts[1].removeprefix('meshes_')}_corrected.txt"
  if top == "shrec":
    return segs / "shrec" / f"shrec_{rel.stem.removesuffix('_fix_orientation')}_full.txt"
  return segs / rel.with_suffix(".txt")


def mesh_files(mesh_dir: Path) -> list:
  """The .off and .obj files under `mesh_dir`, sorted; <i>.off gives way to <i>_fix_orientation.off."""
  paths = sorted(p for p in mesh_dir.rglob("*") if p.suffix.lower() in (".off", ".obj") and p.is_file())
  return [p for p in paths if not p.with_name(p.stem + "_fix_orientation" + p.suffix).exists()]


def load_labels(path: Path, mesh_path: Path, num_faces: int) -> np.ndarray:
  if not path.is_file():
    raise UserError(f"{path}: label file for {mesh_path} is missing")
  try:
    labels = np.loadtxt(path, ndmin=1).astype(np.int64) - 1
  except ValueError as e:
    raise UserError(f"{path}: unreadable label file ({e})") from None
  if len(labels) != num_faces:
    raise UserError(f"{path}: {len(labels)} labels for the {num_faces} faces of {mesh_path}")
  if labels.min() < 0 or labels.max() >= NUM_CLASSES:
    raise UserError(f"{path}: labels must be 1..{NUM_CLASSES}")
  return labels


def _load(args) -> dict:
  root, split, path, k_eig, num_times = args
  verts, faces = read_mesh(path)
  check_mesh(path, verts, faces)
  labels = load_labels(label_file(root, split, path.relative_to(root / "meshes" / split)), path, len(faces))
  used = np.unique(faces)
  remap = np.zeros(len(verts), np.int64)
  remap[used] = np.arange(len(used))
  return geometry.mesh_record(verts[used], remap[faces], labels, k_eig, num_times)


def load_maron(split: str, features: str = "hks", root: str | Path | None = None, k_eig: int = 64,
               num_times: int = 16, workers: int | None = None) -> geometry.MeshSet:
  """The `split` ("train" or "test") of the real set under `root` (see the module docstring)."""
  if split not in SPLITS:
    raise UserError(f"unknown Maron split {split!r}; allowed: {', '.join(SPLITS)}")
  geometry.check_features(features)
  root = Path(root) if root is not None else default_root()
  mesh_dir = root / "meshes" / split
  if not mesh_dir.is_dir():
    raise UserError(f"{mesh_dir}: no such directory; unzip Maron et al.'s human_benchmark_sig_17.zip so that "
                    f"{root} holds meshes/{{train,test}} and segs/{{train,test}}")
  paths = mesh_files(mesh_dir)
  if not paths:
    raise UserError(f"{mesh_dir}: no .off or .obj meshes in it")
  records = geometry.parallel_map(_load, [(root, split, p, k_eig, num_times) for p in paths], workers)
  return geometry.to_mesh_set(records, features)
