"""A frozen patch-whitening first layer, computed from the training images.

airbench's first layer (Jordan, 2024): the eigenvectors of the covariance of
the training set's 3x3 patches, scaled to unit variance, and their
negations, as a fixed conv. Its bias stays at zero too: the BatchNorm after
the stem would cancel it. Nothing in the stem trains, so no gradient flows
into it: the first layer, the slowest per FLOP on a CPU, runs forward only,
and a high-resolution stem (with `model.stem_pool`) costs little. Switched
on by model.whiten_stem for the `resnet` model (its `stem` conv); the
kernel is a parameter, so checkpoints hold it and a resumed run restores
it. The patches come from NUM_IMAGES training images spread over the split.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from catdog_jax import models
from catdog_jax import state as state_lib
from catdog_jax.data import dataset
from catdog_jax.data import input_pipeline
from catdog_jax.errors import UsageError
from catdog_jax.models import resnet

NUM_IMAGES = 512  # Training images spread over the split (dataset.spread).


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError unless the `model` config can whiten its stem."""
  if not config.get('whiten_stem'):
    return
  if config.name != 'resnet':
    raise UsageError(
      f'model.whiten_stem works with model resnet (its 3x3 stem), not '
      f'{config.name!r}'
    )
  if config.widths[0] % 2:
    raise UsageError(
      'model.whiten_stem needs an even stem width (eigenvectors and their '
      f'negations), got model.widths[0]={config.widths[0]}'
    )


def patches(images: np.ndarray, size: int, stride: int) -> np.ndarray:
  """Every size x size patch at `stride` (VALID), flattened: [M, size²·C]."""
  windows = np.lib.stride_tricks.sliding_window_view(
    images, (size, size), axis=(1, 2)
  )[:, ::stride, ::stride]  # [N, H', W', C, size, size]
  windows = windows.transpose(0, 1, 2, 4, 5, 3)  # HWC order, as a kernel.
  return windows.reshape(-1, size * size * images.shape[-1])


def whitening_kernel(images: np.ndarray, features: int, stride: int):
  """[3, 3, C, features]: the top features/2 whitening filters and their
  negations, from [0, 1] float images [N, H, W, C]."""
  x = patches(images.astype(np.float64), 3, stride)
  x = x - x.mean(axis=0)
  covariance = x.T @ x / len(x)
  eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # Ascending.
  top = slice(-1, -features // 2 - 1, -1)
  eigenvalues, eigenvectors = eigenvalues[top], eigenvectors[:, top]
  # Relative to the largest: the same whitening for any pixel scale.
  filters = eigenvectors / np.sqrt(eigenvalues + 1e-3 * eigenvalues[0])
  filters = np.concatenate([filters, -filters], axis=1)
  return filters.reshape(3, 3, images.shape[-1], features).astype(np.float32)


def whiten_stem(state, examples, source, config: ml_collections.ConfigDict):
  """The fresh train state with its stem kernel computed from `examples`."""
  sample = input_pipeline.load_all(
    dataset.spread(examples, NUM_IMAGES), source, config.data
  )
  images = np.asarray(models.preprocess(sample['image']))
  strides = config.model.get('stem_strides', resnet.ResNet.stem_strides)
  kernel = whitening_kernel(images, config.model.widths[0], strides)
  logging.info('Whitened the stem on the patches of %d images.', len(images))
  params = dict(state.params)
  stem = dict(params['stem'])
  stem['kernel'] = jax.device_put(jnp.asarray(kernel), stem['kernel'].sharding)
  params['stem'] = stem
  return state_lib.with_params(state, params)
