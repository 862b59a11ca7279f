"""Settings derived from others (warm-up, log/evaluation/checkpoint intervals, schedule
lengths, the plateau's start) follow an override of the setting they derive from, as
`--config.a.b=...` applies it; an explicit override of the derived setting wins."""

import ast
import json
import math
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from metricattn.config_utils import load_config_file, set_override
from tests.helpers import ROOT

VIT, IPN, LISTOPS = "configs/vit_image.py", "configs/ipn_mnist.py", "configs/lra_listops.py"
SYNTH, MULTI30K, L10N = ("configs/translation_synthetic.py", "configs/multi30k_transformer.py",
                         "configs/l10n_translation.py")
MOONS, MESH = "configs/moons_ipn.py", "configs/mesh_seg.py"
DERIVED = ("train.steps", "train.log_every", "train.eval_every", "train.checkpoint_every",
           "optimizer.warmup_steps", "optimizer.lr")


def config(path: str, arg: str | None = None, *overrides: str):
  """The config as the CLI builds it: `--config=PATH:ARG --config.KEY=VALUE ...`."""
  c = load_config_file(ROOT / path, arg)
  for item in overrides:
    key, _, text = item.partition("=")
    set_override(c, key, text)
  return c


def cli_config(monkeypatch, path: str, *overrides: str):
  """The config as absl's config_flags gives it to metricattn.main (locked, overrides applied
  by `config_flags`, which reads them from sys.argv)."""
  argv = ["main", f"--config={ROOT / path}", *(f"--config.{o}" for o in overrides)]
  monkeypatch.setattr(sys, "argv", argv)
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config", flag_values=values,
                                  lock_config=True)
  values(argv)
  return values.config


def get(c, key: str):
  for part in key.split("."):
    c = c[part]
  return c


def test_vit_short_run_leaves_warmup_and_evaluates():
  c = config(VIT, None, "train.steps=50")
  assert c.optimizer.warmup_steps == 5                     # a tenth of the steps
  assert c.train.log_every <= 50 and c.train.eval_every <= 50
  assert c.train.checkpoint_every <= 50
  assert (c.train.log_every, c.train.eval_every, c.train.checkpoint_every) == (50, 50, 50)
  assert config(VIT).optimizer.warmup_steps == 171          # the default is unchanged


@pytest.mark.parametrize("order", ["warmup_first", "steps_first"])
def test_explicit_override_of_a_derived_setting_wins(order):
  items = ["optimizer.warmup_steps=3", "train.steps=50"]
  c = config(VIT, None, *(items if order == "warmup_first" else items[::-1]))
  assert (c.train.steps, c.optimizer.warmup_steps, c.train.eval_every) == (50, 3, 50)
  c = config(SYNTH, None, "train.eval_every=7", "train.steps=100")
  assert (c.train.eval_every, c.train.checkpoint_every) == (7, 50)
  c = config(LISTOPS, "size=cpu", "optimizer.warmup_steps=10", "train.steps=100",
             "optimizer.lr=0.001")
  assert (c.optimizer.warmup_steps, c.optimizer.lr, c.train.eval_every) == (10, 0.001, 100)


def test_absl_overrides_as_metricattn_main_applies_them(monkeypatch):
  c = cli_config(monkeypatch, VIT, "train.steps=50")
  assert c.is_locked
  assert (c.optimizer.warmup_steps, c.train.eval_every, c.train.checkpoint_every) == (5, 50, 50)
  c = cli_config(monkeypatch, VIT, "train.steps=50", "optimizer.warmup_steps=2")
  assert (c.optimizer.warmup_steps, c.train.log_every) == (2, 50)
  c = cli_config(monkeypatch, MULTI30K, "data.batch_size=64")
  assert c.to_json() == config(MULTI30K, "batch=64").to_json()
  c = cli_config(monkeypatch, LISTOPS, "train.steps=100", "train.eval_every=30")
  assert (c.train.eval_every, c.train.checkpoint_every, c.train.log_every) == (30, 100, 50)


def test_translation_settings_follow_steps_and_batch():
  c = config(SYNTH, None, "train.steps=50")
  assert (c.train.eval_every, c.train.checkpoint_every) == (25, 25)
  c = config(SYNTH, None, "train.steps=50", "optimizer.warmup_steps=5")
  assert (c.optimizer.warmup_steps, c.train.eval_every) == (5, 25)
  paper = config(MULTI30K, None, "train.steps=50")
  assert (paper.train.eval_every, paper.train.checkpoint_every) == (50, 50)
  assert paper.optimizer.plateau.start_step == 100 * (29_000 // 128) + 1
  c = config(L10N, "model=small", "train.steps=50")
  assert (c.train.eval_every, c.train.checkpoint_every) == (5, 5)  # 10 evaluations


def test_listops_warmup_and_peak_lr_follow_steps():
  c = config(LISTOPS, "size=cpu", "train.steps=100")
  assert c.optimizer.warmup_steps == 20                    # the first fifth
  assert c.optimizer.lr == 0.05 / math.sqrt(20)            # LRA's peak for that warm-up
  assert (c.train.eval_every, c.train.checkpoint_every, c.train.log_every) == (100, 100, 50)
  lra = config(LISTOPS, None, "train.steps=100")
  assert (lra.optimizer.warmup_steps, lra.optimizer.lr) == (1000, 0.05 / math.sqrt(1000))
  assert config(LISTOPS, None, "optimizer.warmup_steps=400").optimizer.lr == 0.05 / 20


@pytest.mark.parametrize("path,arg,key", [
    (IPN, "steps=50", "train.steps=50"), (IPN, "steps=20000", "train.steps=20000"),
    (MOONS, "steps=20", "train.steps=20"), (MESH, "steps=4", "train.steps=4"),
    (SYNTH, "steps=20", "train.steps=20"), (LISTOPS, "steps=20", "train.steps=20"),
    (LISTOPS, "size=cpu,steps=20", "train.steps=20"),
    (VIT, "batch=64", "data.batch_size=64"),
    (VIT, "dataset=digits,batch=8", "data.batch_size=8"),
    (MULTI30K, "batch=64", "data.batch_size=64"),
    (MULTI30K, "schedule=fast,batch=32", "data.batch_size=32"),
    (L10N, "model=small,batch=16", "data.batch_size=16"),
    (L10N, "model=small,schedule=fast,batch=16", "data.batch_size=16")])
def test_overriding_the_key_equals_the_config_argument(path, arg, key):
  """The argument after ':' always recomputed the derived settings; the key now does too."""
  base = ",".join(a for a in arg.split(",") if not a.startswith(("steps=", "batch=")))
  assert config(path, base or None, key).to_json() == config(path, arg).to_json()


# The rule of every config at two lengths: (config, arg, override) -> derived values.
FROZEN = {
    (VIT, None, "train.steps=50"): (50, 50, 50, 50, 5, 0.003),
    (VIT, None, "train.steps=5000"): (5000, 50, 1718, 1718, 500, 0.003),
    (VIT, None, "data.batch_size=128"): (429, 50, 429, 429, 42, 0.003),
    (VIT, "dataset=digits", "train.steps=50"): (50, 50, 44, 44, 5, 0.003),
    (IPN, None, "train.steps=50"): (50, 50, 50, 50, 0, 1e-4),
    (IPN, None, "train.steps=20000"): (20000, 100, 1000, 1000, 0, 1e-4),
    (LISTOPS, "size=cpu", "train.steps=50"): (50, 50, 50, 50, 10, 0.05 / math.sqrt(10)),
    (LISTOPS, "size=cpu", "train.steps=3000"): (3000, 50, 500, 500, 600,
                                                0.05 / math.sqrt(600)),
    (LISTOPS, None, "train.steps=50"): (50, 50, 50, 50, 1000, 0.05 / math.sqrt(1000)),
    (SYNTH, None, "train.steps=1"): (1, 50, 1, 1, 50, 3e-3),
    (SYNTH, None, "train.steps=1000"): (1000, 50, 500, 500, 50, 3e-3),
    (MULTI30K, None, "train.steps=50"): (50, 50, 50, 50, 0, 1e-5),
    (MULTI30K, None, "data.batch_size=64"): (453_000, 50, 453, 4530, 0, 1e-5),
    (MULTI30K, "schedule=fast", "data.batch_size=64"): (18_120, 50, 453, 4530, 1000, 5e-4),
    (MOONS, None, "train.steps=50"): (50, 50, 200, 500, 0, 1e-3),       # nothing derived
    (MESH, None, "train.steps=50"): (50, 50, 200, 500, 0, 1e-3),        # nothing derived
}


@pytest.mark.parametrize("case", list(FROZEN), ids=lambda c: f"{c[0][8:-3]}:{c[1]}:{c[2]}")
def test_derived_values_are_the_rule(case):
  c = config(*case)
  assert tuple(get(c, k) for k in DERIVED) == pytest.approx(FROZEN[case], rel=1e-12)
  values = json.loads(c.to_json())                  # plain numbers, types as before
  for key in DERIVED:
    assert type(get(values, key)) is type(get(c, key)) is (float if key == "optimizer.lr"
                                                           else int)
  if "multi30k" in case[0] and "fast" not in (case[1] or ""):
    per_epoch = 29_000 // c.data.batch_size
    assert c.optimizer.plateau.start_step == 100 * per_epoch + 1


def leaves(values: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in values.items():
    out.update(leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
  return out


@pytest.mark.parametrize("path,arg,override", [
    (VIT, None, "train.steps=20"), (VIT, None, "data.batch_size=64"),
    (VIT, None, "data.val_size=1000"), (IPN, None, "train.steps=20"),
    (LISTOPS, "size=cpu", "train.steps=20"), (SYNTH, None, "train.steps=20"),
    (MULTI30K, None, "data.batch_size=64"), (L10N, "model=small,batch=16", "data.batch_size=8"),
    (MOONS, None, "train.steps=20"), (MESH, None, "train.steps=20")])
def test_docstring_names_every_derived_setting(path, arg, override):
  """Every key that moves with an override is on a "(derived" line of the Fields list (Moon
  and mesh_seg have neither: nothing of theirs is derived)."""
  doc = ast.get_docstring(ast.parse((ROOT / path).read_text()))
  lines = [line for line in doc.split("\nFields (", 1)[-1].split("\n\n", 1)[0].splitlines()
           if line.strip().startswith("(derived")]
  before = leaves(json.loads(config(path, arg).to_json()))
  after = leaves(json.loads(config(path, arg, override).to_json()))
  moved = {k for k in before if before[k] != after[k]} - {override.split("=")[0]}
  for key in moved:
    assert any("." + key.split(".", 1)[1] in line for line in lines), (key, lines)
