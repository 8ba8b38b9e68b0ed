"""The seed's CNN, layer for layer as the Keras model it mirrors."""

from collections.abc import Callable
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from catdog_jax.models import layers


class SeedCNN(nn.Module):
  """The seed's CNN: conv/pool blocks, dense layers, one logit per image.

  With the defaults and 255x255x3 input it has 16,880,961 parameters; the
  flatten width (131,072 at 255x255) follows the input size.

  Attributes:
    conv_features: filters of each 3x3 conv + 2x2 max-pool block.
    dense_features: widths of the hidden dense layers.
    dropout_rate: dropout after each hidden dense layer in training; the
      seed has none (0.0). Adds no parameters.
    dtype: computation dtype; parameters stay float32.
    conv_fn: replaces `lax.conv_general_dilated` (None: XLA's own).
  """

  conv_features: Sequence[int] = (32, 64, 128)
  dense_features: Sequence[int] = (128, 64, 32)
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  conv_fn: Callable | None = None

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = images.astype(self.dtype)
    for i, features in enumerate(self.conv_features, start=1):
      x = layers.conv(
        features, (3, 3), self.dtype, f'conv{i}', conv_fn=self.conv_fn
      )(x)
      x = nn.relu(x)
      x = layers.MaxPool2x2(name=f'pool{i}')(x)
    x = layers.Flatten(name='flatten')(x)
    for i, features in enumerate(self.dense_features, start=1):
      x = nn.relu(nn.Dense(features, dtype=self.dtype, name=f'dense{i}')(x))
      if self.dropout_rate:
        x = nn.Dropout(
          self.dropout_rate, deterministic=not train, name=f'dropout{i}'
        )(x)
    x = nn.Dense(1, dtype=self.dtype, name='logit')(x)
    return x[:, 0].astype(jnp.float32)
