"""Mixed precision, model.dtype=bfloat16: float32 parameters and optimizer state, bfloat16
matmuls, float32 softmax and loss; the kernels in bfloat16; greedy decoding; a bad dtype."""

import re

import jax
import jax.extend
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from metricattn.attention import blockwise
from metricattn.attention import kernels as K
from metricattn.errors import UserError
from metricattn.models import build_model
from metricattn.models.decoding import decode
from metricattn.models.transformer import Transformer
from metricattn.optim import make_optimizer
from metricattn.tasks import get_task
from metricattn.train import make_train_step
from tests.helpers import COMMON, cli, load_config

pytestmark = pytest.mark.usefixtures("fast_compile")

VOCAB, BOS, EOS = 23, 2, 3
INFO = {"src_vocab_size": VOCAB, "tgt_vocab_size": VOCAB}
_rng = np.random.default_rng(0)
_tgt = _rng.integers(4, VOCAB, (4, 7)).astype(np.int32)
_tgt[1, 5:] = 0
BATCH = {"src": jnp.asarray(_rng.integers(4, VOCAB, (4, 7)), jnp.int32).at[0, 5:].set(0),
         "tgt_in": jnp.asarray(_tgt[:, :-1]), "tgt_out": jnp.asarray(_tgt[:, 1:])}


def config(kind: str, dtype: str) -> ml_collections.ConfigDict:
  """The translation config at a tiny size, dtype set as --config.model.dtype=... sets it."""
  return load_config("configs/multi30k_transformer.py", f"attention={kind},batch=4",
                     model__num_layers=1, model__num_heads=4, model__d_model=32,
                     model__qk_dim=32, model__d_mlp=16, model__d_ff=64, model__max_len=16,
                     model__dtype=dtype)


def leaves_dtypes(tree) -> set:
  return {x.dtype for x in jax.tree.leaves(tree)}


def equations(jaxpr):
  """Every equation of a jaxpr and of the jaxprs inside it."""
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from equations(sub)


@pytest.mark.parametrize("kind", ["softmax", "metric"])
def test_train_step_keeps_float32_state_and_the_float32_loss(kind):
  results = {}
  for dtype in ("float32", "bfloat16"):
    c = config(kind, dtype)
    assert c.model.dtype == dtype
    graphdef, params = nnx.split(build_model(c, INFO, nnx.Rngs(params=0)))
    tx = make_optimizer(c)
    step = jax.jit(make_train_step(graphdef, get_task(c), tx))
    opt = tx.init(params)
    results[dtype] = (params, *step(params, opt, BATCH, jnp.int32(0), jax.random.key(0),
                                    jnp.float32(1.0)))
  (p32, _, _, m32), (p16, new_params, new_opt, m16) = results["float32"], results["bfloat16"]
  jax.tree.map(np.testing.assert_array_equal, p32, p16)  # the same parameters
  assert leaves_dtypes(p16) == leaves_dtypes(new_params) == {jnp.dtype(jnp.float32)}
  assert {d for d in leaves_dtypes(new_opt) if jnp.issubdtype(d, jnp.floating)} == {
      jnp.dtype(jnp.float32)}
  assert float(m16["finite"]) == 1.0 and float(m16["grad_norm"]) > 0
  assert np.isfinite(float(m16["loss"]))
  assert abs(float(m16["loss"]) - float(m32["loss"])) < 0.05, (m16["loss"], m32["loss"])
  assert not np.array_equal(np.asarray(m16["loss"]), np.asarray(m32["loss"]))  # really bf16
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), p16, new_params)
  assert any(jax.tree.leaves(moved))


def test_bfloat16_matmuls_and_float32_softmax_and_loss():
  c = config("metric", "bfloat16")
  model = build_model(c, INFO, nnx.Rngs(params=0))
  graphdef, params = nnx.split(model)
  task = get_task(c)
  forward = lambda p: nnx.merge(graphdef, p)(BATCH["src"], BATCH["tgt_in"])
  assert jax.eval_shape(forward, params).dtype == jnp.bfloat16  # bf16 activations
  loss = lambda p: task.loss(nnx.merge(graphdef, p), BATCH, train=False)[0]
  eqns = list(equations(jax.make_jaxpr(loss)(params).jaxpr))
  dots = [e for e in eqns if e.primitive.name == "dot_general"]
  # per layer: projections, the metric MLP, both attention matmuls, the feed-forward; output
  assert len(dots) > 20
  for e in dots:
    assert [v.aval.dtype for v in e.invars] == [jnp.bfloat16] * 2, e
  exps = [e for e in eqns if e.primitive.name == "exp"]
  assert all(e.outvars[0].aval.dtype == jnp.float32 for e in exps)
  shapes = {e.outvars[0].aval.shape for e in exps}
  assert (4, 4, 6, 7) in shapes  # cross-attention softmax [b, heads, tgt, src]
  assert (4, 6, VOCAB) in shapes  # the loss's log-sum-exp
  norms = [e for e in eqns if e.primitive.name in ("rsqrt", "sqrt")]
  assert norms and all(e.outvars[0].aval.dtype == jnp.float32 for e in norms)  # LayerNorm


def qkv(dtype):
  keys = jax.random.split(jax.random.key(0), 3)
  shapes = [(2, 5, 2, 8), (2, 6, 2, 8), (2, 6, 2, 8)]
  # an offset, as projected keys have: the l2 kernel's centring must keep it harmless
  return [(jax.random.normal(k, s) + 0.5).astype(dtype) for k, s in zip(keys, shapes)]


# batch 0, query 2 may attend to no key; batch 1 has two padded keys
MASK = jnp.ones((2, 1, 5, 6), bool).at[0, :, 2].set(False).at[1, :, :, 4:].set(False)


@pytest.mark.parametrize("implementation", ["xla", "blockwise"])
@pytest.mark.parametrize("kernel", [K.dot_product_attention, K.l2_attention])
def test_kernels_in_bfloat16_match_float32(kernel, implementation, monkeypatch):
  # several blocks, padded: 5 queries in blocks of 2, 6 keys in blocks of 4
  monkeypatch.setattr(blockwise, "BLOCK_Q", 2)
  monkeypatch.setattr(blockwise, "BLOCK_K", 4)
  f = jax.jit(lambda q, k, v: kernel(q, k, v, mask=MASK, implementation=implementation))
  out16 = f(*qkv(jnp.bfloat16))
  out32 = f(*qkv(jnp.float32))
  assert out16.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(out16[0, 2], np.float32), 0.0)
  np.testing.assert_allclose(np.asarray(out16, np.float32), np.asarray(out32), atol=2e-2)
  grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(kernel(q, k, v, mask=MASK,
                                                         implementation=implementation)
                                                  .astype(jnp.float32) ** 2), argnums=(0, 1, 2)))
  g16, g32 = grad(*qkv(jnp.bfloat16)), grad(*qkv(jnp.float32))
  for a, b in zip(g16, g32):
    assert a.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b), rtol=0.05, atol=0.05)


def test_greedy_decoding_in_bfloat16():
  c = config("l2", "bfloat16")
  model = build_model(c, INFO, nnx.Rngs(params=0))
  for embed in (model.encoder.embedder.embed, model.decoder.embedder.embed):
    embed.embedding[...] *= 5.0  # a random model's greedy output: not one repeated token
  src = BATCH["src"]
  memory = model.encode(src)
  caches, memory_caches = model.init_cache(memory, 8)
  assert memory.dtype == caches[0]["k"].dtype == caches[0]["v"].dtype == jnp.bfloat16
  assert memory_caches[0]["k"].dtype == jnp.bfloat16
  assert caches[0]["k_sq"].dtype == jnp.float32
  out = np.asarray(decode(model, src, bos_id=BOS, eos_id=EOS, max_len=8))
  assert out.shape == (4, 8) and out.dtype == np.int32
  assert len(set(out[:, 0])) > 1 or len(set(out[0])) > 1
  # each token is (to bfloat16 rounding) the argmax of the teacher-forced bf16 decoder
  tgt_in = np.concatenate([np.full((4, 1), BOS, np.int32), out[:, :-1]], axis=1)
  logits = np.asarray(model.decode(jnp.asarray(tgt_in), memory, src), np.float32)
  logits[..., [0, BOS]] = -np.inf
  for b in range(4):
    for t in range(8):
      if t and out[b, t - 1] in (EOS, 0):
        assert out[b, t] == 0
        continue
      assert logits[b, t, out[b, t]] >= logits[b, t].max() - 0.1, (b, t)


def test_bad_dtype_and_the_encoder_classifier():
  h = ml_collections.ConfigDict(COMMON.transformer("softmax", num_layers=1, num_heads=2,
                                                   d_model=8, qk_dim=8, d_mlp=4, d_ff=8,
                                                   dtype="float16x"))
  with pytest.raises(UserError, match=re.escape(
      "unknown model.dtype 'float16x'; allowed: float32, bfloat16")):
    Transformer(5, 5, h, rngs=nnx.Rngs(0))
  m = ml_collections.ConfigDict(dict(
      name="transformer_encoder", attention="l2", value_map="lipschitz", num_layers=1,
      num_heads=2, d_model=8, qk_dim=8, d_mlp=4, d_ff=8, dropout=0.0, scale=None,
      norm="pre", ln_eps=1e-6, positions="sinusoidal", scale_embeddings=False, pool="mean"))
  info = {"vocab_size": 6, "num_classes": 3, "seq_len": 5}
  x = jnp.asarray([[1, 2, 3, 0, 0], [4, 5, 1, 2, 3]], jnp.int32)
  out32 = build_model(ml_collections.ConfigDict({"model": m}), info, nnx.Rngs(0))(x)
  m.dtype = "bfloat16"
  model16 = build_model(ml_collections.ConfigDict({"model": m}), info, nnx.Rngs(0))
  out16 = model16(x)
  assert out32.dtype == jnp.float32 and out16.dtype == jnp.bfloat16
  assert leaves_dtypes(nnx.state(model16, nnx.Param)) == {jnp.dtype(jnp.float32)}
  np.testing.assert_allclose(np.asarray(out16, np.float32), np.asarray(out32), atol=0.05)
  m.dtype = "float16x"
  with pytest.raises(UserError, match="unknown model.dtype 'float16x'"):
    build_model(ml_collections.ConfigDict({"model": m}), info, nnx.Rngs(0))


def test_bad_dtype_on_the_command_line_is_one_line(tmp_path):
  out = cli("metricattn.main", "--config=configs/translation_synthetic.py",
            "--config.model.dtype=float16x", f"--workdir={tmp_path}")
  assert out.returncode == 2
  assert out.stderr.strip() == "error: unknown model.dtype 'float16x'; allowed: float32, bfloat16"
