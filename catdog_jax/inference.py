"""A trained model without its trainer: the network a run's config builds,
and the variables evaluation uses, restored without the optimizer state.

Predict, eval, report, export and the page need only these (big_vision's
eval_only restores parameters alone); training builds its TrainState
around the same `create_model`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from catdog_jax import checkpointing
from catdog_jax import models
from catdog_jax import onednn


def create_model(
  config: ml_collections.ConfigDict, cpu_convolutions: str | None = None
) -> nn.Module:
  """The run's network: config.model at config.dtype, its frozen layers per
  optimizer.freeze, its CPU convolutions per `cpu_convolutions` (default:
  config.cpu_convolutions)."""
  model = models.create_model(
    config.model,
    jnp.dtype(config.dtype),
    config.optimizer.freeze,
    onednn.conv_for(cpu_convolutions or config.cpu_convolutions),
  )
  # Equal models are one instance: jit compares a static bound method (an
  # `apply`) by its instance's identity, and this way reuses what it compiled.
  return _MODELS.setdefault(model, model)


_MODELS: dict[nn.Module, nn.Module] = {}


def abstract_variables(config: ml_collections.ConfigDict, sharding) -> dict:
  """{'params', 'batch_stats'} as shapes and dtypes placed by `sharding`
  (batch_stats {} for models without BatchNorm); no memory spent."""
  shapes = models.variable_shapes(create_model(config), config.data.image_size)
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes
  )


def restore_variables(
  workdir: str,
  config: ml_collections.ConfigDict,
  sharding,
  step: int | None = None,
) -> tuple[dict, int]:
  """(variables, step): what evaluation applies of checkpoint `step` (else
  `checkpointing.inference_step`'s), placed by `sharding`.

  The variables are the evaluated weights as 'params' (the EMA's when the
  run kept one, as `evaluate.eval_variables`) and, for models with
  BatchNorm, its 'batch_stats'. Only those are read from the checkpoint:
  no optimizer state, no training weights beside the EMA.
  """
  abstract = abstract_variables(config, sharding)
  weights = 'ema_params' if config.ema_decay else 'params'
  wanted = {weights: abstract['params']}
  if abstract['batch_stats']:
    wanted['batch_stats'] = abstract['batch_stats']
  restored, step = checkpointing.restore_for_inference(workdir, wanted, step)
  variables = {'params': restored[weights]}
  if 'batch_stats' in restored:
    variables['batch_stats'] = restored['batch_stats']
  return variables, step
