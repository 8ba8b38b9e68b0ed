"""Tests for catdog_jax.workdir: which settings a relaunch may change."""

import pytest

from catdog_jax import workdir
from catdog_jax.errors import UsageError
from tests import conftest


def saved_and_new(**overrides):
  saved = conftest.tiny_config('/data').to_dict()
  new = conftest.tiny_config('/data', **overrides).to_dict()
  return saved, new


def test_logging_and_length_may_change():
  saved, new = saved_and_new(
    num_train_steps=99, log_every_steps=1, data__cache=True
  )
  assert workdir.config_changes(saved, new) == []


def test_shape_or_meaning_may_not():
  saved, new = saved_and_new(
    data__image_size=24, model__conv_features=(4, 16), seed=3
  )
  assert workdir.config_changes(saved, new) == [
    'data.image_size 32 -> 24',
    'model.conv_features [4, 8] -> [4, 16]',
    'seed 0 -> 3',
  ]


def test_tuples_read_back_as_lists_and_earlier_nones_compare_equal():
  saved, new = saved_and_new()
  saved['model']['conv_features'] = [4, 8]  # As config.json holds it.
  saved['ema_decay'] = None  # Written before 0.0 meant "off".
  saved['only_in_an_older_version'] = 1
  assert workdir.config_changes(saved, new) == []


def test_check_same_run_names_the_change_before_anything_else(tmp_path):
  saved, new = saved_and_new(data__image_size=24)
  workdir.check_same_run(str(tmp_path), new)  # No config.json: a new run.
  workdir.write_json(workdir.path(str(tmp_path), workdir.CONFIG), saved)
  with pytest.raises(UsageError, match='data.image_size 32 -> 24.*--workdir'):
    workdir.check_same_run(str(tmp_path), new)


def test_an_older_config_gets_the_fields_added_since_and_keeps_its_model():
  saved = {
    'seed': 3,
    'model': {'name': 'resnet', 'widths': [4, 8]},
    'optimizer': {'name': 'sgd'},
  }
  defaults = {
    'seed': 0,
    'freeze': '',
    'model': {'name': 'seed_cnn', 'conv_features': [32]},
    'optimizer': {'name': 'adam', 'lr_multipliers': []},
  }
  assert workdir.with_defaults(saved, defaults) == {
    'seed': 3,
    'freeze': '',
    'model': {'name': 'resnet', 'widths': [4, 8]},
    'optimizer': {'name': 'sgd', 'lr_multipliers': []},
  }
