"""Procedural human meshes (metricattn.data.meshes), their geometry (mesh_geometry.py) and the
Maron et al. loader (maron.py)."""

import numpy as np
import pytest
from skimage.measure import marching_cubes

from metricattn.data import maron, meshes
from metricattn.data import mesh_geometry as geometry
from metricattn.errors import UserError

SEED = 7


@pytest.fixture(scope="module")
def bodies():
  """Two bodies, each as (Body, world verts, faces, labels), and the same two via `generate`."""
  raw = []
  for i in range(2):
    body = meshes.sample_body(SEED, i)
    raw.append((body, *meshes.body_mesh(body)))
  return raw, meshes.generate(2, SEED, features="hks")


def test_generate_is_deterministic(bodies):
  _, data = bodies
  again = meshes.generate(1, SEED, features="hks")
  for key in ("verts", "faces", "face_labels", "features", "receivers", "senders"):
    assert np.array_equal(getattr(again, key)[0], getattr(data, key)[0]), key
  other = meshes.generate(1, SEED + 1, features="xyz")
  assert other.verts[0].shape != data.verts[0].shape or not np.allclose(other.verts[0], data.verts[0])
  test_stream = meshes.generate(1, SEED, features="xyz", stream=1)
  assert test_stream.verts[0].shape != data.verts[0].shape or not np.allclose(test_stream.verts[0], data.verts[0])


def test_generate_matches_body_mesh(bodies):
  raw, data = bodies
  for (_, verts, faces, labels), v, f, l in zip(raw, data.verts, data.faces, data.face_labels):
    assert np.array_equal(faces, f) and np.array_equal(labels, l)
    assert np.allclose(geometry.normalize(verts), v, atol=1e-6)


def test_every_body_has_all_labels(bodies):
  raw, data = bodies
  for labels in data.face_labels:
    assert labels.dtype == np.int32
    assert set(np.unique(labels)) == set(range(meshes.NUM_CLASSES))


def _capsule(p, a, b, ra, rb):
  t = np.clip((p - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
  return np.linalg.norm(p - a - t * (b - a)) - (ra + t * (rb - ra))


def _ellipsoid(p, c, r):
  k0 = np.linalg.norm((p - c) / r)
  return k0 * (k0 - 1) / np.linalg.norm((p - c) / r ** 2)


def test_faces_take_the_label_of_the_nearest_part(bodies):
  raw, _ = bodies
  rng = np.random.default_rng(0)
  for body, verts, faces, labels in raw:
    for face in rng.choice(len(faces), 25, replace=False):
      p = body.rotation.T @ verts[faces[face]].mean(0)  # centroid in the body frame
      d = [_capsule(p, *args) for args in zip(body.cap_a, body.cap_b, body.cap_ra, body.cap_rb)]
      d += [_ellipsoid(p, c, r) for c, r in zip(body.ell_c, body.ell_r)]
      assert labels[face] == meshes.part_labels(body)[np.argmin(d)]


def test_meshes_are_closed_clean_and_outward(bodies):
  raw, data = bodies
  for _, verts, faces, _ in raw:
    assert geometry.is_closed_manifold(faces)
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all()  # every edge shared by exactly two faces
    assert (faces[:, 0] != faces[:, 1]).all() and (faces[:, 1] != faces[:, 2]).all() and (faces[:, 2] != faces[:, 0]).all()
    assert geometry.face_areas(verts, faces).min() > 0
    assert len(np.unique(faces)) == len(verts)  # no unused vertex
    volume = np.einsum("ij,ij->i", verts[faces[:, 0]], np.cross(verts[faces[:, 1]], verts[faces[:, 2]])).sum() / 6
    assert volume > 0
    assert 800 <= len(verts) <= 2500


def test_edges_are_symmetric_and_in_range(bodies):
  _, data = bodies
  for verts, faces, receivers, senders in zip(data.verts, data.faces, data.receivers, data.senders):
    assert receivers.dtype == senders.dtype == np.int32
    assert receivers.min() >= 0 and max(receivers.max(), senders.max()) < len(verts)
    assert (receivers != senders).all()
    pairs = set(zip(receivers.tolist(), senders.tolist()))
    assert len(pairs) == len(receivers) == 3 * len(faces)  # closed mesh: E = 3F/2 edges, two ways
    assert pairs == set(zip(senders.tolist(), receivers.tolist()))
    face_pairs = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    assert set(map(tuple, face_pairs.tolist())) <= pairs


def test_features(bodies):
  _, data = bodies
  for verts, faces, hks in zip(data.verts, data.faces, data.features):
    assert hks.shape == (len(verts), 16) and hks.dtype == np.float32
    assert np.isfinite(hks).all() and (hks > 0).all()
    assert np.allclose(verts.mean(0), 0, atol=1e-5)
    assert np.isclose(np.linalg.norm(verts, axis=1).max(), 1, atol=1e-5)
    assert geometry.face_mean(verts, faces).shape == (len(faces), 3)
  xyz = meshes.generate(1, SEED, features="xyz")
  assert np.array_equal(xyz.features[0], data.verts[0])
  with pytest.raises(UserError, match="features") as e:
    meshes.generate(1, SEED, features="normals")
  assert "\n" not in str(e.value) and "hks_short" in str(e.value)


def test_feature_variants_come_from_the_stored_hks(bodies):
  """hks_short is the first HKS_SHORT_TIMES columns of the record's HKS; hks_noisy adds noise
  of HKS_NOISE column standard deviations, the same on every call."""
  _, data = bodies
  records = [dict(verts=v, faces=f, face_labels=y, hks=h, receivers=r, senders=s)
             for v, f, y, h, r, s in zip(data.verts, data.faces, data.face_labels,
                                         data.features, data.receivers, data.senders)]
  short = geometry.to_mesh_set(records, "hks_short")
  noisy = geometry.to_mesh_set(records, "hks_noisy")
  assert 0 < geometry.HKS_SHORT_TIMES < 16
  for hks, s, n in zip(data.features, short.features, noisy.features):
    assert s.shape == (len(hks), geometry.HKS_SHORT_TIMES)
    assert np.array_equal(s, hks[:, :geometry.HKS_SHORT_TIMES])
    assert n.shape == hks.shape and n.dtype == np.float32
    ratio = (n - hks).std(0) / hks.std(0)
    assert np.allclose(ratio, geometry.HKS_NOISE, rtol=0.2)
  assert all(np.array_equal(a, b) for a, b in
             zip(noisy.features, geometry.to_mesh_set(records, "hks_noisy").features))
  assert not np.array_equal(noisy.features[0][:5], noisy.features[1][:5])


def test_hks_of_a_sphere_is_nearly_constant():
  grid = np.stack(np.meshgrid(*[np.linspace(-1.2, 1.2, 25)] * 3, indexing="ij"), -1)
  verts, faces, _, _ = marching_cubes(np.linalg.norm(grid, axis=-1) - 1, 0, allow_degenerate=False)
  h = geometry.hks(geometry.normalize(verts), faces, k_eig=16, num_times=4)
  assert (h.std(0) / h.mean(0)).max() < 0.1


def test_hks_is_a_function_of_the_mesh():
  # k_eig = 2 of the tetrahedron's 4 eigenpairs cuts through a repeated eigenvalue: the HKS
  # then depends on ARPACK's start vector, which is fixed.
  verts = geometry.normalize(TETRA)
  first = geometry.hks(verts, TETRA_FACES, k_eig=8, num_times=4)
  assert all(np.array_equal(first, geometry.hks(verts, TETRA_FACES, k_eig=8, num_times=4)) for _ in range(3))


def test_cache_round_trip(tmp_path, monkeypatch):
  monkeypatch.setenv(meshes.DATA_ENV, str(tmp_path))
  small = meshes.Settings(k_eig=8, num_times=4)
  first = meshes.load_split("test", features="hks", seed=SEED, num_test=2, settings=small)
  files = sorted(p.name for p in (tmp_path / "meshes").iterdir())
  assert len(files) == 1 and "test" in files[0] and "k8" in files[0] and "t4" in files[0]
  monkeypatch.setattr(meshes, "generate_records", lambda *a, **k: pytest.fail("cache not used"))
  again = meshes.load_split("test", features="hks", seed=SEED, num_test=2, settings=small)
  for key in ("verts", "faces", "face_labels", "features", "receivers", "senders"):
    for a, b in zip(getattr(first, key), getattr(again, key)):
      assert a.dtype == b.dtype and np.array_equal(a, b), key
  short = meshes.load_split("test", features="hks_short", seed=SEED, num_test=2, settings=small)
  assert all(np.array_equal(s, a[:, :geometry.HKS_SHORT_TIMES])  # the same file, sliced
             for s, a in zip(short.features, again.features))
  assert meshes.cache_path("test", 2, SEED, small) != meshes.cache_path("test", 2, SEED, meshes.Settings())
  assert meshes.cache_path("test", 2, SEED, small) != meshes.cache_path("test", 2, SEED + 1, small)


# ---------------------------------------------------------------- Maron et al. loader

TETRA = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]])
TETRA_FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
OCTA = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1.0]])
OCTA_FACES = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])


def write_off(path, verts, faces, extra_header=""):
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = ["OFF", f"# a comment{extra_header}", f"{len(verts)} {len(faces)} 0"]
  lines += [" ".join(map(str, v)) for v in verts] + [f"3 {a} {b} {c}" for a, b, c in faces]
  path.write_text("\n".join(lines) + "\n")


def write_obj(path, verts, faces):
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = ["# obj"] + [f"v {x} {y} {z}" for x, y, z in verts] + [f"f {a + 1}/1 {b + 1}/1 {c + 1}/1" for a, b, c in faces]
  path.write_text("\n".join(lines) + "\n")


def write_labels(path, labels):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("\n".join(str(int(x)) for x in labels) + "\n")


@pytest.fixture
def maron_root(tmp_path):
  root = tmp_path / "sig17_seg_benchmark"
  write_off(root / "meshes/train/adobe/a.off", TETRA, TETRA_FACES)
  write_labels(root / "segs/train/adobe/a.txt", [1, 2, 3, 8])
  write_off(root / "meshes/train/faust/tr_reg_000.off", OCTA, OCTA_FACES)
  write_labels(root / "segs/train/faust/faust_corrected.txt", range(1, 9))
  write_obj(root / "meshes/train/MIT_animation/meshes_squat1/meshes/mesh_0000.obj", OCTA, OCTA_FACES)
  write_labels(root / "segs/train/mit/mit_squat1_corrected.txt", [8, 7, 6, 5, 4, 3, 2, 1])
  write_off(root / "meshes/test/shrec/12.off", TETRA * 2, TETRA_FACES)
  write_off(root / "meshes/test/shrec/12_fix_orientation.off", TETRA, TETRA_FACES)
  write_labels(root / "segs/test/shrec/shrec_12_full.txt", [4, 4, 5, 5])
  return root


def test_maron_loader(maron_root):
  train = maron.load_maron("train", features="xyz", root=maron_root)
  assert len(train) == 3  # sorted paths: MIT_animation/.../mesh_0000.obj, adobe/a.off, faust/tr_reg_000.off
  assert np.array_equal(train.face_labels[0], np.arange(8)[::-1])
  assert np.array_equal(train.face_labels[1], [0, 1, 2, 7])
  assert np.array_equal(train.face_labels[2], np.arange(8))
  assert np.array_equal(train.faces[0], OCTA_FACES) and np.allclose(train.verts[0], OCTA)
  assert np.array_equal(train.faces[1], TETRA_FACES) and np.allclose(train.verts[1], geometry.normalize(TETRA))
  assert np.array_equal(train.features[1], train.verts[1])
  for faces, receivers, senders in zip(train.faces, train.receivers, train.senders):
    assert len(receivers) == 3 * len(faces) and receivers.dtype == np.int32
  test = maron.load_maron("test", features="hks", root=maron_root, k_eig=8, num_times=4)
  assert len(test) == 1 and np.array_equal(test.face_labels[0], [3, 3, 4, 4])
  assert test.features[0].shape == (4, 4) and np.isfinite(test.features[0]).all()


def test_maron_drops_unreferenced_vertices(tmp_path):
  root = tmp_path / "r"
  write_off(root / "meshes/train/x/a.off", np.concatenate([TETRA, [[5, 5, 5]]]), TETRA_FACES)
  write_labels(root / "segs/train/x/a.txt", [1, 1, 1, 1])
  data = maron.load_maron("train", features="xyz", root=root)
  assert data.verts[0].shape == (4, 3)


def _one_line_error(match, **kwargs):
  with pytest.raises(UserError, match=match) as e:
    maron.load_maron(features="xyz", **kwargs)
  assert "\n" not in str(e.value)
  return str(e.value)


def test_maron_missing_or_empty_directory(tmp_path):
  msg = _one_line_error("no such directory", split="train", root=tmp_path / "nowhere")
  assert str(tmp_path / "nowhere" / "meshes" / "train") in msg and "unzip" in msg
  (tmp_path / "empty/meshes/train").mkdir(parents=True)
  assert str(tmp_path / "empty/meshes/train") in _one_line_error("no .off or .obj", split="train", root=tmp_path / "empty")


@pytest.mark.parametrize("case", ["labels_length", "labels_missing", "labels_range", "repeated_vertex",
                                  "zero_area", "out_of_range", "not_triangles"])
def test_maron_bad_input(tmp_path, case):
  root = tmp_path / "r"
  verts, faces, labels = TETRA.copy(), TETRA_FACES.copy(), [1, 2, 3, 4]
  mesh, segs = root / "meshes/train/adobe/a.off", root / "segs/train/adobe/a.txt"
  named, match = mesh, None
  if case == "labels_length":
    labels, named, match = [1, 2, 3], segs, "3 labels for the 4 faces"
  elif case == "labels_missing":
    labels, named, match = None, segs, "missing"
  elif case == "labels_range":
    labels, named, match = [1, 2, 3, 9], segs, "1..8"
  elif case == "repeated_vertex":
    faces[2] = [0, 3, 0]
    match = "face 2 repeats a vertex"
  elif case == "zero_area":
    verts[3] = [0.5, 0.5, 0]  # vertex 3 on the line through 1 and 2: face 3 is flat
    match = "face 3 has zero area"
  elif case == "out_of_range":
    faces[1] = [0, 1, 4]
    match = "face 1 has a vertex id outside 0..3"
  write_off(mesh, verts, faces)
  if case == "not_triangles":
    mesh.write_text(mesh.read_text().replace("3 0 2 1", "4 0 2 1 3"))
    match = "only triangle"
  if labels is not None:
    write_labels(segs, labels)
  assert str(named) in _one_line_error(match, split="train", root=root)
