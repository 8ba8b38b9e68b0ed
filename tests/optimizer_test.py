"""Tests for catdog_jax.optimizer: schedules, the decay mask, clipping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from catdog_jax import optimizer
from catdog_jax import settings
from catdog_jax.errors import UsageError
from tests import helpers


def test_weight_decay_spares_biases_and_norm_scales():
  params = {
    'conv': {'kernel': jnp.ones((3, 3, 2, 4)), 'bias': jnp.ones(4)},
    'norm': {'scale': jnp.ones(4), 'bias': jnp.ones(4)},
  }
  assert optimizer.decay_mask(params) == {
    'conv': {'kernel': True, 'bias': False},
    'norm': {'scale': False, 'bias': False},
  }


def test_warmup_then_cosine_learning_rate(flat_dataset):
  config = helpers.tiny_recipe_config(flat_dataset).optimizer
  # 5 warm-up steps, then a cosine over the remaining 100.
  schedule = optimizer.learning_rate_schedule(config, num_steps=105)
  np.testing.assert_allclose(
    [schedule(0), schedule(5), schedule(55), schedule(105)],
    [0.0, 1e-2, 0.5e-2, 0.0],
    atol=1e-6,
  )


@pytest.mark.parametrize('clip, expected_norm', [(1.0, 1.0), (0.0, 100.0)])
def test_grad_clip_norm_zero_turns_clipping_off(clip, expected_norm):
  config = helpers.tiny_config('/data').optimizer
  config.update({'name': 'sgd', 'momentum': 0.0, 'learning_rate': 1.0})
  config.grad_clip_norm = clip
  tx = optimizer.create_optimizer(config, num_steps=10)
  params = {'w': jnp.zeros(4)}
  grads = {'w': jnp.full(4, 50.0)}  # Global norm 100.
  updates, _ = tx.update(grads, tx.init(params), params)
  assert float(jnp.linalg.norm(updates['w'])) == pytest.approx(expected_norm)


def test_negative_clip_norm_is_refused():
  config = helpers.tiny_config('/data')
  config.optimizer.grad_clip_norm = -1.0
  with pytest.raises(UsageError, match='grad_clip_norm must be >= 0'):
    settings.check_config(config)


def test_learning_rate_multipliers_and_freezing_scale_each_update():
  config = helpers.base.get_config().optimizer
  config.name, config.learning_rate = 'sgd', 0.1
  config.momentum = 0.0
  config.lr_multipliers = (('^logit/', 10.0), ('^layer', 0.5))
  params = {
    'logit': {'kernel': jnp.ones((2, 1))},
    'layer1_0': {'conv1': {'kernel': jnp.ones((3,))}},
    'layer1_1': {'bn1': {'scale': jnp.ones((3,))}},
    'conv1': {'kernel': jnp.ones((3,))},
  }
  tx = optimizer.create_optimizer(config, 10, freeze='bn1/')
  grads = jax.tree.map(jnp.ones_like, params)
  grads['layer1_1']['bn1']['scale'] = jnp.full((3,), jnp.nan)  # Still zero.
  updates, _ = tx.update(grads, tx.init(params), params)
  assert updates['logit']['kernel'][0, 0] == pytest.approx(-1.0)
  assert updates['layer1_0']['conv1']['kernel'][0] == pytest.approx(-0.05)
  assert updates['conv1']['kernel'][0] == pytest.approx(-0.1)
  np.testing.assert_array_equal(updates['layer1_1']['bn1']['scale'], 0.0)


def test_frozen_parameters_get_no_gradient():
  params = {'a': jnp.ones(3), 'b': jnp.ones(3)}
  grads = jax.grad(
    lambda p: sum(
      jnp.sum(x**2)
      for x in jax.tree.leaves(optimizer.stop_frozen_gradients(p, '^a'))
    )
  )(params)
  np.testing.assert_array_equal(grads['a'], 0.0)
  np.testing.assert_array_equal(grads['b'], 2.0)


def test_bad_multiplier_settings_are_refused():
  config = helpers.base.get_config().optimizer
  config.lr_multipliers = (('[', 2.0),)
  with pytest.raises(UsageError, match="optimizer.lr_multipliers: '\\[' is"):
    optimizer.check_config(config)
  config.lr_multipliers = (('x', -1.0),)
  with pytest.raises(UsageError, match='is negative'):
    optimizer.check_config(config)
