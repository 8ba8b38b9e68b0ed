"""Evaluating a model: every example once, as training, predict and eval see it.

The project's honest-evaluation claim rests on this file. Pixels are
preprocessed on the device by `models.preprocess`, the same function the train
step uses; the evaluated weights are `eval_variables` (the EMA when kept), and
evaluation takes those variables, never a train state; every example is
predicted exactly once, across all processes, and padding never reaches the
metrics.
"""

import dataclasses
import functools
from collections.abc import Callable
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from catdog_jax import inference
from catdog_jax import mesh
from catdog_jax import models
from catdog_jax import xla_cpu
from catdog_jax.data import input_pipeline
from catdog_jax.data.dataset import Example
from catdog_jax.evaluation import metrics as metrics_lib

PROGRESS_EVERY_BATCHES = 50


def eval_variables(state) -> dict:
  """The variables evaluation uses: the EMA params when kept."""
  params = state.params if state.ema_params is None else state.ema_params
  if state.batch_stats:
    return {'params': params, 'batch_stats': state.batch_stats}
  return {'params': params}


def shift_images(images, pixels: int):
  """Images moved `pixels` down and right (up and left when negative), the
  uncovered border filled by reflection."""
  pad = abs(pixels)
  height, width = images.shape[1:3]
  padded = jnp.pad(
    images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect'
  )
  top = pad - pixels
  return padded[:, top : top + height, top : top + width]


def tta_logits(
  apply_fn,
  variables,
  images_bhwc,
  flip: bool,
  translate: int,
  temperature: float = 1.0,
):
  """Dog logits of preprocessed images, with test-time augmentation, divided
  by `temperature` (calibration.py; 1.0 in training's evaluations).

  With `flip`, the logit is the mean over the image and its mirror image;
  with `translate`, half the weight goes to the image and a quarter to each
  of its copies shifted `translate` pixels along either diagonal
  (airbench's), each flipped too with `flip`.
  """

  def logits_of(x):
    logits = apply_fn(variables, x)
    if flip:
      logits = (logits + apply_fn(variables, x[:, :, ::-1])) / 2
    return logits

  logits = logits_of(images_bhwc)
  if translate:
    shifted = logits_of(shift_images(images_bhwc, translate)) + logits_of(
      shift_images(images_bhwc, -translate)
    )
    logits = logits / 2 + shifted / 4
  return logits / temperature


def eval_step(
  variables,
  batch,
  temperature=1.0,
  *,
  apply_fn,
  flip: bool = False,
  translate: int = 0,
):
  """Logits of a padded batch (`tta_logits`) by the model `apply_fn` with
  `variables`, with the batch's labels and mask passed through."""
  logits = tta_logits(
    apply_fn,
    variables,
    models.preprocess(batch['image']),
    flip,
    translate,
    temperature,
  )
  return {'logit': logits, 'label': batch['label'], 'mask': batch['mask']}


@dataclasses.dataclass(frozen=True)
class EvalFn:
  """The jitted eval step with its temperature bound: eval_fn(variables,
  batch). The temperature is an argument, not a constant, so that one
  compiled program serves every temperature."""

  jitted: Callable  # eval_step, jitted: (variables, batch, temperature).
  temperature: np.float32

  def __call__(self, variables, batch):
    return self.jitted(variables, batch, self.temperature)

  def lower(self, variables, batch):
    return self.jitted.lower(variables, batch, self.temperature)


def compile_eval_step(
  config: ml_collections.ConfigDict,
  data_sharding,
  replicated,
  temperature: float = 1.0,
) -> EvalFn:
  """eval_step of the config's model, jitted with the batch sharded,
  test-time augmentation per config.eval, the logits divided by
  `temperature`."""
  jitted = _jitted_eval_step(
    inference.create_model(config),
    config.eval.flip,
    config.eval.translate,
    data_sharding,
    replicated,
  )
  return EvalFn(jitted, np.float32(temperature))


@functools.cache
def _jitted_eval_step(model, flip, translate, data_sharding, replicated):
  """One jitted eval step per model, settings and placement in a process:
  training's evaluations, predict, eval, the report and the page share its
  compiled programs."""
  step = functools.partial(
    eval_step, apply_fn=model.apply, flip=flip, translate=translate
  )
  return jax.jit(
    step,
    in_shardings=(replicated, data_sharding, replicated),
    out_shardings=data_sharding,
    compiler_options=xla_cpu.compiler_options(xla_cpu.EVAL_YNN_TYPES),
  )


def forget_compiled_steps() -> None:
  """Drops the jitted eval steps kept for reuse, for a benchmark that
  patches a layer's code or XLA's options between measurements."""
  _jitted_eval_step.cache_clear()


# Models whose BatchNorm statistics recalibrate_batch_norm can recompute
# (eval.recalibrate_bn_batches).
RECALIBRATES = ('resnet', 'mini_xception', 'resnet50', 'efficientnet_lite')


def recalibrate_batch_norm(
  apply_fn, variables, images: np.ndarray, batch_size: int, sharding
) -> dict:
  """`variables` with their BatchNorm running statistics recomputed on
  `images`.

  The model `apply_fn` runs in training mode (batch statistics) over
  `images` in order, batch by batch; no weight changes. Each batch moves the
  running averages by the model's momentum (0.9), so 50 batches leave 0.5%
  of the statistics training ended with. Training at a smaller size than
  evaluation (progressive resizing, FixRes) leaves statistics of the wrong
  scale; these are of the evaluation size.

  Args:
    apply_fn: the model's apply function.
    variables: {'params', 'batch_stats'}, as `eval_variables` gives them.
    images: uint8 [N, S, S, 3], the same on every process; a remainder
      smaller than batch_size is left out.
    batch_size: images per batch.
    sharding: the replicated sharding (every device computes every batch).
  """

  def update(variables, images):
    _, updates = apply_fn(
      variables,
      models.preprocess(images),
      train=True,
      mutable=['batch_stats'],
      rngs={'dropout': jax.random.key(0)},  # Dropout is after every norm.
    )
    return variables | {'batch_stats': updates['batch_stats']}

  update = jax.jit(update, out_shardings=sharding)
  for start in range(0, len(images) - batch_size + 1, batch_size):
    batch = mesh.to_global(images[start : start + batch_size], sharding)
    variables = update(variables, batch)
  return variables


@dataclasses.dataclass(frozen=True)
class Predictions:
  """The model's dog logit for each example, in one order.

  Attributes:
    examples: the evaluated examples (padding removed).
    labels: int array of their labels, 0 (cat) / 1 (dog).
    logits: float64 array of their dog logits.
  """

  examples: list[Example]
  labels: np.ndarray
  logits: np.ndarray

  def metrics(self) -> dict[str, object]:
    """Accuracy, precision, recall, F1, ROC AUC, log-loss, confusion matrix."""
    return metrics_lib.classification_metrics(self.labels, self.logits)

  def report(self) -> str:
    """scikit-learn's per-class classification report."""
    return metrics_lib.classification_report(self.labels, self.logits)

  def scaled(self, temperature: float) -> 'Predictions':
    """The same predictions with their logits divided by `temperature`."""
    return dataclasses.replace(self, logits=self.logits / temperature)


def evaluate(
  eval_fn,
  variables,
  examples: Sequence[Example],
  source,
  config: ml_collections.ConfigDict,
  sharding,
) -> Predictions:
  """Predicts every example once, on all processes' devices.

  The examples are padded (with None) to whole global batches and dealt out
  to processes round-robin, so every process runs the same number of steps.

  Args:
    eval_fn: `compile_eval_step`'s function.
    variables: what `eval_fn` applies (`eval_variables`,
      `inference.restore_variables`).
    examples: what to evaluate, in the order of the result.
    source: where their pixels come from.
    config: the run's config (batch_size, data).
    sharding: the batch sharding of `eval_fn`.
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
    outputs.append(eval_fn(variables, mesh.to_global(batch, sharding)))
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
  return Predictions(
    examples=[e for e in order if e is not None],
    labels=labels,
    logits=logits.astype(np.float64),
  )
