"""Layers the models share: Keras-named pooling and flattening, the conv and
BatchNorm settings of the from-scratch models, and a BatchNorm that freezes.

Pooling and flattening are small parameter-free modules so that every layer
of the seed's table appears in the model summary under its own name.
"""

import re

import flax.linen as nn
import jax.numpy as jnp
from jax import lax


class MaxPool2x2(nn.Module):
  """2x2 max pooling, stride 2, SAME padding (Keras `MaxPooling2D`).

  Written as pad + reshape + max rather than `nn.max_pool`: the same values
  (SAME pads an odd edge at the bottom/right), but the gradient avoids
  `select_and_scatter`, which XLA:CPU runs slowly (docs/performance.md).
  """

  @nn.compact
  def __call__(self, x):
    _, height, width, _ = x.shape
    pads = ((0, 0), (0, height % 2), (0, width % 2), (0, 0))
    x = jnp.pad(x, pads, constant_values=-jnp.inf)
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class Flatten(nn.Module):
  """Flattens all but the batch axis (Keras `Flatten`)."""

  @nn.compact
  def __call__(self, x):
    return x.reshape((x.shape[0], -1))


class GlobalAvgPool(nn.Module):
  """Mean over the spatial axes (Keras `GlobalAveragePooling2D`)."""

  @nn.compact
  def __call__(self, x):
    return x.mean(axis=(1, 2))


def conv(features, kernel, dtype, name=None, conv_fn=None, **kwargs):
  """A SAME-padded conv (Keras' `padding='same'`); `conv_fn` replaces
  `lax.conv_general_dilated` (None: XLA's own)."""
  return nn.Conv(
    features,
    kernel,
    padding='SAME',
    dtype=dtype,
    name=name,
    conv_general_dilated=conv_fn,
    **kwargs,
  )


def batch_norm(train: bool, dtype, **kwargs):
  """Keras' BatchNormalization defaults (momentum 0.9 here, eps 1e-5)."""
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=0.9,
    epsilon=1e-5,
    dtype=dtype,
    **kwargs,
  )


class FreezableBatchNorm(nn.BatchNorm):
  """PyTorch's BatchNorm2d (eps 1e-5, momentum 0.1), frozen by a regex.

  Attributes:
    frozen: a regex of parameter paths that do not train (optimizer.freeze);
      when it matches this layer's scale, the layer normalises with its
      running statistics in training too and never changes them.
  """

  frozen: str = ''
  momentum: float = 0.9
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, train: bool):
    is_frozen = batch_norm_frozen(self.frozen, self.scope.path)
    return super().__call__(x, use_running_average=not train or is_frozen)


def batch_norm_frozen(frozen: str, path) -> bool:
  """Whether the BatchNorm at scope `path` is frozen by the regex `frozen`
  (optimizer.freeze matches its scale)."""
  return bool(frozen) and bool(re.search(frozen, '/'.join((*path, 'scale'))))


class FoldedBatchNorm(nn.Module):
  """A BatchNorm that normalises with its running statistics, returned as
  the per-feature multiplier and shift for the conv before it to absorb
  (its kernel times the multiplier, the shift as its bias). The variables
  of `nn.BatchNorm`, with the same names and initial values."""

  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, features: int):
    scale = self.param('scale', nn.initializers.ones, (features,))
    bias = self.param('bias', nn.initializers.zeros, (features,))
    mean = self.variable(
      'batch_stats', 'mean', lambda: jnp.zeros((features,), jnp.float32)
    )
    var = self.variable(
      'batch_stats', 'var', lambda: jnp.ones((features,), jnp.float32)
    )
    multiplier = scale * lax.rsqrt(var.value + self.epsilon)
    return multiplier, bias - mean.value * multiplier
