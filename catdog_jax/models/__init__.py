"""Flax linen models, by `config.model.name`.

`seed_cnn` mirrors the seed Keras model layer for layer (`cnn.py`);
`resnet` and `mini_xception` are the stronger from-scratch models
(`resnet.py`, `xception.py`); `resnet50`, `vit` and `efficientnet_lite` load
pretrained ImageNet weights (`backbones.py`, `efficientnet.py`, converted by
`pretrained.py`). Models with
BatchNorm keep its statistics in the 'batch_stats' collection. Nothing here
knows about data, training or checkpoints.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from catdog_jax.errors import UsageError
from catdog_jax.models import backbones
from catdog_jax.models import cnn
from catdog_jax.models import efficientnet
from catdog_jax.models import resnet
from catdog_jax.models import xception

MODELS = {
  'seed_cnn': cnn.SeedCNN,
  'resnet': resnet.ResNet,
  'mini_xception': xception.MiniXception,
  'resnet50': backbones.ResNet50,
  'vit': backbones.ViT,
  'efficientnet_lite': efficientnet.EfficientNetLite,
}
# Fields of the `model` group that say how to initialise the model, not how
# to build it: pretrained weights (pretrained.py) and the whitened stem
# (whitening.py).
INIT_FIELDS = frozenset(
  {'init_from', 'init_sha256', 'init_package', 'dont_load', 'whiten_stem'}
)
# Set from optimizer.freeze, config.dtype and config.cpu_convolutions, not
# from the model group.
_FROM_TRAINING = frozenset({'frozen', 'dtype', 'conv_fn'})


def preprocess(images_bhwc):
  """uint8 pixels to the float32 in [0, 1] every model takes, on the device
  inside the jitted step: training, evaluation and export share it."""
  return images_bhwc.astype(jnp.float32) / 255.0


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
  if config.name == 'efficientnet_lite':
    for field, allowed in (
      ('variant', efficientnet.VARIANTS),
      ('head', efficientnet.HEADS),
    ):
      value = config.get(field, getattr(efficientnet.EfficientNetLite, field))
      if value not in allowed:
        raise UsageError(
          f'model.{field} must be one of {", ".join(allowed)}, got {value!r}'
        )


def unknown_fields(config: ml_collections.ConfigDict) -> list[str]:
  """Fields of a `model` config that its model (`config.name`) lacks."""
  known = {field.name for field in dataclasses.fields(MODELS[config.name])}
  known = (known - _FROM_TRAINING) | INIT_FIELDS | {'name'}
  return sorted(set(config.keys()) - known)


def can_freeze(config: ml_collections.ConfigDict) -> bool:
  """Whether the model takes optimizer.freeze (its BatchNorm layers freeze)."""
  fields = dataclasses.fields(MODELS[config.name])
  return any(field.name == 'frozen' for field in fields)


def create_model(
  config: ml_collections.ConfigDict,
  dtype=jnp.float32,
  frozen: str = '',
  conv_fn=None,
):
  """Builds `config.name` with the model fields of `config` as arguments.

  Args:
    config: the `model` group.
    dtype: the computation dtype.
    frozen: optimizer.freeze, for models that can freeze (`can_freeze`).
    conv_fn: a replacement of `lax.conv_general_dilated` for the models
      that take one (the seed CNN, the ResNet, EfficientNet-Lite); None:
      XLA's own.

  Raises:
    UsageError: on an unknown model name or field.
  """
  check_config(config)
  # Lists (a config read back from JSON) as tuples: a module is hashable.
  kwargs = {
    k: tuple(v) if isinstance(v, list) else v
    for k, v in config.items()
    if k not in INIT_FIELDS | {'name'}
  }
  if frozen:
    kwargs['frozen'] = frozen
  fields = {field.name for field in dataclasses.fields(MODELS[config.name])}
  if conv_fn is not None and 'conv_fn' in fields:
    kwargs['conv_fn'] = conv_fn
  return MODELS[config.name](dtype=dtype, **kwargs)


def init_variables(model: nn.Module, rng, image_size: int) -> dict:
  """`model`'s fresh {'params', 'batch_stats'} for image_size x image_size
  input (batch_stats {} for models without BatchNorm)."""
  images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  variables = model.init(rng, images)
  return {
    'params': variables['params'],
    'batch_stats': variables.get('batch_stats', {}),
  }


@functools.cache
def variable_shapes(model: nn.Module, image_size: int) -> dict:
  """`init_variables` as shapes and dtypes.

  Traces shapes only (no compile, no memory for the parameters), once per
  model and size in a process: predict, the report and the page ask often.
  The result is shared: callers must not change it.
  """
  init = functools.partial(init_variables, model, image_size=image_size)
  return jax.eval_shape(init, jax.random.key(0))


def param_shapes(config: ml_collections.ConfigDict, image_size: int):
  """The parameters of config's model as shapes (`variable_shapes`)."""
  return variable_shapes(create_model(config), image_size)['params']
