"""Tests for catdog_jax.classes: the one decision rule."""

import jax.numpy as jnp
import numpy as np

from catdog_jax import classes
from catdog_jax.evaluation import metrics


def test_a_logit_of_zero_is_a_dog_as_p_of_one_half_is():
  logits = np.array([-1e-9, 0.0, 1e-9, -3.0, 3.0])
  expected = [False, True, True, False, True]
  np.testing.assert_array_equal(classes.is_dog(logits), expected)
  np.testing.assert_array_equal(classes.is_dog(jnp.asarray(logits)), expected)
  np.testing.assert_array_equal(metrics.sigmoid(logits) >= 0.5, expected)
  assert [classes.class_name(x) for x in (-2.0, 0.0)] == ['cat', 'dog']
