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

Failures are one line each, in bounded time: processes that do not all join within
`init_timeout` seconds, a second process 0 on the coordinator's port, and, once running, a
process that dies or stops answering (JAX's coordination service notices within
`HEARTBEAT_TIMEOUT`): every other process prints `error: process I of N stopped: ...` and
exits with code 1 instead of JAX's abort and stack dump (`exit_now`).
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time

import numpy as np

# Seconds without a heartbeat after which a process counts as dead and the others stop.
HEARTBEAT_TIMEOUT = 30
# Seconds every process waits for all of them to join (--init_timeout).
INIT_TIMEOUT = 120


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
               process_id: int | None, init_timeout: int = INIT_TIMEOUT) -> None:
  """Starts jax.distributed when the arguments, or a detected cluster of more than one
  process, ask for it; raises UserError for an incomplete or inconsistent set, a second
  process 0 on the coordinator's port, or processes that do not all join within
  `init_timeout` seconds. Once joined, a process that the coordination service reports dead
  or lost ends this one with one line (`exit_now`)."""
  import logging
  import jax
  from jax._src import distributed
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
  if not init_timeout >= 1:
    raise UserError(f"--init_timeout must be at least 1 (seconds); got {init_timeout}")
  if process_id == 0 and coordinator_address:
    _check_port_free(coordinator_address, num_processes)
  # On CPU, cross-process collectives go through gloo (a no-op on GPU and TPU).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  logging.getLogger("jax._src.distributed").setLevel(logging.WARNING)  # its INFO lines
  # Whether process 0 is there already: when it is gone after a failed join, it stopped meanwhile.
  was_there = process_id not in (None, 0) and _reachable(coordinator_address)
  start = time.monotonic()
  try:
    with _error_callback():
      jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                 initialization_timeout=int(init_timeout),
                                 heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT)
  except Exception as e:  # e.g. not everyone joined within the initialization timeout
    state = distributed.global_state
    known = state.coordinator_address is not None  # JAX got as far as connecting
    me = process_id if process_id is not None else state.process_id if known else None
    n = num_processes if num_processes is not None else state.num_processes if known else None
    address = state.coordinator_address or coordinator_address
    # Held, not shut down: JAX's exit handler would report the failed client at length.
    _failed.append((state.client, state.service))
    state.client = state.service = None
    raise UserError(_join_failure(e, time.monotonic() - start, init_timeout, address, me, n,
                                  was_there)) from None
  # stderr as it is now: a line of exit_now reaches it even while a checkpoint's orbax
  # output is held back (checkpoint.quiet_tracebacks points descriptor 2 to a file).
  _joined.update(address=distributed.global_state.coordinator_address,
                 process=jax.process_index(), processes=jax.process_count(),
                 stderr=os.dup(2))
  _stop_on_uncaught_callback_error()


def _join_failure(error: Exception, elapsed: float, init_timeout: int, address: str | None,
                  me: int | None, n: int | None, was_there: bool = False) -> str:
  """The one line for a failed jax.distributed.initialize (`was_there`: process 0 could be
  reached before)."""
  who = f"process {me} of {n}" if me is not None and n else "this process"
  if elapsed >= init_timeout - 1:  # JAX says DEADLINE_EXCEEDED, or nothing (see below)
    if me not in (None, 0) and address and not _reachable(address):
      if was_there:
        return (f"{who}: process 0 at --coordinator_address={address} stopped while this "
                f"process waited to join; its output says why (a process already running "
                f"with --process_id={me} makes it stop: give each process its own id in "
                f"0..{n - 1})")
      return (f"{who}: could not reach process 0 at --coordinator_address={address} within "
              f"{init_timeout} s; start process 0 there (the same --coordinator_address on "
              f"every process), or raise --init_timeout")
    ids = f" in 0..{n - 1}" if n else ""
    return (f"{who}: not all {n or ''} processes joined within {init_timeout} s; start the "
            f"others with the same --coordinator_address, or check --num_processes/"
            f"--process_id (each process its own id{ids}), or raise --init_timeout"
            ).replace("all  ", "all ")
  text = " ".join(str(error).split())[:300]
  if text == "std::bad_cast":  # JAX's error, lost on its way to our callback (see below)
    text = "JAX's coordination service reported an error while the processes joined"
  return (f"could not start multi-process training (coordinator "
          f"{address or 'from the cluster'}): {text}")


def _check_port_free(coordinator_address: str, num_processes: int) -> None:
  """Process 0 starts the coordination service on the port of `coordinator_address`: when
  something listens there already, it is most likely a second process 0 (gRPC shares the
  port with it, and each would wait for the others alone)."""
  import errno
  import socket
  from metricattn.errors import UserError
  if os.environ.get("JAX_COORDINATOR_BIND_ADDRESS"):
    return  # bound elsewhere: not ours to probe
  try:
    port = int(coordinator_address.rsplit(":", 1)[1])
  except (IndexError, ValueError):
    return  # JAX's own error says what is wrong with the address
  for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
    try:
      s = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
      continue  # no IPv6 here
    with s:
      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed run's TIME_WAITs
      try:
        s.bind((host, port))
      except OSError as e:
        if e.errno == errno.EADDRINUSE:
          raise UserError(
              f"process 0 of {num_processes}: port {port} of --coordinator_address="
              f"{coordinator_address} is already in use: two processes were started with "
              f"--process_id=0 (give each process its own id in 0..{num_processes - 1}), or "
              f"another program holds the port (choose a free one)") from None
        continue
      return


def _reachable(address: str) -> bool:
  """Whether something accepts TCP connections at HOST:PORT (the coordination service)."""
  import socket
  try:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
      return True
  except (OSError, ValueError):
    return False


# Once joined, JAX's coordination client calls its "missed heartbeat" callback when the
# service reports an error (a process stopped sending heartbeats, or one connected a second
# time) or cannot be reached (process 0, which runs it, is gone). JAX's own callback aborts
# the process with a stack dump. jax.distributed.initialize takes no callback, so
# `_error_callback` passes ours to the client it makes. In this jaxlib (0.10) the call of a
# Python callback fails before it starts (the status has no Python type: std::bad_cast,
# thrown on JAX's polling thread, so std::terminate); `_stop_on_uncaught_callback_error`
# installs a C++ terminate handler that turns exactly that into the same one line.
_joined: dict = {}
_failed: list = []  # a failed join's client and service, kept from their destructors
_handlers: list = []  # the ctypes terminate handler, alive for the process's lifetime
_exiting = threading.Lock()


def _error_callback():
  """A context in which jax.distributed.initialize makes its client with our callback."""
  import contextlib
  from jax._src import distributed

  @contextlib.contextmanager
  def patched():
    lib = distributed._jax
    make = lib.get_distributed_runtime_client
    if "missed_heartbeat_callback" not in (make.__doc__ or ""):
      yield  # a JAX without it: its own callback (an abort) stays
      return

    class Lib:  # jaxlib's module, with the client made with our callback
      def __getattr__(self, name):
        return getattr(lib, name)

      def get_distributed_runtime_client(self, *args, **kwargs):
        return make(*args, missed_heartbeat_callback=_on_coordination_error, **kwargs)

    distributed._jax = Lib()
    try:
      yield
    finally:
      distributed._jax = lib
  return patched()


def _on_coordination_error(status=None) -> None:
  """The coordination service reported an error: before the processes joined, the join
  fails with it (initialize's message); after, this process stops with one line."""
  if not _joined:
    return
  exit_now(1, coordination_error_line(status))


def coordination_error_line(status=None) -> str:
  """`error: process I of N stopped: ...` for an error of the coordination service."""
  me, n, address = _joined["process"], _joined["processes"], _joined["address"]
  text = " ".join(str(status).split())[:300] if status is not None else ""
  if me != 0 and address and not _reachable(address):
    why = (f"lost process 0 of {n}, which runs JAX's coordination service at {address} (it "
           f"stopped or cannot be reached)")
  else:
    other = "process 1 of 2" if (me, n) == (0, 2) else "another process"
    why = (f"JAX's coordination service reports that {other} stopped or was lost (no "
           f"heartbeat for {HEARTBEAT_TIMEOUT} s), or that a second process joined with the "
           f"same --process_id")
  if text:
    why += f" ({text})"
  return (f"error: process {me} of {n} stopped: {why}; when another process failed first, "
          f"its output says why; rerun all processes to resume from the last checkpoint")


def _stop_on_uncaught_callback_error() -> None:
  """Installs the C++ terminate handler that stops this process with one line when our
  callback's call failed (std::bad_cast); any other uncaught C++ exception goes on to the
  handler that was there before (libstdc++'s prints it and aborts)."""
  import ctypes
  import ctypes.util
  if _handlers:
    return
  try:
    lib = ctypes.CDLL(ctypes.util.find_library("stdc++") or "libstdc++.so.6")
    set_terminate = lib._ZSt13set_terminatePFvvE  # std::set_terminate(void (*)())
    exception_type = lib.__cxa_current_exception_type
  except (OSError, AttributeError):
    return  # not libstdc++: JAX's abort stays
  handler_type = ctypes.CFUNCTYPE(None)
  set_terminate.restype, set_terminate.argtypes = ctypes.c_void_p, [handler_type]
  exception_type.restype = ctypes.c_void_p
  previous: list = []

  def on_terminate():
    try:
      info = exception_type()  # std::type_info*: its vtable, then its mangled name
      name = ctypes.c_char_p.from_address(info + ctypes.sizeof(ctypes.c_void_p)).value \
          if info else None
      if name in (b"St8bad_cast", b"N8nanobind10cast_errorE"):
        exit_now(1, coordination_error_line())
    finally:
      if previous and previous[0]:
        handler_type(previous[0])()
      os.abort()

  handler = handler_type(on_terminate)
  _handlers.append(handler)
  previous.append(set_terminate(handler))


def exit_now(code: int, line: str | None = None) -> None:
  """Prints `line` on stderr and ends this process with `code` at once, skipping JAX's
  shutdown barrier (it would wait for the others, and it reports a failed client at
  length). The first caller wins: a second one (another thread) waits for the exit. The
  line goes to stderr as it was when the processes joined (see `initialize`)."""
  if not _exiting.acquire(blocking=False):
    while True:
      time.sleep(60)
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  if line is not None:
    try:
      os.write(_joined.get("stderr", 2), f"{line}\n".encode())
    except OSError:
      pass
  os._exit(code)


def leave_together() -> None:
  """After a stop that every process makes at the same step (a signal, shared through
  `max_over_processes`, each process's checkpoint written): JAX's orderly shutdown, as a
  finished run ends. Every process waits at its barrier and then stops polling the
  coordination service; only then does process 0 take the service down. Leaving at once
  instead (`exit_now`), process 0 could take the service with it while another process was
  still on its way out, which then reported process 0 lost and exited 1, not with the
  signal's code. A failure here (a process lost meanwhile) is ignored: the checkpoints are
  written, and the rerun resumes from them."""
  import jax
  if jax.process_count() == 1:
    return
  try:
    jax.distributed.shutdown()
  except Exception:  # noqa: BLE001 (leaving anyway; the exit code says how the run stopped)
    pass


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
