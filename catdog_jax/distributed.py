"""Starting JAX's multi-process runtime, from flags or the cluster's own env.

Several hosts (or several processes on one host) each run the same command;
`jax.distributed` connects them so that `jax.devices()` lists every device
of every process and one jitted step spans them all.
"""

import os

import jax
from absl import logging

# Where jax.distributed.initialize() finds the cluster by itself.
_CLUSTER_ENV = (
  'SLURM_JOB_ID',
  'TPU_WORKER_HOSTNAMES',
  'JAX_COORDINATOR_ADDRESS',
)


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
  if coordinator_address:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif any(name in os.environ for name in _CLUSTER_ENV):
    jax.distributed.initialize()
  else:
    return
  logging.info(
    'Process %d of %d; %d local of %d devices.',
    jax.process_index(), jax.process_count(),
    jax.local_device_count(), jax.device_count(),
  )  # fmt: skip
