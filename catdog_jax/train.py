"""Training and evaluation: jit-compiled steps over a ('data',) device mesh.

`train_and_evaluate` is the library entry point; `main.py` only parses flags.
"""

import functools
import os
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import struct
from flax.training import train_state
from jax.experimental import multihost_utils
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from catdog_jax import augment
from catdog_jax import checkpointing
from catdog_jax import dataset
from catdog_jax import input_pipeline
from catdog_jax import metric_writers
from catdog_jax import metrics as metrics_lib
from catdog_jax import models
from catdog_jax import report
from catdog_jax import workdir as workdir_lib
from catdog_jax import xla_cpu
from catdog_jax.errors import DivergenceError
from catdog_jax.errors import UsageError

MIN_IMAGE_SIZE = 16
PROGRESS_EVERY_BATCHES = 50


class TrainState(train_state.TrainState):
  """Params, optimizer state and the model's other variables.

  Attributes:
    batch_stats: BatchNorm running statistics ({} for models without).
    ema_params: exponential moving average of the params, or None.
  """

  batch_stats: Any = struct.field(default_factory=dict)
  ema_params: Any = None


# --- Settings -----------------------------------------------------------------


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError on settings that cannot work, before any compile."""
  if config.data.source == 'folder' and not config.data.root:
    raise UsageError('set the data folder: --config.data.root=PATH')
  if config.batch_size < 1:
    raise UsageError(f'batch_size must be at least 1, got {config.batch_size}')
  if config.data.image_size < MIN_IMAGE_SIZE:
    raise UsageError(
      f'data.image_size must be at least {MIN_IMAGE_SIZE}, '
      f'got {config.data.image_size}'
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
  if config.optimizer.name not in OPTIMIZERS:
    raise UsageError(
      f'unknown optimizer.name {config.optimizer.name!r}; known: '
      f'{", ".join(OPTIMIZERS)}'
    )
  if config.optimizer.schedule not in SCHEDULES:
    raise UsageError(
      f'unknown optimizer.schedule {config.optimizer.schedule!r}; known: '
      f'{", ".join(SCHEDULES)}'
    )
  if config.optimizer.name == 'adam' and config.optimizer.weight_decay:
    raise UsageError(
      'optimizer adam has no weight decay: use optimizer.name=adamw'
    )
  if not 0 <= config.label_smoothing < 1:
    raise UsageError(
      f'label_smoothing must be in [0, 1), got {config.label_smoothing}'
    )
  if config.ema_decay is not None and not 0 < config.ema_decay < 1:
    raise UsageError(f'ema_decay must be in (0, 1), got {config.ema_decay}')
  min_area = config.augment.crop_min_area
  if min_area is not None and not 0 < min_area <= 1:
    raise UsageError(f'augment.crop_min_area must be in (0, 1], got {min_area}')
  if config.model.name not in models.MODELS:
    raise UsageError(
      f'unknown model.name {config.model.name!r}; known: '
      f'{", ".join(models.MODELS)}'
    )
  unknown = models.unknown_fields(config.model)
  if unknown:
    raise UsageError(
      f'model {config.model.name!r} has no field(s) {", ".join(unknown)}; '
      'start from a config written for it (configs/fast_cpu.py: resnet)'
    )
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


# --- Model, optimizer, steps -------------------------------------------------


# Optimizers by `config.optimizer.name`: (learning rate, optimizer config,
# weight-decay mask) -> optax transformation.
OPTIMIZERS = {
  'adam': lambda lr, config, mask: optax.adam(lr),
  'adamw': lambda lr, config, mask: optax.adamw(
    lr, weight_decay=config.weight_decay, mask=mask
  ),
  'sgd': lambda lr, config, mask: optax.chain(
    optax.add_decayed_weights(config.weight_decay, mask),
    optax.sgd(lr, momentum=config.momentum, nesterov=True),
  ),
}
SCHEDULES = ('constant', 'warmup_cosine')


def learning_rate_schedule(config: ml_collections.ConfigDict, num_steps: int):
  """The learning rate by step, from the `optimizer` config."""
  if config.schedule == 'constant':
    return optax.constant_schedule(config.learning_rate)
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=config.learning_rate,
    warmup_steps=config.warmup_steps,
    decay_steps=max(num_steps, config.warmup_steps + 1),
  )


def decay_mask(params):
  """True for kernels; biases and norm scales (1-D) get no weight decay."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def create_optimizer(config: ml_collections.ConfigDict, num_steps: int):
  """The optax optimizer the `optimizer` config describes."""
  tx = OPTIMIZERS[config.name](
    learning_rate_schedule(config, num_steps), config, decay_mask
  )
  if config.grad_clip_norm is not None:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  return tx


def create_train_state(
  rng, config: ml_collections.ConfigDict, num_steps: int
) -> TrainState:
  """Initialises the model's variables and the optimizer state.

  `num_steps` sets the learning-rate schedule's length; it does not change
  any array's shape, so restoring for inference may pass any value.
  """
  model = models.create_model(config.model, dtype=jnp.dtype(config.dtype))
  size = config.data.image_size
  images = jnp.zeros((1, size, size, 3), jnp.float32)
  variables = model.init(rng, images)
  params = variables['params']
  return TrainState.create(
    apply_fn=model.apply,
    params=params,
    tx=create_optimizer(config.optimizer, num_steps),
    batch_stats=variables.get('batch_stats', {}),
    ema_params=params if config.ema_decay is not None else None,
  )


def eval_variables(state: TrainState) -> dict:
  """The variables evaluation uses: the EMA params when kept."""
  params = state.params if state.ema_params is None else state.ema_params
  if state.batch_stats:
    return {'params': params, 'batch_stats': state.batch_stats}
  return {'params': params}


def preprocess(images_bhwc):
  """uint8 pixels to float32 in [0, 1], on the device inside the step."""
  return images_bhwc.astype(jnp.float32) / 255.0


def binary_cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Mean-free per-example loss; smoothing pulls targets towards 0.5."""
  targets = labels.astype(jnp.float32)
  targets = targets * (1.0 - label_smoothing) + 0.5 * label_smoothing
  return optax.sigmoid_binary_cross_entropy(logits, targets)


def train_step(
  state: TrainState,
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
  images = preprocess(batch['image'])
  resizing = image_size not in (None, images.shape[1])
  if augment.is_enabled(config.augment) or resizing:
    images = augment.augment(augment_rng, images, config.augment, image_size)
  has_batch_stats = bool(state.batch_stats)

  def loss_fn(params):
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
  if state.ema_params is not None:
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
    'accuracy': jnp.mean((logits >= 0) == (batch['label'] == 1)),
    'grad_norm': optax.tree.norm(grads),
    'param_norm': optax.tree.norm(state.params),
    'learning_rate': learning_rate_fn(state.step - 1),
  }
  return state, metrics


def eval_step(state: TrainState, batch, *, flip: bool = False):
  """Logits of a padded batch, with its labels and mask passed through.

  With `flip`, the logit is the mean over the image and its mirror image
  (test-time augmentation).
  """
  images = preprocess(batch['image'])
  variables = eval_variables(state)
  logits = state.apply_fn(variables, images)
  if flip:
    logits = (logits + state.apply_fn(variables, images[:, :, ::-1])) / 2
  return {'logit': logits, 'label': batch['label'], 'mask': batch['mask']}


# --- Host-side helpers -------------------------------------------------------


def create_shardings():
  """(batch, replicated) shardings over a ('data',) mesh of all devices."""
  # Auto axes: jit's in/out shardings place the data, as in GSPMD; arrays'
  # types carry no mesh, so host-side code can use them on any device.
  mesh = jax.make_mesh(
    (jax.device_count(),), ('data',), axis_types=(AxisType.Auto,)
  )
  return NamedSharding(mesh, P('data')), NamedSharding(mesh, P())


def compile_train_step(
  config, num_steps, data_sharding, replicated, image_size=None
):
  """train_step jitted with the batch sharded and the state donated."""
  step_fn = functools.partial(
    train_step,
    config=config,
    learning_rate_fn=learning_rate_schedule(config.optimizer, num_steps),
    image_size=image_size,
  )
  return jax.jit(
    step_fn,
    in_shardings=(replicated, data_sharding, replicated),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
    compiler_options=xla_cpu.compiler_options(xla_cpu.TRAIN_YNN_TYPES),
  )


def compile_eval_step(config, data_sharding, replicated):
  """eval_step jitted with the batch sharded, test-time flip per config."""
  return jax.jit(
    functools.partial(eval_step, flip=config.eval_flip),
    in_shardings=(replicated, data_sharding),
    out_shardings=data_sharding,
    compiler_options=xla_cpu.compiler_options(xla_cpu.EVAL_YNN_TYPES),
  )


def to_global(batch, sharding):
  """This process's share of a batch, as one array sharded over the mesh."""
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, x), batch
  )


def evaluate(eval_fn, state, examples, source, config, sharding):
  """Predicts every example once, on all processes' devices.

  The examples are padded (with None) to whole global batches and dealt out
  to processes round-robin, so every process runs the same number of steps.

  Returns:
    (examples, labels, logits) in one order; logits in float64 on the host.
  """
  count = jax.process_count()
  local_batch = config.batch_size // count
  padded = list(examples)
  padded += [None] * (-len(padded) % (count * local_batch))
  shards = [padded[p::count] for p in range(count)]
  batches = input_pipeline.eval_batches(
    shards[jax.process_index()], source, config.data, batch_size=local_batch
  )
  num_batches = len(shards[0]) // local_batch
  outputs = []
  for i, batch in enumerate(batches, start=1):
    outputs.append(eval_fn(state, to_global(batch, sharding)))
    if i % PROGRESS_EVERY_BATCHES == 0:
      logging.info('Evaluated %d/%d batches.', i, num_batches)
  outputs = multihost_utils.process_allgather(outputs, tiled=True)
  # Global batch t holds local batch t of process 0, then of process 1...
  order = [
    example
    for start in range(0, len(shards[0]), local_batch)
    for shard in shards
    for example in shard[start : start + local_batch]
  ]
  mask = np.concatenate([o['mask'] for o in outputs])
  labels = np.concatenate([o['label'] for o in outputs])[mask]
  logits = np.concatenate([o['logit'] for o in outputs])[mask]
  return [e for e in order if e is not None], labels, logits.astype(np.float64)


def first_nonfinite(step_metrics: list[dict], first_step: int):
  """(step, metrics) of the first step with a non-finite loss or norm."""
  for offset, metrics in enumerate(step_metrics):
    if not all(np.isfinite(value) for value in metrics.values()):
      return first_step + offset, metrics
  return None


class TrainLog:
  """Turns per-step device metrics into log lines.

  Metrics stay on the device until `write` pulls them, once per log period,
  so the host never waits on a step in between. A non-finite loss, gradient
  or parameter norm raises DivergenceError naming the first bad step.
  """

  def __init__(self, writer, num_steps, global_batch_size, start_step):
    self._writer = writer
    self._num_steps = num_steps
    self._global_batch_size = global_batch_size
    self._pending = []  # Metrics of steps _last_step + 1, _last_step + 2...
    self._last_step = start_step
    self._last_time = time.perf_counter()

  def append(self, metrics):
    self._pending.append(metrics)

  def write(self, step: int):
    """Pulls and writes the metrics of the steps up to `step`."""
    count = step - self._last_step
    if count <= 0:
      return
    step_metrics = jax.device_get(self._pending[:count])
    self._pending = self._pending[count:]
    bad = first_nonfinite(step_metrics, self._last_step + 1)
    if bad:
      values = ', '.join(f'{k}={v}' for k, v in sorted(bad[1].items()))
      raise DivergenceError(
        f'training diverged at step {bad[0]} ({values}); no checkpoint of '
        'the diverged state was written'
      )
    now = time.perf_counter()
    steps_per_sec = count / (now - self._last_time)
    scalars = {
      f'train_{key}': float(np.mean([m[key] for m in step_metrics]))
      for key in step_metrics[0]
    }
    scalars['steps_per_sec'] = steps_per_sec
    scalars['images_per_sec'] = steps_per_sec * self._global_batch_size
    scalars['eta_minutes'] = (self._num_steps - step) / steps_per_sec / 60
    self._writer.write_scalars(step, scalars)
    self._last_step, self._last_time = step, now

  def restart_clock(self):
    """Leaves the time since the last write (evaluation, saving) unmeasured."""
    self._last_time = time.perf_counter()


class StopSignal:
  """Remembers a SIGTERM (preemption) so the loop can checkpoint and stop."""

  def __init__(self):
    self._event = threading.Event()
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc_info):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint, then stopping.')
    self._event.set()

  @property
  def requested(self) -> bool:
    return self._event.is_set()


# --- Entry point --------------------------------------------------------------


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str):
  """Trains, checkpoints and evaluates; resumes from `workdir` if it can.

  Writes to `workdir`: checkpoints/, TensorBoard events, config.json,
  data_report.json, eval_val.json, eval_test.json and report.md.

  Returns:
    The final train state, or the state at the stop when SIGTERM arrived.
  """
  check_config(config)
  is_chief = jax.process_index() == 0
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)

  # Data.
  # One writer for the index cache: the first process.
  cache = os.path.join(workdir, dataset.CACHE_FILENAME) if is_chief else None
  source, splits, data_report = dataset.load_splits(config.data, cache)
  for name, counts in data_report['splits'].items():
    logging.info('%s split: %s', name, counts)
  total_steps = num_train_steps(config, len(splits['train']))
  local_batch = config.batch_size // jax.process_count()
  train_iter = input_pipeline.create_train_iterator(
    splits['train'],
    source,
    config.data,
    batch_size=local_batch,
    seed=config.seed,
    shard_index=jax.process_index(),
    shard_count=jax.process_count(),
  )

  # Mesh, state and compiled steps.
  data_sharding, replicated = create_shardings()
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  init_fn = jax.jit(
    functools.partial(create_train_state, config=config, num_steps=total_steps),
    out_shardings=replicated,
  )
  state = init_fn(init_rng)
  # One step per training image size; each compiles on its first call.
  p_train_steps = {
    size: compile_train_step(
      config, total_steps, data_sharding, replicated, size
    )
    for size in config.progressive_sizes or (config.data.image_size,)
  }
  p_eval_step = compile_eval_step(config, data_sharding, replicated)
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
  start_step = int(state.step)

  writer = metric_writers.create_default_writer(workdir, not is_chief)
  if is_chief:
    workdir_lib.write_json(
      workdir_lib.path(workdir, workdir_lib.CONFIG), config.to_dict()
    )
    workdir_lib.write_json(
      workdir_lib.path(workdir, workdir_lib.DATA_REPORT), data_report
    )
    if start_step == 0:
      writer.write_hparams(_flatten(config.to_dict()))

  def run_eval(split: str, step: int):
    """Metrics of one split, and its (examples, labels, logits)."""
    predictions = evaluate(
      p_eval_step, state, splits[split], source, config, data_sharding
    )
    result = metrics_lib.classification_metrics(*predictions[1:])
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
  train_log = TrainLog(writer, total_steps, config.batch_size, start_step)
  val_metrics = log_due = train_size = None
  with StopSignal() as stop:
    try:
      for step in range(start_step + 1, total_steps + 1):
        batch = to_global(next(train_iter), data_sharding)
        size = train_image_size(config, step, total_steps)
        if size != train_size:
          logging.info('Training at %d px from step %d.', size, step)
          train_size = size
        state, metrics = p_train_steps[size](state, batch, step_rng)
        train_log.append(metrics)
        if log_due:
          train_log.write(log_due)
        is_last = step == total_steps
        is_eval = is_last or step % config.eval_every_steps == 0
        is_checkpoint = (
          is_last or stop.requested or step % config.checkpoint_every_steps == 0
        )
        log_due = step if step % config.log_every_steps == 0 else None
        if not (is_eval or is_checkpoint):
          continue
        train_log.write(step)
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
      report.write_predictions(workdir, *predictions)
      writer.flush()  # The report plots metrics.jsonl.
      path = report.write_run_report(
        workdir, config, state, source, total_steps
      )
      logging.info(
        'Test:\n%s\nReport: %s',
        metrics_lib.classification_report(*predictions[1:]),
        path,
      )
  writer.close()
  return state


def _flatten(tree: dict, prefix: str = '') -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1}, for logging the config."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat
