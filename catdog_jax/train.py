"""Training: the jit-compiled train step and the loop around it.

`train_and_evaluate` is the library entry point; `main.py` only parses flags.
A run's opening and closing (settings, data, the final report) are
`run.py`'s, shared with the linear probe; evaluation (`evaluation/`), the
optimizer, the state, the mesh and the loop's host-side helpers (`loop`)
live in their own modules, which never import this one.
"""

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from catdog_jax import augment
from catdog_jax import checkpointing
from catdog_jax import classes
from catdog_jax import inference
from catdog_jax import loop
from catdog_jax import losses
from catdog_jax import mesh
from catdog_jax import metric_writers
from catdog_jax import models
from catdog_jax import optimizer
from catdog_jax import run as run_lib
from catdog_jax import settings
from catdog_jax import state as state_lib
from catdog_jax import text
from catdog_jax import whitening
from catdog_jax import workdir as workdir_lib
from catdog_jax import xla_cpu
from catdog_jax.data import augmentation
from catdog_jax.data import dataset
from catdog_jax.data import input_pipeline
from catdog_jax.evaluation import evaluate
from catdog_jax.models import summary


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


# --- Steps ------------------------------------------------------------------


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
  images = models.preprocess(batch['image'])
  resizing = image_size not in (None, images.shape[1])
  if augmentation.is_enabled(config.augment) or resizing:
    images = augment.augment(augment_rng, images, config.augment, image_size)
  targets = batch['label']
  if config.augment.cutmix:
    images, targets = augment.cutmix(
      jax.random.fold_in(step_rng, 2), images, targets, config.augment.cutmix
    )
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
    loss = losses.binary_cross_entropy(
      logits, targets, config.label_smoothing
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


# --- The run ----------------------------------------------------------------


def create_train_iterator(run: run_lib.Run, data_sharding):
  """This process's share of the training batches, prefetched onto the
  devices; checkpointable, with the host iterator's state."""
  config = run.config
  host_iter = input_pipeline.create_train_iterator(
    run.splits['train'],
    run.source,
    config.data,
    batch_size=config.batch_size // jax.process_count(),
    seed=config.seed,
    shard_index=jax.process_index(),
    shard_count=jax.process_count(),
  )
  return mesh.DevicePrefetchIterator(
    host_iter, data_sharding, config.data.device_prefetch
  )


def initial_state(run: run_lib.Run, state, manager, train_iter):
  """(state, step): the newest intact checkpoint's, else the fresh state
  (pretrained weights already in it) with its stem whitened if asked."""
  restored = checkpointing.restore_newest_intact(manager, state, train_iter)
  if restored:
    logging.info('Resuming from checkpoint %d.', restored[0])
    return restored[1], restored[0]
  if run.config.model.get('whiten_stem'):
    state = whitening.whiten_stem(
      state, run.splits['train'], run.source, run.config
    )
  return state, 0


@dataclasses.dataclass(frozen=True)
class Launch:
  """What one launch of a run evaluates, records and saves with.

  Attributes:
    run: the open run.
    eval_fn: the compiled evaluation step (`evaluate.compile_eval_step`).
    data_sharding: the batch sharding of `eval_fn`.
    writer: the metric writer.
    eta: the run's loop.Eta, given each evaluation's time.
    manager: the checkpoint manager.
    train_iter: the training iterator, saved with each checkpoint.
  """

  run: run_lib.Run
  eval_fn: Callable
  data_sharding: Any
  writer: Any
  eta: loop.Eta
  manager: Any
  train_iter: Any


def evaluate_split(launch: Launch, variables, split: str, step: int):
  """(metrics, predictions) of one split by the model `variables` of
  checkpoint `step`; the metrics logged, the time given to the ETA."""
  run = launch.run
  started = time.perf_counter()
  predictions = evaluate.evaluate(
    launch.eval_fn, variables, run.splits[split], run.source, run.config,
    launch.data_sharding,
  )  # fmt: skip
  seconds = time.perf_counter() - started
  launch.eta.record_evaluation(len(run.splits[split]), seconds)
  metrics = predictions.metrics()
  logging.info(
    '%s at step %d: accuracy %.4f, log-loss %.4f (%d images, %.0f s).',
    {'val': 'Validation', 'test': 'Test'}[split], step,
    metrics['accuracy'], metrics['log_loss'], metrics['num_examples'], seconds,
  )  # fmt: skip
  return metrics, predictions


def write_metrics(writer, step: int, split: str, metrics: dict) -> None:
  """A split's scalar metrics, as '{split}_{name}', to `writer`."""
  writer.write_scalars(
    step,
    {f'{split}_{k}': v for k, v in metrics.items() if isinstance(v, float)},
  )


def evaluate_and_save(launch: Launch, state, step: int, due: loop.Due,
                      stop: loop.StopSignal) -> None:  # fmt: skip
  """Validates and checkpoints `state` at `step`, as `due` says; the
  checkpoint keeps its validation figures (`checkpointing.validation`)."""
  run = launch.run
  val_metrics = None
  if due.evaluate and run.splits['val']:
    val_metrics, val = evaluate_split(
      launch, evaluate.eval_variables(state), 'val', step
    )
    write_metrics(launch.writer, step, 'val', val_metrics)
  if due.stop:
    stop.announce(step)
  if due.save:
    figures = None
    if val_metrics:
      run_lib.record_temperature(run, step, val)
      figures = {'val_accuracy': val_metrics['accuracy'], 'val': val_metrics}
    checkpointing.save(launch.manager, step, state, launch.train_iter, figures)


def chosen_variables(run, state, total_steps: int, sharding):
  """(variables, step) of the checkpoint predict and eval use (the best by
  validation accuracy): `state`'s own when that is the last step's, else
  restored with `sharding`."""
  best = checkpointing.inference_step(run.workdir)
  if best is None or best == total_steps:
    return evaluate.eval_variables(state), total_steps
  return inference.restore_variables(run.workdir, run.config, sharding, best)


def blank_batches(config, sharding):
  """A training and an evaluation batch of black images (for timing)."""
  local = config.batch_size // jax.process_count()
  size = config.data.image_size
  batch = {
    'image': np.zeros((local, size, size, 3), np.uint8),
    'label': np.zeros(local, np.int32),
  }
  evaluated = batch | {'mask': np.ones(local, bool)}
  return mesh.to_global(batch, sharding), mesh.to_global(evaluated, sharding)


def create_eta(run: run_lib.Run, sizes: list[int]) -> loop.Eta:
  """The run's ETA: its steps' sizes, its evaluations and what each costs."""
  config, num_steps = run.config, len(sizes)
  evaluations = [(num_steps, len(run.splits['test']))]
  if run.splits['val']:
    evaluations += [
      (step, len(run.splits['val']))
      for step in range(1, num_steps + 1)
      if step % config.eval_every_steps == 0 or step == num_steps
    ]
  passes = (2 if config.eval.flip else 1) * (3 if config.eval.translate else 1)
  return loop.Eta(
    sizes, evaluations, config.data.image_size, passes, config.batch_size
  )


def recalibration_sample(examples, count: int, seed: int):
  """`count` examples spread over the split, in a shuffled order.

  Shuffled because spread keeps the index's order (kaggle200's: cats, then
  dogs) and the running averages weight the last batches most: in that
  order they ended as statistics of dogs alone.
  """
  sample = dataset.spread(examples, count)
  order = np.random.default_rng(seed).permutation(len(sample))
  return [sample[i] for i in order]


def recalibrate_batch_norm(apply_fn, variables, examples, source, config):
  """`variables` with their BatchNorm statistics recomputed
  (`evaluate.recalibrate_batch_norm`) on eval.recalibrate_bn_batches batches
  of training `examples` (`recalibration_sample`), un-augmented, at
  data.image_size, the evaluation size."""
  count = config.eval.recalibrate_bn_batches * config.batch_size
  images = input_pipeline.load_all(
    recalibration_sample(examples, count, config.seed), source, config.data
  )['image']
  _, replicated = mesh.create_shardings()
  variables = evaluate.recalibrate_batch_norm(
    apply_fn, variables, images, config.batch_size, replicated
  )
  logging.info(
    'BatchNorm statistics recomputed on %d training images at %d px.',
    len(images) // config.batch_size * config.batch_size,
    config.data.image_size,
  )
  return variables


def compile_steps(run: run_lib.Run, total_steps: int, shardings):
  """(train steps by image size, eval step), jitted; each compiles on its
  first call."""
  config, (data_sharding, replicated) = run.config, shardings
  train_steps = {
    size: compile_train_step(
      config, total_steps, data_sharding, replicated, size
    )
    for size in config.progressive_sizes or (config.data.image_size,)
  }
  eval_fn = evaluate.compile_eval_step(config, data_sharding, replicated)
  return train_steps, eval_fn


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  provenance: dict | None = None,
):
  """Trains, checkpoints and evaluates; resumes from `workdir` if it can.

  Writes to `workdir` the files `workdir.py` names: checkpoints, TensorBoard
  events, metrics.jsonl, config.json, data_report.json, eval_val.json,
  eval_test.json, run.json and the report. `provenance` (the command,
  config file and overrides, from main.py) goes into run.json.

  The test split, eval_val.json and the report are of the checkpoint that
  predict and eval use (`checkpointing.inference_step`: the best by
  validation accuracy, the newest among equals).

  Returns:
    The final train state, or the state at the stop when SIGTERM or Ctrl-C
    arrived.
  """
  with run_lib.open_run(config, workdir, provenance) as run:
    return train(run)


def train(run: run_lib.Run):
  """train_and_evaluate's work, in an open run."""
  config = run.config
  total_steps = input_pipeline.num_train_steps(config, len(run.splits['train']))
  if warning := settings.warmup_warning(config, total_steps):
    logging.warning(warning)

  # Mesh, state and compiled steps.
  data_sharding, replicated = mesh.create_shardings()
  train_iter = create_train_iterator(run, data_sharding)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  state = state_lib.fresh_state(
    init_rng, config, total_steps, run.init_path, replicated
  )
  train_steps, eval_fn = compile_steps(
    run, total_steps, (data_sharding, replicated)
  )
  logging.info(settings.describe(
    config, total_steps, summary.count_params(state.params)
  ))  # fmt: skip

  # Resume, or start.
  manager = checkpointing.create_checkpoint_manager(
    run.workdir, config.checkpoints_to_keep
  )
  state, start_step = initial_state(run, state, manager, train_iter)
  writer = metric_writers.create_default_writer(
    run.workdir, not run.is_chief, start_step
  )
  if run.is_chief and start_step == 0:
    writer.write_hparams(workdir_lib.flatten(config.to_dict()))

  # Train. Logging at step N waits until step N + 1 is dispatched; steps
  # that evaluate or save sync anyway, and check for divergence first.
  sizes = [train_image_size(config, s, total_steps)
           for s in range(1, total_steps + 1)]  # fmt: skip
  eta = create_eta(run, sizes)
  evaluate_batch = functools.partial(eval_fn, evaluate.eval_variables(state))
  logging.info(loop.calibrate(
    eta, train_steps, evaluate_batch, state,
    blank_batches(config, data_sharding), step_rng,
  ))  # fmt: skip
  logging.info('About %s for this launch; a progress line every %d steps.',
               text.duration(eta.seconds_left(start_step)),
               config.log_every_steps)  # fmt: skip
  launch = Launch(run, eval_fn, data_sharding, writer, eta, manager, train_iter)
  postponed_log = None  # The step whose progress line waits for the next.
  with (
    loop.StopSignal() as stop,
    loop.terminal_bar(total_steps, start_step) as bar,
  ):
    train_log = loop.TrainLog(
      writer, eta, sizes, config.batch_size, start_step, bar
    )
    try:
      for step in range(start_step + 1, total_steps + 1):
        batch = next(train_iter)
        size = sizes[step - 1]
        if step == start_step + 1 or size != sizes[step - 2]:
          logging.info('Training at %d px from step %d.', size, step)
        state, metrics = train_steps[size](state, batch, step_rng)
        train_log.append(metrics)
        if postponed_log:
          train_log.check_and_write(postponed_log)
        due = loop.due_at(step, total_steps, config, stop.requested)
        postponed_log = step if due.log and not due.waits_for_device else None
        if due.waits_for_device:
          train_log.check_and_write(step)
          if step == total_steps and config.eval.recalibrate_bn_batches:
            recalibrated = recalibrate_batch_norm(
              state.apply_fn, evaluate.eval_variables(state),
              run.splits['train'], run.source, config,
            )  # fmt: skip
            state = state.replace(batch_stats=recalibrated['batch_stats'])
          evaluate_and_save(launch, state, step, due, stop)
          train_log.restart_clock(step)
        if due.stop:
          logging.warning('Stopped at step %d; relaunch to resume.', step)
          break
    finally:
      # Also on divergence: the last good checkpoint must finish writing.
      checkpointing.wait_until_saved(manager)

  # Final evaluation, of the checkpoint predict and eval will use.
  if not stop.requested:
    chosen, chosen_step = chosen_variables(run, state, total_steps, replicated)
    val_metrics = checkpointing.validation(run.workdir, chosen_step)
    if val_metrics is None and run.splits['val']:
      # A checkpoint of older code: measured again, not written (its
      # figures are in metrics.jsonl).
      val_metrics, _ = evaluate_split(launch, chosen, 'val', chosen_step)
    test = None
    if run.splits['test']:
      test_metrics, test = evaluate_split(launch, chosen, 'test', chosen_step)
      write_metrics(writer, chosen_step, 'test', test_metrics)
    writer.flush()  # The report plots metrics.jsonl.
    run_lib.finish_run(run, chosen, chosen_step, start_step, val_metrics, test)
  writer.close()
  return state
