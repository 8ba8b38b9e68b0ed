"""Tests for catdog_jax.inference: a trained model restored without its
optimizer."""

import jax
import numpy as np
import orbax.checkpoint as ocp

from catdog_jax import checkpointing
from catdog_jax import train
from catdog_jax.evaluation import predict
from tests import helpers


def nbytes(tree) -> int:
  return sum(leaf.nbytes for leaf in jax.tree.leaves(tree))


def saved_collections(workdir: str, step: int) -> set[str]:
  """The top-level names of checkpoint `step`'s saved train state."""
  path = f'{checkpointing.directory(workdir)}/{step}/state'
  metadata = ocp.PyTreeCheckpointer().metadata(path)
  return set(metadata.item_metadata.tree)


def test_predict_restores_the_evaluated_weights_and_no_optimizer_state(
  flat_dataset, tmp_path
):
  # BatchNorm and an EMA: the evaluated weights are the average's.
  config = helpers.tiny_recipe_config(flat_dataset, num_train_steps=4)
  state = train.train_and_evaluate(config, str(tmp_path))
  assert {'opt_state', 'params', 'ema_params'} <= saved_collections(
    str(tmp_path), 4
  )

  predictor = predict.Predictor(str(tmp_path))
  variables = predictor.variables
  assert set(variables) == {'params', 'batch_stats'}
  jax.tree.map(np.testing.assert_array_equal, variables['params'],
               state.ema_params)  # fmt: skip
  jax.tree.map(np.testing.assert_array_equal, variables['batch_stats'],
               state.batch_stats)  # fmt: skip
  # One copy of the weights and the statistics: no Adam moments, no
  # training weights beside the average.
  assert nbytes(variables) == nbytes(state.params) + nbytes(state.batch_stats)
  assert nbytes(state) > 3 * nbytes(state.params)


def test_a_model_without_batch_norm_restores_its_params_alone(trained_run):
  predictor = predict.Predictor(trained_run.workdir)
  assert set(predictor.variables) == {'params'}
  jax.tree.map(np.testing.assert_array_equal, predictor.variables['params'],
               trained_run.state.params)  # fmt: skip
