"""Starting JAX's multi-process runtime, from flags or the cluster's own env,
and saying in one line when a process of the run is lost.

Several hosts (or several processes on one host) each run the same command;
`jax.distributed` connects them so that `jax.devices()` lists every device
of every process and one jitted step spans them all.

When a process dies (killed, out of memory, its host gone), the others learn
it from the coordination service once its heartbeats stop, and XLA then
aborts them from a native thread, with a stack dump no Python code can
catch. So a multi-process launch runs its work in a child process
(`supervise`): the parent passes the child's output through, and when the
child dies that way, prints one line naming the lost process instead.
"""

import ctypes
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import TextIO

import jax
from absl import logging

# Where jax.distributed.initialize() finds the cluster by itself.
_CLUSTER_ENV = (
  'SLURM_JOB_ID',
  'TPU_WORKER_HOSTNAMES',
  'JAX_COORDINATOR_ADDRESS',
)
# A process that sends no heartbeat for this long is lost (JAX's default
# is 100 s); the others then stop within about this time. The environment
# variable sets another value (the tests use less).
HEARTBEAT_TIMEOUT_ENV = 'CATDOG_JAX_HEARTBEAT_TIMEOUT_S'
HEARTBEAT_TIMEOUT_S = 30
# How long a finishing process waits for the others at shutdown (300 s).
SHUTDOWN_TIMEOUT_S = 60
_SUPERVISED = 'CATDOG_JAX_SUPERVISED'  # Set in the supervised child.
# The child's exit status once it has said, in one line, who was lost.
LOST_PEER_STATUS = 75
# What a collective or barrier raises when a peer is gone.
_PEER_LOSS = ('Gloo', 'heartbeat', 'UNAVAILABLE', 'Barrier failed')
# What XLA prints when the coordination service loses a process, and where
# its native dump starts.
_LOST = re.compile(r'[Tt]ask[: ]+(\d+) (?:heartbeat timeout|.*failed)')
# Lines from which XLA's own account of the loss (and its dump) begins.
_DUMP = (
  '*** Check failure stack trace',
  'Fatal Python error',
  'Terminating process because the JAX distributed service',
  'coordination_service',
)


# The start of a native (glog) log line: 'E1205 05:31:12.123456   22406 '.
_NATIVE_LOG = re.compile(r'[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ ')


def own_line(line: str) -> str:
  """The child's own 'error: ...' line without the native log text that
  XLA's threads may write into the middle of it (seen: the coordination
  service's account of the loss, between the message and its newline)."""
  return _NATIVE_LOG.split(line, maxsplit=1)[0].rstrip('\n') + '\n'


def is_multi_process(coordinator_address: str | None) -> bool:
  return bool(coordinator_address) or any(
    name in os.environ for name in _CLUSTER_ENV
  )


def heartbeat_timeout_s() -> int:
  return int(os.environ.get(HEARTBEAT_TIMEOUT_ENV, HEARTBEAT_TIMEOUT_S))


def initialize(
  coordinator_address: str | None,
  num_processes: int | None,
  process_id: int | None,
) -> None:
  """Connects this process to the others, if this is a multi-process run.

  With a coordinator address, the three arguments say it all (CPU processes
  exchange data through gloo, JAX's default). Without one, a SLURM job or a
  TPU pod is detected from its environment; otherwise this is a one-process
  run and nothing happens.
  """
  timeouts = dict(
    heartbeat_timeout_seconds=heartbeat_timeout_s(),
    shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S,
  )
  if coordinator_address:
    jax.distributed.initialize(
      coordinator_address, num_processes, process_id, **timeouts
    )
  elif any(name in os.environ for name in _CLUSTER_ENV):
    jax.distributed.initialize(**timeouts)
  else:
    return
  logging.info(
    'Process %d of %d; %d local of %d devices.',
    jax.process_index(), jax.process_count(),
    jax.local_device_count(), jax.device_count(),
  )  # fmt: skip


def is_peer_loss(error: Exception) -> bool:
  """Whether a JAX runtime error says another process of the run is gone."""
  return jax.process_count() > 1 and any(m in str(error) for m in _PEER_LOSS)


def lost_processes() -> str:
  """'process 1': those the coordination service stopped hearing from,
  waiting for it to notice (up to the heartbeat timeout)."""
  everyone = list(range(jax.process_count()))
  deadline = time.monotonic() + heartbeat_timeout_s() + 5
  while time.monotonic() < deadline:
    try:
      # JAX keeps its client here; nothing public exposes it.
      client = jax._src.distributed.global_state.client
      live = client.get_live_nodes(everyone)
    except Exception:  # noqa: BLE001 - the coordinator itself is gone.
      return 'process 0 (the coordinator)'
    lost = [str(i) for i in everyone if i not in live]
    if lost:
      return f'process {", ".join(lost)}'
    time.sleep(1)
  return 'another process'


def exit_for_lost_peer(error: Exception) -> None:
  """Says which process was lost, in one line, and ends this one at once:
  JAX's own exit handlers would abort with a native dump. (`error`, the
  collective's or barrier's own, says nothing more to a user.)"""
  del error
  print(lost_line(lost_processes(), jax.process_count()), file=sys.stderr,
        flush=True)  # fmt: skip
  os._exit(LOST_PEER_STATUS)


def lost_line(who: str, num_processes: int | None) -> str:
  """The one line a process prints when `who` ('process 1') is lost, the
  same whether the child saw it in a collective or XLA aborted it (which
  of the two comes first depends on timing)."""
  of = f'of {num_processes}' if num_processes else 'of this run'
  return (
    f'error: {who} {of} was lost (no heartbeat for {heartbeat_timeout_s()} '
    's), so this process stopped too. Relaunch every process with the same '
    'command: they resume from the last checkpoint'
  )


def _stop_with_parent() -> None:
  """In the child: SIGTERM (checkpoint and stop) if the supervisor dies."""
  if sys.platform.startswith('linux'):
    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclasses.dataclass
class Relayed:
  """What `relay` saw in the child's stderr."""

  lost: str | None = None  # The process XLA said was lost.
  dumping: bool = False  # Whether XLA's native dump began.
  # Lines after the child's own 'error: ' line, held back: when the child
  # ends for a lost peer they are the coordination service's own account
  # (other threads), and the child's line must stay the last.
  held: list[str] = dataclasses.field(default_factory=list)


def relay(lines: Iterable[str], out: TextIO) -> Relayed:
  """Passes the child's stderr to `out`, all but XLA's native dump."""
  relayed, said_error = Relayed(), False
  for line in lines:
    if match := _LOST.search(line):
      relayed.lost = relayed.lost or match.group(1)
    if line.startswith('error: '):  # The child's own line goes through.
      out.writelines(relayed.held)
      out.write(own_line(line))
      said_error, relayed.held = True, []
      continue
    relayed.dumping = relayed.dumping or any(m in line for m in _DUMP)
    if relayed.dumping:
      continue
    if said_error:
      relayed.held.append(line)
    else:
      out.write(line)
  return relayed


def supervise(num_processes: int | None) -> int | None:
  """Runs this command again as a child and returns its exit status, in the
  parent of a multi-process launch; None in the child (it goes on).

  The child's stderr passes through; if the child dies because another
  process of the run was lost, the native dump is held back and one line
  says which process it was (of `num_processes`, where the flag says).
  """
  if os.environ.get(_SUPERVISED):
    return None
  child = subprocess.Popen(
    [sys.executable, *sys.orig_argv[1:]],
    env={**os.environ, _SUPERVISED: '1'},
    stderr=subprocess.PIPE,
    text=True,
    errors='replace',
    preexec_fn=_stop_with_parent,
  )
  # The parent only waits: signals go to the child, which stops cleanly.
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, lambda s, _: child.send_signal(s))
  relayed = relay(child.stderr, sys.stderr)
  status = child.wait()
  if status == LOST_PEER_STATUS:
    return 1  # The child said it, in its last line.
  sys.stderr.writelines(relayed.held)
  lost, dumping = relayed.lost, relayed.dumping
  if status < 0 and not dumping:  # Killed itself, say by SIGKILL.
    print(f'error: this process was killed ({signal.Signals(-status).name})',
          file=sys.stderr)  # fmt: skip
    return 128 - status
  if lost is None and not dumping:
    return status
  who = f'process {lost}' if lost is not None else 'another process'
  print(lost_line(who, num_processes), file=sys.stderr)
  return 1
