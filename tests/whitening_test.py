"""The frozen patch-whitening stem (config.whiten_stem)."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from catdog_jax import mesh
from catdog_jax import models
from catdog_jax import optimizer
from catdog_jax import settings
from catdog_jax import train
from catdog_jax import whitening
from catdog_jax.data import dataset
from catdog_jax.data import input_pipeline
from catdog_jax.errors import UsageError
from catdog_jax.evaluation import evaluate
from catdog_jax.evaluation import predict
from tests import helpers


def test_the_kernel_whitens_the_patches_it_was_computed_from():
  rng = np.random.default_rng(0)
  images = rng.random((6, 24, 24, 3))
  images[..., 1] = 0.7 * images[..., 0] + 0.3 * images[..., 1]  # Correlated.
  kernel = whitening.whitening_kernel(images, features=16, stride=2)
  assert kernel.shape == (3, 3, 3, 16)
  x = whitening.patches(images, 3, 2)
  out = (x - x.mean(0)) @ kernel.reshape(27, 16)
  np.testing.assert_allclose(np.cov(out[:, :8].T), np.eye(8), atol=2e-3)
  np.testing.assert_array_equal(kernel[..., 8:], -kernel[..., :8])


def test_only_the_resnet_stem_can_be_whitened(flat_dataset):
  config = helpers.tiny_config(flat_dataset, model__whiten_stem=True)
  with pytest.raises(UsageError, match='whiten_stem works with model resnet'):
    settings.check_config(config)
  config = helpers.tiny_recipe_config(flat_dataset, model__whiten_stem=True)
  config.model.widths = (5, 8)
  with pytest.raises(UsageError, match='even stem width'):
    settings.check_config(config)
  assert optimizer.frozen_pattern(config) == f'(?:{optimizer.WHITENED_STEM})'
  config.optimizer.freeze = '^a'
  assert optimizer.frozen_pattern(config) == '(?:^a)|(?:^stem/)'


@pytest.mark.slow  # Trains the recipe three times.
def test_every_recalibration_batch_holds_both_classes():
  # An index sorted by class, as kaggle200's is.
  examples = [dataset.Example(f'{i}', int(i >= 500), '') for i in range(1000)]
  sample = train.recalibration_sample(examples, 20 * 8, seed=0)
  assert sorted(e.key for e in sample) == sorted(
    e.key for e in dataset.spread(examples, 160)
  )
  for start in range(0, len(sample), 8):
    assert {e.label for e in sample[start : start + 8]} == {0, 1}


def test_the_speed_switches_are_deterministic_and_survive_a_resume(
  flat_dataset, tmp_path
):
  """The whitened stem stays frozen, behind a pool; training at smaller sizes
  ends with BatchNorm statistics recomputed at the evaluation size, and the
  checkpoint holds them."""
  config = helpers.tiny_recipe_config(
    flat_dataset,
    model__whiten_stem=True,
    model__stem_pool=True,
    progressive_sizes=(16, 24),
    eval__recalibrate_bn_batches=2,
    num_train_steps=20,
  )
  state = train.train_and_evaluate(config, tmp_path)
  _, splits, _ = dataset.load_splits(config.data, None)
  source = dataset.sources.create_source(config.data)
  sample = input_pipeline.load_all(
    splits['train'][: whitening.NUM_IMAGES], source, config.data
  )
  expected = whitening.whitening_kernel(
    np.asarray(models.preprocess(sample['image'])),
    config.model.widths[0],
    1,
  )
  np.testing.assert_array_equal(np.asarray(state.params['stem']['kernel']),
                                expected)  # fmt: skip
  # The BatchNorm after the stem cancels its bias: frozen at zero too.
  np.testing.assert_array_equal(state.params['stem']['bias'], 0.0)
  assert np.any(np.asarray(state.params['stem_norm']['scale']) != 1.0)
  # The same run without recalibration trains the same weights; its
  # statistics recalibrated here are those the run ended with.
  plain_config = config.copy_and_resolve_references()
  plain_config.eval.recalibrate_bn_batches = 0
  plain = train.train_and_evaluate(plain_config, tmp_path / 'plain')
  jax.tree.map(np.testing.assert_array_equal, plain.params, state.params)
  _, replicated = mesh.create_shardings()
  # 16 images spread evenly over the training split, shuffled.
  recalibration = input_pipeline.load_all(
    train.recalibration_sample(splits['train'], 16, config.seed),
    source,
    config.data,
  )
  recalibrated = evaluate.recalibrate_batch_norm(
    plain.apply_fn,
    evaluate.eval_variables(plain),
    recalibration['image'],
    config.batch_size,
    replicated,
  )
  jax.tree.map(np.testing.assert_array_equal, recalibrated['batch_stats'],
               state.batch_stats)  # fmt: skip
  # What predict restores is the recalibrated state.
  restored = predict.Predictor(str(tmp_path))
  assert restored.step == 20
  restored_stats = restored.variables['batch_stats']
  jax.tree.map(np.testing.assert_array_equal, restored_stats,
               state.batch_stats)  # fmt: skip

  with open(tmp_path / 'eval_test.json') as f:
    straight = json.load(f)['log_loss']
  shutil.rmtree(tmp_path / 'checkpoints' / '20')  # Preempted after step 10.
  os.remove(tmp_path / 'eval_test.json')
  resumed = train.train_and_evaluate(config, tmp_path)
  np.testing.assert_array_equal(resumed.params['stem']['kernel'], expected)
  jax.tree.map(np.testing.assert_allclose, resumed.batch_stats,
               state.batch_stats)  # fmt: skip
  with open(tmp_path / 'eval_test.json') as f:
    assert json.load(f)['log_loss'] == pytest.approx(straight, rel=1e-5)
