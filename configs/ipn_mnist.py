"""The paper's MNIST experiment: IPN on images as vectors, softmax, l2 or metric attention.

  python -m metricattn.main --config=configs/ipn_mnist.py:attention=metric,dataset=mnist \
      --workdir=runs/ipn-mnist-metric

Config arguments (after `:`):
  attention  softmax | l2 | metric, or l2_lipschitz (l2 with Kim et al.'s Lipschitz value
             map, model.value_map=lipschitz: H_new = S H_old A, A = P P^T / sqrt(d_Q), in
             place of the identity value)                               (default metric)
  dataset    mnist | fashion_mnist | digits                             (default mnist)
  source     idx | tfds | digits; "" = the dataset's default: tfds for mnist, idx (Debian's
             dataset-fashion-mnist, offline) for fashion_mnist, digits for digits (default "")
  steps      training steps (train.steps)                               (default 5000)

Paper settings (Table 2): d_Q 100, d_mlp 100, Adam with coupled L2 weight decay (PyTorch
`weight_decay`), lr 1e-4, weight decay 1e-4, tanh in the metric MLP. Each image is one
vector (784 values; 64 for digits) and attention runs across the images of a set.

Choices the paper leaves open (the same for all three kinds):
  - IPN width 100 (= d_Q), depth 2, one head; blocks are H_new = S H_old with no value/output
    projection, residual or layer norm, as for Moon.
  - Logit scale 1/sqrt(d_Q) for all kinds (`model.scale=1.0` gives the paper's Algorithm 1).
  - Set size 100: each training step is one set of 100 images from a seeded permutation.
  - 5,000 steps for every dataset: 500,000 images, about 9 epochs of the 55,000 MNIST or
    Fashion-MNIST training images, 348 of digits' 1,437. Constant lr, no warm-up (Table 2).
  - Validation: 5,000 training images held out as "val" (none for digits); test is the
    official test split (digits: a fixed 360 of its 1,797 images).
  - Evaluation mode `train_context`: each test image attends to itself and a fixed, seeded
    set of 100 training images, like the training sets, never to other test images, so its
    prediction does not depend on its batch.

Fields (every one is read by the trainer, the data or the model):
  seed, task
  data.name, data.source, data.data_dir, data.download, data.val_size, data.batch_size,
  data.augment, data.crop_padding          (metricattn/data/images.py; no augmentation)
  eval.mode, eval.batch_size, eval.context_size   (metricattn/data/arrays.py)
  model.name, model.attention, model.value_map, model.width, model.depth, model.num_heads,
  model.qk_dim, model.d_mlp, model.scale, model.residual, model.layer_norm,
  model.projections
                                           (metricattn/models/ipn.py)
  optimizer.name, .lr, .weight_decay, .b1, .b2, .eps, .grad_clip, .schedule,
  .warmup_steps (read by the warmup schedules only)   (metricattn/optim.py)
  train.steps, .log_every, .eval_every, .checkpoint_every, .keep_checkpoints
    (derived: .log_every = 100, at most train.steps)
    (derived: .eval_every, .checkpoint_every = 1,000, at most train.steps)
  wandb.mode, wandb.project (read when wandb.mode is online or offline)

A derived field follows an override of the fields it derives from (`--config.train.steps=50`
moves the intervals with it) until it is set itself.

Runs made (2-core x86_64 CPU, Intel Xeon, JAX 0.10.2; numbers copied from each workdir's
summary.json), with
  python -m metricattn.sweep --config=configs/ipn_mnist.py:dataset=fashion_mnist \
      --grid attention=softmax,l2,metric --seeds 0 --root runs/ipn-fmnist --jobs 1
and the same with dataset=digits, --root runs/ipn-digits; the metric runs:
    fashion_mnist (rerun at commit c2ef75c, 2026-11-30, other work running): test accuracy
      0.8447 (val 0.8518), wall 18 s (426 steps/s), 140,110 params; the same accuracies as
      at commit bd36adb (2026-11-26, nothing else running: wall 17 s, 410 steps/s).
    digits (commit bd36adb, 2026-11-26 13:27-13:29 UTC, nothing else running): test
      accuracy 0.9778, wall 13 s (545 steps/s), 68,110 params.
All three kinds on both datasets (the sweep and its table): docs/results.md.
"""

from pathlib import Path

import ml_collections

from metricattn.config_utils import derived, load_module, parse_arg

common = load_module(Path(__file__).with_name("common.py"))
from metricattn.data.images import image_source
from metricattn.errors import UserError

DATASETS = ("mnist", "fashion_mnist", "digits")
VAL_SIZE = 5000
SET_SIZE = 100
STEPS = 5000


def get_config(arg=None):
  arg = parse_arg(arg, attention="metric", dataset="mnist", source="", steps=STEPS)
  if arg.dataset not in DATASETS:
    raise UserError(f"unknown dataset {arg.dataset!r} for the IPN; allowed: "
                    f"{', '.join(DATASETS)}")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "classification"
  c.data = dict(name=arg.dataset, source=image_source(arg.dataset, arg.source), data_dir="",
                download=False, val_size=0 if arg.dataset == "digits" else VAL_SIZE,
                batch_size=SET_SIZE, augment=False, crop_padding=0)
  c.eval = dict(mode="train_context", batch_size=SET_SIZE, context_size=SET_SIZE)
  c.model = common.ipn(arg.attention, width=100, depth=2, qk_dim=100, d_mlp=100)
  c.optimizer = common.adam(lr=1e-4, weight_decay=1e-4)
  steps = ml_collections.FieldReference(arg.steps)  # derived settings follow an override
  c.train = dict(steps=steps, log_every=derived(lambda s: min(100, s), steps),
                 eval_every=derived(lambda s: min(1000, s), steps),
                 checkpoint_every=derived(lambda s: min(1000, s), steps), keep_checkpoints=2)
  c.wandb = dict(mode="disabled", project="metricattn")
  return c
