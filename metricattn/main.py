"""Flags only: `python -m metricattn.main --config=configs/moons_ipn.py:attention=metric --workdir=runs/x`.

Override any config value with `--config.a.b=value` (the config is locked, so a misspelt
key is an error). Bad input ends with one line on stderr and exit code 2.

Several processes (hosts) train one run when each is started with the same command plus
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`, or with none of them on
a cluster JAX recognises (SLURM, Open MPI, TPU pods); see `metricattn.multihost`.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback

from absl import app, flags
from ml_collections import config_flags

from metricattn.cli import enable_compilation_cache, fail, run, set_cpu_devices
from metricattn.errors import Interrupted, UserError
from metricattn.grid import parse_seeds

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path:args).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_SEEDS = flags.DEFINE_string(
    "seeds", None, "Train these seeds ('0:10', '0,3') vmapped in one program, in "
    "WORKDIR/seed=N; overrides config.seed.")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", None, "Split the host CPU into this many devices: vmapped seeds are then "
    "split over them when they divide evenly, else each batch is. Default: leave JAX's "
    "setting (one CPU device); not used on GPU or TPU.")
_ALLOW_CHANGE = flags.DEFINE_boolean(
    "allow_config_change", False, "Resume a run with settings other than those it started "
    "with; the changes are recorded in WORKDIR/config_changes.jsonl. Without it such a resume "
    "is refused (extending train.steps, logging cadence and wandb settings are always allowed).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-process training: HOST:PORT of process 0, where it "
    "starts JAX's coordination service (the same on every process).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Multi-process training: the number of processes; 1 alone: one "
    "process even inside a multi-task SLURM or MPI job (no jax.distributed).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "Multi-process training: this process's index, 0..num_processes-1.")
_INIT_TIMEOUT = flags.DEFINE_integer(
    "init_timeout", 120, "Multi-process training: seconds every process waits for all "
    "--num_processes of them to join; then it stops with one line saying so.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with one-line errors (bad flag, bad config argument or override)."""
  try:
    try:
      rest = flags.FLAGS(argv)
    except SystemExit:  # absl exits 1 after printing --help; help is not an error
      if any(a.lstrip("-") in ("help", "h", "helpshort", "helpfull", "?") for a in argv[1:]):
        sys.exit(0)
      raise
    flags.FLAGS["config"].value.get("seed")  # the config file loads lazily: load it now
    return rest
  except UserError as e:
    fail(str(e))
  except OSError as e:
    fail(f"cannot load --config: {str(e).splitlines()[-1].strip()}")
  except SyntaxError as e:
    fail(f"cannot load --config: {e.msg} in {e.filename}, line {e.lineno}")
  except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as e:
    text = " ".join(str(e).replace("\\n", " ").replace("\\", "").split())
    if isinstance(e, (KeyError, AttributeError)):
      text = text.strip("'\"")  # a KeyError's str() is a repr in quotes
      unknown_override(argv)
    config_raises(argv)  # a get_config raising ValueError arrives as a flags.Error
    fail(f"bad flag or config override: {text}")
  except Exception as e:  # the config file's get_config raised
    config_raises(argv)
    fail(f"cannot load --config: {type(e).__name__}: {' '.join(str(e).split())[:300]}")


def config_raises(argv: list[str]) -> None:
  """Fails in one line when the --config file itself cannot be loaded (its get_config
  raises), naming the file and the exception."""
  from metricattn.config_utils import load_config_file
  path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if path:
    try:
      load_config_file(*path.split(":", 1))
    except UserError as e:
      fail(str(e))
    except Exception:  # a raise we cannot reproduce: the caller's message stands
      pass


def unknown_override(argv: list[str]) -> None:
  """Fails naming the first `--config.KEY` that the config lacks, with the closest keys."""
  from metricattn.config_utils import dotted_keys, load_config_file, unknown_key
  path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  try:
    config = load_config_file(*path.split(":", 1)) if path else None
  except Exception:  # the config itself is broken: the caller's message says so
    return
  for a in argv:
    key = a[len("--config."):].split("=", 1)[0] if a.startswith("--config.") else None
    if config is not None and key and key not in dotted_keys(config):
      fail(str(unknown_key(config, key)))


def main(argv) -> None:
  del argv
  enable_compilation_cache()
  set_cpu_devices(_CPU_DEVICES.value)
  from metricattn import multihost
  try:
    multihost.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                         _INIT_TIMEOUT.value)
  except UserError as e:  # at once: JAX's exit handler would report a failed join at length
    multihost.exit_now(2, f"error: {e}")
  import jax
  if jax.process_count() == 1:
    train()
    return
  # Several processes: a process that stops early exits at once, without JAX's shutdown
  # barrier, so that the others' collectives fail and they stop too instead of waiting.
  name = f"process {jax.process_index()} of {jax.process_count()}"
  try:
    train()
  except SystemExit as e:
    exit_now(0 if e.code is None else e.code if isinstance(e.code, int) else 1)
  except BaseException as e:
    text = " ".join(str(e).split())[:300]
    if not any(w in text for w in ("Gloo", "NCCL", "peer", "heartbeat", "coordination")):
      traceback.print_exc()
    multihost.exit_now(1, f"error: {name} stopped: {type(e).__name__}: {text}; when another "
                       "process failed first, its output says why; rerun all processes to "
                       "resume from the last checkpoint")


def exit_now(code: int) -> None:
  """Ends this process now, skipping JAX's shutdown barrier (it would wait for the others)."""
  from metricattn import multihost
  multihost.exit_now(code)


def train() -> None:
  try:
    from metricattn.train import train_and_evaluate, train_seeds
    if _SEEDS.value:
      run(train_seeds, _CONFIG.value, run(parse_seeds, _SEEDS.value), _WORKDIR.value,
          _ALLOW_CHANGE.value)
    else:
      run(train_and_evaluate, _CONFIG.value, _WORKDIR.value, _ALLOW_CHANGE.value)
  except KeyboardInterrupt as e:
    fail_interrupted(*interrupted_line(e))
  except Interrupted as e:  # every process stopped at this step: they leave together
    from metricattn import multihost
    multihost.leave_together()
    fail_interrupted(str(e), e.code)


def interrupted_line(e: KeyboardInterrupt) -> tuple[str, int]:
  """The line and exit code for a second Ctrl-C: the run's own when it came while the run,
  its checkpoint written, was stopping (an `Interrupted` under way), else that none was."""
  if isinstance(e.__context__, Interrupted):
    return str(e.__context__), e.__context__.code
  return ("interrupted before a checkpoint could be written; rerun the same command to "
          "resume from the last one", 130)


def fail_interrupted(message: str, code: int) -> None:
  """Prints the one line and exits with `code`. A second SIGINT while Python and JAX shut
  down (their atexit handlers) ends the process at once, quietly, with the same code: the
  checkpoint is written by then, and a KeyboardInterrupt there prints a traceback."""
  def quiet_exit(signum, frame):
    try:
      sys.stdout.flush()
      sys.stderr.flush()
    except Exception:  # noqa: BLE001 (interrupted mid-write: what is unwritten is dropped)
      pass
    os._exit(code)

  signal.signal(signal.SIGINT, quiet_exit)
  print(message, file=sys.stderr)
  sys.exit(code)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
