"""Tests for catdog_jax.train: steps, settings, and whole runs."""

import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from catdog_jax import losses
from catdog_jax import models
from catdog_jax import optimizer
from catdog_jax import settings
from catdog_jax import state as state_lib
from catdog_jax import train
from catdog_jax.errors import UsageError
from catdog_jax.evaluation import evaluate
from tests import helpers


def tiny_state(config, num_steps=30):
  return state_lib.create_train_state(jax.random.key(0), config, num_steps)


def jitted_train_step(config, num_steps=30):
  return jax.jit(
    functools.partial(
      train.train_step,
      config=config,
      learning_rate_fn=optimizer.learning_rate_schedule(
        config.optimizer, num_steps
      ),
    )
  )


def learnable_batch():
  """Eight synthetic 32x32 images, four of each class."""
  rng = np.random.default_rng(0)
  labels = np.array([0, 1] * 4, np.int32)
  images = np.stack([helpers.synthetic_image(y, rng, 32) for y in labels])
  return {'image': images, 'label': labels}


def steps_on_one_batch(config, steps=30):
  """(state, last metrics, every step's loss) of `steps` train steps on
  learnable_batch()."""
  batch = learnable_batch()
  step = jitted_train_step(config)
  state = tiny_state(config)
  losses = []
  for _ in range(steps):
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(float(metrics['loss']))
  return state, metrics, losses


def test_train_step_lowers_the_loss_on_a_batch(flat_dataset):
  state, metrics, losses = steps_on_one_batch(helpers.tiny_config(flat_dataset))
  assert int(state.step) == 30
  assert losses[-1] < 0.5 * losses[0]
  assert np.isfinite(float(metrics['grad_norm']))


@pytest.mark.parametrize(
  'override, message',
  [
    ({'batch_size': 0}, 'batch_size must be at least 1'),
    ({'num_epochs': -1}, 'num_epochs must be at least 1, got -1'),
    ({'eval_every_steps': 0}, 'eval_every_steps must be at least 1, got 0'),
    ({'checkpoints_to_keep': 0}, 'checkpoints_to_keep must be at least 1'),
    ({'data__image_size': 8}, 'image_size must be at least 16'),
    ({'model__name': 'vgg'}, "unknown model.name 'vgg'; known: seed_cnn"),
    ({'model__name': 'resnet'}, "'resnet' has no field.s. conv_features"),
    ({'optimizer__schedule': 'step'}, 'unknown optimizer.schedule'),
    ({'optimizer__weight_decay': 0.1}, 'use optimizer.name=adamw'),
    ({'label_smoothing': 1.0}, r'label_smoothing must be in \[0, 1\)'),
    ({'ema_decay': 1.0}, r'ema_decay must be in \(0, 1\)'),
    ({'eval__translate': -1}, 'eval.translate must be >= 0'),
    ({'eval__translate': 16}, r'under half of data.image_size \(32\)'),
    ({'augment__crop_min_area': 0.0}, 'crop_min_area must be in'),
    ({'augment__crop_max_area': 0.5}, r'crop_max_area must be in \[1, 4.0\]'),
    ({'augment__grayscale': 1.5}, 'augment.grayscale is a probability'),
    ({'augment__cutmix': -0.1}, 'augment.cutmix is a probability'),
    ({'augment__blur': 9.0}, r'augment.blur must be in \[0, 4.0\]'),
    ({'optimizer__name': 'lion'}, 'unknown optimizer.name'),
    ({'num_train_steps': 0}, 'num_train_steps must be at least 1'),
    ({'data__val_fraction': 0.6, 'data__test_fraction': 0.5}, 'sum'),
    ({'progressive_sizes': (32, 48)}, r'must lie in \[16, data.image_size'),
    ({'progressive_sizes': (8,)}, r'must lie in \[16, data.image_size'),
    ({'progressive_sizes': ('a', 'b')}, r'sizes in pixels, e.g. \(96,128\)'),
    # The seed's flatten width follows the image size.
    ({'progressive_sizes': (16,)}, "'seed_cnn' has other parameter shapes"),
  ],
)
def test_check_config_rejects_bad_settings(override, message):
  config = helpers.tiny_config('/data', **override)
  with pytest.raises(UsageError, match=message):
    settings.check_config(config)


def test_a_run_that_ends_inside_its_warm_up_is_warned_about():
  config = helpers.tiny_recipe_config('/data', optimizer__warmup_steps=200)
  message = settings.warmup_warning(config, 150)
  assert message.startswith(
    'the run ends at step 150, inside its 200-step learning-rate warm-up: '
    'the rate rises to 0.0075, never to optimizer.learning_rate 0.01'
  )
  assert settings.warmup_warning(config, 201) is None
  config.optimizer.schedule = 'constant'
  assert settings.warmup_warning(config, 150) is None


def test_progressive_sizes_share_the_steps_in_order():
  config = helpers.tiny_config('/data', progressive_sizes=(16, 24, 24))
  sizes = [train.train_image_size(config, step, 12) for step in range(1, 13)]
  assert sizes == [16] * 4 + [24] * 8
  # Steps that do not divide evenly: every size still gets its share.
  sizes = [train.train_image_size(config, step, 7) for step in range(1, 8)]
  assert sizes == [16, 16, 16, 24, 24, 24, 24]
  config.progressive_sizes = ()
  assert train.train_image_size(config, 1, 7) == 32


def test_recipe_config_accepts_progressive_sizes(flat_dataset):
  config = helpers.tiny_recipe_config(flat_dataset, progressive_sizes=(16,))
  settings.check_config(config)


def test_train_step_at_a_smaller_size_trains_on_resized_images(flat_dataset):
  config = helpers.tiny_recipe_config(
    flat_dataset,
    augment__crop_min_area=1.0,
    augment__flip=False,
    augment__brightness=0.0,
    augment__contrast=0.0,
    augment__saturation=0.0,
  )
  batch = learnable_batch()
  state = tiny_state(config)
  step = jax.jit(
    functools.partial(
      train.train_step,
      config=config,
      learning_rate_fn=optimizer.learning_rate_schedule(config.optimizer, 30),
      image_size=16,
    )
  )
  _, metrics = step(state, batch, jax.random.key(1))
  resized = jax.image.resize(
    models.preprocess(batch['image']), (8, 16, 16, 3), 'linear'
  )
  logits, _ = state.apply_fn(
    {'params': state.params, 'batch_stats': state.batch_stats},
    resized,
    train=True,
    mutable=['batch_stats'],
  )
  expected = losses.binary_cross_entropy(
    logits, batch['label'], config.label_smoothing
  ).mean()
  np.testing.assert_allclose(metrics['loss'], expected, rtol=1e-5)
  _, full_size = jitted_train_step(config)(state, batch, jax.random.key(1))
  assert not np.isclose(metrics['loss'], full_size['loss'])


def read_json(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f)


def test_train_and_evaluate_writes_the_workdir(trained_run):
  workdir, state = trained_run.workdir, trained_run.state  # 40 steps.
  assert int(state.step) == 40

  checkpoints = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  assert checkpoints == ['20', '30', '40']  # checkpoints_to_keep = 3
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(workdir))

  test = read_json(workdir, 'eval_test.json')
  for key in ('accuracy', 'precision', 'recall', 'f1', 'roc_auc', 'log_loss'):
    assert 0 <= test[key] <= (1 if key != 'log_loss' else 10)
  data = read_json(workdir, 'data_report.json')
  assert test['num_examples'] == sum(data['splits']['test'].values())
  assert sum(sum(test['confusion_matrix'], [])) == test['num_examples']
  # Red cats and blue dogs: even 40 tiny steps separate them.
  assert test['accuracy'] >= 0.9
  assert sum(sum(c.values()) for c in data['splits'].values()) == 80
  assert read_json(workdir, 'config.json')['model']['conv_features'] == [4, 8]

  with open(os.path.join(workdir, 'report.md')) as f:
    report = f.read()
  assert 'macro avg' in report and f'{test["accuracy"]:.4f}' in report
  assert '| true \\ predicted | cat | dog |' in report


def test_the_test_split_measures_the_checkpoint_validation_chose(
  folder_dataset, trained_run, tmp_path
):
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained_run.workdir, workdir)
  last = read_json(workdir, 'eval_test.json')
  assert last['step'] == read_json(workdir, 'eval_val.json')['step'] == 40
  # As if checkpoint 30 had scored best on validation; then the final
  # evaluation of the finished run again.
  metrics = os.path.join(workdir, 'checkpoints', '30', 'metrics', 'metrics')
  with open(metrics, 'w') as f:
    json.dump({'val_accuracy': 2.0}, f)
  os.remove(os.path.join(workdir, 'eval_test.json'))
  train.train_and_evaluate(
    helpers.tiny_config(folder_dataset, num_train_steps=40), workdir
  )
  test = read_json(workdir, 'eval_test.json')
  val = read_json(workdir, 'eval_val.json')
  assert test['step'] == val['step'] == 30
  # Checkpoint 30 restored: validation as measured at step 30 in training
  # (not written again), the test split other than the last step's.
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  logged = [r for r in records if 'val_log_loss' in r]
  assert [r['step'] for r in logged] == [10, 20, 30, 40]
  assert val['log_loss'] == pytest.approx(logged[2]['val_log_loss'], 1e-5)
  assert test['log_loss'] != pytest.approx(last['log_loss'], 1e-5)


@pytest.mark.slow  # Trains for real.
def test_resumed_run_ends_like_a_straight_run(
  flat_dataset, tmp_path, straight_log_loss
):
  resumed = str(tmp_path / 'resumed')
  train.train_and_evaluate(
    helpers.tiny_config(flat_dataset, num_train_steps=13), resumed
  )
  state = train.train_and_evaluate(
    helpers.tiny_config(flat_dataset, num_train_steps=30), resumed
  )
  assert int(state.step) == 30
  assert read_json(resumed, 'eval_test.json')['log_loss'] == pytest.approx(
    straight_log_loss, rel=1e-6
  )


def test_label_smoothing_moves_the_loss_minimum_off_infinity():
  def loss(logit):
    return losses.binary_cross_entropy(logit, jnp.array(1), label_smoothing=0.1)

  # Target 0.95: the loss is flat at logit log(0.95 / 0.05).
  assert abs(jax.grad(loss)(jnp.log(19.0))) < 1e-6
  assert jax.grad(loss)(10.0) > 0


@pytest.mark.parametrize('name', ['adamw', 'sgd'])
def test_recipe_step_learns_and_keeps_an_average(flat_dataset, name):
  config = helpers.tiny_recipe_config(
    flat_dataset, optimizer__name=name, augment__crop_min_area=1.0
  )
  batch = learnable_batch()
  step = jitted_train_step(config)
  state = tiny_state(config)
  stats = state.batch_stats
  losses, rates = [], []
  for _ in range(30):
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(float(metrics['loss']))
    rates.append(float(metrics['learning_rate']))
  assert losses[-1] < 0.6 * losses[0]
  assert rates[0] == 0.0 and max(rates) == pytest.approx(1e-2)
  assert not np.allclose(
    stats['stem_norm']['mean'], state.batch_stats['stem_norm']['mean']
  )
  # Evaluation reads the moving average, which trails the params.
  variables = evaluate.eval_variables(state)
  assert variables['params'] is state.ema_params
  assert 'batch_stats' in variables
  ema, params = (jax.tree.leaves(t) for t in (state.ema_params, state.params))
  assert not np.allclose(ema[0], params[0])


def test_style_augmentations_and_cutmix_still_learn(flat_dataset):
  """Grayscale, blur and CutMix on every image: the step still learns the
  colour-coded synthetic classes from what survives (the mixed targets)."""
  config = helpers.tiny_recipe_config(
    flat_dataset,
    augment__crop_min_area=1.0,
    augment__grayscale=0.2,
    augment__blur=1.0,
    augment__cutmix=0.5,
  )
  _, _, losses = steps_on_one_batch(config)
  assert np.all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0]


@pytest.mark.slow  # Trains the whole recipe, twice.
def test_recipe_run_resumes_exactly_with_batch_stats_and_average(
  flat_dataset, tmp_path
):
  """Augmentation, BatchNorm, EMA, cached data and progressive resizing
  (16 px for steps 1-15, then 32) survive a resume."""
  workdir = str(tmp_path)
  config = helpers.tiny_recipe_config(
    flat_dataset, num_train_steps=30, progressive_sizes=(16, 32)
  )
  train.train_and_evaluate(config, workdir)
  straight = read_json(workdir, 'eval_test.json')['log_loss']
  assert os.path.exists(os.path.join(workdir, 'plots', 'gradcam.png'))
  # As if preempted after step 10: only that checkpoint survives.
  for step in ('20', '30'):
    shutil.rmtree(os.path.join(workdir, 'checkpoints', step))
  os.remove(os.path.join(workdir, 'eval_test.json'))
  state = train.train_and_evaluate(config, workdir)
  assert int(state.step) == 30
  assert read_json(workdir, 'eval_test.json')['log_loss'] == pytest.approx(
    straight, rel=1e-5
  )
  # Steps 11-30 were logged again, and each logged step is there once.
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    logged = [json.loads(line) for line in f]
  train_steps = [r['step'] for r in logged if 'train_loss' in r]
  assert train_steps == [5, 10, 15, 20, 25, 30]
