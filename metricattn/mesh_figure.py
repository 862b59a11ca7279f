"""The paper's Fig. 5 for a mesh-segmentation experiment: test meshes coloured by part label.

  segmentation_figure(ROOT, ROOT / "segmentation.png")

Rows: the ground truth, then the predictions of seed `seed` of every group under ROOT (its
`seed=N` runs with a summary.json, sorted by name), each panel titled with that mesh's face
accuracy. Columns: the first `num_meshes` test meshes. Each mesh is turned to face the
viewer (its torso's wide axis across the view, its feet forward, from the ground truth) and
drawn from the front with flat shading; faces turned away are not drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metricattn import plots, runs
from metricattn.data.meshes import LABELS, FOOT, LOWER_LEG, TORSO

ELEV, AZIM = 10.0, -90.0  # the camera: slightly above, on the -y side
EYE = np.array([np.cos(np.radians(ELEV)) * np.cos(np.radians(AZIM)),
                np.cos(np.radians(ELEV)) * np.sin(np.radians(AZIM)), np.sin(np.radians(ELEV))])


def palette() -> np.ndarray:
  """One fixed colour per part label, [8, 3] (tab10's first 8)."""
  import matplotlib
  return np.asarray(matplotlib.colormaps["tab10"].colors[:len(LABELS)])


def face_front(verts: np.ndarray, faces: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """`verts` turned about z so that the body faces the camera: the torso's wide horizontal
  axis along x, the feet (ahead of the lower legs) towards -y."""
  centres = verts[faces].mean(1)[:, :2]
  torso = centres[labels == TORSO]
  if len(torso) < 3:
    return verts
  _, vecs = np.linalg.eigh(np.cov(torso.T))
  side = vecs[:, -1]
  fwd = np.array([-side[1], side[0]])
  feet, shins = centres[labels == FOOT], centres[labels == LOWER_LEG]
  if len(feet) and len(shins) and (feet.mean(0) - shins.mean(0)) @ fwd < 0:
    fwd = -fwd
  rot = np.array([[-fwd[1], fwd[0]], [-fwd[0], -fwd[1]]])  # fwd -> (0, -1)
  return np.concatenate([verts[:, :2] @ rot.T, verts[:, 2:]], axis=1)


def draw_mesh(ax, verts: np.ndarray, faces: np.ndarray, labels: np.ndarray) -> None:
  """The mesh on a 3D axis, faces coloured by label and shaded by their angle to the camera."""
  from mpl_toolkits.mplot3d.art3d import Poly3DCollection
  tri = verts[faces]
  normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
  normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
  facing = normals @ EYE
  keep = facing > 0
  shade = 0.45 + 0.55 * facing[keep, None]
  colours = palette()[labels[keep]] * shade
  ax.add_collection3d(Poly3DCollection(tri[keep], facecolors=colours, edgecolors=colours,
                                       linewidths=0.2))  # edges of the face colour: no seams
  lo, hi = verts.min(0), verts.max(0)
  ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), zlim=(lo[2], hi[2]))
  ax.set_box_aspect(hi - lo)  # equal aspect
  ax.view_init(ELEV, AZIM)
  ax.set_axis_off()


def groups_of(root: Path, seed: int) -> dict[str, Path]:
  """{group name: workdir} of the runs of `seed` under root that have finished."""
  found = {runs.group_name(root, w): w for w in runs.finished_runs(root)
           if runs.seed_of(w) == seed}
  return dict(sorted(found.items()))


def predict(workdir: Path, num_meshes: int) -> tuple[object, list[np.ndarray]]:
  """(the run's data, predicted face labels of its first `num_meshes` test meshes, one array
  per mesh)."""
  import jax
  from flax import nnx
  from metricattn.restore import restore
  _, data, _, graphdef, params, _ = restore(workdir)

  @jax.jit  # every batch has one shape: compiled once (eagerly, op by op, it took ~4 s a run)
  def logits_of(params, b):
    model = nnx.merge(graphdef, params)
    return model(b["x"], receivers=b["receivers"], senders=b["senders"], faces=b["faces"])

  preds = []
  for i in range(min(num_meshes, len(data.splits["test"]))):
    b = data.batch("test", [i])
    logits = logits_of(params, {k: b[k] for k in ("x", "receivers", "senders", "faces")})
    preds.append(np.asarray(logits).argmax(-1)[b["weight"] > 0])
  return data, preds


def segmentation_figure(root: Path, path: Path, num_meshes: int = 4, seed: int = 0) -> Path:
  """Writes the figure (see the module docstring) to `path`."""
  from matplotlib.patches import Patch
  groups = groups_of(root, seed)
  if not groups:
    raise FileNotFoundError(f"no finished runs of seed {seed} under {root}")
  rows = []
  for name, workdir in groups.items():
    data, preds = predict(workdir, num_meshes)
    rows.append((name, preds))
  test, n = data.splits["test"], len(preds)  # the same test meshes in every group
  truth = [test.face_labels[i] for i in range(n)]
  views = [face_front(test.verts[i], test.faces[i], truth[i]) for i in range(n)]
  plt = plots._pyplot()
  fig = plt.figure(figsize=(2.2 * n + 1.2, 3.0 * (len(rows) + 1)))
  for r, (name, labels) in enumerate([("ground truth", truth), *rows]):
    for c in range(n):
      ax = fig.add_subplot(len(rows) + 1, n, r * n + c + 1, projection="3d",
                           proj_type="ortho")
      draw_mesh(ax, views[c], test.faces[c], labels[c])
      ax.set_title(f"test mesh {c}" if r == 0 else
                   f"accuracy {np.mean(labels[c] == truth[c]):.3f}", fontsize=8)
      if c == 0:
        ax.text2D(-0.08, 0.5, name, transform=ax.transAxes, rotation=90, va="center",
                  ha="center", fontsize=9)
      if r == 0 and c == n - 1:
        ax.legend([Patch(color=col) for col in palette()], LABELS, loc="upper left",
                  bbox_to_anchor=(1.0, 1.0), fontsize=8, title="part", title_fontsize=8)
  return plots.save(fig, path, f"Test-mesh segmentation, seed {seed}: ground truth and "
                    "predictions per group")
