"""Step time with and without each speed formulation, in one run.

Variants: `current` (the project as it is); `xla_maxpool` (flax's
`nn.max_pool`: reduce_window, whose gradient lowers to select_and_scatter,
instead of pad + reshape + max); `xla_cpu_default` (XLA:CPU's default
library choices, YNNPACK convolutions and matrix products, instead of
`xla_cpu`'s options). All compute the same function; this prints each
variant's train/eval images/s and its ratio to `current` as JSON.

  python benchmarks/formulations.py --config=configs/base.py --steps=5
"""

import contextlib
import json
import statistics
import time

import flax.linen as nn
import jax
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from catdog_jax import mesh
from catdog_jax import state as state_lib
from catdog_jax import train
from catdog_jax import xla_cpu
from catdog_jax.evaluation import evaluate
from catdog_jax.models import layers

FLAGS = flags.FLAGS
flags.DEFINE_integer('steps', 5, 'Timed steps per variant (median kept).')
config_flags.DEFINE_config_file('config', 'configs/base.py', 'Config file.')


def reduce_window_pool(self, x):
  del self
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding='SAME')


@contextlib.contextmanager
def patched(obj, name, value):
  original = getattr(obj, name)
  setattr(obj, name, value)
  try:
    yield
  finally:
    setattr(obj, name, original)


@contextlib.contextmanager
def xla_cpu_default():
  with (
    patched(xla_cpu, 'TRAIN_YNN_TYPES', None),
    patched(xla_cpu, 'EVAL_YNN_TYPES', None),
  ):
    yield


VARIANTS = {
  'current': contextlib.nullcontext,
  'xla_maxpool': lambda: patched(
    layers.MaxPool2x2, '__call__', nn.compact(reduce_window_pool)
  ),
  'xla_cpu_default': xla_cpu_default,
}


def images_per_sec(config) -> tuple[float, float]:
  """Median train and eval images/s of the config's model, as patched now."""
  num_steps = FLAGS.steps + 2
  state = jax.jit(
    lambda key: state_lib.create_train_state(key, config, num_steps)
  )(jax.random.key(0))
  # New jitted functions each time: no variant reuses another's executable.
  evaluate.forget_compiled_steps()
  data_sharding, replicated = mesh.create_shardings()
  train_fn = train.compile_train_step(
    config, num_steps, data_sharding, replicated
  )
  eval_fn = evaluate.compile_eval_step(config, data_sharding, replicated)
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
    jax.block_until_ready(eval_fn(evaluate.eval_variables(state), eval_batch))
    eval_times.append(time.perf_counter() - start)
    del i
  return (batch_size / statistics.median(train_times[2:]),
          batch_size / statistics.median(eval_times[2:]))  # fmt: skip


def main(argv):
  del argv
  config = FLAGS.config
  result = {}
  for name, context in VARIANTS.items():
    with context():
      train_rate, eval_rate = images_per_sec(config)
    result[f'{name}_train_images_per_sec'] = train_rate
    result[f'{name}_eval_images_per_sec'] = eval_rate
  for name in VARIANTS:
    for kind in ('train', 'eval'):
      result[f'current_over_{name}_{kind}'] = (
        result[f'current_{kind}_images_per_sec']
        / result[f'{name}_{kind}_images_per_sec']
      )
  result.update({
    'device': jax.devices()[0].device_kind,
    'batch_size': config.batch_size,
    'image_size': config.data.image_size,
    'steps': FLAGS.steps,
  })  # fmt: skip
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(main)
