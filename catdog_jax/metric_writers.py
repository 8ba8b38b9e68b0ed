"""Metric writers with clu's `MetricWriter` interface, without TensorFlow.

clu's package imports TensorFlow for its default TensorBoard writer, and TF is
no dependency of ours; tensorboardX writes the same event files. The method
names and signatures follow `clu.metric_writers.MetricWriter`, so swapping in
clu's writers needs no change at the call sites.
"""

import abc
import json
import os
import sys
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from absl import logging

from catdog_jax import fileio
from catdog_jax import workdir as workdir_lib
from catdog_jax.errors import UsageError

# Room a log period's scalars must find (they take a few hundred bytes).
SPACE_FOR_METRICS = 1 << 20


class MetricWriter(abc.ABC):
  """clu's interface (the part we use): scalars and hyperparameters."""

  @abc.abstractmethod
  def write_scalars(self, step: int, scalars: Mapping[str, float]): ...

  @abc.abstractmethod
  def write_hparams(self, hparams: Mapping[str, Any]): ...

  def flush(self):  # noqa: B027 - optional for writers that buffer.
    pass

  def close(self):
    self.flush()


def _tensorboardx():
  """tensorboardX, imported without PyTorch where nothing imported it yet.

  tensorboardX imports PyTorch when installed (1.6-1.9 s on a 2-core EPYC)
  only to accept torch tensors, which nothing here writes; a None in
  sys.modules makes that import fail, as tensorboardX allows. Imported
  here, not at the top: a command that stops at a bad setting never waits.
  """
  if 'torch' in sys.modules:
    import tensorboardX
  else:
    sys.modules['torch'] = None
    try:
      import tensorboardX
    finally:
      del sys.modules['torch']
  return tensorboardX


class TensorBoardWriter(MetricWriter):
  """TensorBoard event files in `logdir`, written by tensorboardX."""

  def __init__(self, logdir: str):
    self._writer = _tensorboardx().SummaryWriter(logdir)

  def write_scalars(self, step, scalars):
    for key, value in scalars.items():
      self._writer.add_scalar(key, value, global_step=step)

  def write_hparams(self, hparams):
    # Logged as text: TensorBoard's hparams plugin needs a final metric.
    lines = [f'{key}: {value}' for key, value in sorted(hparams.items())]
    self._writer.add_text('hparams', '  \n'.join(lines), global_step=0)

  def flush(self):
    self._writer.flush()

  def close(self):
    self._writer.close()


class JsonlWriter(MetricWriter):
  """Scalars as JSON lines {"step": N, key: value...}: easy to plot or parse.

  A run resumed from step `start_step` first drops the records of later
  steps (written before the stop, and about to be written again), so the
  file holds each step once.
  """

  def __init__(self, path: str, start_step: int = 0):
    kept = [r for r in read_jsonl(path) if r['step'] <= start_step]
    # A crash here leaves the old file whole.
    with fileio.atomic_write(path) as f:
      f.writelines(json.dumps(record) + '\n' for record in kept)
    self._file = open(path, 'a')  # noqa: SIM115 - closed in close().

  def write_scalars(self, step, scalars):
    record = {'step': int(step), **{k: float(v) for k, v in scalars.items()}}
    # Flushed line by line: a run killed, or stopped by a full disk, leaves
    # every step it logged.
    try:
      self._file.write(json.dumps(record) + '\n')
      self._file.flush()
    except OSError as e:
      if fileio.is_disk_full(e):
        raise fileio.disk_full('metrics.jsonl', self._file.name) from e
      raise

  def write_hparams(self, hparams):
    del hparams

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def read_jsonl(path: str) -> list[dict]:
  """The records a JsonlWriter wrote; [] if there is no such file.

  A last line cut short (a kill mid-write, on a filesystem whose appends
  are not atomic) is dropped with a warning.

  Raises:
    UsageError: naming the line, if any other line is not a JSON record.
  """
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  records = []
  for number, line in enumerate(lines, start=1):
    try:
      records.append(json.loads(line))
    except ValueError as e:
      if number == len(lines):
        logging.warning('Dropping the last line of %s, cut short: %r',
                        path, line.strip()[:80])  # fmt: skip
        break
      raise UsageError(
        f'{path} line {number} is not a JSON record ({e}): repair or remove '
        'that line (each line is one logged step)'
      ) from e
  return records


class NoWriter(MetricWriter):
  """Writes nothing: processes other than the first of a multi-host run."""

  def write_scalars(self, step, scalars):
    del step, scalars

  def write_hparams(self, hparams):
    del hparams


class MultiWriter(MetricWriter):
  """Forwards every call to each of `writers`; with `logdir`, stops first
  with one line when its disk is full (tensorboardX would print a thread's
  traceback and go on without its events)."""

  def __init__(self, writers: Sequence[MetricWriter], logdir=None):
    self._writers = tuple(writers)
    self._logdir = logdir

  def write_scalars(self, step, scalars):
    if self._logdir:
      fileio.check_space(self._logdir, SPACE_FOR_METRICS, 'the metrics')
    for writer in self._writers:
      writer.write_scalars(step, scalars)

  def write_hparams(self, hparams):
    for writer in self._writers:
      writer.write_hparams(hparams)

  def flush(self):
    for writer in self._writers:
      writer.flush()

  def close(self):
    for writer in self._writers:
      writer.close()


def create_default_writer(
  logdir: str, no_files: bool, start_step: int = 0
) -> MetricWriter:
  """TensorBoard events and `metrics.jsonl` in `logdir`, from `start_step`
  on; nothing with `no_files` (processes other than the first of a
  multi-host run). The log's progress lines are the trainer's own."""
  if no_files:
    return NoWriter()
  return MultiWriter(
    [
      TensorBoardWriter(logdir),
      JsonlWriter(workdir_lib.path(logdir, workdir_lib.METRICS), start_step),
    ],
    logdir,
  )
