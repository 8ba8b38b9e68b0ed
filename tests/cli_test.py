"""Tests for catdog_jax/cli.py: one-line errors for command lines."""

import pytest
from absl import flags

from catdog_jax import cli
from configs import base


@pytest.mark.parametrize(
  'argument, message',
  [
    ('num_epochs=1.5', '--config.num_epochs=1.5: num_epochs is an int'),
    ('eval.flip=maybe', '--config.eval.flip=maybe: eval.flip is a bool'),
    ('data.image_size=big', 'data.image_size=big: data.image_size is an int'),
    ('num_train_steps=x', 'num_train_steps=x: num_train_steps is an int'),
    ('augment.blur=soft', 'augment.blur=soft: augment.blur is a float'),
  ],
)
def test_an_override_of_the_wrong_type_names_the_field_and_its_type(
  argument, message
):
  # absl's own text for such an error, as main.py receives it.
  error = flags.IllegalFlagValueError(
    f'flag --config.{argument}: invalid literal for int()'
  )
  assert message in cli.flag_error_message(error, base.get_config())


def test_without_the_config_the_parser_says_why():
  error = flags.IllegalFlagValueError(
    "flag --config.num_epochs=1.5: invalid literal for int(): '1.5'"
  )
  assert 'invalid literal' in cli.flag_error_message(error, None)
