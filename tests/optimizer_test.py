"""Tests for catdog_jax.optimizer: schedules, the decay mask, clipping."""

import jax.numpy as jnp
import numpy as np
import pytest

from catdog_jax import optimizer
from catdog_jax.errors import UsageError
from tests import conftest


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
  config = conftest.tiny_recipe_config(flat_dataset).optimizer
  # 5 warm-up steps, then a cosine over the remaining 100.
  schedule = optimizer.learning_rate_schedule(config, num_steps=105)
  np.testing.assert_allclose(
    [schedule(0), schedule(5), schedule(55), schedule(105)],
    [0.0, 1e-2, 0.5e-2, 0.0],
    atol=1e-6,
  )


@pytest.mark.parametrize('clip, expected_norm', [(1.0, 1.0), (0.0, 100.0)])
def test_grad_clip_norm_zero_turns_clipping_off(clip, expected_norm):
  config = conftest.tiny_config('/data').optimizer
  config.update({'name': 'sgd', 'momentum': 0.0, 'learning_rate': 1.0})
  config.grad_clip_norm = clip
  tx = optimizer.create_optimizer(config, num_steps=10)
  params = {'w': jnp.zeros(4)}
  grads = {'w': jnp.full(4, 50.0)}  # Global norm 100.
  updates, _ = tx.update(grads, tx.init(params), params)
  assert float(jnp.linalg.norm(updates['w'])) == pytest.approx(expected_norm)


def test_negative_clip_norm_is_refused():
  config = conftest.tiny_config('/data').optimizer
  config.grad_clip_norm = -1.0
  with pytest.raises(UsageError, match='grad_clip_norm must be >= 0'):
    optimizer.check_config(config)
