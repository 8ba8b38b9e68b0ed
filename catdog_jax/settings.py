"""The settings: the check that stops a run with one line on any value that
cannot work, before anything is indexed or compiled, and what the settings
mean for a run's length."""

import dataclasses

import jax
import ml_collections

from catdog_jax import augment
from catdog_jax import models
from catdog_jax import onednn
from catdog_jax import optimizer
from catdog_jax import text
from catdog_jax import whitening
from catdog_jax import workdir as workdir_lib
from catdog_jax.data import duplicates
from catdog_jax.errors import UsageError
from catdog_jax.evaluation import evaluate

MIN_IMAGE_SIZE = 16


@dataclasses.dataclass(frozen=True)
class Range:
  """The values a numeric setting may take: from `low` to `high` (None: no
  bound), each bound included unless open; `note` says what a special
  value means; `wording` replaces the generated one."""

  low: float | None = None
  high: float | None = None
  low_open: bool = False
  high_open: bool = False
  note: str = ''
  wording: str = ''

  def __contains__(self, value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      return False
    if self.low is not None and (
      value < self.low or (self.low_open and value == self.low)
    ):
      return False
    return self.high is None or not (
      value > self.high or (self.high_open and value == self.high)
    )

  def __str__(self) -> str:
    if self.wording:
      return self.wording
    if self.high is None:
      bound = f'at least {self.low}' if self.low else f'>= {self.low}'
      if self.low_open:
        bound = f'> {self.low}'
    else:
      bound = (
        f'in {"(" if self.low_open else "["}{self.low}, {self.high}'
        f'{")" if self.high_open else "]"}'
      )
    return f'must be {bound}' + (f' ({self.note})' if self.note else '')


COUNT = Range(1)
PROBABILITY = Range(0, 1, wording='is a probability in [0, 1] (0: off)')
JITTER = Range(0, 1, note='0: off')
# Every numeric setting of base.py and the configs (a test holds every one
# to having a range); a tuple's items each. Checked first, each with a line
# naming the field, its value and the range.
RANGES = {
  'seed': Range(0),
  'batch_size': COUNT,
  'num_epochs': COUNT,
  'num_train_steps': COUNT,  # Or None: num_epochs decides.
  'log_every_steps': COUNT,
  'eval_every_steps': COUNT,
  'checkpoint_every_steps': COUNT,
  'checkpoints_to_keep': COUNT,
  'label_smoothing': Range(0, 1, high_open=True),
  'ema_decay': Range(0, 1, high_open=True,
                     wording='must be in (0, 1), or 0 for none'),
  'progressive_sizes': Range(
    MIN_IMAGE_SIZE, wording=f'must lie in [{MIN_IMAGE_SIZE}, data.image_size]'
  ),
  'data.image_size': Range(MIN_IMAGE_SIZE),
  'data.val_fraction': Range(0, 1, high_open=True),
  'data.test_fraction': Range(0, 1, high_open=True),
  'data.num_workers': Range(0, note='0: one per CPU core'),
  'data.prefetch_batches': Range(0),
  'data.device_prefetch': Range(0, note='0: none'),
  'data.max_pixels': COUNT,
  'data.near_duplicate_bits': Range(0, duplicates.HASH_BITS - 1),
  'augment.crop_min_area': Range(0, 1, low_open=True, note='1: no crop'),
  'augment.crop_max_area': Range(1, augment.MAX_CROP_AREA,
                                 note='1: no zooming out'),
  'augment.brightness': JITTER,
  'augment.contrast': JITTER,
  'augment.saturation': JITTER,
  'augment.grayscale': PROBABILITY,
  'augment.cutmix': PROBABILITY,
  'augment.blur': Range(0, augment.MAX_BLUR_SIGMA,
                        wording=f'must be in [0, {augment.MAX_BLUR_SIGMA}] '
                        'pixels (0: off)'),
  'model.conv_features': COUNT,
  'model.dense_features': COUNT,
  'model.dropout_rate': Range(0, 1, high_open=True),
  'model.stage_sizes': COUNT,
  'model.widths': COUNT,
  'model.stem_strides': COUNT,
  'model.patch_size': COUNT,
  'model.width': COUNT,
  'model.depth': COUNT,
  'model.num_heads': COUNT,
  'model.mlp_dim': COUNT,
  'optimizer.learning_rate': Range(0, low_open=True),
  'optimizer.warmup_steps': Range(0),
  'optimizer.weight_decay': Range(0),
  'optimizer.momentum': Range(0, 1, high_open=True),
  'optimizer.grad_clip_norm': Range(0, note='0: no clipping'),
  'eval.translate': Range(0, note='0: none'),
  'eval.recalibrate_bn_batches': Range(0, note='0: keep those of training'),
  'probe.steps': COUNT,
  'probe.learning_rate': Range(0, low_open=True),
  'probe.l2': Range(0),
}  # fmt: skip


def check_ranges(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError on the first setting outside its RANGES entry."""
  flat = workdir_lib.flatten(config.to_dict())
  for field, allowed in RANGES.items():
    value = flat.get(field)
    if value is None:  # A field of another model, or an optional count.
      continue
    items = value if isinstance(value, (tuple, list)) else (value,)
    # Types are ml_collections' to hold (and progressive_sizes' own check).
    numbers = [x for x in items if isinstance(x, (int, float))]
    if not all(number in allowed for number in numbers):
      each = ' each' if isinstance(value, (tuple, list)) else ''
      raise UsageError(f'{field}{each} {allowed}, got {value!r}')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError on settings that cannot work, before any compile."""
  check_ranges(config)
  if config.batch_size % jax.device_count():
    raise UsageError(
      f'batch_size {config.batch_size} is not divisible by the '
      f'{jax.device_count()} devices'
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
  check_eval(config)
  check_progressive_sizes(config)


def check_data(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError on a `data` config that cannot work (its ranges
  checked)."""
  fractions = (config.val_fraction, config.test_fraction)
  if sum(fractions) >= 1:
    raise UsageError(
      'data.val_fraction and data.test_fraction must sum to less than 1, '
      f'got {fractions}'
    )


def check_eval(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError on an `eval` group that cannot work with the model."""
  translate, size = config.eval.translate, config.data.image_size
  if translate >= size // 2:
    raise UsageError(
      'eval.translate must be under half of data.image_size '
      f'({size}), got {translate}'
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
