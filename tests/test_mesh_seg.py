"""Mesh segmentation: batches of padded mesh graphs, the graph IPN against the dense masked
one, and a tiny end-to-end run with evaluation from its checkpoint."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from metricattn.attention import adjacency_mask, neighbour_lists, sort_edges
from metricattn.data import get_dataset
from metricattn.data.mesh_geometry import HKS_SHORT_TIMES
from metricattn.errors import UserError
from metricattn.evaluate import evaluate_workdir
from metricattn.models import build_model
from tests.helpers import cli, load_config

TINY = dict(data__num_train=4, data__num_test=2, data__batch_size=2)


@pytest.fixture(scope="module")
def data():
  return get_dataset(load_config("configs/mesh_seg.py", "attention=metric", **TINY))


@pytest.fixture(scope="module")
def edge_data():
  """The same data with the graph as a sorted edge list (the form of runs made before
  neighbour lists)."""
  return get_dataset(load_config("configs/mesh_seg.py", "attention=metric",
                                 data__graph_form="segment", **TINY))


def test_batches_are_padded_disjoint_graphs(edge_data):
  data = edge_data
  b = data.train_batch(0)
  nodes = b["x"].shape[0]
  assert nodes == 2 * data.max_verts + 1 and b["faces"].shape == (2 * data.max_faces, 3)
  real_edges = b["receivers"] >= 0
  assert (b["senders"][~real_edges] == -1).all() and b["receivers"].max() < nodes
  assert not real_edges[np.argmin(real_edges):].any()  # padding edges (-1) last
  real = b["weight"] > 0
  sizes = [len(f) for f in data.splits["train"].faces]
  assert real.sum() in {sizes[i] + sizes[j] for i in range(4) for j in range(i)}  # 2 meshes
  assert (b["faces"][~real] == nodes - 1).all() and (b["y"][real] < 8).all()
  pad = b["receivers"] == nodes - 1
  assert (b["senders"][pad] == nodes - 1).all()  # the padding node only sees itself
  r, s = b["receivers"][real_edges], b["senders"][real_edges]
  key = r.astype(np.int64) * nodes + s
  assert (np.diff(key) > 0).all()  # sorted by (receiver, sender), no edge twice (sort_edges)
  assert data.info["sorted_edges"]  # the promise the IPN relies on not to sort them again
  assert (r == s).sum() == len(np.unique(r))  # every vertex with an edge sees itself
  again = data.train_batch(0)
  assert all(np.array_equal(b[k], again[k]) for k in b)  # a pure function of (seed, step)
  test = list(data.eval_batches("test"))
  assert len(test) == 1 and test[0]["weight"].sum() == sum(len(f) for f in
                                                           data.splits["test"].faces)


def test_neighbour_list_batches_hold_the_edge_lists_rows(data, edge_data):
  """The default batches: neighbour lists [nodes, the data set's max degree], the rows of
  the same batch's edge list (attention's neighbour_lists of it); an edge-list config
  without data.graph_form (saved by a run before it existed) keeps the edge list."""
  assert not data.info["sorted_edges"] and edge_data.info["sorted_edges"]
  for step in (0, 1):
    b, e = data.train_batch(step), edge_data.train_batch(step)
    nodes = b["x"].shape[0]
    assert b["senders"].shape == (nodes, data.max_degree)
    assert b["senders"].dtype == b["receivers"].dtype == np.int32
    want = neighbour_lists(e["receivers"], e["senders"], nodes, data.max_degree)
    np.testing.assert_array_equal(b["receivers"], want[0])
    np.testing.assert_array_equal(b["senders"], want[1])
    assert list(b["senders"][nodes - 1]) == [nodes - 1] + [-1] * (data.max_degree - 1)
    assert all(np.array_equal(b[k], e[k]) for k in ("x", "faces", "y", "weight"))
  config = load_config("configs/mesh_seg.py", "attention=metric", **TINY)
  del config.data["graph_form"]
  assert get_dataset(config).train_batch(0)["senders"].ndim == 1
  with pytest.raises(UserError, match="unknown data.graph_form 'csr'; allowed: ell, segment"):
    get_dataset(load_config("configs/mesh_seg.py", data__graph_form="csr", **TINY))


@pytest.mark.parametrize("kind", ["softmax", "l2", "metric"])
def test_graph_ipn_equals_the_dense_masked_ipn(data, kind):
  """Values and parameter gradients (the graph path computes shared keys once, the dense
  path twice)."""
  config = load_config("configs/mesh_seg.py", f"attention={kind}", **TINY)
  graphdef, params = nnx.split(build_model(config, data.info, nnx.Rngs(params=0)))
  b = {k: jnp.asarray(v) for k, v in data.train_batch(1).items()}
  mask = adjacency_mask(b["receivers"], b["senders"], b["x"].shape[0])

  def sparse(p):
    return nnx.merge(graphdef, p)(b["x"], receivers=b["receivers"], senders=b["senders"],
                                  faces=b["faces"])

  def dense(p):
    model = nnx.merge(graphdef, p)
    h = model.embed(b["x"])[None]
    for block in model.blocks:
      h = block(h, mask)
    return model.head(h[0][b["faces"]].mean(axis=1))

  assert sparse(params).shape == (b["faces"].shape[0], 8)
  np.testing.assert_allclose(sparse(params), dense(params), rtol=1e-4, atol=1e-4)
  loss = lambda f: lambda p: jnp.sum(jnp.sin(f(p)))
  grads = [jax.grad(loss(f))(params) for f in (sparse, dense)]
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads[1]))
  for g_sparse, g_dense in zip(*map(jax.tree.leaves, grads)):
    np.testing.assert_allclose(g_sparse, g_dense, rtol=1e-3, atol=1e-4 * scale)


def test_mesh_edges_are_the_attention_forms(data):
  """The data set's edges (built without importing attention) are sort_edges's, and their
  rows are neighbour_lists's."""
  s = data.splits["train"]
  for i in range(len(s.faces)):
    nv = len(s.features[i])
    loops = np.arange(nv)
    r, t = np.r_[s.receivers[i], loops], np.r_[s.senders[i], loops]
    got = data.edges["train"][i]
    want = sort_edges(r, t, nv)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    lists = neighbour_lists(*got, nv)[1]
    np.testing.assert_array_equal(lists[lists >= 0], got[1])


def test_tiny_mesh_run_and_evaluation_from_its_checkpoint(tmp_path):
  out = cli("metricattn.main", "--config=configs/mesh_seg.py:attention=metric,steps=4",
            f"--workdir={tmp_path}", *[f"--config.{k.replace('__', '.')}={v}"
                                       for k, v in TINY.items()],
            "--config.train.eval_every=4", "--config.train.checkpoint_every=2")
  assert out.returncode == 0, out.stderr
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert 0 <= summary["test/accuracy"] <= 1 and np.isfinite(summary["train/loss"])
  result = evaluate_workdir(tmp_path)
  assert result["test/accuracy"] == summary["test/accuracy"]


@pytest.mark.parametrize("features, width", [("hks_short", HKS_SHORT_TIMES), ("xyz", 3)])
def test_feature_variants_set_the_input_width(features, width):
  data = get_dataset(load_config("configs/mesh_seg.py", f"features={features}", **TINY))
  assert data.info["input_shape"] == (width,) and data.train_batch(0)["x"].shape[1] == width


def test_unknown_features_are_one_line():
  with pytest.raises(UserError, match="unknown mesh features 'normals'") as e:
    get_dataset(load_config("configs/mesh_seg.py", "features=normals", **TINY))
  assert "\n" not in str(e.value)
