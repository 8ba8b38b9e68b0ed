"""Tests for catdog_jax.checkpointing, on real checkpoints on disk."""

import grain
import jax
import jax.numpy as jnp
import numpy as np

from catdog_jax import checkpointing


def data_iterator():
  return iter(grain.MapDataset.range(100).to_iter_dataset())


def test_keeps_the_newest_and_the_best(tmp_path):
  manager = checkpointing.create_checkpoint_manager(str(tmp_path), 3)
  iterator = data_iterator()
  accuracies = [0.5, 0.9, 0.6, 0.7, 0.6, None, 0.5]
  for step, accuracy in enumerate(accuracies, start=1):
    metrics = None if accuracy is None else {'val_accuracy': accuracy}
    state = {'w': jnp.full((3,), step, jnp.float32)}
    checkpointing.save(manager, step, state, iterator, metrics)
    manager.wait_until_finished()
  assert manager.all_steps() == [2, 5, 6, 7]
  assert manager.best_step() == 2
  assert manager.latest_step() == 7


def test_restore_returns_state_and_moves_the_iterator(tmp_path):
  manager = checkpointing.create_checkpoint_manager(str(tmp_path), 2)
  iterator = data_iterator()
  for _ in range(7):
    next(iterator)
  state = {'w': jnp.arange(4.0), 'step': jnp.int32(9)}
  checkpointing.save(manager, 9, state, iterator)
  manager.wait_until_finished()

  fresh_iterator = data_iterator()
  abstract = jax.tree.map(jnp.zeros_like, state)
  restored = checkpointing.restore(manager, 9, abstract, fresh_iterator)
  np.testing.assert_array_equal(restored['w'], state['w'])
  assert next(fresh_iterator) == 7
