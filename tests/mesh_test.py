"""Tests for catdog_jax.mesh: placing batches, and prefetching them."""

import grain
import jax
import numpy as np
import pytest

from catdog_jax import checkpointing
from catdog_jax import mesh


def host_batches():
  """A checkpointable grain iterator of {'x': [k, k+1]} batches."""
  ds = grain.MapDataset.range(1000).map(lambda i: {'x': np.int32(i)})
  return iter(ds.to_iter_dataset().batch(2))


def test_to_global_shards_a_batch_over_the_mesh():
  data_sharding, _ = mesh.create_shardings()
  batch = mesh.to_global({'x': np.arange(4)}, data_sharding)
  assert isinstance(batch['x'], jax.Array)
  assert batch['x'].sharding == data_sharding
  np.testing.assert_array_equal(batch['x'], np.arange(4))


@pytest.mark.parametrize('size', [0, 1, 3])
def test_prefetch_serves_the_same_batches_and_lags_its_state(size):
  data_sharding, _ = mesh.create_shardings()
  plain = host_batches()
  prefetched = mesh.DevicePrefetchIterator(host_batches(), data_sharding, size)
  for _ in range(5):
    np.testing.assert_array_equal(next(prefetched)['x'], next(plain)['x'])
  # The state is where the consumer is, not where prefetching got to.
  assert prefetched.get_state() == b'{"next_index": 10}'
  resumed = mesh.DevicePrefetchIterator(host_batches(), data_sharding, size)
  resumed.set_state(prefetched.get_state())
  np.testing.assert_array_equal(next(resumed)['x'], [10, 11])


def test_prefetching_iterator_checkpoints_like_the_one_it_wraps(tmp_path):
  """Saved through orbax and grain's handler, on disk, and restored into a
  plain grain iterator: the same position."""
  data_sharding, _ = mesh.create_shardings()
  prefetched = mesh.DevicePrefetchIterator(host_batches(), data_sharding, 2)
  for _ in range(4):
    next(prefetched)
  manager = checkpointing.create_checkpoint_manager(str(tmp_path), 2)
  state = {'w': np.zeros(2, np.float32)}
  checkpointing.save(manager, 4, state, prefetched)
  manager.wait_until_finished()
  plain = host_batches()
  checkpointing.restore(manager, 4, state, plain)
  np.testing.assert_array_equal(next(plain)['x'], [8, 9])
  # And back into a prefetching one, as a resumed run does.
  resumed = mesh.DevicePrefetchIterator(host_batches(), data_sharding, 2)
  checkpointing.restore(manager, 4, state, resumed)
  np.testing.assert_array_equal(next(resumed)['x'], [8, 9])
