"""The train state: what a checkpoint holds, and how to make an empty one.

Training initialises it and resumes into its shapes (`abstract_state`, also
what the lowering tests compile against). Inference never builds one: it
restores the model's variables alone (`inference.restore_variables`).
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct
from flax.training import train_state

from catdog_jax import inference
from catdog_jax import optimizer
from catdog_jax.models import pretrained


class TrainState(train_state.TrainState):
  """Params, optimizer state and the model's other variables.

  Attributes:
    batch_stats: BatchNorm running statistics ({} for models without).
    ema_params: exponential moving average of the params, or None.
  """

  batch_stats: Any = struct.field(default_factory=dict)
  ema_params: Any = None


def create_train_state(
  rng, config: ml_collections.ConfigDict, num_steps: int
) -> TrainState:
  """Initialises the model's variables and the optimizer state.

  `num_steps` sets the learning-rate schedule's length; it does not change
  any array's shape, so restoring for inference may pass any value.
  """
  model = inference.create_model(config)
  size = config.data.image_size
  images = jnp.zeros((1, size, size, 3), jnp.float32)
  variables = model.init(rng, images)
  params = variables['params']
  return TrainState.create(
    apply_fn=model.apply,
    params=params,
    tx=optimizer.create_optimizer(
      config.optimizer, num_steps, optimizer.frozen_pattern(config)
    ),
    batch_stats=variables.get('batch_stats', {}),
    ema_params=params if config.ema_decay else None,
  )


def with_params(state: TrainState, params) -> TrainState:
  """`state` with new params, and the EMA (if kept) restarted from them.

  The EMA gets its own copy: the train step donates both, and one buffer
  cannot be donated twice.
  """
  ema_params = None
  if state.ema_params is not None:
    ema_params = jax.tree.map(jnp.copy, params)
  return state.replace(params=params, ema_params=ema_params)


def abstract_state(config: ml_collections.ConfigDict, sharding) -> TrainState:
  """The state's shapes and dtypes, placed by `sharding`; no memory spent."""
  # The schedule's length shapes no array, so any num_steps will do.
  init = functools.partial(create_train_state, config=config, num_steps=1)
  shapes = jax.eval_shape(init, jax.random.key(0))
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes
  )


def load_pretrained(state: TrainState, config, path: str) -> TrainState:
  """The fresh `state` with the checkpoint file's params and statistics
  (`config`: the `model` group), placed as the state's were."""
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  shardings = jax.tree.map(lambda x: x.sharding, variables)
  merged = pretrained.load_variables(config, jax.device_get(variables), path)
  merged = jax.device_put(merged, shardings)
  state = state.replace(batch_stats=merged['batch_stats'])
  return with_params(state, merged['params'])
