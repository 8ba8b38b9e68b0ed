"""Flax linen models.

`SeedCNN` mirrors the seed Keras model layer for layer. Pooling and
flattening are small parameter-free modules so that every layer of the seed's
table appears in `summarize` under its own name. `ResNet` and `MiniXception`
are the stronger models of the accuracy recipes; both use BatchNorm, whose
statistics live in the 'batch_stats' collection.
"""

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from catdog_jax import backbones
from catdog_jax.backbones import GlobalAvgPool
from catdog_jax.errors import UsageError


class MaxPool2x2(nn.Module):
  """2x2 max pooling, stride 2, SAME padding (Keras `MaxPooling2D`).

  Written as pad + reshape + max rather than `nn.max_pool`: the same values
  (SAME pads an odd edge at the bottom/right), but the gradient avoids
  `select_and_scatter`, which XLA:CPU runs slowly. Measured on the seed CNN
  at 255x255, batch 32, 2-core CPU: train step 1.38x, eval step 1.15x
  (benchmarks/formulations.py).
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


def _conv(features, kernel, dtype, name=None, **kwargs):
  return nn.Conv(
    features, kernel, padding='SAME', dtype=dtype, name=name, **kwargs
  )


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
  """

  conv_features: Sequence[int] = (32, 64, 128)
  dense_features: Sequence[int] = (128, 64, 32)
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = images.astype(self.dtype)
    for i, features in enumerate(self.conv_features, start=1):
      x = _conv(features, (3, 3), self.dtype, name=f'conv{i}')(x)
      x = nn.relu(x)
      x = MaxPool2x2(name=f'pool{i}')(x)
    x = Flatten(name='flatten')(x)
    for i, features in enumerate(self.dense_features, start=1):
      x = nn.relu(nn.Dense(features, dtype=self.dtype, name=f'dense{i}')(x))
      if self.dropout_rate:
        x = nn.Dropout(
          self.dropout_rate, deterministic=not train, name=f'dropout{i}'
        )(x)
    x = nn.Dense(1, dtype=self.dtype, name='logit')(x)
    return x[:, 0].astype(jnp.float32)


def _batch_norm(train: bool, dtype, **kwargs):
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=0.9,
    epsilon=1e-5,
    dtype=dtype,
    **kwargs,
  )


class ResidualBlock(nn.Module):
  """Two 3x3 convs with BatchNorm and a shortcut (ResNet-18/34's block)."""

  features: int
  strides: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    shortcut = x
    y = _conv(self.features, (3, 3), self.dtype, strides=self.strides)(x)
    y = nn.relu(_batch_norm(train, self.dtype)(y))
    y = _conv(self.features, (3, 3), self.dtype)(y)
    # Zero-initialised last scale: each block starts as the identity.
    y = _batch_norm(train, self.dtype, scale_init=nn.initializers.zeros)(y)
    if shortcut.shape != y.shape:
      shortcut = _conv(
        self.features, (1, 1), self.dtype, strides=self.strides, name='proj'
      )(x)
      shortcut = _batch_norm(train, self.dtype, name='proj_norm')(shortcut)
    return nn.relu(y + shortcut)


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
  """

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  widths: Sequence[int] = (64, 128, 256, 512)
  stem_strides: int = 1
  stem_pool: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = images.astype(self.dtype)
    x = _conv(
      self.widths[0], (3, 3), self.dtype, strides=self.stem_strides,
      name='stem',
    )(x)  # fmt: skip
    if self.stem_pool:
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(_batch_norm(train, self.dtype, name='stem_norm')(x))
    for i, (size, width) in enumerate(
      zip(self.stage_sizes, self.widths, strict=True)
    ):
      for j in range(size):
        strides = 2 if i > 0 and j == 0 else 1
        x = ResidualBlock(width, strides, self.dtype, name=f'stage{i + 1}_{j}')(
          x, train
        )
    x = GlobalAvgPool(name='pool')(x)
    x = nn.Dense(1, dtype=self.dtype, name='logit')(x)
    return x[:, 0].astype(jnp.float32)


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
  """The Keras example's "image classification from scratch" network.

  A stride-2 conv stem, residual blocks of two separable convs and a 3x3
  stride-2 max pool (with a strided 1x1 conv on the shortcut), a final
  separable conv, global average pooling, dropout and one logit. The
  defaults are the example's widths.

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
    x = _conv(self.stem_features, (3, 3), self.dtype, strides=2, name='stem')(x)
    x = nn.relu(_batch_norm(train, self.dtype, name='stem_norm')(x))
    previous = x
    for i, features in enumerate(self.block_features, start=1):
      for j in (1, 2):
        x = nn.relu(x)
        x = SeparableConv(features, self.dtype, name=f'block{i}_sep{j}')(x)
        x = _batch_norm(train, self.dtype, name=f'block{i}_norm{j}')(x)
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
      residual = _conv(
        features, (1, 1), self.dtype, strides=2, name=f'block{i}_proj'
      )(previous)
      x = previous = x + residual
    x = SeparableConv(self.head_features, self.dtype, name='head_sep')(x)
    x = nn.relu(_batch_norm(train, self.dtype, name='head_norm')(x))
    x = GlobalAvgPool(name='pool')(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train, name='dropout')(
      x
    )
    x = nn.Dense(1, dtype=self.dtype, name='logit')(x)
    return x[:, 0].astype(jnp.float32)


MODELS = {
  'seed_cnn': SeedCNN,
  'resnet': ResNet,
  'mini_xception': MiniXception,
  'resnet50': backbones.ResNet50,
  'vit': backbones.ViT,
}
# Fields of the `model` group that say what to load, not what to build
# (pretrained.py).
LOADING_FIELDS = frozenset({'init_from', 'init_sha256', 'dont_load'})
# Set from config.freeze and config.dtype, not from the model group.
_FROM_TRAINING = frozenset({'frozen', 'dtype'})


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError unless `config` (the `model` group) names a model and
  only fields that model has."""
  if config.name not in MODELS:
    raise UsageError(
      f'unknown model.name {config.name!r}; known: {", ".join(MODELS)}'
    )
  unknown = unknown_fields(config)
  if unknown:
    raise UsageError(
      f'model {config.name!r} has no field(s) {", ".join(unknown)}; '
      'start from a config written for it (configs/fast_cpu.py: resnet)'
    )


def unknown_fields(config: ml_collections.ConfigDict) -> list[str]:
  """Fields of a `model` config that its model (`config.name`) lacks."""
  known = {field.name for field in dataclasses.fields(MODELS[config.name])}
  known = (known - _FROM_TRAINING) | LOADING_FIELDS | {'name'}
  return sorted(set(config.keys()) - known)


def can_freeze(config: ml_collections.ConfigDict) -> bool:
  """Whether the model takes config.freeze (its BatchNorm layers freeze)."""
  fields = dataclasses.fields(MODELS[config.name])
  return any(field.name == 'frozen' for field in fields)


def create_model(
  config: ml_collections.ConfigDict, dtype=jnp.float32, frozen: str = ''
):
  """Builds `config.name` with the model fields of `config` as arguments.

  Args:
    config: the `model` group.
    dtype: the computation dtype.
    frozen: config.freeze, for models that can freeze (`can_freeze`).

  Raises:
    UsageError: on an unknown model name or field.
  """
  check_config(config)
  kwargs = {
    k: v for k, v in config.items() if k not in LOADING_FIELDS | {'name'}
  }
  if frozen:
    kwargs['frozen'] = frozen
  return MODELS[config.name](dtype=dtype, **kwargs)


def param_shapes(config: ml_collections.ConfigDict, image_size: int):
  """The model's parameters as shapes, for input of image_size x image_size.

  Traces shapes only (no compile, no memory for the parameters).
  """
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  model = create_model(config)
  return jax.eval_shape(model.init, jax.random.key(0), images)['params']


def count_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def summarize(model: nn.Module, image_size: int) -> list[tuple]:
  """Per-layer (name, type, output shape, parameters) rows, as Keras shows.

  Runs on abstract shapes only, so no memory is spent on the parameters.
  """
  rows = []

  def record_layer(next_fn, args, kwargs, context):
    output = next_fn(*args, **kwargs)
    module = context.module
    # The model's direct children are its layers.
    if context.method_name == '__call__' and len(module.scope.path) == 1:
      params = module.variables.get('params', {})
      shape = ('None',) + tuple(output.shape[1:])
      rows.append(
        (module.name, type(module).__name__, shape, count_params(params))
      )
    return output

  def init(images):
    with nn.intercept_methods(record_layer):
      return model.init(jax.random.key(0), images)

  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.uint8)
  jax.eval_shape(init, images)
  return rows


def format_summary(rows: list[tuple]) -> str:
  """Renders `summarize` rows as a table with the total parameter count."""
  header = ('Layer', 'Type', 'Output shape', 'Param #')
  cells = [header] + [
    (name, kind, str(shape).replace("'", ''), f'{n:,}')
    for name, kind, shape, n in rows
  ]
  widths = [max(len(row[i]) for row in cells) + 2 for i in range(4)]
  rule = '-' * sum(widths)
  lines = [rule]
  for i, row in enumerate(cells):
    lines.append(
      ''.join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
    )
    if i == 0:
      lines.append(rule)
  lines.append(rule)
  lines.append(f'Total params: {sum(r[3] for r in rows):,}')
  return '\n'.join(lines)
