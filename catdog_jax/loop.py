"""Host-side helpers of the training loop: what is due at a step, progress
lines or a bar, the ETA, the divergence check, the first steps' timing, and the
signals that stop a run cleanly.

None of them touches the model; `train.train_and_evaluate` drives them.
"""

import contextlib
import dataclasses
import signal
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging

from catdog_jax import text
from catdog_jax.errors import DivergenceError


@dataclasses.dataclass(frozen=True)
class Due:
  """The periodic actions due after a step's update (`due_at`).

  Attributes:
    log: a progress line.
    evaluate: validation (every eval_every_steps, and the last step).
    save: a checkpoint (every checkpoint_every_steps, the last step, and
      the step a stop signal reaches).
    stop: a stop signal arrived: save, then leave the loop.
  """

  log: bool
  evaluate: bool
  save: bool
  stop: bool

  @property
  def waits_for_device(self) -> bool:
    """Whether the step syncs with the device (it evaluates or saves)."""
    return self.evaluate or self.save


def due_at(step: int, num_steps: int, config, stop_requested: bool) -> Due:
  """What is due after step `step` of `num_steps` (big_vision's itstime,
  asked once for every action); `config` gives the intervals."""
  last = step == num_steps
  return Due(
    log=step % config.log_every_steps == 0,
    evaluate=last or step % config.eval_every_steps == 0,
    save=last or stop_requested or step % config.checkpoint_every_steps == 0,
    stop=stop_requested,
  )


def first_nonfinite(step_metrics: list[dict], first_step: int):
  """(step, metrics) of the first step with a non-finite loss or norm."""
  for offset, metrics in enumerate(step_metrics):
    if not all(np.isfinite(value) for value in metrics.values()):
      return first_step + offset, metrics
  return None


def raise_if_diverged(step_metrics: list[dict], first_step: int) -> None:
  """Raises DivergenceError naming the first step with a non-finite value."""
  bad = first_nonfinite(step_metrics, first_step)
  if bad:
    values = ', '.join(f'{k}={v}' for k, v in sorted(bad[1].items()))
    raise DivergenceError(
      f'training diverged at step {bad[0]} ({values}); no checkpoint of '
      'the diverged state was written'
    )


class Eta:
  """The time a run has left, each remaining step priced at its image size.

  Seconds per step are timed at each size before the first step
  (`calibrate`) and measured again each log period, compiling left out. A
  size not yet trained at keeps its calibrated price times the load factor:
  training's time over calibration's at the sizes both timed, so a CPU
  busier (or idler) while calibrating than since reprices every size from
  the first progress line on. Evaluations still to come are priced per
  image as last measured (a calibrated price scaled alike). Untimed, a size
  is priced from the nearest timed one by its pixel count, plus one
  compile, and an evaluated image as a third of a train step's image times
  the test-time augmentation's passes.

  Args:
    sizes: the image size of each training step, steps 1 to N in order.
    evaluations: (step, images) of each evaluation, the test split's
      included (at step N).
    eval_size: the image size of every evaluation.
    eval_passes: forward passes per evaluated image (test-time augmentation).
    batch_size: images per training step.
  """

  def __init__(self, sizes, evaluations, eval_size, eval_passes, batch_size):
    self._sizes = list(sizes)
    self._evaluations = list(evaluations)
    self._eval_size = eval_size
    self._eval_passes = eval_passes
    self._batch_size = batch_size
    self._calibrated = {}  # Image size -> seconds a step, before training.
    self._step_seconds = {}  # Image size -> seconds a step, in training.
    self._compile_seconds = 0.0
    self._eval_seconds_per_image = None
    self._eval_calibrated = False  # Whether that is calibration's figure.

  def record_calibration(self, size: int, seconds: float) -> None:
    """A step at `size` took `seconds` when timed before training."""
    self._calibrated[size] = seconds

  def record_steps(self, size: int, count: int, seconds: float) -> None:
    """`count` training steps at `size` took `seconds`, compiling left out."""
    if count > 0:
      self._step_seconds[size] = seconds / count

  def record_compile(self, seconds: float) -> None:
    self._compile_seconds = max(self._compile_seconds, seconds)

  def record_evaluation(
    self, images: int, seconds: float, calibrating: bool = False
  ) -> None:
    """`images` evaluated in `seconds` (`calibrating`: before training)."""
    self._eval_seconds_per_image = seconds / max(images, 1)
    self._eval_calibrated = calibrating

  def load_factor(self) -> float:
    """Training's seconds a step over calibration's, at the sizes both
    timed (their median); 1 before any."""
    ratios = [
      self._step_seconds[size] / self._calibrated[size]
      for size in self._step_seconds
      if self._calibrated.get(size)
    ]
    return float(np.median(ratios)) if ratios else 1.0

  def _timed(self) -> dict:
    """Image size -> seconds a step, training's where measured."""
    factor = self.load_factor()
    calibrated = {size: t * factor for size, t in self._calibrated.items()}
    return calibrated | self._step_seconds

  def step_seconds(self, size: int) -> float | None:
    """The measured or estimated seconds of a step at `size`."""
    timed = self._timed()
    if size in timed:
      return timed[size]
    if not timed:
      return None
    known = min(timed, key=lambda s: abs(s - size))
    return timed[known] * (size / known) ** 2

  def seconds_left(self, step: int) -> float | None:
    """Seconds from the end of `step` (its evaluation, if it has one, still
    to come) to the end of the run; None before anything is measured."""
    timed = self._timed()
    if not timed:
      return None
    remaining = self._sizes[step:]
    seconds = sum(self.step_seconds(size) for size in remaining)
    unseen = set(remaining) - set(timed)
    seconds += self._compile_seconds * len(unseen)
    per_image = self._eval_seconds_per_image
    if per_image is None:
      train_image = self.step_seconds(self._eval_size) / self._batch_size
      per_image = train_image * self._eval_passes / 3
      seconds += self._compile_seconds  # The evaluation step's compile.
    elif self._eval_calibrated:
      per_image *= self.load_factor()
    seconds += sum(
      images * per_image for at, images in self._evaluations if at >= step
    )
    return seconds


class TrainLog:
  """Turns per-step device metrics into progress: scalars for the files
  (TensorBoard, metrics.jsonl) and one short line per period for a person,
  or a bar where stderr is a terminal.

  Metrics stay on the device until `check_and_write` pulls them, once per
  log period, so the host never waits on a step in between.
  """

  def __init__(self, writer, eta: Eta, sizes, global_batch_size, start_step,
               bar=None):  # fmt: skip
    self._writer = writer
    self._eta = eta
    self._sizes = list(sizes)
    self._num_steps = len(self._sizes)
    self._global_batch_size = global_batch_size
    self._pending = []  # Metrics of steps _last_step + 1, _last_step + 2...
    self._last_step = start_step
    self._timed_from = start_step  # Steps after this one are being timed.
    self._last_time = time.perf_counter()
    self._bar = bar

  def append(self, metrics):
    self._pending.append(metrics)

  def check_and_write(self, step: int):
    """Pulls the metrics of the steps up to `step`, checks, writes them.

    Raises:
      DivergenceError: if any of them is not finite.
    """
    count = step - self._last_step
    if count <= 0:
      return
    step_metrics = jax.device_get(self._pending[:count])
    self._pending = self._pending[count:]
    raise_if_diverged(step_metrics, self._last_step + 1)
    now = time.perf_counter()
    size = self._sizes[step - 1]
    timed = step - self._timed_from
    steps_per_sec = timed / (now - self._last_time) if timed > 0 else 0.0
    self._eta.record_steps(size, timed, now - self._last_time)
    scalars = {
      f'train_{key}': float(np.mean([m[key] for m in step_metrics]))
      for key in step_metrics[0]
    }
    scalars['steps_per_sec'] = steps_per_sec
    scalars['images_per_sec'] = steps_per_sec * self._global_batch_size
    left = self._eta.seconds_left(step)
    if left is not None:
      scalars['eta_minutes'] = left / 60
    self._writer.write_scalars(step, scalars)
    self._show(step, size, scalars, left)
    self._last_step = self._timed_from = step
    self._last_time = now

  def _show(self, step, size, scalars, left) -> None:
    line = progress_line(step, self._num_steps, size, scalars, left)
    if self._bar is None:
      logging.info(line)
    else:
      self._bar.update(step - self._bar.n)
      self._bar.set_postfix_str(line.split(' | ', 1)[1], refresh=True)

  def restart_clock(self, step: int):
    """Leaves what happened since the last write (evaluation, saving,
    compiling) unmeasured: timing restarts after `step`."""
    self._timed_from = step
    self._last_time = time.perf_counter()


def progress_line(step, num_steps, size, scalars, seconds_left) -> str:
  """'step 1200/3014 (40%) | 112 px | 212 img/s | loss 0.41 | acc 0.86 |
  ETA 4 min'."""
  eta = '?' if seconds_left is None else text.duration(seconds_left)
  return (
    f'step {step}/{num_steps} ({100 * step // num_steps}%) | {size} px | '
    f'{scalars["images_per_sec"]:.0f} img/s | '
    f'loss {scalars["train_loss"]:.3g} | '
    f'acc {scalars["train_accuracy"]:.2f} | ETA {eta}'
  )


class _AboveBar:
  """A stream whose lines tqdm writes above its bar."""

  def __init__(self, stream):
    self._stream = stream

  def write(self, text: str) -> None:
    tqdm.tqdm.write(text.rstrip('\n'), file=self._stream)

  def flush(self) -> None:
    self._stream.flush()


@contextlib.contextmanager
def terminal_bar(num_steps: int, start_step: int, stream=None):
  """A progress bar on `stream` (stderr) where it is a terminal, log lines
  printed above it; None elsewhere (a file, a pipe: progress lines then)."""
  stream = stream or sys.stderr
  if not stream.isatty():
    yield None
    return
  bar = tqdm.tqdm(total=num_steps, initial=start_step, unit='step',
                  file=stream, dynamic_ncols=True)  # fmt: skip
  # absl's handler writes to its own stream, or to sys.stderr itself.
  handler = logging.get_absl_handler().python_handler
  previous = handler.stream, sys.stderr
  handler.stream = sys.stderr = _AboveBar(stream)
  try:
    yield bar
  finally:
    handler.stream, sys.stderr = previous
    bar.close()


def _seconds(fn, repeats: int = 3) -> tuple[float, float]:
  """(seconds of the first call, the fastest of `repeats` more)."""
  times = []
  for _ in range(repeats + 1):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return times[0], min(times[1:])


def calibrate(eta: Eta, train_steps, eval_fn, state, batches, rng) -> str:
  """Compiles every training size's step and the evaluation step and times
  each, for `eta`; returns a line saying what each costs.

  The steps run on copies of `state` (they donate it) and on blank batches,
  so the run itself is untouched.

  Args:
    eta: the run's Eta.
    train_steps: {image size: compiled train step}.
    eval_fn: the compiled evaluation step, called on a batch.
    state: the train state.
    batches: (a blank training batch, a blank evaluation batch), global.
    rng: the training steps' rng.
  """
  train_batch, eval_batch = batches
  parts = []
  for size, step in train_steps.items():
    first, seconds = _seconds(
      lambda step=step: step(jax.tree.map(jnp.copy, state), train_batch, rng)
    )
    eta.record_compile(first - seconds)
    eta.record_calibration(size, seconds)
    parts.append(f'{seconds:.2f} s a step at {size} px')
  first, seconds = _seconds(lambda: eval_fn(eval_batch))
  eta.record_evaluation(len(eval_batch['label']), seconds, calibrating=True)
  parts.append(f'{seconds / len(eval_batch["label"]) * 1e3:.1f} ms an '
               'evaluated image')  # fmt: skip
  return 'Compiled and timed: ' + ', '.join(parts) + '.'


class StopSignal:
  """Remembers a SIGTERM (preemption) or a Ctrl-C (SIGINT) so the loop can
  checkpoint at the step it reaches next and stop; a second Ctrl-C aborts
  at once (KeyboardInterrupt), leaving the last checkpoint as it was.

  The loop runs ahead of the device, so which step that is is known only
  when the loop gets there: the loop says it then (`announce`).
  """

  SIGNALS = {signal.SIGTERM: 'SIGTERM', signal.SIGINT: 'Ctrl-C'}

  def __init__(self):
    self._event = threading.Event()
    self._previous = {}
    self.name = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in self.SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)

  def _handle(self, signum, frame):
    if signum == signal.SIGINT and self._event.is_set():
      raise KeyboardInterrupt
    self.name = self.SIGNALS[signum]
    logging.warning(
      '%s: the run stops at the next step it reaches, saving a checkpoint '
      'there%s.',
      self.name,
      ' (Ctrl-C again aborts at once)' if signum == signal.SIGINT else '',
    )
    self._event.set()

  def announce(self, step: int) -> None:
    """Says the step the stop saves at, when the loop reaches it."""
    logging.warning('%s: saving checkpoint %d, then stopping.', self.name, step)

  @property
  def requested(self) -> bool:
    return self._event.is_set()
