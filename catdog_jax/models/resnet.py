"""A ResNet for small inputs: the model of the CPU and GPU recipes."""

import functools
from collections.abc import Callable
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from catdog_jax.models import layers


class ResidualBlock(nn.Module):
  """Two 3x3 convs with BatchNorm and a shortcut (ResNet-18/34's block)."""

  features: int
  strides: int = 1
  dtype: jnp.dtype = jnp.float32
  conv_fn: Callable | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    shortcut = x
    conv = functools.partial(
      layers.conv, dtype=self.dtype, conv_fn=self.conv_fn
    )
    y = conv(self.features, (3, 3), strides=self.strides)(x)
    y = nn.relu(layers.batch_norm(train, self.dtype)(y))
    y = conv(self.features, (3, 3))(y)
    # Zero-initialised last scale: each block starts as the identity.
    y = layers.batch_norm(train, self.dtype, scale_init=nn.initializers.zeros)(
      y
    )
    if shortcut.shape != y.shape:
      shortcut = conv(self.features, (1, 1), strides=self.strides, name='proj')(
        x
      )
      shortcut = layers.batch_norm(train, self.dtype, name='proj_norm')(
        shortcut
      )
    return nn.relu(y + shortcut)


class StemPool(nn.Module):
  """2x2 max pool of the stem (its own layer, so the summary lists it)."""

  @nn.compact
  def __call__(self, x):
    return nn.max_pool(x, (2, 2), strides=(2, 2))


class ResNet(nn.Module):
  """A ResNet for small inputs: a 3x3 stem, residual stages, average pool.

  `stage_sizes=(2, 2, 2, 2)` is ResNet-18's layout and `(3, 4, 6, 3)`
  ResNet-34's; each stage after the first halves the resolution.

  Attributes:
    stage_sizes: residual blocks per stage.
    widths: features of each stage.
    stem_strides: stride of the stem conv (2 halves the input first).
    stem_pool: a 2x2 max pool after the stem conv, before its BatchNorm
      (halves the resolution again for the cost of the stem alone).
    dtype: computation dtype; parameters stay float32.
    conv_fn: replaces `lax.conv_general_dilated` (None: XLA's own).
  """

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  widths: Sequence[int] = (64, 128, 256, 512)
  stem_strides: int = 1
  stem_pool: bool = False
  dtype: jnp.dtype = jnp.float32
  conv_fn: Callable | None = None

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = images.astype(self.dtype)
    x = layers.conv(
      self.widths[0], (3, 3), self.dtype, 'stem', self.conv_fn,
      strides=self.stem_strides,
    )(x)  # fmt: skip
    if self.stem_pool:
      x = StemPool(name='stem_pool')(x)
    x = nn.relu(layers.batch_norm(train, self.dtype, name='stem_norm')(x))
    for i, (size, width) in enumerate(
      zip(self.stage_sizes, self.widths, strict=True)
    ):
      for j in range(size):
        strides = 2 if i > 0 and j == 0 else 1
        x = ResidualBlock(
          width, strides, self.dtype, self.conv_fn, name=f'stage{i + 1}_{j}'
        )(x, train)
    x = layers.GlobalAvgPool(name='pool')(x)
    x = nn.Dense(1, dtype=self.dtype, name='logit')(x)
    return x[:, 0].astype(jnp.float32)
