"""The device mesh: one 'data' axis over every device of every process.

Training and evaluation both shard the batch over it and replicate the
state; `to_global` turns each process's share of a batch into one array,
and `DevicePrefetchIterator` does it ahead of the step.
"""

import collections
import json

import jax
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def create_shardings() -> tuple[NamedSharding, NamedSharding]:
  """(batch, replicated) shardings over a ('data',) mesh of all devices."""
  # Auto axes: jit's in/out shardings place the data, as in GSPMD; arrays'
  # types carry no mesh, so host-side code can use them on any device.
  mesh = jax.make_mesh(
    (jax.device_count(),), ('data',), axis_types=(AxisType.Auto,)
  )
  return NamedSharding(mesh, P('data')), NamedSharding(mesh, P())


def to_global(batch, sharding):
  """This process's share of a batch, as one array sharded over the mesh."""
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, x), batch
  )


class DevicePrefetchIterator:
  """Keeps the next `size` batches already placed on the devices.

  While the step on batch k runs, batches k+1 ... k+size are on their way
  to the devices (the copies are asynchronous on GPU and TPU; on the CPU a
  64-byte-aligned host batch is adopted without a copy). Checkpointable in
  place of the iterator it wraps, with the same state: `get_state` is that
  iterator's state before the oldest batch not yet taken, so a resumed run
  sees exactly the batches a straight one does. grain's checkpoint handler
  stores it as JSON text, as it does a grain iterator's.
  """

  def __init__(self, iterator, sharding, size: int):
    self._iterator = iterator
    self._sharding = sharding
    self._size = size
    self._pending = collections.deque()  # (state before, global batch)

  def __iter__(self):
    return self

  def _fill(self, count: int) -> None:
    while len(self._pending) < count:
      state = self._iterator.get_state()
      batch = to_global(next(self._iterator), self._sharding)
      self._pending.append((state, batch))

  def __next__(self):
    self._fill(1)
    _, batch = self._pending.popleft()
    self._fill(self._size)
    return batch

  def get_state(self) -> bytes:
    state = self._pending[0][0] if self._pending else None
    return json.dumps(state or self._iterator.get_state()).encode()

  def set_state(self, state: bytes) -> None:
    self._pending.clear()
    self._iterator.set_state(json.loads(state))

  def start_prefetch(self) -> None:
    """Called by grain's checkpoint handler after a restore."""
    self._iterator.start_prefetch()
