"""Long Range Arena ListOps: a Transformer encoder classifier with softmax, l2 or metric
attention.

  python -m metricattn.main --config=configs/lra_listops.py:attention=metric \
      --workdir=runs/listops-metric
  python -m metricattn.main --config=configs/lra_listops.py:attention=metric,size=cpu \
      --workdir=runs/listops-metric-cpu

Config arguments (after `:`):
  attention  softmax | l2 | metric, or l2_lipschitz (l2 with Kim et al.'s Lipschitz value
             map, model.value_map=lipschitz)                            (default metric)
  size       lra: LRA's data, model and schedule (below; sized for a GPU) | cpu: shorter
             sequences, fewer examples, a smaller model, for a CPU      (default lra)
  steps      training steps; 0 = the size's (lra 5,000, cpu 1,500)     (default 0)

`size=lra` is LRA's ListOps setting (google-research/long-range-arena,
lra_benchmarks/listops/configs/base_listops_config.py and transformer_base.py, with
lra_benchmarks/listops/train.py and models/transformer/transformer.py):
  - data: 96,000 / 2,000 / 2,000 examples of 501-1,999 tokens, depth 10, 2-10 arguments
    (metricattn/data/listops.py), padded to 2,048 (LRA: 2,000); batch 32.
  - model: 6 layers, width (emb_dim) 512, 8 heads, query/key width (qkv_dim) 512, MLP 2,048,
    dropout 0.1 (with Flax's threefry bits, `model.dropout_rng=threefry`, as the committed
    quick results were made; `hash` is faster, see metricattn/models/dropout.py), pre-LayerNorm blocks with a final LayerNorm (epsilon 1e-6, Flax's), sinusoidal
    positions (LRA's default, learn_pos_emb off), class-token pooling (pooling_mode "CLS")
    and LRA's two-layer head (metricattn/models/transformer_encoder.py). The metric MLP's
    hidden width is the width, 512, as in the other configs.
  - optimizer: Adam(b1 0.9, b2 0.98, eps 1e-9) with decoupled weight decay 0.1 (Flax's old
    optim.Adam `weight_decay`, multiplied by the learning rate like optax's adamw), learning
    rate "constant * linear_warmup * rsqrt_decay" with constant 0.05 and warm-up 1,000: the
    schedule `warmup_rsqrt` (metricattn/optim.py) at peak 0.05 / sqrt(1000) = 1.58e-3;
    5,000 steps, no gradient clipping.
  LRA's published vanilla Transformer reaches 36.37% test accuracy on ListOps (Tay et al.
  2021, "Long Range Arena", Table 1): the anchor of the experiment `lra_listops`. Not the
  same here: LRA evaluates 20 val batches every 20 steps, and drops out attention weights;
  we evaluate the whole val and test splits every 500 steps and have no attention dropout.
  LRA's base config also sets tied_weights, which its ListOps train.py never passes on.

`size=cpu` (the experiment's quick budget; ours, not LRA's): 20,000 / 1,000 / 1,000
examples of 51-149 tokens (padded to 160; the same depth and arguments), 2 layers, width
64, 4 heads, MLP 128, the same optimizer with warm-up over the first fifth of the steps
(peak 0.05 / sqrt(warmup)), 1,500 steps of batch 32.

Fields (every one is read by the trainer, the data or the model):
  seed, task
  data.name, data.seed, data.num_train, data.num_val, data.num_test, data.min_length,
  data.max_length, data.max_depth, data.max_args, data.bucket, data.batch_size
                                           (metricattn/data/listops.py)
  eval.batch_size
  model.name, model.attention, model.value_map, model.num_layers, model.num_heads,
  model.d_model, model.qk_dim, model.d_mlp, model.d_ff, model.dropout, model.scale,
  model.norm, model.ln_eps, model.positions, model.scale_embeddings, model.pool,
  model.dropout_rng, model.dtype (float32 | bfloat16)
                                           (metricattn/models/transformer_encoder.py)
  optimizer.name, .lr, .weight_decay, .b1, .b2, .eps, .grad_clip, .schedule, .warmup_steps
                                           (metricattn/optim.py)
    (derived: .lr = 0.05 / sqrt of optimizer.warmup_steps, LRA's peak)
    (derived, size=cpu only: .warmup_steps = train.steps // 5, at least 1)
  train.steps, .log_every, .eval_every, .checkpoint_every, .keep_checkpoints
    (derived: .log_every = 50, at most train.steps)
    (derived: .eval_every, .checkpoint_every = 500, at most train.steps)
  wandb.mode, wandb.project (read when wandb.mode is online or offline)

A derived field follows an override of the fields it derives from (`--config.train.steps=50`
moves the intervals, and with size=cpu the warm-up and the peak lr, with it) until it is
set itself.
"""

import math
from pathlib import Path

import ml_collections

from metricattn.config_utils import derived, load_module, parse_arg
from metricattn.errors import UserError

common = load_module(Path(__file__).with_name("common.py"))

LRA_LR = 0.05  # LRA's "constant" factor of the rsqrt schedule
SIZES = {
    "lra": dict(data=dict(num_train=96_000, num_val=2_000, num_test=2_000, min_length=500,
                          max_length=2_000, bucket=128),
                model=dict(num_layers=6, num_heads=8, d_model=512, qk_dim=512, d_mlp=512,
                           d_ff=2048),
                steps=5000, warmup=1000, eval_every=500, eval_batch=64),
    "cpu": dict(data=dict(num_train=20_000, num_val=1_000, num_test=1_000, min_length=50,
                          max_length=150, bucket=32),
                model=dict(num_layers=2, num_heads=4, d_model=64, qk_dim=64, d_mlp=64,
                           d_ff=128),
                steps=1500, warmup=0, eval_every=500, eval_batch=250),
}


def get_config(arg=None):
  arg = parse_arg(arg, attention="metric", size="lra", steps=0)
  if arg.size not in SIZES:
    raise UserError(f"unknown size {arg.size!r} for ListOps; allowed: {', '.join(SIZES)}")
  size = SIZES[arg.size]
  if (arg.steps or size["steps"]) < 1:
    raise UserError(f"steps must be positive; got {arg.steps or size['steps']}")
  # Settings derived from others follow an override of their source (see the docstring).
  steps = ml_collections.FieldReference(arg.steps or size["steps"])
  warmup = (ml_collections.FieldReference(size["warmup"]) if size["warmup"]
            else derived(lambda s: max(1, s // 5), steps))
  every = size["eval_every"]
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "classification"
  c.data = dict(name="listops", seed=0, max_depth=10, max_args=10, batch_size=32,
                **size["data"])
  c.eval = dict(batch_size=size["eval_batch"])
  c.model = dict(name="transformer_encoder", **common.attention(arg.attention),
                 **size["model"], dropout=0.1, dropout_rng="threefry", dtype="float32",
                 scale=ml_collections.FieldReference(None, field_type=float), norm="pre",
                 ln_eps=1e-6, positions="sinusoidal", scale_embeddings=False, pool="cls")
  c.optimizer = dict(name="adamw",
                     lr=derived(lambda w: LRA_LR / math.sqrt(max(1, w)), warmup,
                                field_type=float),
                     weight_decay=0.1, b1=0.9, b2=0.98, eps=1e-9, grad_clip=0.0,
                     schedule="warmup_rsqrt", warmup_steps=warmup)
  c.train = dict(steps=steps, log_every=derived(lambda s: min(50, s), steps),
                 eval_every=derived(lambda s: min(every, s), steps),
                 checkpoint_every=derived(lambda s: min(every, s), steps),
                 keep_checkpoints=2)
  c.wandb = dict(mode="disabled", project="metricattn")
  return c
