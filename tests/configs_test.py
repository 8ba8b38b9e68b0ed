"""Every shipped config passes the settings check and trains as it says;
every switch can be turned off from the command line."""

import collections
import importlib

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from catdog_jax import settings
from catdog_jax import workdir
from catdog_jax.data import augmentation
from configs import base

CONFIGS = (
  'base',
  'fast_cpu',
  'quick_cpu',
  'gpu',
  'seed_cnn_tuned',
  'tpu',
  'finetune_resnet50',
  'finetune_vit',
  'probe_resnet50',
  'zeroshot_lite0',
  'probe_lite0',
  'probe_lite2',
  'lite0_cpu',
  'lite2_gpu',
)
# Each switch of the recipes and the value that turns it off; base.py (the
# seed's recipe) has every one of them off.
SWITCHES_OFF = {
  'cpu_convolutions': 'xla',
  'label_smoothing': 0.0,
  'ema_decay': 0.0,
  'eval.flip': False,
  'eval.translate': 0,
  'progressive_sizes': (),
  'data.cache': False,
  'augment.crop_min_area': 1.0,
  'augment.crop_max_area': 1.0,
  'augment.flip': False,
  'augment.brightness': 0.0,
  'augment.contrast': 0.0,
  'augment.saturation': 0.0,
  'augment.grayscale': 0.0,
  'augment.blur': 0.0,
  'augment.cutmix': 0.0,
  'optimizer.schedule': 'constant',
  'optimizer.warmup_steps': 0,
  'optimizer.weight_decay': 0.0,
  'optimizer.grad_clip_norm': 0.0,
  'optimizer.lr_multipliers': (),
  'optimizer.freeze': '',
  'probe.enabled': False,
  'eval.recalibrate_bn_batches': 0,
  'eval.temperature_scaling': False,
}
# Optional settings, not switches: None means "not given".
OPTIONAL = {
  'num_train_steps',
  'data.root',
  'data.tfds_data_dir',
  'data.download_dir',
}
SCREEN_LINES = 24
# The fields of configs/base.py's first version (96edf7d).
FIRST_VERSION_FIELDS = (
  'seed', 'batch_size', 'num_epochs', 'num_train_steps', 'log_every_steps',
  'eval_every_steps', 'checkpoint_every_steps', 'checkpoints_to_keep',
  'dtype', 'data.root', 'data.image_size', 'data.val_fraction',
  'data.test_fraction', 'data.num_workers', 'data.prefetch_batches',
  'optimizer.name', 'optimizer.learning_rate',
)  # fmt: skip


def flatten(config) -> dict:
  return workdir.flatten(config.to_dict())


def parse(*argv):
  """The config main.py would build from these command-line flags."""
  argv = ['main.py', *argv]
  flag_values = flags.FlagValues()
  # The override flags are found in the argv given at definition.
  config_flags.DEFINE_config_file(
    'config',
    None,
    'config',
    flag_values=flag_values,
    lock_config=True,
    sys_argv=argv,
  )
  flag_values(argv)
  return flag_values.config


@pytest.mark.parametrize('name', CONFIGS)
def test_config_passes_the_settings_check(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  config.data.root = '/data'
  settings.check_config(config)
  # Training ends at the size every evaluation runs at, or the BatchNorm
  # statistics are recomputed at that size.
  sizes = config.progressive_sizes
  assert (
    not sizes
    or sizes[-1] == config.data.image_size
    or config.eval.recalibrate_bn_batches
  )


def test_base_has_every_switch_off_and_no_other_placeholder():
  flat = flatten(base.get_config())
  assert {key: flat[key] for key in SWITCHES_OFF} == SWITCHES_OFF
  assert {key for key, value in flat.items() if value is None} == OPTIONAL
  assert not augmentation.is_enabled(base.get_config().augment)


def test_an_older_workdir_gets_every_field_added_since():
  # A config.json of the first version: every field base.py has today
  # beyond those comes from workdir.ADDED_FIELDS (the model group is kept
  # as saved: its fields follow its model).
  today = flatten(base.get_config())
  old = workdir.unflatten({k: today[k] for k in FIRST_VERSION_FIELDS})
  upgraded = workdir.flatten(workdir.upgrade(old))
  assert {k for k in today if not k.startswith('model.')} <= set(upgraded)


@pytest.mark.parametrize('name', CONFIGS)
def test_recipes_set_each_field_once(name, monkeypatch):
  """Over base.py, a variant sets each field once: no recipe undoes
  another's value, so reading one config means reading one layer."""
  writes = collections.Counter()
  recording = []
  setattr_ = ml_collections.ConfigDict.__setattr__

  def record(self, key, value):
    if recording and not key.startswith('_'):
      writes[(id(self), key)] += 1
    setattr_(self, key, value)

  def recorded_base():
    config = base_get_config()
    recording.append(True)
    return config

  base_get_config = base.get_config
  monkeypatch.setattr(ml_collections.ConfigDict, '__setattr__', record)
  monkeypatch.setattr(base, 'get_config', recorded_base)
  importlib.import_module(f'configs.{name}').get_config()
  assert recording
  assert [key for (_, key), n in writes.items() if n > 1] == []


@pytest.mark.parametrize('name', CONFIGS)
def test_every_switch_turns_off_on_the_command_line(name):
  argv = [f'--config=configs/{name}.py']
  argv += [
    f'--config.{key}={"()" if value == () else value}'
    for key, value in SWITCHES_OFF.items()
  ]
  flat = flatten(parse(*argv))
  assert {key: flat[key] for key in SWITCHES_OFF} == SWITCHES_OFF


@pytest.mark.parametrize('name', CONFIGS)
def test_config_docstring_fits_on_a_screen(name):
  module = importlib.import_module(f'configs.{name}')
  lines = module.__doc__.strip().splitlines()
  assert len(lines) <= SCREEN_LINES
  assert 'Command' in module.__doc__ and 'python main.py' in module.__doc__
