"""Moon data, batch order, evaluation modes; the sweep and the report on real tiny runs."""

import numpy as np
import pytest

from metricattn.data import get_dataset
from metricattn.data.sampling import batch_indices
from metricattn.errors import UserError
from metricattn.report import main as report_main
from metricattn.sweep import main as sweep_main
from tests.helpers import tiny_moons


def test_moons_sizes_and_seeded_generation():
  d = get_dataset(tiny_moons())
  assert d.splits["train"][0].shape == (400, 2) and d.splits["test"][0].shape == (100, 2)
  again = get_dataset(tiny_moons())
  np.testing.assert_array_equal(d.splits["train"][0], again.splits["train"][0])
  other = get_dataset(tiny_moons(seed=1))
  assert not np.array_equal(d.splits["train"][0], other.splits["train"][0])
  fixed = get_dataset(tiny_moons(seed=1, data__seed=0))
  np.testing.assert_array_equal(d.splits["train"][0], fixed.splits["train"][0])


def test_batch_order_is_a_pure_function_of_seed_and_step():
  a = [batch_indices(400, 100, 3, s) for s in range(12)]
  assert all(np.array_equal(x, batch_indices(400, 100, 3, s)) for s, x in enumerate(a))
  assert sorted(np.concatenate(a[:4]).tolist()) == list(range(400))  # an epoch covers all
  assert not np.array_equal(a[0], a[4])                              # new permutation per epoch
  assert not np.array_equal(a[0], batch_indices(400, 100, 4, 0))


def test_train_context_mask():
  d = get_dataset(tiny_moons(eval__context_size=5, eval__batch_size=30))
  batches = list(d.eval_batches("test"))
  assert len(batches) == 4                                 # 100 test points in chunks of 30
  b = batches[-1]
  assert b["x"].shape == (35, 2) and b["weight"].sum() == 10  # 10 real, 20 padding, 5 context
  m = b["mask"]
  assert m[:, :5].all()                                    # everyone sees the context
  assert (m[5:, 5:] == np.eye(30, dtype=bool)).all()       # eval points see only themselves
  assert (m[:5, 5:] == 0).all()                            # context never sees eval points


def test_batch_mode_mask_hides_padding():
  d = get_dataset(tiny_moons(eval__mode="batch", eval__batch_size=64))
  b = list(d.eval_batches("test"))[-1]                      # 36 real + 28 padding
  assert b["mask"][:, :36].all() and not b["mask"][:36, 36:].any()


def test_bad_eval_mode():
  with pytest.raises(UserError, match="allowed: plain, batch, train_context"):
    get_dataset(tiny_moons(eval__mode="context"))


def test_sweep_skips_finished_runs_and_report_summarises(tmp_path, capsys):
  args = ["--config=configs/moons_ipn.py", "--grid", "attention=softmax,metric",
          "--seeds", "0:2", "--root", str(tmp_path), "--jobs", "2",
          "--set", "train.steps=30", "train.eval_every=30", "train.checkpoint_every=30"]
  assert sweep_main(args) == 0
  assert sorted(p.parent.relative_to(tmp_path).as_posix()
                for p in tmp_path.rglob("summary.json")) == [
      "attention=metric/seed=0", "attention=metric/seed=1",
      "attention=softmax/seed=0", "attention=softmax/seed=1"]
  capsys.readouterr()
  assert sweep_main(args) == 0
  out = capsys.readouterr().out
  assert "4 runs, 4 already finished, 0 to run: nothing to do\n" in out
  assert "sweep:" not in out  # no "0 of 0 runs ok"
  assert report_main([str(tmp_path)]) == 0
  text = (tmp_path / "report.md").read_text()
  assert "| attention=metric | metric | 2 |" in text
  assert "| attention=softmax | softmax | 2 |" in text
  assert text.count("| attention=softmax | ") == 3  # summary row + two seeds


def test_report_without_runs_fails(tmp_path):
  assert report_main([str(tmp_path)]) == 2


def test_progress_says_starting_once_per_run(tmp_path, capsys):
  """While a run starts and compiles (no step logged yet) the progress thread prints its
  "starting" line once, not once per tick; a step logged gives a line with its speed."""
  import threading
  import time
  from metricattn.grid_runner import show_progress
  workdir = tmp_path / "attention=l2" / "seed=0"
  workdir.mkdir(parents=True)
  jobs = {workdir: (workdir, time.perf_counter(), 0)}
  stop = threading.Event()
  thread = threading.Thread(target=show_progress, args=(jobs, {workdir: 100}, tmp_path, stop,
                                                         0.01))
  thread.start()
  time.sleep(0.3)  # about 30 ticks
  (workdir / "metrics.jsonl").write_text('{"step": 10, "split": "train"}\n')
  time.sleep(0.1)
  stop.set()
  thread.join()
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == "  attention=l2/seed=0: step 0/100, 0.0 steps/s, starting"
  assert sum("starting" in line for line in lines) == 1, lines
  assert lines[1].startswith("  attention=l2/seed=0: step 10/100, ") and "s left" in lines[1]
