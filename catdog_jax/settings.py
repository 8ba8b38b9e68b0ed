"""The settings: the check that stops a run with one line on any value that
cannot work, before anything is indexed or compiled, and what the settings
mean for a run's length."""

import jax
import ml_collections

from catdog_jax import augment
from catdog_jax import models
from catdog_jax import onednn
from catdog_jax import optimizer
from catdog_jax import text
from catdog_jax import whitening
from catdog_jax.errors import UsageError
from catdog_jax.evaluation import evaluate

MIN_IMAGE_SIZE = 16
# Counts that must be at least 1 (num_train_steps, optional, is checked
# where it is set).
COUNTS = (
  'batch_size',
  'num_epochs',
  'log_every_steps',
  'eval_every_steps',
  'checkpoint_every_steps',
  'checkpoints_to_keep',
)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError on settings that cannot work, before any compile."""
  for field in COUNTS:
    if config[field] < 1:
      raise UsageError(f'{field} must be at least 1, got {config[field]}')
  if config.batch_size % jax.device_count():
    raise UsageError(
      f'batch_size {config.batch_size} is not divisible by the '
      f'{jax.device_count()} devices'
    )
  if config.num_train_steps is not None and config.num_train_steps < 1:
    raise UsageError(
      f'num_train_steps must be at least 1, got {config.num_train_steps}'
    )
  if not 0 <= config.label_smoothing < 1:
    raise UsageError(
      f'label_smoothing must be in [0, 1), got {config.label_smoothing}'
    )
  if not 0 <= config.ema_decay < 1:
    raise UsageError(
      f'ema_decay must be in (0, 1), or 0 for none, got {config.ema_decay}'
    )
  onednn.check_implementation(config.cpu_convolutions)
  check_data(config.data)
  models.check_config(config.model)
  optimizer.check_config(config.optimizer)
  if config.optimizer.freeze and not models.can_freeze(config.model):
    raise UsageError(
      f'optimizer.freeze: model {config.model.name!r} cannot freeze its '
      'BatchNorm statistics; freezing works with resnet50, vit and '
      'efficientnet_lite'
    )
  whitening.check_config(config.model)
  augment.check_config(config.augment)
  check_eval(config)
  check_progressive_sizes(config)


def check_data(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError on a `data` config that cannot work."""
  if config.image_size < MIN_IMAGE_SIZE:
    raise UsageError(
      f'data.image_size must be at least {MIN_IMAGE_SIZE}, '
      f'got {config.image_size}'
    )
  if config.device_prefetch < 0:
    raise UsageError(
      f'data.device_prefetch must be >= 0 (0: none), got '
      f'{config.device_prefetch}'
    )
  fractions = (config.val_fraction, config.test_fraction)
  if min(fractions) < 0 or sum(fractions) >= 1:
    raise UsageError(
      'data.val_fraction and data.test_fraction must be >= 0 and sum '
      f'to less than 1, got {fractions}'
    )


def check_eval(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError on an `eval` group that cannot work with the model."""
  translate, size = config.eval.translate, config.data.image_size
  if not 0 <= translate < size // 2:
    raise UsageError(
      'eval.translate must be >= 0 (0: none) and under half of '
      f'data.image_size ({size}), got {translate}'
    )
  if config.eval.recalibrate_bn_batches and (
    config.model.name not in evaluate.RECALIBRATES
  ):
    raise UsageError(
      f'eval.recalibrate_bn_batches: model {config.model.name!r} has no '
      f'BatchNorm statistics to recompute (models with them: '
      f'{", ".join(evaluate.RECALIBRATES)})'
    )


def check_progressive_sizes(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError unless every progressive size can train the model."""
  image_size = config.data.image_size
  if not all(isinstance(size, int) for size in config.progressive_sizes):
    raise UsageError(
      'progressive_sizes are image sizes in pixels, e.g. (96,128), got '
      f'{tuple(config.progressive_sizes)}'
    )
  sizes = dict.fromkeys(config.progressive_sizes)  # Distinct, in order.
  shapes = models.param_shapes(config.model, image_size) if sizes else None
  for size in sizes:
    if not MIN_IMAGE_SIZE <= size <= image_size:
      raise UsageError(
        f'progressive_sizes must lie in [{MIN_IMAGE_SIZE}, data.image_size '
        f'= {image_size}], got {size}'
      )
    if models.param_shapes(config.model, size) != shapes:
      raise UsageError(
        f'model {config.model.name!r} has other parameter shapes at '
        f'{size} px than at {image_size}: it cannot train with '
        'progressive_sizes'
      )


def warmup_warning(config: ml_collections.ConfigDict, num_steps: int):
  """A warning when the run ends inside its learning-rate warm-up (it never
  trains at optimizer.learning_rate), else None."""
  warmup = config.optimizer.warmup_steps
  if config.optimizer.schedule != 'warmup_cosine' or num_steps > warmup:
    return None
  peak = config.optimizer.learning_rate * num_steps / warmup
  return (
    f'the run ends at step {num_steps}, inside its {warmup}-step '
    f'learning-rate warm-up: the rate rises to {peak:.3g}, never to '
    f'optimizer.learning_rate {config.optimizer.learning_rate:g}; give more '
    'steps or fewer optimizer.warmup_steps'
  )


def describe(config: ml_collections.ConfigDict, num_steps: int, params: int):
  """One line of what a run trains, for the log (config.json has it all)."""
  sizes = config.progressive_sizes or (config.data.image_size,)
  pixels = f'{min(sizes)}-{max(sizes)}' if len(set(sizes)) > 1 else sizes[0]
  return (
    f'Training {config.model.name} ({text.counted(params, "parameter")}) '
    f'on {text.counted(jax.device_count(), "device")}: '
    f'{text.counted(num_steps, "step")} of batch {config.batch_size} at '
    f'{pixels} px, {config.optimizer.name} at '
    f'{config.optimizer.learning_rate:g} ({config.optimizer.schedule}); '
    'every setting is in config.json.'
  )
