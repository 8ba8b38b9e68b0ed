"""The optimizer: optax transformations, learning-rate schedules, decay mask.

Built from the `optimizer` config alone; the trainer asks for it once, with
the run's length, which sets the schedule.
"""

import jax
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
  if config.name == 'adam' and config.weight_decay:
    raise UsageError(
      'optimizer adam has no weight decay: use optimizer.name=adamw'
    )
  if config.grad_clip_norm < 0:
    raise UsageError(
      f'optimizer.grad_clip_norm must be >= 0 (0: no clipping), got '
      f'{config.grad_clip_norm}'
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


def create_optimizer(config: ml_collections.ConfigDict, num_steps: int):
  """The optax optimizer the `optimizer` config describes."""
  tx = OPTIMIZERS[config.name](
    learning_rate_schedule(config, num_steps), config, decay_mask
  )
  if config.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  return tx
