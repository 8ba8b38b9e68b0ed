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
from catdog_jax import models
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
  rng, config: ml_collections.ConfigDict, num_steps: int, start=None
) -> TrainState:
  """Initialises the model's variables and the optimizer state.

  `num_steps` sets the learning-rate schedule's length; it does not change
  any array's shape, so restoring for inference may pass any value.
  `start`: variables to begin from (`pretrained_variables`); a None leaf is
  initialised. Under jit the initialisers of what `start` replaces are
  never computed (jit drops unused work): Lite0's init compiles in 0.3 s,
  not 3.3 s, when every layer but the head is loaded.
  """
  model = inference.create_model(config)
  variables = models.init_variables(model, rng, config.data.image_size)
  if start is not None:
    variables = jax.tree.map(
      lambda given, fresh: fresh if given is None else given,
      start,
      variables,
      is_leaf=lambda x: x is None,
    )
  params = variables['params']
  return TrainState.create(
    apply_fn=model.apply,
    params=params,
    tx=optimizer.create_optimizer(
      config.optimizer, num_steps, optimizer.frozen_pattern(config)
    ),
    batch_stats=variables['batch_stats'],
    ema_params=params if config.ema_decay else None,
  )


def pretrained_variables(config: ml_collections.ConfigDict, path: str):
  """The checkpoint file's variables in the model's tree, for
  `create_train_state`'s `start`: None where the model keeps its own
  initialisation (`model.dont_load`)."""
  fresh = models.variable_shapes(
    inference.create_model(config), config.data.image_size
  )
  merged = pretrained.load_variables(config.model, fresh, path)
  return jax.tree.map(
    lambda x: None if isinstance(x, jax.ShapeDtypeStruct) else x, merged
  )


def fresh_state(
  rng, config: ml_collections.ConfigDict, num_steps: int, init_path, sharding
) -> TrainState:
  """A new state placed by `sharding`: the pretrained checkpoint file's
  variables where `init_path` names one, initialised elsewhere."""
  start = None
  if init_path:
    start = jax.device_put(pretrained_variables(config, init_path), sharding)
  init = functools.partial(
    create_train_state, config=config, num_steps=num_steps
  )
  return jax.jit(init, out_shardings=sharding)(rng, start=start)


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
