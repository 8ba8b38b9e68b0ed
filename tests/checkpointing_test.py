"""Tests for catdog_jax.checkpointing, on real checkpoints on disk."""

import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from catdog_jax import checkpointing
from catdog_jax.errors import UsageError


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


def save_states(workdir, accuracies):
  """Checkpoints 1, 2, ... holding w = step, ranked by `accuracies`."""
  manager = checkpointing.create_checkpoint_manager(workdir, 5)
  iterator = data_iterator()
  for step, accuracy in enumerate(accuracies, start=1):
    metrics = None if accuracy is None else {'val_accuracy': accuracy}
    state = {'w': jnp.full((3,), step, jnp.float32)}
    checkpointing.save(manager, step, state, iterator, metrics)
  manager.wait_until_finished()


ABSTRACT = {'w': jax.ShapeDtypeStruct((3,), jnp.float32)}


def test_inference_restores_the_best_else_the_newest(tmp_path):
  best = str(tmp_path / 'best')
  save_states(best, [0.5, 0.9, 0.6])
  state, step = checkpointing.restore_for_inference(best, ABSTRACT)
  assert step == 2 and float(state['w'][0]) == 2.0
  state, step = checkpointing.restore_for_inference(best, ABSTRACT, step=3)
  assert step == 3 and float(state['w'][0]) == 3.0

  unranked = str(tmp_path / 'unranked')
  save_states(unranked, [None, None])
  _, step = checkpointing.restore_for_inference(unranked, ABSTRACT)
  assert step == 2


def test_inference_without_checkpoints_says_train_first(tmp_path):
  with pytest.raises(UsageError, match='train there first'):
    checkpointing.restore_for_inference(str(tmp_path), ABSTRACT)
  os.makedirs(checkpointing.directory(str(tmp_path)))
  with pytest.raises(UsageError, match='train there first'):
    checkpointing.restore_for_inference(str(tmp_path), ABSTRACT)
