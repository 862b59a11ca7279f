"""The values a config may hold: checked once, where a run's config is checked, before anything
is created (`train.check_config`, which `main`, `sweep` and the experiments call first).

One table per config section: each key that a config has is checked for its type and range
(numbers finite), and a bad one is a UserError `KEY must be ...; got VALUE`. A key a config
does not have is not checked: every config family has its own keys.
"""

from __future__ import annotations

import math

from metricattn.errors import UserError


def _int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _real(v) -> bool:
  return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


# (test, what a value must be): the rules the tables below use.
POSITIVE_INT = (lambda v: _int(v) and v >= 1, "a positive integer")
NON_NEGATIVE_INT = (lambda v: _int(v) and v >= 0, "an integer >= 0")
POSITIVE = (lambda v: _real(v) and v > 0, "a finite number > 0")
NON_NEGATIVE = (lambda v: _real(v) and v >= 0, "a finite number >= 0")
FRACTION = (lambda v: _real(v) and 0 <= v < 1, "a number in [0, 1)")
FACTOR = (lambda v: _real(v) and 0 <= v <= 1, "a number in [0, 1] (0: off)")
SEED_OR_DEFAULT = (lambda v: _int(v) and v >= -1, "an integer >= 0, or -1 for the run's seed")
OPTIONAL_POSITIVE = (lambda v: v is None or (_real(v) and v > 0), "None or a finite number > 0")
COUNT_OR_ALL = (lambda v: _int(v) and v >= 0, "an integer >= 0 (0: all)")


def one_of(*names: str) -> tuple:
  return (lambda v: v in names, f"one of {', '.join(names)}")


RULES = {
    "": {"seed": NON_NEGATIVE_INT},
    "data": {
        "batch_size": POSITIVE_INT, "num_train": POSITIVE_INT, "num_test": POSITIVE_INT,
        "num_val": NON_NEGATIVE_INT, "num_eval": POSITIVE_INT, "val_size": NON_NEGATIVE_INT,
        "noise": NON_NEGATIVE, "seed": SEED_OR_DEFAULT, "crop_padding": NON_NEGATIVE_INT,
        "vocab_size": POSITIVE_INT, "max_len": POSITIVE_INT, "min_freq": NON_NEGATIVE_INT,
        "min_length": POSITIVE_INT, "max_length": POSITIVE_INT, "bucket": POSITIVE_INT,
        "buckets": NON_NEGATIVE_INT,
        "max_depth": POSITIVE_INT, "max_args": POSITIVE_INT, "min_words": POSITIVE_INT,
        "max_words": POSITIVE_INT, "num_words": POSITIVE_INT,
        "val_permille": NON_NEGATIVE_INT, "test_permille": NON_NEGATIVE_INT,
        "train_pairs": COUNT_OR_ALL,
    },
    "model": {
        "width": POSITIVE_INT, "qk_dim": POSITIVE_INT, "d_model": POSITIVE_INT,
        "d_mlp": NON_NEGATIVE_INT, "d_ff": POSITIVE_INT, "depth": NON_NEGATIVE_INT,
        "num_layers": POSITIVE_INT, "num_heads": POSITIVE_INT, "max_len": POSITIVE_INT,
        "dropout": FRACTION, "label_smoothing": FRACTION, "ln_eps": POSITIVE,
        "scale": OPTIONAL_POSITIVE,
    },
    "optimizer": {
        "lr": POSITIVE, "weight_decay": NON_NEGATIVE, "grad_clip": NON_NEGATIVE,
        "warmup_steps": NON_NEGATIVE_INT, "b1": FRACTION, "b2": FRACTION, "eps": POSITIVE,
    },
    "optimizer.plateau": {"factor": FACTOR, "patience": NON_NEGATIVE_INT,
                          "start_step": NON_NEGATIVE_INT},
    "train": {"steps": POSITIVE_INT, "log_every": POSITIVE_INT, "eval_every": POSITIVE_INT,
              "checkpoint_every": POSITIVE_INT, "keep_checkpoints": POSITIVE_INT,
              "stacked_seeds": one_of("vmap", "unroll")},  # feeder.STACKED_SEEDS
    "eval": {"batch_size": POSITIVE_INT, "beam_size": POSITIVE_INT,
             "max_decode_len": NON_NEGATIVE_INT, "length_penalty": NON_NEGATIVE,
             "context_size": POSITIVE_INT},
}


def check_values(config) -> None:
  """Raises a UserError naming the first config value outside its allowed range or type."""
  for section, rules in RULES.items():
    node = config
    for part in filter(None, section.split(".")):
      node = node.get(part) if hasattr(node, "get") else None
    if node is None:
      continue
    for key, (ok, what) in rules.items():
      if key in node and not ok(node[key]):
        name = f"{section}.{key}" if section else key
        raise UserError(f"{name} must be {what}; got {node[key]!r}")
