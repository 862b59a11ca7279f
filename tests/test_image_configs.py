"""configs/vit_image.py and configs/ipn_mnist.py: end-to-end on digits (offline), every config
key read and documented, evaluation from a checkpoint reproducing the run."""

import json
import re

import ml_collections
import pytest

from metricattn.config_utils import steps_from_epochs
from metricattn.data.images import SPECS, digits_splits
from metricattn.errors import UserError
from metricattn.attention import KINDS
from metricattn.train import train_and_evaluate
from tests.helpers import ROOT, cli, load_config

VIT, IPN = "configs/vit_image.py", "configs/ipn_mnist.py"
SHORT = dict(train__steps=6, train__log_every=3, train__eval_every=3,
             train__checkpoint_every=3)


def read_only_when(config) -> set[str]:
  """Keys the code reads only in a mode that `config` does not use."""
  keys = set()
  if config.wandb.mode == "disabled":
    keys.add("wandb.project")
  if config.optimizer.schedule not in ("warmup_cosine", "warmup_rsqrt"):
    keys.add("optimizer.warmup_steps")
  return keys


def leaves(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, int]:
  """Dotted path of every leaf -> id of the ConfigDict that holds it."""
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.update(leaves(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = id(config)
  return out


def run_recording_reads(config, workdir, monkeypatch) -> tuple[dict, set[str]]:
  """train_and_evaluate(config) -> (summary, dotted keys of the config the code read)."""
  reads: set[tuple[int, str]] = set()
  original = ml_collections.ConfigDict.__getitem__

  def recording(self, key):
    reads.add((id(self), key))
    return original(self, key)

  monkeypatch.setattr(ml_collections.ConfigDict, "__getitem__", recording)
  summary = train_and_evaluate(config, workdir)
  monkeypatch.undo()
  read = {path for path, owner in leaves(config).items()
          if (owner, path.rsplit(".", 1)[-1]) in reads}
  return summary, read


def documented_fields(path: str) -> set[str]:
  """The dotted keys a config's docstring lists under "Fields" (".lr" continues "optimizer.")."""
  import ast
  doc = ast.get_docstring(ast.parse((ROOT / path).read_text()))
  block = doc.split("\nFields (", 1)[1].split("\n", 1)[1].split("\n\n", 1)[0]
  fields, prefix = set(), ""
  for token in re.findall(r"[\w.]+", re.sub(r"\([^)]*\)", " ", block)):
    if token.startswith("."):
      token = prefix + token[1:]
    prefix = token.rsplit(".", 1)[0] + "." if "." in token else ""
    fields.add(token)
  return fields


@pytest.mark.parametrize("path,arg", [(VIT, "dataset=digits"), (IPN, "dataset=digits")])
def test_runs_on_digits_and_reads_every_key(path, arg, tmp_path, monkeypatch):
  config = load_config(path, f"{arg},attention=metric", **SHORT)
  config.lock()
  summary, read = run_recording_reads(config, tmp_path, monkeypatch)
  assert summary["step"] == 6 and 0.0 <= summary["test/accuracy"] <= 1.0
  assert summary["train/loss"] > 0 and summary["data_wait_fraction"] is not None
  unread = set(leaves(config)) - read - read_only_when(config)
  assert not unread, f"config keys never read by the code: {sorted(unread)}"


@pytest.mark.parametrize("path", [VIT, IPN])
@pytest.mark.parametrize("dataset", ["fashion_mnist", "digits"])
def test_docstring_lists_exactly_the_config_keys(path, dataset):
  config = load_config(path, f"dataset={dataset}")
  assert documented_fields(path) == set(leaves(config))


@pytest.mark.parametrize("path", [VIT, IPN])
def test_locked_config_rejects_typos_and_bad_arguments(path):
  out = cli("metricattn.main", f"--config={path}:dataset=digits", "--workdir=/nonexistent",
            "--config.optimizer.learning_rate=0.1")
  assert out.returncode == 2 and "learning_rate" in out.stderr, out.stderr
  with pytest.raises(UserError, match="unknown config argument 'atention'"):
    load_config(path, "atention=l2")
  with pytest.raises(UserError, match="unknown image dataset|unknown dataset"):
    load_config(path, "dataset=imagenet")


@pytest.mark.parametrize("dataset,source", [("fashion_mnist", "idx"), ("mnist", "tfds"),
                                            ("cifar10", "tfds"), ("digits", "digits")])
def test_vit_defaults_per_dataset(dataset, source):
  config = load_config(VIT, f"dataset={dataset}")
  assert config.data.source == source
  assert config.model.variant == {"digits": "Mu/2", "cifar10": "Mu/4"}.get(dataset, "Mu/7")
  assert config.data.augment == (dataset == "cifar10")
  other = {"idx": "tfds", "tfds": "idx"}.get(source)
  if other:
    assert load_config(VIT, f"dataset={dataset},source={other}").data.source == other
  else:
    with pytest.raises(UserError, match="cannot provide digits"):
      load_config(VIT, f"dataset={dataset},source=idx")


def test_one_epoch_is_one_pass_of_the_sampler():
  config = load_config(VIT, "dataset=fashion_mnist,batch=128")   # 60,000 - 5,000 val
  assert config.train.steps == 55_000 // 128 == 429
  assert load_config(VIT, "dataset=fashion_mnist").train.steps == 55_000 // 32
  assert load_config(VIT, "dataset=fashion_mnist,epochs=2.5,batch=64").train.steps == 2148
  assert SPECS["digits"].num_train == len(digits_splits()["train"][1])
  assert steps_from_epochs(0.001, 100, 10) == 1
  with pytest.raises(UserError, match="epochs must be positive"):
    steps_from_epochs(0, 100, 10)


def test_ipn_is_the_papers_mnist_setting():
  config = load_config(IPN, "dataset=fashion_mnist")
  m, o = config.model, config.optimizer
  assert (m.qk_dim, m.d_mlp, o.name, o.lr, o.weight_decay) == (100, 100, "adam", 1e-4, 1e-4)
  assert config.data.source == "idx" and config.eval.mode == "train_context"
  assert {k: load_config(IPN, f"attention={k}").model.attention for k in KINDS} == {
      k: k for k in KINDS}


def test_evaluate_reproduces_a_tiny_vit_run(tmp_path):
  config = load_config(VIT, "dataset=digits,attention=l2", **SHORT)
  summary = train_and_evaluate(config, tmp_path)
  out = cli("metricattn.evaluate", f"--workdir={tmp_path}", timeout=120)
  assert out.returncode == 0, out.stderr
  result = json.loads((tmp_path / "evaluation.json").read_text())
  assert result["step"] == 6
  assert result["test/accuracy"] == summary["test/accuracy"]
  assert result["test/loss"] == pytest.approx(summary["test/loss"], rel=1e-6)


# Parameters of the configs' ViTs (mean pooling, d_mlp = width), as the README states them.
README_PARAMS = {("Mu/7", (28, 28, 1)): {"softmax": 204_938, "l2": 188_298, "metric": 221_578},
                 ("Mu/4", (28, 28, 1)): {"softmax": 204_938, "l2": 188_298, "metric": 221_578},
                 ("Ti/4", (28, 28, 1)): {"softmax": 5_353_354, "l2": 4_908_682,
                                         "metric": 5_798_026}}


@pytest.mark.parametrize("variant,shape", list(README_PARAMS))
def test_readme_parameter_counts(variant, shape):
  from flax import nnx
  from metricattn.models import num_params
  from metricattn.models.vit import ViT
  build = lambda kind: ViT(shape, 10, variant=variant, kind=kind, pool="mean", rngs=nnx.Rngs(0))
  counts = {k: num_params(nnx.eval_shape(lambda k=k: build(k))) for k in KINDS}
  assert counts == README_PARAMS[variant, shape]
