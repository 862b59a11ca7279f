"""The encoder-decoder Transformer: shapes per kind, causal and padding masks, dropout,
cached == uncached decoding, beam size 1 == greedy, the Translation task, and a short
training run on the synthetic task."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from metricattn.data import get_dataset
from metricattn.errors import UserError
from metricattn.models import build_model, decoding
from metricattn.models.decoding import decode, decode_model
from metricattn.models.transformer import Transformer
from metricattn.tasks import Translation, get_task, token_losses, token_terms
from tests.helpers import COMMON

from metricattn.attention import KINDS
BOS, EOS = 2, 3
SRC_VOCAB, TGT_VOCAB = 20, 23
MAX_DECODE = 12


# XLA without most optimisations: these tiny programs compile faster (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("fast_compile")


def tiny(kind: str, **kw) -> ml_collections.ConfigDict:
  base = dict(num_layers=1, num_heads=4, d_model=32, qk_dim=32, d_mlp=16, d_ff=64,
              dropout=0.1, max_len=16, ln_eps=1e-6)
  return ml_collections.ConfigDict(COMMON.transformer(kind, **{**base, **kw}))


def varied(model: Transformer) -> Transformer:
  """Larger embeddings, so that a random model's greedy output is not one repeated token."""
  for embedder in (model.encoder.embedder, model.decoder.embedder):
    embedder.embed.embedding[...] *= 5.0
  return model


def tokens(shape, high: int, seed: int) -> jnp.ndarray:
  return jnp.asarray(np.random.default_rng(seed).integers(4, high, shape), jnp.int32)


def source() -> jnp.ndarray:
  """[4, 7] source ids with padding at the end of two rows."""
  return tokens((4, 7), SRC_VOCAB, 0).at[0, 5:].set(0).at[2, 3:].set(0)


@functools.partial(jax.jit, static_argnums=0)
def forward(graphdef, params, src, tgt):
  return nnx.merge(graphdef, params)(src, tgt)


def logits_of(model, src, tgt):
  return forward(*nnx.split(model), src, tgt)


@pytest.fixture(scope="module", params=KINDS)
def model(request):
  kind = request.param
  # Learned positions keep a random greedy output varied; other tests use sinusoids.
  return varied(Transformer(SRC_VOCAB, TGT_VOCAB, tiny(kind, positions="learned"),
                            rngs=nnx.Rngs(0)))


# ---------------------------------------------------------------- shapes and masks

def test_shapes_and_causal_mask(model):
  src = source()
  tgt = tokens((4, 6), TGT_VOCAB, 1)
  future = tgt.at[:, 3:].set(tokens((4, 3), TGT_VOCAB, 2))
  out = logits_of(model, jnp.concatenate([src, src]), jnp.concatenate([tgt, future]))
  assert out.shape == (8, 6, TGT_VOCAB) and out.dtype == jnp.float32
  a, b = out[:4], out[4:]
  np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-5)
  assert not np.allclose(a[:, 3:], b[:, 3:], atol=1e-3)


def test_source_padding_is_ignored():
  model = varied(Transformer(SRC_VOCAB, TGT_VOCAB, tiny("metric"), rngs=nnx.Rngs(1)))
  src, tgt = source(), tokens((4, 5), TGT_VOCAB, 3)
  padded = jnp.pad(src, ((0, 0), (0, 3)))
  np.testing.assert_allclose(logits_of(model, src, tgt), logits_of(model, padded, tgt),
                             atol=1e-5)


def test_pre_ln_shared_and_tied_embeddings():
  h = tiny("l2", norm="pre", positions="learned", share_embeddings=True, tie_output=True,
           scale_embeddings=True)
  model = Transformer(SRC_VOCAB, SRC_VOCAB, h, rngs=nnx.Rngs(0))
  assert model.decoder.embedder.embed is model.encoder.embedder.embed and model.out is None
  assert logits_of(model, source(), tokens((4, 5), SRC_VOCAB, 1)).shape == (4, 5, SRC_VOCAB)
  with pytest.raises(UserError, match="one vocabulary"):
    Transformer(SRC_VOCAB, TGT_VOCAB, h, rngs=nnx.Rngs(0))
  with pytest.raises(UserError, match="model.norm"):
    Transformer(SRC_VOCAB, SRC_VOCAB, tiny("l2", norm="sandwich"), rngs=nnx.Rngs(0))


def test_dropout_is_a_function_of_the_key():
  model = Transformer(SRC_VOCAB, TGT_VOCAB, tiny("metric", dropout=0.3), rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)

  @jax.jit
  def run(key):
    m = nnx.merge(graphdef, params)
    src, tgt = source(), tokens((4, 5), TGT_VOCAB, 1)
    return m(src, tgt, train=True, rngs=key), m(src, tgt, train=False)

  a, plain = run(jax.random.key(0))
  b, _ = run(jax.random.key(0))
  c, _ = run(jax.random.key(1))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c) and not np.allclose(a, plain)
  with pytest.raises(ValueError, match="rngs"):
    model(source(), tokens((4, 5), TGT_VOCAB, 1), train=True)


def count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("kind", KINDS)
def test_parameter_count(kind):
  d, ff, q, m, layers, s, t = 32, 64, 32, 16, 3, SRC_VOCAB, TGT_VOCAB
  lin = lambda i, o: i * o + o
  metric = lin(q, m) + lin(m, q) if kind == "metric" else 0
  qk_self = lin(d, q) * (2 if kind == "softmax" else 1)
  self_attn = qk_self + metric + 2 * lin(d, d)        # q/k (tied for l2/metric), v, out
  cross_attn = 2 * lin(d, q) + metric + 2 * lin(d, d)  # separate q and k for every kind
  ffn, ln = lin(d, ff) + lin(ff, d), 2 * d
  enc = layers * (self_attn + ffn + 2 * ln)
  dec = layers * (self_attn + cross_attn + ffn + 3 * ln)
  expected = s * d + t * d + enc + dec + lin(d, t)
  h = tiny(kind, num_layers=layers)
  abstract = nnx.eval_shape(lambda: Transformer(s, t, h, rngs=nnx.Rngs(0)))
  assert count(nnx.state(abstract, nnx.Param)) == expected


# ---------------------------------------------------------------- decoding

@functools.partial(jax.jit, static_argnums=(0, 3))
def decodings(graphdef, params, src, beam_size: int):
  """Cached and uncached decoding of `src`; greedy also as beam search of size 1."""
  model = nnx.merge(graphdef, params)
  kw = dict(bos_id=BOS, eos_id=EOS, max_len=MAX_DECODE)
  batch = src.shape[0]
  if beam_size == 1:
    out = {"cached": decode_model(model, src, **kw),
           "uncached": decode_model(model, src, cached=False, **kw)}
    state, step = decoding.make_stepper(model, src, MAX_DECODE, cached=True)
    out["beam1"] = decoding.beam_search(step, state, batch, beam_size=1, length_penalty=0.0,
                                        **kw)
    return out
  run = functools.partial(decode_model, model, src, beam_size=beam_size, length_penalty=0.6,
                          **kw)
  return {"cached": run(), "uncached": run(cached=False)}


def check_padding_after_eos(rows: np.ndarray) -> None:
  for row in rows:
    assert BOS not in row
    ends = np.flatnonzero(row == EOS)
    if len(ends):  # padding after the first EOS, none before it
      assert np.all(row[ends[0] + 1:] == 0) and np.all(row[:ends[0]] != 0)
    else:
      assert np.all(row != 0)


def test_cached_equals_uncached_and_beam1_equals_greedy(model):
  out = decodings(*nnx.split(model), source(), 1)
  greedy = np.asarray(out["cached"])
  assert greedy.shape == (4, MAX_DECODE) and greedy.dtype == np.int32
  assert len({tuple(r) for r in greedy}) > 1 and len(set(greedy[0])) > 1  # not degenerate
  np.testing.assert_array_equal(greedy, out["uncached"])
  np.testing.assert_array_equal(greedy, out["beam1"])
  check_padding_after_eos(greedy)


def test_beam_search_cached_equals_uncached():
  h = tiny("metric", positions="learned", num_layers=2)  # two layers: two caches
  model = varied(Transformer(SRC_VOCAB, TGT_VOCAB, h, rngs=nnx.Rngs(3)))
  out = decodings(*nnx.split(model), source(), 3)
  beams = np.asarray(out["cached"])
  assert beams.shape == (4, MAX_DECODE) and len({tuple(r) for r in beams}) > 1
  np.testing.assert_array_equal(beams, out["uncached"])
  check_padding_after_eos(beams)


def test_decode_checks_lengths():
  model = Transformer(SRC_VOCAB, TGT_VOCAB, tiny("softmax"), rngs=nnx.Rngs(2))
  with pytest.raises(ValueError, match="max_len"):
    decode(model, source(), bos_id=BOS, eos_id=EOS, max_len=17)
  with pytest.raises(ValueError, match="beam_size"):
    decode(model, source(), bos_id=BOS, eos_id=EOS, max_len=8, beam_size=0)


# ---------------------------------------------------------------- build_model

def test_build_model_registry():
  config = ml_collections.ConfigDict({"model": tiny("l2")})
  build = lambda info: nnx.eval_shape(lambda: build_model(config, info, nnx.Rngs(0)))
  assert isinstance(build({"src_vocab_size": 10, "tgt_vocab_size": 12}), Transformer)
  config.model.name = "transformer_lm"
  with pytest.raises(UserError, match="unknown model 'transformer_lm'; allowed: ipn, vit, "
                     "transformer, transformer_encoder"):
    build({"vocab_size": 10, "num_classes": 3})


# ---------------------------------------------------------------- task and training

def synthetic_config(**eval_kw) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "translation"
  c.data = dict(name="synthetic_translation", seed=-1, num_words=8, min_words=2, max_words=6,
                reorder="swap", num_train=256, num_eval=40, max_len=8, batch_size=32)
  c.eval = dict(batch_size=20, beam_size=1, length_penalty=0.0, max_decode_len=0, **eval_kw)
  c.model = dict(label_smoothing=0.1)
  return c


def test_label_smoothing_loss():
  logits = jnp.log(jnp.array([[[0.7, 0.2, 0.1]]]))
  target = jnp.array([[0]])
  np.testing.assert_allclose(token_losses(logits, target), [[-np.log(0.7)]], rtol=1e-6)
  smooth = -(0.9 * np.log(0.7) + 0.1 * np.mean(np.log([0.7, 0.2, 0.1])))
  np.testing.assert_allclose(token_losses(logits, target, 0.1), [[smooth]], rtol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_token_terms_equal_log_softmax_gather_and_argmax(smoothing):
  """The one-hot picks and the custom gradient give the gather formula's values (bitwise)
  and gradients (to rounding), and the argmax's hits."""
  x = 3 * jax.random.normal(jax.random.key(0), (4, 6, 13))
  t = jax.random.randint(jax.random.key(1), (4, 6), 0, 13)
  w = jax.random.normal(jax.random.key(2), (4, 6))

  def reference(x):
    logp = jax.nn.log_softmax(x)
    nll = -jnp.take_along_axis(logp, t[..., None], -1)[..., 0]
    return (1 - smoothing) * nll - smoothing * jnp.mean(logp, -1), nll

  loss, nll, correct = token_terms(x, t, smoothing)
  ref_loss, ref_nll = reference(x)
  np.testing.assert_array_equal(np.asarray(nll), np.asarray(ref_nll))
  np.testing.assert_allclose(np.asarray(loss), np.asarray(ref_loss), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(correct), np.asarray(jnp.argmax(x, -1) == t))
  objective = lambda terms: jnp.sum(w * terms[0]) + 0.5 * jnp.sum(terms[1])
  np.testing.assert_allclose(np.asarray(jax.grad(lambda x: objective(token_terms(x, t, smoothing)))(x)),
                             np.asarray(jax.grad(lambda x: objective(reference(x)))(x)), atol=1e-6)


def test_translation_task_trains_on_synthetic_data():
  config = synthetic_config()
  data = get_dataset(config)
  task = get_task(config)
  assert isinstance(task, Translation)
  h = tiny("metric", num_layers=1, dropout=0.0, max_len=8)
  model = Transformer(data.info["src_vocab_size"], data.info["tgt_vocab_size"], h,
                      rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  tx = optax.adam(3e-3)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, batch, key):
    loss_fn = lambda p: task.loss(nnx.merge(graphdef, p), batch, train=True, rngs=key)
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, metrics

  losses = []
  for i in range(80):
    params, opt, metrics = step(params, opt, data.train_batch(i), jax.random.key(i))
    losses.append(float(metrics["loss"]))
  assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5]), losses

  trained = nnx.merge(graphdef, params)
  eval_step = jax.jit(lambda p, b: task.eval_sums(nnx.merge(graphdef, p), b))
  sums = {}
  for batch in data.eval_batches("val"):
    for k, v in eval_step(params, batch).items():
      sums[k] = sums.get(k, 0.0) + float(v)
  metrics = task.finalize(sums)
  assert sums["tokens"] == sum(np.count_nonzero(b) for b in data.arrays["val"]["tgt_out"])
  np.testing.assert_allclose(metrics["perplexity"], np.exp(metrics["loss"]), rtol=1e-6)
  bleu = task.host_eval(trained, data, "val")["bleu"]
  assert 0.0 <= bleu <= 100.0
  compiled = decoding._decode_jit._cache_size()
  assert len(task.translate(trained, data, "val")) == len(data.references("val"))
  assert decoding._decode_jit._cache_size() == compiled  # one compile per model and shape
