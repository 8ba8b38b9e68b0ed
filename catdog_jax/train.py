"""Training: the settings check, the jit-compiled train step and the loop.

`train_and_evaluate` is the library entry point; `main.py` only parses flags.
Evaluation (`evaluate`), the optimizer (`optimizer`), the state (`state`),
the mesh (`mesh`) and the loop's host-side helpers (`loop`) live in their own
modules, which never import this one.
"""

import functools
import os
import platform
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from catdog_jax import augment
from catdog_jax import checkpointing
from catdog_jax import classes
from catdog_jax import dataset
from catdog_jax import evaluate
from catdog_jax import input_pipeline
from catdog_jax import loop
from catdog_jax import mesh
from catdog_jax import metric_writers
from catdog_jax import models
from catdog_jax import optimizer
from catdog_jax import pretrained
from catdog_jax import report
from catdog_jax import state as state_lib
from catdog_jax import whitening
from catdog_jax import workdir as workdir_lib
from catdog_jax import xla_cpu
from catdog_jax.errors import UsageError

MIN_IMAGE_SIZE = 16


# --- Settings -----------------------------------------------------------------


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError on settings that cannot work, before any compile."""
  optimizer.check_regex(config.freeze, 'freeze')
  whitening.check_config(config)
  if config.freeze and not models.can_freeze(config.model):
    raise UsageError(
      f'config.freeze: model {config.model.name!r} cannot freeze its '
      'BatchNorm statistics; freezing works with resnet50 and vit'
    )
  if config.batch_size < 1:
    raise UsageError(f'batch_size must be at least 1, got {config.batch_size}')
  if config.recalibrate_bn_batches and (
    config.model.name not in evaluate.RECALIBRATES
  ):
    raise UsageError(
      f'recalibrate_bn_batches: model {config.model.name!r} has no '
      f'BatchNorm statistics to recompute (models with them: '
      f'{", ".join(evaluate.RECALIBRATES)})'
    )
  if config.data.image_size < MIN_IMAGE_SIZE:
    raise UsageError(
      f'data.image_size must be at least {MIN_IMAGE_SIZE}, '
      f'got {config.data.image_size}'
    )
  if not 0 <= config.eval_translate < config.data.image_size // 2:
    raise UsageError(
      'eval_translate must be >= 0 (0: none) and under half of '
      f'data.image_size ({config.data.image_size}), got '
      f'{config.eval_translate}'
    )
  if config.data.device_prefetch < 0:
    raise UsageError(
      'data.device_prefetch must be >= 0 (0: none), got '
      f'{config.data.device_prefetch}'
    )
  if config.batch_size % jax.device_count():
    raise UsageError(
      f'batch_size {config.batch_size} is not divisible by the '
      f'{jax.device_count()} devices'
    )
  fractions = (config.data.val_fraction, config.data.test_fraction)
  if min(fractions) < 0 or sum(fractions) >= 1:
    raise UsageError(
      'data.val_fraction and data.test_fraction must be >= 0 and sum '
      f'to less than 1, got {fractions}'
    )
  if config.num_train_steps is not None and config.num_train_steps < 1:
    raise UsageError(
      f'num_train_steps must be at least 1, got {config.num_train_steps}'
    )
  optimizer.check_config(config.optimizer)
  if not 0 <= config.label_smoothing < 1:
    raise UsageError(
      f'label_smoothing must be in [0, 1), got {config.label_smoothing}'
    )
  if not 0 <= config.ema_decay < 1:
    raise UsageError(
      f'ema_decay must be in (0, 1), or 0 for none, got {config.ema_decay}'
    )
  augment.check_config(config.augment)
  models.check_config(config.model)
  check_progressive_sizes(config)


def check_progressive_sizes(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError unless every progressive size can train the model."""
  image_size = config.data.image_size
  sizes = dict.fromkeys(config.progressive_sizes)  # Distinct, in order.
  shapes = models.param_shapes(config.model, image_size) if sizes else None
  for size in sizes:
    if not MIN_IMAGE_SIZE <= size <= image_size:
      raise UsageError(
        f'progressive_sizes must lie in [{MIN_IMAGE_SIZE}, data.image_size '
        f'= {image_size}], got {size}'
      )
    if models.param_shapes(config.model, size) != shapes:
      raise UsageError(
        f'model {config.model.name!r} has other parameter shapes at '
        f'{size} px than at {image_size}: it cannot train with '
        'progressive_sizes'
      )


def train_image_size(
  config: ml_collections.ConfigDict, step: int, num_steps: int
) -> int:
  """The image size training step `step` (1-based) of `num_steps` runs at.

  `config.progressive_sizes` share the steps equally, in order; without
  them, every step runs at `data.image_size`.
  """
  sizes = config.progressive_sizes
  if not sizes:
    return config.data.image_size
  return sizes[min((step - 1) * len(sizes) // num_steps, len(sizes) - 1)]


def num_train_steps(config: ml_collections.ConfigDict, num_train: int) -> int:
  """`config.num_train_steps` if set, else `num_epochs` over the train split."""
  if config.num_train_steps is not None:
    return config.num_train_steps
  return max(1, config.num_epochs * num_train // config.batch_size)


# --- Steps ------------------------------------------------------------------


def binary_cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Mean-free per-example loss; smoothing pulls targets towards 0.5."""
  targets = labels.astype(jnp.float32)
  targets = targets * (1.0 - label_smoothing) + 0.5 * label_smoothing
  return optax.sigmoid_binary_cross_entropy(logits, targets)


def train_step(
  state: state_lib.TrainState,
  batch,
  rng,
  *,
  config: ml_collections.ConfigDict,
  learning_rate_fn,
  image_size: int | None = None,
):
  """One optimizer update on a global batch; returns the new state, metrics.

  The model sees the batch at `image_size` (default: as it comes).
  """
  step_rng = jax.random.fold_in(rng, state.step)
  augment_rng, dropout_rng = jax.random.split(step_rng)
  images = evaluate.preprocess(batch['image'])
  resizing = image_size not in (None, images.shape[1])
  if augment.is_enabled(config.augment) or resizing:
    images = augment.augment(augment_rng, images, config.augment, image_size)
  has_batch_stats = bool(state.batch_stats)

  def loss_fn(params):
    params = optimizer.stop_frozen_gradients(
      params, optimizer.frozen_pattern(config)
    )
    variables = {'params': params}
    if has_batch_stats:
      variables['batch_stats'] = state.batch_stats
    logits, updates = state.apply_fn(
      variables,
      images,
      train=True,
      rngs={'dropout': dropout_rng},
      mutable=['batch_stats'] if has_batch_stats else [],
    )
    loss = binary_cross_entropy(
      logits, batch['label'], config.label_smoothing
    ).mean()
    return loss, (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
    state.params
  )
  state = state.apply_gradients(grads=grads)
  if has_batch_stats:
    state = state.replace(batch_stats=updates['batch_stats'])
  if config.ema_decay:
    # Warm-up: an early average would be mostly the random initialisation.
    decay = jnp.minimum(
      config.ema_decay, (1.0 + state.step) / (10.0 + state.step)
    )
    state = state.replace(
      ema_params=optax.incremental_update(
        state.params, state.ema_params, 1.0 - decay
      )
    )
  metrics = {
    'loss': loss,
    'accuracy': jnp.mean(classes.is_dog(logits) == (batch['label'] == 1)),
    'grad_norm': optax.tree.norm(grads),
    'param_norm': optax.tree.norm(state.params),
    'learning_rate': learning_rate_fn(state.step - 1),
  }
  return state, metrics


def compile_train_step(
  config, num_steps, data_sharding, replicated, image_size=None
):
  """train_step jitted with the batch sharded and the state donated."""
  step_fn = functools.partial(
    train_step,
    config=config,
    learning_rate_fn=optimizer.learning_rate_schedule(
      config.optimizer, num_steps
    ),
    image_size=image_size,
  )
  return jax.jit(
    step_fn,
    in_shardings=(replicated, data_sharding, replicated),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
    compiler_options=xla_cpu.compiler_options(xla_cpu.TRAIN_YNN_TYPES),
  )


def run_record(provenance: dict | None, started: float, start_step: int):
  """What run.json holds: how, when and where this launch ran."""
  devices = jax.devices()
  return {
    **(provenance or {}),
    'started_utc': time.strftime('%Y-%m-%d %H:%M', time.gmtime(started)),
    'wall_seconds': round(time.time() - started, 1),
    'resumed_from_step': start_step,
    'devices': f'{len(devices)} x {devices[0].device_kind}',
    'host': platform.node(),
    'processor': platform.processor() or platform.machine(),
    'jax': jax.__version__,
  }


# --- Entry point --------------------------------------------------------------


def recalibrate_batch_norm(state, examples, source, config):
  """evaluate.recalibrate_batch_norm on recalibrate_bn_batches batches of
  training images spread evenly over the split (an index sorted by class
  would give a run of one class), un-augmented, at data.image_size, the
  evaluation size."""
  count = min(config.recalibrate_bn_batches * config.batch_size, len(examples))
  spread = np.linspace(0, len(examples), count, endpoint=False).astype(int)
  images = input_pipeline.load_all(
    [examples[i] for i in spread], source, config.data
  )
  _, replicated = mesh.create_shardings()
  state = evaluate.recalibrate_batch_norm(
    state, images['image'], config.batch_size, replicated
  )
  logging.info(
    'BatchNorm statistics recomputed on %d training images at %d px.',
    len(images['image']) // config.batch_size * config.batch_size,
    config.data.image_size,
  )
  return state


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  provenance: dict | None = None,
):
  """Trains, checkpoints and evaluates; resumes from `workdir` if it can.

  Writes to `workdir`: checkpoints/, TensorBoard events, config.json,
  data_report.json, eval_val.json, eval_test.json, run.json and report.md.
  `provenance` (the command, config file and overrides, from main.py) goes
  into run.json with the date, wall time and hardware.

  Returns:
    The final train state, or the state at the stop when SIGTERM or Ctrl-C
    arrived.
  """
  started = time.time()
  check_config(config)
  is_chief = jax.process_index() == 0
  workdir = os.path.abspath(workdir)
  config, init_path = pretrained.checked_config(config)
  workdir_lib.check_same_run(workdir, config.to_dict())
  os.makedirs(workdir, exist_ok=True)

  # Data.
  # One writer for the index cache: the first process.
  cache = os.path.join(workdir, dataset.CACHE_FILENAME) if is_chief else None
  source, splits, data_report = dataset.load_splits(config.data, cache)
  for name, counts in data_report['splits'].items():
    logging.info('%s split: %s', name, counts)
  total_steps = num_train_steps(config, len(splits['train']))
  local_batch = config.batch_size // jax.process_count()
  host_iter = input_pipeline.create_train_iterator(
    splits['train'],
    source,
    config.data,
    batch_size=local_batch,
    seed=config.seed,
    shard_index=jax.process_index(),
    shard_count=jax.process_count(),
  )

  # Mesh, state and compiled steps.
  data_sharding, replicated = mesh.create_shardings()
  # Checkpointed in place of host_iter, with its state.
  train_iter = mesh.DevicePrefetchIterator(
    host_iter, data_sharding, config.data.device_prefetch
  )
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  init_fn = jax.jit(
    functools.partial(
      state_lib.create_train_state, config=config, num_steps=total_steps
    ),
    out_shardings=replicated,
  )
  state = init_fn(init_rng)
  # One step per training image size; each compiles on its first call.
  train_steps = {
    size: compile_train_step(
      config, total_steps, data_sharding, replicated, size
    )
    for size in config.progressive_sizes or (config.data.image_size,)
  }
  eval_fn = evaluate.compile_eval_step(config, data_sharding, replicated)
  logging.info(
    '%d parameters on %d devices, %d steps of batch %d.',
    models.count_params(state.params),
    jax.device_count(),
    total_steps,
    config.batch_size,
  )

  # Resume.
  manager = checkpointing.create_checkpoint_manager(
    workdir, config.checkpoints_to_keep
  )
  restored = checkpointing.restore_newest_intact(manager, state, train_iter)
  if restored:
    logging.info('Resuming from checkpoint %d.', restored[0])
    state = restored[1]
  elif init_path:
    state = pretrained.load_into_state(state, config.model, init_path)
  elif config.whiten_stem:
    state = whitening.whiten_stem(state, splits['train'], source, config)
  start_step = int(state.step)

  writer = metric_writers.create_default_writer(
    workdir, not is_chief, start_step
  )
  if is_chief:
    workdir_lib.write_json(
      workdir_lib.path(workdir, workdir_lib.CONFIG), config.to_dict()
    )
    workdir_lib.write_json(
      workdir_lib.path(workdir, workdir_lib.DATA_REPORT), data_report
    )
    if start_step == 0:
      writer.write_hparams(workdir_lib.flatten(config.to_dict()))

  def run_eval(split: str, step: int):
    """Metrics of one split, and its predictions."""
    predictions = evaluate.evaluate(
      eval_fn, state, splits[split], source, config, data_sharding
    )
    result = predictions.metrics()
    writer.write_scalars(
      step,
      {
        f'{split}_{key}': value
        for key, value in result.items()
        if isinstance(value, float)
      },
    )
    return result, predictions

  # Train. Logging at step N waits until step N + 1 is dispatched; steps
  # that evaluate or save sync anyway, and check for divergence first.
  train_log = loop.TrainLog(writer, total_steps, config.batch_size, start_step)
  first_steps = loop.FirstSteps(
    config.log_every_steps, total_steps - start_step
  )
  val_metrics = log_due = current_size = None
  with loop.StopSignal() as stop:
    try:
      for step in range(start_step + 1, total_steps + 1):
        batch = next(train_iter)
        size = train_image_size(config, step, total_steps)
        if size != current_size:
          logging.info(
            'Training at %d px from step %d (compiling its step first).',
            size,
            step,
          )
          current_size = size
        state, metrics = train_steps[size](state, batch, step_rng)
        train_log.append(metrics)
        if step <= start_step + 2:
          first_steps.record(step - start_step, metrics)
        if log_due:
          train_log.check_and_write(log_due)
        is_last = step == total_steps
        if is_last and config.recalibrate_bn_batches:
          state = recalibrate_batch_norm(state, splits['train'], source, config)
        is_eval = is_last or step % config.eval_every_steps == 0
        is_checkpoint = (
          is_last or stop.requested or step % config.checkpoint_every_steps == 0
        )
        log_due = step if step % config.log_every_steps == 0 else None
        if not (is_eval or is_checkpoint):
          continue
        train_log.check_and_write(step)
        log_due = val_metrics = None
        if is_eval and splits['val']:
          val_metrics, _ = run_eval('val', step)
        if is_checkpoint:
          best = val_metrics and {'val_accuracy': val_metrics['accuracy']}
          checkpointing.save(manager, step, state, train_iter, best)
        if stop.requested:
          logging.warning('Stopped at step %d; relaunch to resume.', step)
          break
        train_log.restart_clock()
    finally:
      # Also on divergence: the last good checkpoint must finish writing.
      manager.wait_until_finished()
  if stop.requested:
    writer.close()
    return state

  # Final evaluation.
  if is_chief and val_metrics is not None:
    workdir_lib.write_json(
      workdir_lib.path(workdir, workdir_lib.EVAL_VAL), val_metrics
    )
  if splits['test']:
    test_metrics, predictions = run_eval('test', total_steps)
    test_metrics['step'] = total_steps
    if is_chief:
      workdir_lib.write_json(
        workdir_lib.path(workdir, workdir_lib.EVAL_TEST), test_metrics
      )
      workdir_lib.write_json(
        workdir_lib.path(workdir, workdir_lib.RUN),
        run_record(provenance, started, start_step),
      )
      report.write_predictions(workdir, predictions)
      writer.flush()  # The report plots metrics.jsonl.
      path = report.write_run_report(
        workdir, config, state, source, total_steps
      )
      logging.info('Test:\n%s\nReport: %s', predictions.report(), path)
  writer.close()
  return state
