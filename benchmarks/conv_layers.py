"""Where a step's convolution time goes: each conv layer, each pass.

  python benchmarks/conv_layers.py --config=configs/base.py --steps=5

Finds the config's conv layers by running its model once (their input
shapes, kernels, strides), then times each distinct layer's forward pass,
input gradient and weight gradient, jitted alone with the train step's
XLA:CPU options (`current`) and with XLA's default (`xla_default`): median
of --steps after one warm-up, float32, random inputs. Prints one JSON line
per layer, with milliseconds and GFLOP/s per pass.
"""

import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import timing  # benchmarks/timing.py, beside this script
from absl import app
from absl import flags
from ml_collections import config_flags

from catdog_jax import models
from catdog_jax import xla_cpu

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/base.py', 'Config file.')
flags.DEFINE_integer('steps', 5, 'Timed repetitions (the median is kept).')

OPTIONS = {
  'current': xla_cpu.TRAIN_YNN_TYPES,
  'xla_default': None,
}


def conv_layers(config) -> list[dict]:
  """Distinct (input shape, kernel, features, strides) of the model's convs."""
  model = models.create_model(config.model)
  found = {}  # A repeated block's convs have the same shapes: time once.

  def record(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, nn.Conv) and context.method_name == '__call__':
      strides = module.strides or 1
      if isinstance(strides, int):
        strides = (strides, strides)
      key = (
        args[0].shape,
        tuple(module.kernel_size),
        module.features,
        strides,
        module.feature_group_count,
      )
      found.setdefault(key, module.name)
    return next_fun(*args, **kwargs)

  size = config.data.image_size
  images = jnp.zeros((config.batch_size, size, size, 3), jnp.float32)
  with nn.intercept_methods(record):
    jax.eval_shape(model.init, jax.random.key(0), images)
  return [
    {'name': name, 'input': shape, 'kernel': kernel, 'features': features,
     'strides': strides, 'groups': groups}
    for (shape, kernel, features, strides, groups), name in found.items()
  ]  # fmt: skip


def conv(x, w, strides, groups):
  return jax.lax.conv_general_dilated(
    x, w, strides, 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    feature_group_count=groups,
  )  # fmt: skip


def passes(strides, groups):
  """{pass name: fn(x, w, dy)} for one layer's three computations."""

  def forward(x, w, dy):
    del dy
    return conv(x, w, strides, groups)

  def input_grad(x, w, dy):
    return jax.vjp(lambda x: conv(x, w, strides, groups), x)[1](dy)[0]

  def weight_grad(x, w, dy):
    return jax.vjp(lambda w: conv(x, w, strides, groups), w)[1](dy)[0]

  return {
    'forward': forward,
    'input_grad': input_grad,
    'weight_grad': weight_grad,
  }


def median_ms(jitted, args) -> float:
  def run():
    jax.block_until_ready(jitted(*args))

  return 1e3 * timing.median_seconds(run, FLAGS.steps, warmup=1)


def time_layer(layer: dict) -> dict:
  strides, groups = layer['strides'], layer['groups']
  x_key, w_key, dy_key = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(x_key, layer['input'])
  w = jax.random.normal(
    w_key,
    (*layer['kernel'], layer['input'][-1] // groups, layer['features']),
  )
  y = jax.eval_shape(lambda x, w: conv(x, w, strides, groups), x, w)
  dy = jax.random.normal(dy_key, y.shape)
  # FLOPs (two per multiply-add) of the forward pass; each gradient the same.
  gflop = 2 * math.prod(y.shape) * math.prod(w.shape[:3]) / 1e9
  result = {**layer, 'gflop_per_pass': gflop}
  for option_name, ynn_types in OPTIONS.items():
    options = xla_cpu.compiler_options(ynn_types)
    for pass_name, fn in passes(strides, groups).items():
      ms = median_ms(jax.jit(fn, compiler_options=options), (x, w, dy))
      result[f'{option_name}_{pass_name}_ms'] = ms
      result[f'{option_name}_{pass_name}_gflops'] = gflop / ms * 1e3
  return result


def main(argv):
  del argv
  for layer in conv_layers(FLAGS.config):
    print(json.dumps(time_layer(layer)), flush=True)


if __name__ == '__main__':
  app.run(main)
