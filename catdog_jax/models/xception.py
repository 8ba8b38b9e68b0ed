"""The Keras example "image classification from scratch" network."""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from catdog_jax.models import layers


class SeparableConv(nn.Module):
  """A depthwise 3x3 conv then a pointwise 1x1 (Keras `SeparableConv2D`)."""

  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(
      x.shape[-1],
      (3, 3),
      padding='SAME',
      feature_group_count=x.shape[-1],
      use_bias=False,
      dtype=self.dtype,
      name='depthwise',
    )(x)
    return nn.Conv(self.features, (1, 1), dtype=self.dtype, name='pointwise')(x)


class MiniXception(nn.Module):
  """A stride-2 conv stem, residual blocks of two separable convs and a 3x3
  stride-2 max pool (with a strided 1x1 conv on the shortcut), a final
  separable conv, global average pooling, dropout and one logit. The
  defaults are the Keras example's widths.

  Attributes:
    stem_features: features of the stride-2 stem conv.
    block_features: features of each residual block.
    head_features: features of the final separable conv.
    dropout_rate: dropout before the logit, in training.
    dtype: computation dtype; parameters stay float32.
  """

  stem_features: int = 128
  block_features: Sequence[int] = (256, 512, 728)
  head_features: int = 1024
  dropout_rate: float = 0.25
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = images.astype(self.dtype)
    x = layers.conv(
      self.stem_features, (3, 3), self.dtype, strides=2, name='stem'
    )(x)
    x = nn.relu(layers.batch_norm(train, self.dtype, name='stem_norm')(x))
    previous = x
    for i, features in enumerate(self.block_features, start=1):
      for j in (1, 2):
        x = nn.relu(x)
        x = SeparableConv(features, self.dtype, name=f'block{i}_sep{j}')(x)
        x = layers.batch_norm(train, self.dtype, name=f'block{i}_norm{j}')(x)
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
      residual = layers.conv(
        features, (1, 1), self.dtype, strides=2, name=f'block{i}_proj'
      )(previous)
      x = previous = x + residual
    x = SeparableConv(self.head_features, self.dtype, name='head_sep')(x)
    x = nn.relu(layers.batch_norm(train, self.dtype, name='head_norm')(x))
    x = layers.GlobalAvgPool(name='pool')(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train, name='dropout')(
      x
    )
    x = nn.Dense(1, dtype=self.dtype, name='logit')(x)
    return x[:, 0].astype(jnp.float32)
