"""Tests for catdog_jax.state: the state a checkpoint holds, and its shapes."""

import jax
import jax.numpy as jnp

from catdog_jax import mesh
from catdog_jax import state as state_lib
from tests import helpers


def test_abstract_state_has_the_shapes_of_a_real_one():
  config = helpers.tiny_recipe_config('/data')
  _, replicated = mesh.create_shardings()
  abstract = state_lib.abstract_state(config, replicated)
  real = state_lib.create_train_state(jax.random.key(0), config, 10)
  shapes = jax.tree_util.tree_leaves_with_path(abstract)
  arrays = jax.tree_util.tree_leaves_with_path(real)
  assert [path for path, _ in shapes] == [path for path, _ in arrays]
  for (_, shape), (_, array) in zip(shapes, arrays, strict=True):
    assert isinstance(shape, jax.ShapeDtypeStruct)
    array = jnp.asarray(array)  # The step is a Python int until trained.
    assert (shape.shape, shape.dtype) == (array.shape, array.dtype)
    assert shape.sharding == replicated
  # EMA and BatchNorm statistics are part of it when the recipe keeps them.
  assert abstract.ema_params is not None and abstract.batch_stats


def test_without_ema_the_state_keeps_no_average():
  config = helpers.tiny_config('/data')
  state = state_lib.create_train_state(jax.random.key(0), config, 10)
  assert state.ema_params is None and not state.batch_stats
