"""The device mesh: one 'data' axis over every device of every process.

Training and evaluation both shard the batch over it and replicate the
state; `to_global` turns each process's share of a batch into one array.
"""

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
