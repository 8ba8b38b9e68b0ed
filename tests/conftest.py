"""Shared fixtures: synthetic JPEG folders, a tiny config, a trained workdir.

Tests compile many tiny steps, where XLA's optimization passes cost more
than they save; they are switched off (as flax's examples' tests do) except
for tests marked `optimized`, which inspect what XLA makes of the code.
"""

import dataclasses
import json
import os

import cv2
import jax
import ml_collections
import numpy as np
import pytest

from catdog_jax import images
from catdog_jax import train
from configs import base

jax.config.update('jax_disable_most_optimizations', True)


@pytest.fixture(autouse=True)
def _xla_optimizations(request):
  """XLA's usual optimizations for tests marked `optimized`."""
  if request.node.get_closest_marker('optimized') is None:
    yield
    return
  jax.config.update('jax_disable_most_optimizations', False)
  try:
    yield
  finally:
    jax.config.update('jax_disable_most_optimizations', True)


SHARED_DATA = os.path.join(
  os.path.dirname(__file__), os.pardir, os.pardir, 'shared', 'data'
)


def synthetic_image(label: int, rng: np.random.Generator, size: int = 40):
  """An RGB uint8 image a tiny CNN can learn: cats redder, dogs bluer."""
  image = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
  image[..., 0 if label == 0 else 2] += 120
  return image


def load_resized(source, key: str, size: int) -> np.ndarray:
  """An indexed image decoded and resized without the input pipeline."""
  return images.resize(source.load(key), size)


def write_jpeg(path: str, image_rgb: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  ok, data = cv2.imencode('.jpg', cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
  assert ok
  with open(path, 'wb') as f:
    f.write(data.tobytes())


def write_dataset(root, layout: str, per_class: int, seed: int = 0) -> str:
  """Writes `per_class` JPEGs per class in the 'folders' or 'flat' layout."""
  rng = np.random.default_rng(seed)
  for label, name in enumerate(('cat', 'dog')):
    for i in range(per_class):
      if layout == 'folders':
        path = os.path.join(root, f'{name.capitalize()}s', f'{i}.jpg')
      else:
        path = os.path.join(root, f'{name}.{i}.jpg')
      write_jpeg(path, synthetic_image(label, rng))
  return str(root)


@pytest.fixture(scope='session')
def flat_dataset(tmp_path_factory):
  return write_dataset(tmp_path_factory.mktemp('flat'), 'flat', per_class=40)


@pytest.fixture(scope='session')
def folder_dataset(tmp_path_factory):
  return write_dataset(
    tmp_path_factory.mktemp('folders'), 'folders', per_class=40
  )


# A small model on small images: a run takes seconds.
TINY_OVERRIDES = {
  'data.image_size': 32,
  'data.val_fraction': 0.2,
  'data.test_fraction': 0.2,
  'data.num_workers': 2,
  'model.conv_features': (4, 8),
  'model.dense_features': (16,),
  'batch_size': 8,
  'num_train_steps': 20,
  'log_every_steps': 5,
  'eval_every_steps': 10,
  'checkpoint_every_steps': 10,
}


def tiny_config(root: str, **overrides):
  """The base config with TINY_OVERRIDES, then `overrides` ('a__b' = a.b)."""
  config = base.get_config()
  config.data.root = root
  config.update_from_flattened_dict(TINY_OVERRIDES)
  config.update_from_flattened_dict(
    {k.replace('__', '.'): v for k, v in overrides.items()}
  )
  return config


def tiny_recipe_config(root: str, **overrides):
  """tiny_config with a tiny ResNet and every part of the accuracy recipe."""
  config = tiny_config(root)
  config.model = ml_collections.ConfigDict(
    {'name': 'resnet', 'stage_sizes': (1, 1), 'widths': (4, 8)}
  )
  config.update_from_flattened_dict({
    'label_smoothing': 0.1,
    'ema_decay': 0.9,
    'eval_flip': True,
    'data.cache': True,
    'augment.crop_min_area': 0.5,
    'augment.flip': True,
    'augment.brightness': 0.2,
    'augment.contrast': 0.2,
    'augment.saturation': 0.2,
    'optimizer.name': 'adamw',
    'optimizer.learning_rate': 1e-2,
    'optimizer.schedule': 'warmup_cosine',
    'optimizer.warmup_steps': 5,
    'optimizer.weight_decay': 0.05,
    'optimizer.grad_clip_norm': 1.0,
  })  # fmt: skip
  config.update_from_flattened_dict(
    {k.replace('__', '.'): v for k, v in overrides.items()}
  )
  return config


def tiny_flags(root: str, **overrides) -> list[str]:
  """The same settings as main.py command-line flags."""
  settings = {**TINY_OVERRIDES, 'data.root': root}
  settings.update({k.replace('__', '.'): v for k, v in overrides.items()})
  return ['--config=configs/base.py'] + [
    f'--config.{key}={value}' for key, value in settings.items()
  ]


@pytest.fixture(scope='session')
def straight_log_loss(flat_dataset, tmp_path_factory):
  """Test log-loss of a 30-step tiny run on flat_dataset, never interrupted."""
  workdir = tmp_path_factory.mktemp('straight30')
  train.train_and_evaluate(
    tiny_config(flat_dataset, num_train_steps=30), workdir
  )
  with open(workdir / 'eval_test.json') as f:
    return json.load(f)['log_loss']


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  workdir: str
  state: object  # The final train state train_and_evaluate returned.


@pytest.fixture(scope='session')
def trained_run(folder_dataset, tmp_path_factory):
  """One 40-step tiny run on folder_dataset, shared by every test that needs
  a trained workdir. Tests may regenerate its report, never change its
  checkpoints or metrics."""
  workdir = str(tmp_path_factory.mktemp('trained'))
  state = train.train_and_evaluate(
    tiny_config(folder_dataset, num_train_steps=40), workdir
  )
  return TrainedRun(workdir, state)
