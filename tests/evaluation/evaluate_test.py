"""Tests for catdog_jax.evaluate: the step, a pass over a split, its result."""

import jax
import numpy as np
import pytest

from catdog_jax import mesh
from catdog_jax import models
from catdog_jax import settings
from catdog_jax import state as state_lib
from catdog_jax.data import dataset
from catdog_jax.data import sources
from catdog_jax.errors import UsageError
from catdog_jax.evaluation import evaluate
from tests import helpers


def tiny_state(config):
  return state_lib.create_train_state(jax.random.key(0), config, 30)


def eval_step(state, batch, **options):
  """evaluate.eval_step of `state`'s model and evaluated variables."""
  return evaluate.eval_step(
    evaluate.eval_variables(state), batch, apply_fn=state.apply_fn, **options
  )


def test_eval_step_passes_labels_and_mask_through(flat_dataset):
  config = helpers.tiny_config(flat_dataset)
  batch = {
    'image': np.zeros((4, 32, 32, 3), np.uint8),
    'label': np.array([0, 1, 1, 0], np.int32),
    'mask': np.array([True, True, True, False]),
  }
  out = eval_step(tiny_state(config), batch)
  assert out['logit'].shape == (4,)
  np.testing.assert_array_equal(out['mask'], batch['mask'])


def random_batch():
  """Two random 32x32 images, labelled and unpadded."""
  rng = np.random.default_rng(0)
  return {
    'image': rng.integers(0, 256, (2, 32, 32, 3), np.uint8),
    'label': np.zeros(2, np.int32),
    'mask': np.ones(2, bool),
  }


def test_eval_flip_averages_an_image_and_its_mirror(flat_dataset):
  config = helpers.tiny_config(flat_dataset)
  state = tiny_state(config)
  batch = random_batch()
  images = batch['image']
  mirrored = {**batch, 'image': images[:, :, ::-1]}
  plain = eval_step(state, batch)['logit']
  mirror = eval_step(state, mirrored)['logit']
  assert not np.allclose(plain, mirror)
  np.testing.assert_allclose(
    eval_step(state, batch, flip=True)['logit'],
    (plain + mirror) / 2,
    rtol=1e-5,
  )


def test_shift_images_moves_pixels_and_reflects_the_border():
  images = np.arange(2 * 5 * 6 * 3).reshape(2, 5, 6, 3)
  down_right = np.asarray(evaluate.shift_images(images, 2))
  np.testing.assert_array_equal(down_right[:, 2:, 2:], images[:, :-2, :-2])
  # Reflection: row 1 of the shifted copy mirrors row 3 about row 2.
  np.testing.assert_array_equal(down_right[:, 1, 2:], images[:, 1, :-2])
  np.testing.assert_array_equal(down_right[:, 0, 2:], images[:, 2, :-2])
  up_left = np.asarray(evaluate.shift_images(images, -1))
  np.testing.assert_array_equal(up_left[:, :-1, :-1], images[:, 1:, 1:])
  np.testing.assert_array_equal(up_left[:, -1, :-1], images[:, -2, 1:])
  np.testing.assert_array_equal(evaluate.shift_images(images, 0), images)


def test_eval_translate_weights_the_image_and_two_shifted_copies(
  flat_dataset,
):
  """Half the image's (flip-averaged) logit, a quarter each of its copies
  shifted down-right and up-left, each as eval_step alone scores it."""
  config = helpers.tiny_config(flat_dataset)
  state = tiny_state(config)
  batch = random_batch()
  images = batch['image']
  padded = np.pad(images, ((0, 0), (3, 3), (3, 3), (0, 0)), mode='reflect')
  down_right = {**batch, 'image': padded[:, :32, :32]}
  up_left = {**batch, 'image': padded[:, 6:38, 6:38]}
  for flip in (False, True):
    logit = {
      name: eval_step(state, b, flip=flip)['logit']
      for name, b in [('plain', batch), ('dr', down_right), ('ul', up_left)]
    }
    assert not np.allclose(logit['plain'], logit['dr'])
    np.testing.assert_allclose(
      eval_step(state, batch, flip=flip, translate=3)['logit'],
      logit['plain'] / 2 + (logit['dr'] + logit['ul']) / 4,
      rtol=1e-5,
    )


def test_compile_eval_step_applies_the_configs_augmentation(flat_dataset):
  config = helpers.tiny_config(flat_dataset, eval__flip=True, eval__translate=2)
  state = tiny_state(config)
  batch = random_batch()
  data_sharding, replicated = mesh.create_shardings()
  eval_fn = evaluate.compile_eval_step(config, data_sharding, replicated)
  np.testing.assert_allclose(
    eval_fn(evaluate.eval_variables(state), batch)['logit'],
    eval_step(state, batch, flip=True, translate=2)['logit'],
    rtol=1e-5,
  )


def test_eval_variables_are_the_average_when_kept(flat_dataset):
  config = helpers.tiny_recipe_config(flat_dataset)
  state = tiny_state(config)
  assert evaluate.eval_variables(state)['params'] is state.ema_params
  config.ema_decay = 0.0
  state = tiny_state(config)
  assert state.ema_params is None
  assert evaluate.eval_variables(state)['params'] is state.params


@pytest.mark.parametrize('batch_size', [8, 6])
def test_evaluate_predicts_every_example_once_in_order(
  flat_dataset, batch_size
):
  """Whole and padded last batches alike: each example once, as the model
  alone would score it."""
  config = helpers.tiny_config(flat_dataset, batch_size=batch_size)
  source = sources.create_source(config.data)
  examples = dataset.build_index(source, config.data).examples[:20]
  state = tiny_state(config)
  data_sharding, replicated = mesh.create_shardings()
  eval_fn = evaluate.compile_eval_step(config, data_sharding, replicated)
  predictions = evaluate.evaluate(
    eval_fn, evaluate.eval_variables(state), examples, source, config,
    data_sharding,
  )  # fmt: skip
  assert predictions.examples == examples
  np.testing.assert_array_equal(predictions.labels, [e.label for e in examples])
  images = np.stack([
    helpers.load_resized(source, e.key, config.data.image_size)
    for e in examples
  ])  # fmt: skip
  expected = state.apply_fn(
    evaluate.eval_variables(state), models.preprocess(images)
  )
  np.testing.assert_allclose(predictions.logits, expected, rtol=1e-5)
  assert predictions.logits.dtype == np.float64
  metrics = predictions.metrics()
  assert metrics['num_examples'] == 20
  assert 'macro avg' in predictions.report()


def test_recalibration_moves_batch_norm_statistics_to_the_given_images(
  flat_dataset,
):
  config = helpers.tiny_recipe_config(flat_dataset, ema_decay=0.0)
  state = tiny_state(config)
  rng = np.random.default_rng(0)
  images = rng.integers(100, 256, (8, 48, 48, 3), np.uint8)  # Bright.
  # The stem's outputs on these images: what its BatchNorm should hold.
  _, captured = state.apply_fn(
    evaluate.eval_variables(state),
    models.preprocess(images),
    capture_intermediates=lambda module, _: module.name == 'stem',
  )
  stem = np.asarray(captured['intermediates']['stem']['__call__'][0])
  before = state.batch_stats['stem_norm']

  _, replicated = mesh.create_shardings()
  # Three batches of 4 give two; the remainder is left out.
  variables = evaluate.recalibrate_batch_norm(
    state.apply_fn,
    evaluate.eval_variables(state),
    np.concatenate([images, images[:3]]),
    4,
    replicated,
  )
  after = variables['batch_stats']['stem_norm']
  # Two momentum-0.9 updates, each with one half of the images.
  mean, var = before['mean'], before['var']
  for half in (stem[:4], stem[4:]):
    mean = 0.9 * mean + 0.1 * half.mean(axis=(0, 1, 2))
    var = 0.9 * var + 0.1 * half.var(axis=(0, 1, 2))
  np.testing.assert_allclose(after['mean'], mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(after['var'], var, rtol=1e-4)
  # Only statistics change.
  assert jax.tree.all(
    jax.tree.map(np.array_equal, state.params, tiny_state(config).params)
  )


def test_only_models_with_batch_norm_recalibrate(flat_dataset):
  config = helpers.tiny_config(flat_dataset, eval__recalibrate_bn_batches=2)
  with pytest.raises(UsageError, match='no BatchNorm statistics'):
    settings.check_config(config)
  config = helpers.tiny_recipe_config(
    flat_dataset, eval__recalibrate_bn_batches=2
  )
  settings.check_config(config)
