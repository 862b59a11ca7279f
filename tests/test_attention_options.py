"""Attention options in one place: every model family builds its attention layers with
`AttentionOptions.from_config`, so `implementation` and `dtype` reach the IPN, the ViT and
both Transformers; what differs between kinds is asked of the layer, never tested as a
string outside metricattn/attention/; the layer's incremental decoding cache."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from metricattn.attention import KIND_SPECS, KINDS, Attention, AttentionOptions, blockwise
from metricattn.errors import UserError
from metricattn.models import build_model
from tests.helpers import ROOT, load_config

pytestmark = pytest.mark.usefixtures("fast_compile")

_rng = np.random.default_rng(0)
X = jnp.asarray(_rng.normal(size=(12, 2)), jnp.float32)
MASK = jnp.asarray(_rng.random((12, 12)) < 0.6) | jnp.eye(12, dtype=bool)
IMAGES = jnp.asarray(_rng.random((3, 8, 8, 1)), jnp.float32)
SRC = jnp.asarray(_rng.integers(4, 23, (3, 7)), jnp.int32).at[0, 5:].set(0)
TGT = jnp.asarray(_rng.integers(4, 23, (3, 6)), jnp.int32).at[1, 4:].set(0)
TOKENS = jnp.asarray(_rng.integers(1, 15, (3, 40)), jnp.int32).at[0, 30:].set(0)

# family -> (config, argument, dataset info, forward pass)
FAMILIES = {
    "ipn": ("configs/moons_ipn.py", "attention=metric", {"input_shape": (2,), "num_classes": 2},
            lambda m: m(X, MASK)),
    "vit": ("configs/vit_image.py", "attention=l2,dataset=digits",
            {"input_shape": (8, 8, 1), "num_classes": 10}, lambda m: m(IMAGES)),
    "transformer": ("configs/translation_synthetic.py", "attention=metric",
                    {"src_vocab_size": 23, "tgt_vocab_size": 23}, lambda m: m(SRC, TGT)),
    "transformer_encoder": ("configs/lra_listops.py", "attention=softmax,size=cpu",
                            {"vocab_size": 16, "num_classes": 10, "seq_len": 40},
                            lambda m: m(TOKENS)),
}


def build(family: str, **fields):
  """The family's model from its config with `fields` set in config.model (added where the
  config lacks them, as the IPN and ViT configs lack implementation and dtype)."""
  path, arg, info, _ = FAMILIES[family]
  config = load_config(path, arg)
  for key, value in fields.items():
    config.model[key] = value
  model = build_model(config, info, nnx.Rngs(0))
  if family == "vit":  # the head starts at zero: every output would be its bias
    model.head.kernel[...] = 0.1 * jax.random.normal(jax.random.key(5), model.head.kernel.shape)
  return model


def forward(family: str, model) -> np.ndarray:
  return np.asarray(FAMILIES[family][3](model).astype(jnp.float32))


def modules(model, cls) -> list:
  return [m for _, m in nnx.iter_modules(model) if isinstance(m, cls)]


def test_options_from_config_defaults_and_variants():
  m = ml_collections.ConfigDict(dict(attention="l2", scale=None))  # a config before the fields
  assert AttentionOptions.from_config(m) == AttentionOptions("l2")
  m = ml_collections.ConfigDict(dict(attention="l2_lipschitz", scale=1.0,
                                     implementation="blockwise", dtype="bfloat16"))
  assert AttentionOptions.from_config(m) == AttentionOptions(
      "l2", "lipschitz", scale=1.0, implementation="blockwise", dtype=jnp.bfloat16)
  m = ml_collections.ConfigDict(dict(attention="l2", value_map="lipschitz"))
  options = AttentionOptions.from_config(m)
  assert options.value_map == "lipschitz"
  assert options.layer(4, num_heads=1, qk_features=4, cross=True,
                       rngs=nnx.Rngs(0)).value_map == "linear"  # Kim et al.: self-attention
  with pytest.raises(UserError, match="unknown model.dtype 'float16'; allowed: float32, bfloat16"):
    AttentionOptions.from_config(ml_collections.ConfigDict(dict(attention="l2", dtype="float16")))
  with pytest.raises(UserError, match="unknown attention kind 'dot'"):
    AttentionOptions.from_config(ml_collections.ConfigDict(dict(attention="dot")))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_takes_implementation_and_dtype(family):
  plain = build(family)
  assert all(a.implementation is None and a.dtype is None for a in modules(plain, Attention))
  out32 = forward(family, plain)
  explicit = build(family, implementation=None, dtype="float32")  # the defaults, bit for bit
  np.testing.assert_array_equal(forward(family, explicit), out32)

  model = build(family, implementation="xla", dtype="bfloat16")
  attention = modules(model, Attention)
  assert attention and all(a.implementation == "xla" and a.dtype == jnp.bfloat16
                           for a in attention)
  layers = modules(model, (nnx.Linear, nnx.LayerNorm, nnx.Embed))
  assert layers and all(layer.dtype == jnp.bfloat16 for layer in layers)
  params = nnx.state(model, nnx.Param)
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  jax.tree.map(np.testing.assert_array_equal, params, nnx.state(plain, nnx.Param))
  out16 = FAMILIES[family][3](model)
  assert out16.dtype == jnp.bfloat16
  scale = max(1.0, float(np.abs(out32).max()))
  np.testing.assert_allclose(np.asarray(out16, np.float32), out32, atol=0.05 * scale)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_runs_the_blockwise_kernel(family, monkeypatch):
  monkeypatch.setattr(blockwise, "BLOCK_Q", 4)  # several blocks, lengths that do not divide
  monkeypatch.setattr(blockwise, "BLOCK_K", 8)
  model = build(family, implementation="blockwise")
  assert all(a.implementation == "blockwise" for a in modules(model, Attention))
  np.testing.assert_allclose(forward(family, model),
                             forward(family, build(family, implementation="xla")), atol=1e-5)


def test_graph_attention_refuses_an_implementation():
  edges = jnp.asarray([0, 1, 2, 1], jnp.int32), jnp.asarray([1, 0, 2, 2], jnp.int32)
  model = build("ipn", implementation="blockwise")
  with pytest.raises(UserError, match="graph-masked attention takes no dense-kernel implementation"):
    model(X[:3], receivers=edges[0], senders=edges[1])


@pytest.mark.parametrize("kind", KIND_SPECS)   # the paper's kinds and the controls
def test_kind_properties(kind):
  spec = KIND_SPECS[kind]
  layer = lambda **kw: Attention(4, kind=kind, num_heads=1, qk_features=4, d_mlp=3,
                                 rngs=nnx.Rngs(0), **kw)
  assert layer().shares_qk_projection == spec.tied
  assert not layer(cross=True).shares_qk_projection
  assert layer().distance == spec.distance
  assert (layer().g is not None) == spec.metric_mlp
  x = jax.random.normal(jax.random.key(0), (1, 5, 4))
  a = layer()
  q, k = a.queries(x), a.keys(x)
  d2 = jnp.sum((q[:, :, None] - k[:, None]) ** 2, -1)[..., 0][:, None]
  dot = jnp.einsum("bqhd,bkhd->bhqk", q, k)
  ref = -d2 / 2.0 if spec.distance else dot / 2.0  # scale 1/sqrt(4)
  np.testing.assert_allclose(jax.nn.softmax(a.logits(q, k)), jax.nn.softmax(ref), atol=1e-5)
  if spec.metric_mlp:  # g is applied to queries and keys alike (one module)
    raw = lambda proj: proj(x).reshape(q.shape)
    np.testing.assert_allclose(q, a.g(raw(a.q_proj)), atol=1e-6)
    np.testing.assert_allclose(k, a.g(raw(a.k_proj)), atol=1e-6)


@pytest.mark.parametrize("kind", [*KINDS, "l2_lipschitz"])
def test_decoding_cache_equals_the_full_computation(kind):
  kind, value_map = {"l2_lipschitz": ("l2", "lipschitz")}.get(kind, (kind, "linear"))
  args = dict(kind=kind, num_heads=2, qk_features=8, d_mlp=6, v_features=8, out_features=5,
              rngs=nnx.Rngs(0))
  a = Attention(6, value_map=value_map, **args)
  x = jax.random.normal(jax.random.key(1), (2, 5, 6)) + 3.0  # an offset: the centring counts
  causal = jnp.tril(jnp.ones((5, 5), bool))[None, None]
  cache = a.init_cache(2, 5)
  assert set(cache) == ({"k", "v", "k_sq"} if a.distance else {"k", "v"})
  steps = []
  for t in range(5):
    y, cache = a.decode_step(x[:, t:t + 1], jnp.int32(t), cache)
    steps.append(y)
  np.testing.assert_allclose(jnp.concatenate(steps, 1), a(x, mask=causal), atol=1e-5)

  c = Attention(6, cross=True, kv_features=4, **args)
  y = jax.random.normal(jax.random.key(2), (2, 7, 4)) - 2.0
  mask = jnp.ones((2, 1, 1, 7), bool).at[0, ..., 5:].set(False)
  memory = c.memory_cache(y)
  assert set(memory) == ({"k", "v", "k_c", "k_sq"} if c.distance else {"k", "v"})
  np.testing.assert_allclose(c.attend_memory(x, memory, mask), c(x, y, mask=mask), atol=1e-5)


# Comparisons of a kind with its name, which belong in metricattn/attention/ (KIND_SPECS).
NAME = r"""["'](softmax|l2|metric)["']"""
KIND_TEST = re.compile(rf"(==|!=)\s*{NAME}|{NAME}\s*(==|!=)")
# Kind names used as labels of runs, not as the layer's kind: a report's softmax runs.
LABELS = {"metricattn/theory/trained_report.py":
          ['r.kind == "softmax" and r.state == "trained"']}


def test_no_kind_string_tests_outside_the_attention_package():
  found = []
  for path in sorted((ROOT / "metricattn").rglob("*.py")):
    rel = path.relative_to(ROOT).as_posix()
    if rel.startswith("metricattn/attention/"):
      continue
    for number, line in enumerate(path.read_text().splitlines(), 1):
      if KIND_TEST.search(line) and not any(label in line for label in LABELS.get(rel, [])):
        found.append(f"{rel}:{number}: {line.strip()}")
  assert not found, "\n".join(found)
