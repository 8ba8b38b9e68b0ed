"""EfficientNet-Lite's depthwise and 1x1 convolutions: this project's
formulations against XLA's convolutions, layer by layer.

  python benchmarks/lite_layers.py --batch=32 --image_size=224 --steps=5

For each distinct depthwise and 1x1 layer of the variant (input shape,
kernel, stride), times the forward pass and the gradient (input and kernel)
of `efficientnet.DepthwiseConv` (shifted multiply-adds) against
`lax.conv_general_dilated` with feature_group_count, and of
`efficientnet.PointwiseConv` (a matrix product) against a 1x1
convolution: median of --steps after one warm-up, float32, random inputs.
Prints one JSON line per layer and pass, the milliseconds and the ratio.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import timing  # benchmarks/timing.py, beside this script
from absl import app
from absl import flags
from jax import lax

from catdog_jax.models import efficientnet

FLAGS = flags.FLAGS
flags.DEFINE_string('variant', 'lite0', 'EfficientNet-Lite variant.')
flags.DEFINE_integer('batch', 32, 'Batch size.')
flags.DEFINE_integer('image_size', 224, 'Input side in pixels.')
flags.DEFINE_integer('steps', 5, 'Timed repetitions (the median is kept).')


def layer_shapes(variant: str, size: int):
  """(kind, side, in channels, out channels, kernel, stride) of each
  distinct depthwise and 1x1 layer, in the order they run."""
  side, channels, layers = -(-size // 2), efficientnet.STEM_WIDTH, []
  for expansion, kernel, stride, features in efficientnet.block_args(variant):
    hidden = channels * expansion
    if expansion != 1:
      layers.append(('pointwise', side, channels, hidden, 1, 1))
    layers.append(('depthwise', side, hidden, hidden, kernel, stride))
    side = -(-side // stride)
    layers.append(('pointwise', side, hidden, features, 1, 1))
    channels = features
  layers.append(('pointwise', side, channels, efficientnet.HEAD_WIDTH, 1, 1))
  return list(dict.fromkeys(layers))


def implementations(kind, in_channels, out_channels, kernel, stride):
  """(this project's function, XLA's convolution) of (x, kernel)."""
  if kind == 'depthwise':
    layer = efficientnet.DepthwiseConv(kernel, stride)
    groups = in_channels
  else:
    layer = efficientnet.PointwiseConv(out_channels)
    groups = 1

  def ours(x, w):
    return layer.apply({'params': {'kernel': w}}, x)

  def xla(x, w):
    return lax.conv_general_dilated(
      x, w, (stride, stride), 'SAME', feature_group_count=groups,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    )  # fmt: skip

  return ours, xla


def gradient(fn):
  """The gradient of fn's sum with respect to its input and kernel."""
  return jax.grad(lambda x, w: fn(x, w).sum(), (0, 1))


def time_pass(fn, x, w) -> float:
  def run():
    jax.block_until_ready(fn(x, w))

  return timing.median_seconds(run, FLAGS.steps, warmup=1) * 1e3


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  for shape in layer_shapes(FLAGS.variant, FLAGS.image_size):
    kind, side, in_channels, out_channels, kernel, stride = shape
    x = jnp.asarray(
      rng.normal(size=(FLAGS.batch, side, side, in_channels)), jnp.float32
    )
    w_shape = (kernel, kernel, 1 if kind == 'depthwise' else in_channels,
               out_channels)  # fmt: skip
    w = jnp.asarray(rng.normal(size=w_shape), jnp.float32)
    ours, xla = implementations(*shape[:1], *shape[2:])
    for name, wrap in (('forward', lambda f: f), ('gradient', gradient)):
      ours_ms = time_pass(jax.jit(wrap(ours)), x, w)
      xla_ms = time_pass(jax.jit(wrap(xla)), x, w)
      print(json.dumps({
        'layer': kind, 'side': side, 'in': in_channels, 'out': out_channels,
        'kernel': kernel, 'stride': stride, 'pass': name,
        'batch': FLAGS.batch, 'ours_ms': round(ours_ms, 2),
        'xla_conv_ms': round(xla_ms, 2),
        'speedup': round(xla_ms / ours_ms, 2),
        'device': jax.devices()[0].device_kind,
      }))  # fmt: skip


if __name__ == '__main__':
  app.run(main)
