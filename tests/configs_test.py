"""Every shipped config passes the settings check and trains as it says."""

import importlib

import pytest

from catdog_jax import train

CONFIGS = ('base', 'fast_cpu', 'gpu', 'seed_cnn_tuned', 'tpu')


@pytest.mark.parametrize('name', CONFIGS)
def test_config_passes_the_settings_check(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  config.data.root = '/data'
  train.check_config(config)
  # Training ends at the size every evaluation runs at.
  sizes = config.progressive_sizes
  assert not sizes or sizes[-1] == config.data.image_size
