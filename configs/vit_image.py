"""Vision Transformer image classification with softmax, l2 or metric attention.

  python -m metricattn.main \
      --config=configs/vit_image.py:attention=metric,dataset=fashion_mnist,variant=Mu/7 \
      --workdir=runs/vit-fmnist-metric

Config arguments (after `:`):
  attention  softmax | l2 | metric, or l2_lipschitz (l2 with Kim et al.'s Lipschitz value
             map, model.value_map=lipschitz)                            (default metric)
  dataset    fashion_mnist | mnist | cifar10 | digits                   (default fashion_mnist)
  source     idx | tfds | digits; "" = the dataset's default: idx (Debian's
             dataset-fashion-mnist, offline) for fashion_mnist, tfds for mnist and cifar10,
             digits for digits                                          (default "")
  variant    ViT SIZE/PATCH (metricattn/models/vit.py); "" = Mu/7 (16 patches) for 28x28
             images, Mu/4 for CIFAR-10's 32x32, Mu/2 for the 8x8 digits (default "")
  epochs     training length; turned into train.steps by
             `metricattn.config_utils.steps_from_epochs`                 (default 1.0)
  batch      training batch size (data.batch_size; train.steps follows an override of
             data.batch_size too)                                       (default 32)

Everything else is the same for the three kinds (width, depth, heads, optimizer, schedule,
data); only the attention's similarity differs. Choices:
  - Validation: 5,000 training images held out as "val" (none for digits); test is the
    official test split (digits: a fixed 360 of its 1,797 images).
  - Model: mean pooling over the patch tokens (no class token), no dropout, logit scale
    1/sqrt(head_dim), metric MLP hidden width = the variant's width.
  - Optimizer: AdamW (decoupled weight decay 0.05), peak lr 3e-3, linear warm-up over the
    first 10% of the steps then cosine decay to 0, gradient clipping at global norm 1.0.
    Batch 32, lr 3e-3 and 7x7 patches were chosen for one epoch of Fashion-MNIST on a CPU by
    val accuracy, the same for all kinds (README, "ViT on Fashion-MNIST, one epoch", lists
    every attempt): batch 128 (429 steps) left the metric ViT at 0.65; among lr 3e-4 to 1e-2
    3e-3 was best for l2; Mu/7 beat Mu/4 and a width-128 Mu/7.
  - CIFAR-10 only: random crop (4-pixel padding) and horizontal flip.
  - Evaluation (val and test) once per epoch and at the end; checkpoints at the same steps.

Fields (every one is read by the trainer, the data or the model):
  seed, task
  data.name, data.source, data.data_dir, data.download, data.val_size, data.batch_size,
  data.augment, data.crop_padding          (metricattn/data/images.py)
  eval.mode (plain: images are independent), eval.batch_size
  model.name, model.variant, model.attention, model.value_map, model.d_mlp, model.scale,
  model.pool, model.dropout                (metricattn/models/vit.py)
  optimizer.name, .lr, .weight_decay, .b1, .b2, .eps, .grad_clip, .schedule,
  .warmup_steps                            (metricattn/optim.py)
    (derived: .warmup_steps = train.steps // 10, at least 1)
  train.steps, .log_every, .eval_every, .checkpoint_every, .keep_checkpoints
    (derived: .steps = `epochs` epochs at data.batch_size of the images less data.val_size)
    (derived: .log_every = 50, at most train.steps)
    (derived: .eval_every, .checkpoint_every = one epoch as for .steps, at most train.steps)
  wandb.mode, wandb.project (read when wandb.mode is online or offline)

A derived field follows an override of the fields it derives from (`--config.train.steps=50`
moves the warm-up and the intervals with it) until it is set itself.

Runs made: `python -m metricattn.experiment vit_fashion_mnist --budget quick` runs this
config at its defaults (ViT-Mu/7, one epoch, batch 32; evaluating every 286 steps) for
each kind and seeds 0, 1, 2 (2-core x86_64 CPU, Intel Xeon, JAX 0.10.2, 2026-11-30, commit
c2ef75c). Test accuracy, mean ± std over the 3 seeds (results/vit_fashion_mnist/report.md):
  softmax 0.8347 ± 0.0033, l2 0.8201 ± 0.0041, metric 0.8181 ± 0.0030; every run above 0.80.
`--budget decisive` (epochs=5, seeds 0-4, evaluating every 859 steps; 2-core x86_64 CPU, AMD
EPYC, JAX 0.10.2, 2026-12-02, commit ecbcdb4; results/vit_fashion_mnist_decisive/report.md):
  metric 0.8843 ± 0.0022, l2 0.8842 ± 0.0031, softmax 0.8804 ± 0.0012.
"""

from pathlib import Path

import ml_collections

from metricattn.config_utils import derived, load_module, parse_arg, steps_from_epochs
from metricattn.data.images import image_source, image_spec

common = load_module(Path(__file__).with_name("common.py"))
VAL_SIZE = 5000
DEFAULT_VARIANTS = {"digits": "Mu/2", "cifar10": "Mu/4"}  # 28x28 images: Mu/7


def get_config(arg=None):
  arg = parse_arg(arg, attention="metric", dataset="fashion_mnist", source="", variant="",
                  epochs=1.0, batch=32)
  source = image_source(arg.dataset, arg.source)
  val_size = 0 if arg.dataset == "digits" else VAL_SIZE
  images = image_spec(arg.dataset, source).num_train  # before the val split
  epochs = arg.epochs
  steps_from_epochs(epochs, images - val_size, arg.batch)  # bad arguments fail here
  # Settings derived from others follow an override of their source (see the docstring).
  batch, val = ml_collections.FieldReference(arg.batch), ml_collections.FieldReference(val_size)
  steps = derived(lambda b, v: steps_from_epochs(epochs, images - v, b), batch, val)

  def epoch_or_run(s, b, v):  # one epoch, at most the run
    return min(steps_from_epochs(1.0, images - v, b), s)

  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "classification"
  c.data = dict(name=arg.dataset, source=source, data_dir="", download=False,
                val_size=val, batch_size=batch, augment=arg.dataset == "cifar10",
                crop_padding=4)
  c.eval = dict(mode="plain", batch_size=500)
  variant = arg.variant or DEFAULT_VARIANTS.get(arg.dataset, "Mu/7")
  c.model = dict(name="vit", variant=variant, **common.attention(arg.attention), d_mlp=0,
                 pool="mean", dropout=0.0,
                 scale=ml_collections.FieldReference(None, field_type=float))
  c.optimizer = dict(name="adamw", lr=3e-3, weight_decay=0.05, b1=0.9, b2=0.999, eps=1e-8,
                     grad_clip=1.0, schedule="warmup_cosine",
                     warmup_steps=derived(lambda s: max(1, s // 10), steps))
  c.train = dict(steps=steps, log_every=derived(lambda s: min(50, s), steps),
                 eval_every=derived(epoch_or_run, steps, batch, val),
                 checkpoint_every=derived(epoch_or_run, steps, batch, val), keep_checkpoints=2)
  c.wandb = dict(mode="disabled", project="metricattn")
  return c
