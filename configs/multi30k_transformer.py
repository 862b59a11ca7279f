"""The paper's Multi30k experiment: 6+6-layer Transformer, EN->DE, softmax, l2 or metric.

  python -m metricattn.main --config=configs/multi30k_transformer.py:attention=metric \
      --workdir=runs/multi30k-metric

Data: the Multi30k Task 1 raw files train.{en,de}, val.{en,de}, test_2016_flickr.{en,de}
(plain or .gz) in data/multi30k/ (`--config.data.data_dir=DIR` for another place), from
https://github.com/multi30k/dataset/tree/master/data/task1/raw; when online,
`--config.data.download=True` fetches and caches them there. The tokenizer is trained on the
training split and saved in the workdir; resume and `python -m metricattn.evaluate` reuse it.

Config arguments (after `:`):
  attention  softmax | l2 | metric                                      (default metric)
  schedule   paper | fast                                               (default paper)
    paper  the paper's optimizer: Adam lr 1e-5 (constant), coupled weight decay 5e-4
           (PyTorch `Adam(weight_decay=...)`), b1 0.9, b2 0.999, eps 5e-9, gradient clip
           1.0, ReduceLROnPlateau on validation loss (factor 0.9, patience 10 evaluations,
           one per epoch) from epoch 100 on: the reference's "warm-up" is 100 epochs at
           the initial lr. 1,000 epochs (the reference's count; the paper gives none).
    fast   OURS, not the paper's: AdamW (decoupled weight decay 1e-4), b2 0.98, eps 1e-9,
           linear warm-up over 1,000 steps to 5e-4 then cosine decay to 0, gradient clip
           1.0, no plateau; 40 epochs. Chosen from the usual small-corpus recipe (fairseq's
           IWSLT Transformer), not tuned here: no Multi30k run was possible offline.
  epochs     training length; 0 = the schedule's (1000 paper, 40 fast). Turned into
             train.steps by `metricattn.config_utils.steps_from_epochs` with the 29,000
             training pairs                                             (default 0)
  batch      training sentence pairs per step (data.batch_size; train.steps and the
             epoch-based settings follow an override of data.batch_size too) (default 128)
  tokenizer  sentencepiece (8,000 pieces, one vocabulary for both languages) | word (the
             reference's: words with count >= 2, one vocabulary per language)
                                                                        (default sentencepiece)

Model (the paper's, from the reference it adapted; see ../shared/paper.md), the same for the
three kinds, only the attention score differs: 6 encoder and 6 decoder layers, 8 heads,
d_model 512, qk_dim 512, d_mlp 512 (metric MLP), FFN 2048, dropout 0.1 (embeddings, sublayer
outputs, FFN hidden), post-LN with LayerNorm eps 1e-12, sinusoidal positions, unscaled
embeddings, separate source/target embeddings and output projection, no label smoothing,
max length 256 tokens. Logit scale 1/sqrt(head_dim) for all kinds (`model.scale=1.0` gives
the paper's Algorithm 1). Flax's default initialisation, not the reference's Kaiming uniform.
Evaluation once per epoch (val and test2016: loss, perplexity, token accuracy and BLEU of
greedy decodes; `--config.eval.beam_size=4` for beam search); checkpoints every 10 epochs.

BLEU here is standard sacrebleu corpus BLEU (13a tokenisation) of decoded, detokenised text
against the raw references. The reference code's BLEU 26.4 (and the paper's BLEU curves) came
from teacher-forced outputs scored by a non-standard per-position character BLEU: our
numbers are NOT comparable with them.

What a full run needs (an ESTIMATE, not a measurement of a full run; see
`scripts/translation_cost.py`, which printed these numbers on 2026-11-26 on the 2-core
x86_64 CPU of the README):
  Assumed: padded lengths 64 source + 64 target tokens, 8,000-token vocabularies,
  batch 128; `python scripts/translation_cost.py --time-batch 8 --reps 3`.
  kind     params  TFLOP/step  this CPU, batch 8   XLA buffers, batch 128
  softmax  56.4M   2.46        8.26 s (19 GFLOP/s)  0.63 GiB state + 9.1 GiB temporaries
  l2       53.3M   2.41        5.92 s (26 GFLOP/s)  0.60 GiB state + 9.4 GiB temporaries
  metric   62.7M   3.24        13.9 s (15 GFLOP/s)  0.70 GiB state + 10.4 GiB temporaries
  (CPU shared with other jobs, load average about 9: the CPU times are pessimistic.)
  schedule=paper, 226,000 steps: 544-731 PFLOP; by FLOPs, 5,900-13,800 hours of this CPU;
  on one GPU 6.0 (l2) to 8.1 (metric) hours at a sustained 25 TFLOP/s, 1.5 to 2.0 hours at
  100 TFLOP/s (float32 with TF32 matmuls on A100/H100-class GPUs; an assumption, not
  measured). schedule=fast, 9,040 steps: 4% of that, 0.24-0.32 GPU hours at 25 TFLOP/s.
  Evaluation is extra: each epoch a teacher-forced pass over the 2,014 val+test pairs (the
  FLOPs of about 5 training steps) and their greedy decoding, which is latency-bound.
  Memory: XLA's buffer assignment (on the CPU) gives about 10-11 GiB for a step at batch 128,
  so a 16 GB GPU should hold it and 24 GB leaves room; an estimate. Each checkpoint (params
  and Adam state) is about 0.7 GB; two are kept.
Sentences are padded to the longest training sentence (capped at 256), so the padded lengths
above, which we could not check offline, set the cost: it scales about linearly with them.

Fields (every one is read by the trainer, the data, the task or the model):
  seed, task
  data.name, .data_dir, .download, .url, .src_lang, .tgt_lang, .tokenizer, .vocab_size,
  .min_freq, .shared_vocab, .max_len, .tokenizer_dir ("" = the workdir), .batch_size,
  .buckets (length buckets, 0 = off)      (metricattn/data/translation.py)
  eval.batch_size, .beam_size, .length_penalty, .max_decode_len   (metricattn/tasks.py)
  model.name, .attention, .num_layers, .num_heads, .d_model, .qk_dim, .d_mlp, .d_ff,
  .dropout, .scale, .norm, .ln_eps, .positions, .max_len, .scale_embeddings,
  .share_embeddings, .tie_output, .implementation, .dtype (float32 | bfloat16, mixed
  precision)                               (metricattn/models/transformer.py),
  .label_smoothing                         (metricattn/tasks.py)
  optimizer.name, .lr, .weight_decay, .b1, .b2, .eps, .grad_clip, .schedule, .warmup_steps,
  .plateau.factor (0 = off), .patience, .start_step, .split, .metric   (metricattn/optim.py)
    (derived, schedule=paper: .plateau.start_step = 100 epochs at data.batch_size, + 1)
  train.steps, .log_every, .eval_every, .checkpoint_every, .keep_checkpoints
    (derived: .steps = `epochs` epochs of the 29,000 training pairs at data.batch_size)
    (derived: .eval_every = one epoch, at most train.steps)
    (derived: .checkpoint_every = 10 epochs, at most train.steps)
  wandb.mode, wandb.project

A derived field follows an override of the fields it derives from (`--config.train.steps=50`
moves the intervals with it; `--config.data.batch_size=64` the steps, the intervals and the
plateau's start) until it is set itself.
"""

from pathlib import Path

import ml_collections

from metricattn.config_utils import derived, load_module, parse_arg, steps_from_epochs
from metricattn.data.translation import MULTI30K_SIZES

common = load_module(Path(__file__).with_name("common.py"))

def get_config(arg=None):
  arg = parse_arg(arg, attention="metric", schedule="paper", epochs=0.0, batch=128,
                  tokenizer="sentencepiece")
  num_train = MULTI30K_SIZES["train"]
  common.translation_optimizer(arg.schedule, 1)  # an unknown schedule fails here, by name
  epochs = arg.epochs or common.DEFAULT_EPOCHS[arg.schedule]
  steps_from_epochs(epochs, num_train, arg.batch)  # bad arguments fail here
  # Settings derived from others follow an override of their source (see the docstring).
  batch = ml_collections.FieldReference(arg.batch)
  per_epoch = derived(lambda b: steps_from_epochs(1.0, num_train, b), batch)  # not a key
  optimizer = common.translation_optimizer(arg.schedule, per_epoch)
  steps = derived(lambda b: steps_from_epochs(epochs, num_train, b), batch)
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "translation"
  c.data = dict(name="multi30k", data_dir="data/multi30k", download=False,
                url="https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/",
                src_lang="en", tgt_lang="de", tokenizer=arg.tokenizer, vocab_size=8000,
                min_freq=2, shared_vocab=arg.tokenizer == "sentencepiece", max_len=256,
                tokenizer_dir="", batch_size=batch, buckets=0)
  c.eval = dict(batch_size=128, beam_size=1, length_penalty=0.6, max_decode_len=0)
  c.model = common.transformer(arg.attention)  # the paper's
  c.optimizer = optimizer
  c.train = dict(steps=steps, log_every=50, eval_every=derived(min, per_epoch, steps),
                 checkpoint_every=derived(lambda p, s: min(10 * p, s), per_epoch, steps),
                 keep_checkpoints=2)
  c.wandb = dict(mode="disabled", project="metricattn")
  return c
