"""Linear probe and zero-shot: the CPU routes to a pretrained backbone.

The frozen backbone (config.model.init_from) runs once over each split; its
pooled features are cached in the workdir; a logistic-regression head is
fitted on them in seconds (config.probe). The head is written into the
model's own `logit` layer and saved as a checkpoint, so predict, eval and
the report use the whole model as after any training run. A model whose
head is the checkpoint's own ImageNet classifier (efficientnet_lite's
head='imagenet') has nothing to fit: zero-shot, its validation and test
figures are the pretrained model's as it is, saved the same way. The run
opens and closes as a training run does (`run.py`).
"""

import functools
import os
import time
import zipfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging

from catdog_jax import checkpointing
from catdog_jax import fileio
from catdog_jax import losses
from catdog_jax import mesh
from catdog_jax import models
from catdog_jax import run as run_lib
from catdog_jax import state as state_lib
from catdog_jax import workdir as workdir_lib
from catdog_jax.data import input_pipeline
from catdog_jax.errors import UsageError
from catdog_jax.evaluation import evaluate


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError unless the probe can run with `config`."""
  if config.probe.steps < 1:
    raise UsageError(
      f'probe.steps must be at least 1, got {config.probe.steps}'
    )
  if config.probe.l2 < 0:
    raise UsageError(f'probe.l2 must be >= 0, got {config.probe.l2}')
  if not config.model.get('init_from'):
    raise UsageError('config.probe needs pretrained weights: model.init_from')
  if jax.process_count() > 1:
    raise UsageError('config.probe runs on one process: its work is a few '
                     'forward passes and a head fitted in seconds')  # fmt: skip


@functools.partial(jax.jit, static_argnames='apply_fn')
def _features(apply_fn, variables, images):
  images = models.preprocess(images)
  return apply_fn(variables, images, features_only=True)


def extract_features(state, examples, source, config) -> np.ndarray:
  """The backbone's pooled features of `examples`, in order: [N, D]."""
  variables = evaluate.eval_variables(state)
  features, done, started = [], 0, time.time()
  for batch in input_pipeline.eval_batches(
    examples, source, config.data, batch_size=config.batch_size
  ):
    out = _features(state.apply_fn, variables, batch['image'])
    features.append(np.asarray(out)[batch['mask']])
    done += int(batch['mask'].sum())
    if len(features) % evaluate.PROGRESS_EVERY_BATCHES == 0:
      logging.info('Features of %d of %d images (%.1f images/s).', done,
                   len(examples), done / (time.time() - started))  # fmt: skip
  return np.concatenate(features) if features else np.zeros((0, 0))


def cached_features(workdir, split, examples, state, source, config):
  """extract_features, read from the workdir when computed before for the
  same images, image size and checkpoint file."""
  path = workdir_lib.path(workdir, workdir_lib.FEATURES.format(split))
  keys = np.array([e.key for e in examples], dtype=str)
  stamp = np.array([config.model.init_sha256, str(config.data.image_size)])
  cached = read_features(path, keys, stamp)
  if cached is not None:
    logging.info('Read the %s features from %s.', split, path)
    return cached
  started = time.time()
  features = extract_features(state, examples, source, config)
  logging.info('%s features: %d images in %.1f s.', split, len(examples),
               time.time() - started)  # fmt: skip
  with fileio.atomic_write(path, 'wb') as f:
    np.savez(f, keys=keys, stamp=stamp, features=features)
  return features


def read_features(path: str, keys, stamp) -> np.ndarray | None:
  """The cached features in `path` if they are of these images and this
  checkpoint and size; None if not, or if the file is damaged (then said)."""
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as cached:
      if np.array_equal(cached['keys'], keys) and np.array_equal(
        cached['stamp'], stamp
      ):
        return cached['features']
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    logging.warning('Recomputing the features: %s is unreadable (%s: %s).',
                    path, type(e).__name__, e)  # fmt: skip
  return None


def fit_head(features, labels, config):
  """Logistic regression on standardised features, folded back into a
  kernel and bias over the raw ones: (kernel [D, 1], bias [1]).

  probe.steps of full-batch Adam at probe.learning_rate, an L2 penalty of
  probe.l2, the config's label smoothing.
  """
  x = jnp.asarray(features, jnp.float32)
  mean, std = x.mean(0), x.std(0) + 1e-6
  x = (x - mean) / std
  labels = jnp.asarray(labels)
  l2 = config.probe.l2

  def loss_fn(params):
    logits = x @ params['w'] + params['b']
    loss = losses.binary_cross_entropy(logits, labels, config.label_smoothing)
    return loss.mean() + 0.5 * l2 * jnp.sum(params['w'] ** 2)

  tx = optax.adam(config.probe.learning_rate)

  def step(carry, _):
    params, opt_state = carry
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return (optax.apply_updates(params, updates), opt_state), None

  params = {'w': jnp.zeros(x.shape[1]), 'b': jnp.zeros(())}
  (params, _), _ = jax.lax.scan(
    step, (params, tx.init(params)), None, config.probe.steps
  )
  kernel = params['w'] / std
  bias = params['b'] - jnp.sum(params['w'] * mean / std)
  return np.asarray(kernel)[:, None], np.asarray(bias)[None]


def probe_and_evaluate(config, workdir: str, provenance: dict | None = None):
  """Features, head, checkpoint, metrics and report, in `workdir`.

  Returns:
    The train state with the fitted head.
  """
  check_config(config)
  with run_lib.open_run(config, workdir, provenance) as run:
    return probe(run)


def is_zero_shot(config: ml_collections.ConfigDict) -> bool:
  """Whether the model's head is its checkpoint's own: nothing to fit."""
  return config.model.get('head') == 'imagenet'


def probe(run: run_lib.Run):
  """probe_and_evaluate's work, in an open run."""
  config = run.config
  data_sharding, replicated = mesh.create_shardings()
  state = state_lib.fresh_state(
    jax.random.key(config.seed), config, 1, run.init_path, replicated
  )
  if is_zero_shot(config):
    logging.info('Zero-shot: the pretrained classifier as it is, no fit.')
    eval_fn = evaluate.compile_eval_step(config, data_sharding, replicated)
    predictions = {
      split: evaluate.evaluate(eval_fn, evaluate.eval_variables(state),
                               run.splits[split], run.source, config,
                               data_sharding)
      for split in ('val', 'test')
    }  # fmt: skip
  else:
    state, predictions = fit_probe(run, state)
  val_metrics = predictions['val'].metrics()
  step = 1
  run_lib.record_temperature(run, step, predictions['val'])
  manager = checkpointing.create_checkpoint_manager(
    run.workdir, config.checkpoints_to_keep
  )
  manager.save(
    step,
    args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
    metrics={checkpointing.BEST_METRIC: val_metrics['accuracy']},
  )
  manager.wait_until_finished()
  run_lib.finish_run(
    run, evaluate.eval_variables(state), step, 0, val_metrics,
    predictions['test'],
  )  # fmt: skip
  return state


def fit_probe(run: run_lib.Run, state):
  """The state with a head fitted on the cached features of the training
  split, and validation's and test's predictions by it."""
  config = run.config
  features = {
    split: cached_features(run.workdir, split, examples, state, run.source,
                           config)
    for split, examples in run.splits.items()
  }  # fmt: skip
  labels = {
    split: np.array([e.label for e in examples])
    for split, examples in run.splits.items()
  }
  started_fit = time.time()
  kernel, bias = fit_head(features['train'], labels['train'], config)
  logging.info('Fitted the head in %.1f s.', time.time() - started_fit)
  params = dict(state.params)
  params['logit'] = {'kernel': jnp.asarray(kernel), 'bias': jnp.asarray(bias)}
  predictions = {
    split: evaluate.Predictions(
      run.splits[split],
      labels[split],
      (features[split] @ kernel + bias)[:, 0].astype(np.float64),
    )
    for split in ('val', 'test')
  }
  return state_lib.with_params(state, params), predictions
