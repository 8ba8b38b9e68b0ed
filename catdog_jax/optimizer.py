"""The optimizer: optax transformations, learning-rate schedules, decay mask.

Built from the `optimizer` config (and the model's whitened stem, which never
trains); the trainer asks for it once, with the run's length, which sets the
schedule.
"""

import re

import jax
import jax.numpy as jnp
import ml_collections
import optax

from catdog_jax.errors import UsageError

# Optimizers by `config.optimizer.name`: (learning rate, optimizer config,
# weight-decay mask) -> optax transformation.
OPTIMIZERS = {
  'adam': lambda lr, config, mask: optax.adam(lr),
  'adamw': lambda lr, config, mask: optax.adamw(
    lr, weight_decay=config.weight_decay, mask=mask
  ),
  'sgd': lambda lr, config, mask: optax.chain(
    optax.add_decayed_weights(config.weight_decay, mask),
    optax.sgd(lr, momentum=config.momentum, nesterov=True),
  ),
}
SCHEDULES = ('constant', 'warmup_cosine')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError on an `optimizer` config that cannot work."""
  if config.name not in OPTIMIZERS:
    raise UsageError(
      f'unknown optimizer.name {config.name!r}; known: {", ".join(OPTIMIZERS)}'
    )
  if config.schedule not in SCHEDULES:
    raise UsageError(
      f'unknown optimizer.schedule {config.schedule!r}; known: '
      f'{", ".join(SCHEDULES)}'
    )
  check_regex(config.freeze, 'optimizer.freeze')
  if config.name == 'adam' and config.weight_decay:
    raise UsageError(
      'optimizer adam has no weight decay: use optimizer.name=adamw'
    )
  for regex, multiplier in config.lr_multipliers:
    check_regex(regex, 'optimizer.lr_multipliers')
    if multiplier < 0:
      raise UsageError(
        f'optimizer.lr_multipliers: {multiplier} for {regex!r} is negative'
      )


def learning_rate_schedule(config: ml_collections.ConfigDict, num_steps: int):
  """The learning rate by step, from the `optimizer` config."""
  if config.schedule == 'constant':
    return optax.constant_schedule(config.learning_rate)
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=config.learning_rate,
    warmup_steps=config.warmup_steps,
    decay_steps=max(num_steps, config.warmup_steps + 1),
  )


def decay_mask(params):
  """True for kernels; biases and norm scales (1-D) get no weight decay."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


# The whitened stem (whitening.py), frozen with model.whiten_stem: its
# kernel, and its bias, which the BatchNorm after it cancels (so no gradient
# flows into the stem at all).
WHITENED_STEM = '^stem/'


def frozen_pattern(config: ml_collections.ConfigDict) -> str:
  """The regex of parameters that never train: optimizer.freeze, and the
  whitened stem when model.whiten_stem."""
  freeze = config.optimizer.freeze
  patterns = [freeze] if freeze else []
  if config.model.get('whiten_stem'):
    patterns.append(WHITENED_STEM)
  return '|'.join(f'(?:{p})' for p in patterns)


def check_regex(regex: str, field: str) -> None:
  """Raises UsageError naming `field` unless `regex` compiles."""
  try:
    re.compile(regex)
  except re.error as e:
    raise UsageError(f'{field}: {regex!r} is not a regex ({e})') from e


def path_string(key_path) -> str:
  """'layer1_0/conv1/kernel' for a parameter's pytree key path."""
  return '/'.join(str(getattr(k, 'key', k)) for k in key_path)


def update_factor(path: str, lr_multipliers, freeze: str) -> float:
  """0 for frozen parameters, else the first matching multiplier, else 1."""
  if freeze and re.search(freeze, path):
    return 0.0
  for regex, multiplier in lr_multipliers:
    if re.search(regex, path):
      return float(multiplier)
  return 1.0


def scale_by_path(lr_multipliers, freeze: str) -> optax.GradientTransformation:
  """Multiplies each update by its parameter's `update_factor`: the learning
  rate (and decoupled weight decay) scaled, frozen ones exactly zero."""

  def scale(key_path, update):
    factor = update_factor(path_string(key_path), lr_multipliers, freeze)
    if factor == 1.0:
      return update
    return jnp.zeros_like(update) if factor == 0.0 else update * factor

  def update_fn(updates, state, params=None):
    del params
    return jax.tree_util.tree_map_with_path(scale, updates), state

  return optax.GradientTransformation(
    lambda params: optax.EmptyState(), update_fn
  )


def stop_frozen_gradients(params, freeze: str):
  """params with the frozen ones cut from the graph: XLA computes no
  gradient for them."""
  if not freeze:
    return params
  return jax.tree_util.tree_map_with_path(
    lambda path, p: (
      jax.lax.stop_gradient(p) if re.search(freeze, path_string(path)) else p
    ),
    params,
  )


def create_optimizer(
  config: ml_collections.ConfigDict, num_steps: int, freeze: str = ''
):
  """The optax optimizer the `optimizer` config describes.

  Args:
    config: the `optimizer` group.
    num_steps: the run's length, which sets the schedule.
    freeze: `frozen_pattern`, a regex of parameter paths never updated.
  """
  tx = OPTIMIZERS[config.name](
    learning_rate_schedule(config, num_steps), config, decay_mask
  )
  if config.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  if config.lr_multipliers or freeze:
    tx = optax.chain(tx, scale_by_path(config.lr_multipliers, freeze))
  return tx
