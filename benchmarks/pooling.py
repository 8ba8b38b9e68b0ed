"""Seed CNN step time with two max-pool formulations, measured in one run.

`models.MaxPool2x2` (pad + reshape + max) against flax's `nn.max_pool`
(reduce_window, whose gradient lowers to select_and_scatter). Both give the
same values; this prints their train/eval images/s and the ratios as JSON.

  python benchmarks/pooling.py --config=configs/base.py --steps=5
"""

import json
import statistics
import time

import flax.linen as nn
import jax
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from catdog_jax import models
from catdog_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_integer('steps', 5, 'Timed steps per variant (median kept).')
config_flags.DEFINE_config_file('config', 'configs/base.py', 'Config file.')


def reduce_window_pool(self, x):
  del self
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding='SAME')


def images_per_sec(config) -> tuple[float, float]:
  """Median train and eval images/s of the seed CNN as `models` defines it."""
  state = train.create_train_state(jax.random.key(0), config)
  train_fn = jax.jit(train.train_step, donate_argnums=0)
  eval_fn = jax.jit(train.eval_step)
  rng = np.random.default_rng(0)
  size, batch_size = config.data.image_size, config.batch_size
  batch = {
    'image': rng.integers(0, 256, (batch_size, size, size, 3), np.uint8),
    'label': rng.integers(0, 2, (batch_size,), np.int32),
  }
  eval_batch = {**batch, 'mask': np.ones((batch_size,), bool)}
  train_times, eval_times = [], []
  for i in range(FLAGS.steps + 2):  # The first two compile and warm up.
    start = time.perf_counter()
    state, metrics = train_fn(state, batch, jax.random.key(1))
    jax.block_until_ready(metrics)
    train_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    jax.block_until_ready(eval_fn(state, eval_batch))
    eval_times.append(time.perf_counter() - start)
    del i
  return (batch_size / statistics.median(train_times[2:]),
          batch_size / statistics.median(eval_times[2:]))  # fmt: skip


def main(argv):
  del argv
  config = FLAGS.config
  reshape = images_per_sec(config)
  original = models.MaxPool2x2.__call__
  models.MaxPool2x2.__call__ = nn.compact(reduce_window_pool)
  try:
    reduce_window = images_per_sec(config)
  finally:
    models.MaxPool2x2.__call__ = original
  print(json.dumps({
    'reshape_train_images_per_sec': reshape[0],
    'reshape_eval_images_per_sec': reshape[1],
    'reduce_window_train_images_per_sec': reduce_window[0],
    'reduce_window_eval_images_per_sec': reduce_window[1],
    'train_ratio': reshape[0] / reduce_window[0],
    'eval_ratio': reshape[1] / reduce_window[1],
    'device': jax.devices()[0].device_kind,
    'batch_size': config.batch_size,
    'image_size': config.data.image_size,
    'steps': FLAGS.steps,
  }))  # fmt: skip


if __name__ == '__main__':
  app.run(main)
