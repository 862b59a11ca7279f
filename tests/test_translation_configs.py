"""The translation configs: the synthetic config reaches BLEU > 90 per kind at its stated
budget; the Multi30k config runs end to end on files in the published layout, resumes and is
evaluated in a fresh process; ReduceLROnPlateau reduces the learning-rate scale and its state
survives resume."""

import json
import os

import ml_collections
import orbax.checkpoint as ocp
import pytest

from metricattn.checkpoint import Checkpointer
from metricattn.errors import UserError
from metricattn.optim import Plateau
from metricattn.train import train_and_evaluate
from tests.helpers import cli, load_config, tiny_moons
from tests.test_translation_data import write_multi30k

from metricattn.attention import KINDS



# ---------------------------------------------------------------- synthetic

@pytest.mark.parametrize("kind", KINDS)
def test_synthetic_config_reaches_bleu_90(kind, tmp_path):
  config = load_config("configs/translation_synthetic.py", f"attention={kind}")
  assert config.train.steps == 400  # the budget the config's docstring states
  summary = train_and_evaluate(config, tmp_path)
  assert summary["test/bleu"] > 90, summary
  assert summary["val/bleu"] > 90, summary


# ---------------------------------------------------------------- Multi30k

def tiny_multi30k(data_dir, steps: int, kind: str = "metric") -> ml_collections.ConfigDict:
  """The paper config, shrunk: tiny model and vocabulary, evaluation every 3 steps, the
  plateau active from the start."""
  return load_config(
      "configs/multi30k_transformer.py", f"attention={kind},batch=8",
      data__data_dir=str(data_dir), data__vocab_size=60, eval__batch_size=8,
      model__num_layers=1, model__num_heads=2, model__d_model=16, model__qk_dim=16,
      model__d_mlp=8, model__d_ff=32, optimizer__plateau__start_step=0,
      train__steps=steps, train__log_every=3, train__eval_every=3,
      train__checkpoint_every=3)


def test_multi30k_config_is_the_papers():
  c = load_config("configs/multi30k_transformer.py", "attention=metric")
  m, o = c.model, c.optimizer
  assert (m.num_layers, m.num_heads, m.d_model, m.d_ff, m.dropout, m.norm, m.ln_eps) == (
      6, 8, 512, 2048, 0.1, "post", 1e-12)
  assert (o.name, o.lr, o.weight_decay, o.eps, o.grad_clip, o.schedule) == (
      "adam", 1e-5, 5e-4, 5e-9, 1.0, "constant")
  assert dict(o.plateau) == dict(factor=0.9, patience=10, start_step=100 * 226 + 1,
                                 split="val", metric="loss")
  assert (c.data.batch_size, c.data.max_len, c.train.steps, c.train.eval_every) == (
      128, 256, 1000 * 226, 226)
  fast = load_config("configs/multi30k_transformer.py", "schedule=fast,epochs=2")
  assert (fast.optimizer.schedule, fast.optimizer.plateau.factor, fast.train.steps) == (
      "warmup_cosine", 0.0, 452)
  with pytest.raises(UserError, match="unknown schedule"):
    load_config("configs/multi30k_transformer.py", "schedule=slow")


def test_multi30k_runs_resumes_and_evaluates(tmp_path, fast_compile):
  data_dir = tmp_path / "multi30k"
  write_multi30k(data_dir)
  straight = train_and_evaluate(tiny_multi30k(data_dir, 6), tmp_path / "straight")

  work = tmp_path / "resumed"
  train_and_evaluate(tiny_multi30k(data_dir, 3), work)
  spm = (work / "spm_joint.model").read_bytes()
  resumed = train_and_evaluate(tiny_multi30k(data_dir, 6), work)
  assert (work / "spm_joint.model").read_bytes() == spm  # the tokenizer is reused
  for key in ("val/loss", "val/bleu", "test/loss", "test/bleu", "train/loss"):
    assert resumed[key] == straight[key], key
  assert 0.0 <= resumed["test/bleu"] <= 100.0
  assert resumed["test/perplexity"] == pytest.approx(2.718281828 ** resumed["test/loss"])

  env = {**os.environ, "JAX_DISABLE_MOST_OPTIMIZATIONS": "true"}  # the same programs
  out = cli("metricattn.evaluate", f"--workdir={work}", env=env)
  assert out.returncode == 0, out.stderr
  evaluation = json.loads((work / "evaluation.json").read_text())
  assert evaluation["step"] == 6
  for key in ("val/loss", "val/bleu", "test/loss", "test/bleu"):
    assert evaluation[key] == pytest.approx(resumed[key], rel=1e-5, abs=1e-6), key


# ---------------------------------------------------------------- ReduceLROnPlateau

def plateau_config(**p) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.optimizer = dict(plateau=dict(factor=0.5, patience=2, start_step=10, split="val",
                                  metric="loss"))
  c.optimizer.plateau.update(p)
  return c


def feed(plateau: Plateau, losses: list[float], first_step: int = 10) -> list[float]:
  """Scale after each evaluation of `losses`, one every 10 steps."""
  scales = []
  for i, loss in enumerate(losses):
    plateau.update(first_step + 10 * i, [{"val": {"loss": loss}}])
    scales.append(plateau.scale)
  return scales


def test_plateau_reduces_after_patience_bad_evaluations():
  # PyTorch semantics: reduce when the count of bad evaluations exceeds `patience`.
  plateau = Plateau(plateau_config())
  assert plateau.enabled and plateau.scale == 1.0
  assert feed(plateau, [5.0], first_step=0) == [1.0]  # before start_step: ignored
  assert plateau.state["best"] is None
  scales = feed(plateau, [1.0, 1.0, 1.0, 1.0, 0.5, 0.49999, 0.6, 0.7])
  assert scales == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25]
  assert plateau.state == {"best": 0.5, "bad": 0, "scale": 0.25}


def test_plateau_state_round_trips_through_json():
  a = Plateau(plateau_config(patience=1))
  feed(a, [1.0, 1.0])
  b = Plateau(plateau_config(patience=1))
  b.state = json.loads(json.dumps(a.state))
  assert feed(a, [1.0, 2.0, 0.1]) == feed(b, [1.0, 2.0, 0.1]) == [0.5, 0.5, 0.5]


def test_plateau_off_and_bad_split():
  off = Plateau(plateau_config(factor=0.0))
  assert not off.enabled
  assert feed(off, [1.0] * 10) == [1.0] * 10
  with pytest.raises(UserError, match="not evaluated"):
    Plateau(plateau_config(split="train")).update(10, [{"val": {"loss": 1.0}}])


def frozen_moons(steps: int) -> ml_collections.ConfigDict:
  """Moon run whose learning rate is too small to move the test loss: every evaluation
  after the first is 'no improvement', so the plateau's reductions are deterministic."""
  c = tiny_moons(train__steps=steps, train__log_every=5, train__eval_every=5,
                 train__checkpoint_every=20, optimizer__lr=1e-9)
  c.optimizer.plateau = dict(factor=0.5, patience=1, start_step=0, split="test",
                             metric="loss")
  return c


def plateau_state(workdir, step: int) -> dict:
  ckpt = Checkpointer(workdir, 2)
  meta = ckpt.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
  ckpt.close()
  return meta["plateau"]


def test_plateau_state_survives_resume(tmp_path, fast_compile):
  train_and_evaluate(frozen_moons(40), tmp_path / "straight")
  train_and_evaluate(frozen_moons(20), tmp_path / "resumed")
  assert plateau_state(tmp_path / "resumed", 20)["scale"] == 0.5
  train_and_evaluate(frozen_moons(40), tmp_path / "resumed")
  # 8 evaluations: best, then bad runs of 2 reduce at evaluations 3, 5, 7.
  expected = plateau_state(tmp_path / "straight", 40)
  assert expected["scale"] == 0.125 and expected["bad"] == 1
  assert plateau_state(tmp_path / "resumed", 40) == expected
