"""Several processes (hosts) training one model on JAX's multi-controller runtime.

`initialize(...)` starts `jax.distributed` from the command line's arguments, or by itself
on a cluster JAX recognises (SLURM, Open MPI, TPU pods, Kubernetes) with more than one
process; otherwise (or with `num_processes=1` alone) there is one process and nothing
changes. Every process runs the same program on its own devices; the mesh spans all of them.

The rest are the few things the trainer does differently with several processes: arrays are
built from what each process holds (`put`), device values are gathered for the host
(`to_host`), process 0 alone writes the run's files (`primary`) while the others wait
(`barrier`), and a value of one process is shared by all (`from_primary`,
`max_over_processes`). With one process each is the plain single-process operation.
"""

from __future__ import annotations

import itertools

import numpy as np

# Seconds without a heartbeat after which a process counts as dead and the others stop.
HEARTBEAT_TIMEOUT = 30


def cluster_processes() -> int:
  """The number of processes of the cluster JAX detects around this process (SLURM,
  Open MPI, TPU pod, Kubernetes), or 1 when there is none."""
  import warnings
  from jax._src import clusters  # jax.distributed.initialize's own detection
  with warnings.catch_warnings():  # e.g. "Kubernetes detected, but no `kubernetes` package"
    warnings.simplefilter("ignore")
    for env in clusters.ClusterEnv._cluster_types:
      try:
        if not env.opt_in_only_method and env.is_env_present():
          return int(env.get_process_count())
      except Exception:  # a half-set environment: not a cluster to join
        return 1
  return 1


def initialize(coordinator_address: str | None, num_processes: int | None,
               process_id: int | None) -> None:
  """Starts jax.distributed when the arguments, or a detected cluster of more than one
  process, ask for it; raises UserError for an incomplete or inconsistent set."""
  import logging
  import jax
  from metricattn.errors import UserError
  given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
           "process_id": process_id}
  if all(v is None for v in given.values()):
    if cluster_processes() <= 1:
      return  # one process: the single-process path
  elif num_processes == 1 and coordinator_address is None and process_id is None:
    return  # one process asked for, even inside a cluster's job
  elif any(v is None for v in given.values()):
    missing = ", ".join(f"--{k}" for k, v in given.items() if v is None)
    raise UserError(f"multi-process training needs --coordinator_address, --num_processes "
                    f"and --process_id together; missing {missing}")
  elif num_processes < 1 or not 0 <= process_id < num_processes:
    raise UserError(f"--process_id must be in 0..{num_processes - 1} for --num_processes "
                    f"{num_processes}; got {process_id}")
  # On CPU, cross-process collectives go through gloo (a no-op on GPU and TPU).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  logging.getLogger("jax._src.distributed").setLevel(logging.WARNING)  # its INFO lines
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT)
  except Exception as e:  # e.g. no coordinator within the initialization timeout
    text = " ".join(str(e).split())[:300]
    raise UserError(f"could not start multi-process training (coordinator "
                    f"{coordinator_address or 'from the cluster'}): {text}") from None


def primary() -> bool:
  """Whether this process writes the run's files and console lines (process 0)."""
  import jax
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name`."""
  import jax
  if jax.process_count() > 1:
    _client().wait_at_barrier(f"metricattn/{name}/{next(_rounds)}", WAIT_MS)


def from_primary(value: int) -> int:
  """Process 0's `value` (an integer), on every process."""
  import jax
  if jax.process_count() == 1:
    return value
  key = f"metricattn/from_primary/{next(_rounds)}"
  if primary():
    _client().key_value_set(key, str(int(value)))
  return int(_client().blocking_key_value_get(key, WAIT_MS))


def max_over_processes(value: int) -> int:
  """The largest of every process's `value` (an integer), on every process."""
  import jax
  if jax.process_count() == 1:
    return value
  client, r, me = _client(), next(_rounds), jax.process_index()
  client.key_value_set(f"metricattn/max/{r}/{me}", str(int(value)))
  values = [int(client.blocking_key_value_get(f"metricattn/max/{r}/{i}", WAIT_MS))
            for i in range(jax.process_count())]
  # This process's key of the previous round: every process has read it by now (each wrote
  # this round's key after reading the previous round's).
  if _last_max:
    client.key_value_delete(f"metricattn/max/{_last_max.pop()}/{me}")
  _last_max.append(r)
  return max(values)


# Control messages go through the key-value store and barriers of JAX's coordination
# service (as orbax's do): no compiled programs. Every process makes the same calls in the
# same order, so a counter gives each call the same key on all of them.
WAIT_MS = 3600 * 1000  # a dead process ends the run sooner, through the heartbeats
_rounds = itertools.count()
_last_max: list[int] = []


def _client():
  from jax._src import distributed
  return distributed.global_state.client


def put(x: np.ndarray, sharding):
  """The global array of `x` (the same on every process) with `sharding`: each process
  places only the parts its own devices hold."""
  import jax
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def to_host(tree):
  """Device values as NumPy on every process (gathered across processes when they are
  split over them)."""
  import jax
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  gather = lambda x: (np.asarray(x) if x.is_fully_replicated else
                      multihost_utils.process_allgather(x, tiled=True))
  return jax.tree.map(gather, tree)
