"""What a workdir holds: the name of every file in it, how a config.json
written by an earlier version reads today, and which settings a relaunch on
it may change."""

import fcntl
import json
import os
import platform
import time

from absl import logging

from catdog_jax import fileio
from catdog_jax.errors import UsageError

# Every file and folder a workdir holds, by what writes it.
CONFIG = 'config.json'  # The run's settings (train, probe).
DATA_REPORT = 'data_report.json'  # What indexing found (train, audit).
INDEX_CACHE = 'index_cache.json'  # Per-file index records, reused.
CHECKPOINTS = 'checkpoints'  # orbax checkpoints, one folder per step.
QUARANTINE = 'checkpoints_unrestorable'  # Checkpoints that would not restore.
METRICS = 'metrics.jsonl'  # Every logged scalar, one JSON line per step.
EVAL_VAL = 'eval_val.json'
EVAL_TEST = 'eval_test.json'
PREDICTIONS_TEST = 'predictions_test.csv'  # Every test image's logit.
RUN = 'run.json'  # The command, date, wall time and hardware of the run.
REPORT = 'report.md'
PLOTS = 'plots'
FEATURES = 'features_{}.npz'  # Probe runs: the backbone's features by split.
PREDICTIONS = 'predictions.csv'  # --mode=predict's default output.
LOCK = 'run.lock'  # Held by the run training here (train, probe).
EVAL_FOLDER = 'eval_folder.json'  # --mode=eval's default output.
EXPORT = 'export'  # --mode=export's default folder.
# Temperature fitted on validation (eval.temperature_scaling; train, probe).
CALIBRATION = 'calibration.json'


def path(workdir: str, name: str) -> str:
  return os.path.join(workdir, name)


# --- Configs written by earlier versions --------------------------------------

# Fields that moved: the old dotted name -> today's.
RENAMED_FIELDS = {
  'eval_flip': 'eval.flip',
  'eval_translate': 'eval.translate',
  'recalibrate_bn_batches': 'eval.recalibrate_bn_batches',
  'freeze': 'optimizer.freeze',
  'whiten_stem': 'model.whiten_stem',
  'probe': 'probe.enabled',
}
# Fields added after the first version, with the value that behaves as that
# version did (every switch off). A config.json that lacks one gets it.
# Fields of the `model` group are not here: it is restored as saved, and
# its fields follow its model.
ADDED_FIELDS = {
  'label_smoothing': 0.0,
  'cpu_convolutions': 'xla',
  'ema_decay': 0.0,
  'progressive_sizes': [],
  'eval.flip': False,
  'eval.translate': 0,
  'eval.recalibrate_bn_batches': 0,
  'eval.temperature_scaling': False,
  'probe.enabled': False,
  'probe.steps': 1000,
  'probe.learning_rate': 0.01,
  'probe.l2': 1e-3,
  'data.source': 'folder',
  'data.name': 'cats_vs_dogs',
  'data.tfds_split': 'train',
  'data.tfds_data_dir': None,
  'data.download_dir': None,
  'data.download_url': None,
  'data.download_sha256': None,
  'data.device_prefetch': 2,
  'data.cache': False,
  'data.max_pixels': 50_000_000,
  'data.near_duplicate_bits': 4,
  'augment.crop_min_area': 1.0,
  'augment.crop_max_area': 1.0,
  'augment.flip': False,
  'augment.brightness': 0.0,
  'augment.contrast': 0.0,
  'augment.saturation': 0.0,
  'augment.grayscale': 0.0,
  'augment.blur': 0.0,
  'augment.cutmix': 0.0,
  'optimizer.schedule': 'constant',
  'optimizer.warmup_steps': 0,
  'optimizer.weight_decay': 0.0,
  'optimizer.momentum': 0.9,
  'optimizer.grad_clip_norm': 0.0,
  'optimizer.lr_multipliers': [],
  'optimizer.freeze': '',
}
# Off values that earlier versions wrote as None.
_EARLIER_OFF_VALUES = {
  'ema_decay': 0.0,
  'augment.crop_min_area': 1.0,
  'optimizer.grad_clip_norm': 0.0,
}


def flatten(tree: dict, prefix: str = '') -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def unflatten(flat: dict) -> dict:
  """{'a.b': 1} -> {'a': {'b': 1}}."""
  tree = {}
  for key, value in flat.items():
    *groups, leaf = key.split('.')
    node = tree
    for group in groups:
      node = node.setdefault(group, {})
    node[leaf] = value
  return tree


def upgrade(saved: dict) -> dict:
  """A config.json of any version, in today's shape: renamed fields moved,
  fields added since filled in (`ADDED_FIELDS`), earlier Nones as today's
  off values."""
  flat = {}
  for key, value in flatten(saved).items():
    key = RENAMED_FIELDS.get(key, key)
    # Only a whitened model names the field; other models lack it.
    if key == 'model.whiten_stem' and not value:
      continue
    flat[key] = value
  for key, value in ADDED_FIELDS.items():
    flat.setdefault(key, value)
  for key, off in _EARLIER_OFF_VALUES.items():
    if flat.get(key, off) is None:
      flat[key] = off
  return unflatten(flat)


def read_config(workdir: str) -> dict:
  """The workdir's config.json, upgraded to today's shape.

  Raises:
    UsageError: if there is none, or it is not valid JSON.
  """
  config_path = path(workdir, CONFIG)
  if not os.path.exists(config_path):
    raise UsageError(
      f'{config_path} is missing: is {workdir!r} a training workdir?'
    )
  return upgrade(fileio.read_json(config_path))


# --- Relaunching on a workdir -------------------------------------------------

# Settings a relaunch on an existing workdir may change: they shape no array
# of the state and change nothing the model learns from (the data's order is
# the same cached or not). num_train_steps and num_epochs extend or shorten
# the run (the learning-rate schedule follows the new length).
RESUMABLE_CHANGES = frozenset(
  {
    'num_train_steps',
    'num_epochs',
    'log_every_steps',
    'eval_every_steps',
    'checkpoint_every_steps',
    'checkpoints_to_keep',
    'data.num_workers',
    'data.prefetch_batches',
    'data.device_prefetch',
    'data.cache',
    'data.download_dir',
    # Fitted on each checkpoint's validation; no decision, so no
    # checkpoint choice, changes with it.
    'eval.temperature_scaling',
    # What a fresh run loads; a resumed one restores its checkpoint instead.
    'model.init_from',
    'model.init_sha256',
    'model.init_package',
  }
)


def config_changes(saved: dict, config: dict) -> list[str]:
  """'key saved -> new' for each setting that may not change on resume.

  Both are compared in today's shape (`upgrade`), with tuples as lists (as
  JSON keeps them). A field only one of them has (a model field added
  since, with its default) is not compared.
  """
  saved, config = (
    json.loads(json.dumps(flatten(upgrade(c)))) for c in (saved, config)
  )
  return [
    f'{key} {saved[key]!r} -> {config[key]!r}'
    for key in sorted(saved.keys() & config.keys())
    if key not in RESUMABLE_CHANGES and saved[key] != config[key]
  ]


def check_same_run(workdir: str, config: dict) -> None:
  """Raises UsageError if `workdir` holds a run of other settings.

  Runs before anything is restored, so a changed setting never costs a
  checkpoint.
  """
  saved_path = path(workdir, CONFIG)
  if not os.path.exists(saved_path):
    return
  changes = config_changes(fileio.read_json(saved_path), config)
  if changes:
    raise UsageError(
      f'{workdir} holds a run with other settings ({"; ".join(changes)}): '
      f'relaunch it with the settings in {saved_path}, or pass a new '
      '--workdir to start afresh. A relaunch may change only '
      f'{", ".join(sorted(RESUMABLE_CHANGES))}.'
    )


# --- One run at a time ----------------------------------------------------


class Lock:
  """The workdir's run lock, held by one training process while it lives.

  An flock on WORKDIR/run.lock, which also names its holder (host, PID,
  start). The kernel releases it when the holder dies (SIGKILL, a reboot),
  so a lock left by a dead run is taken over, and said so. predict, eval
  and report read a workdir without it.
  """

  def __init__(self, workdir: str):
    self.path = path(workdir, LOCK)
    self._file = None

  def acquire(self) -> None:
    """Takes the lock, or raises UsageError naming the run that holds it."""
    self._file = open(self.path, 'a+')  # noqa: SIM115 - held until release.
    try:
      fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = self._holder()
      self._file.close()
      self._file = None
      raise UsageError(
        f'{os.path.dirname(self.path)} is in use by a run {holder}: a second '
        'run here would interleave checkpoints and metrics. Wait for it, stop '
        'it, or pass another --workdir'
      ) from None
    previous = self._holder()
    if previous != 'of unknown origin':
      logging.info('Taking over the workdir from a run that ended (%s).',
                   previous)  # fmt: skip
    self._file.seek(0)
    self._file.truncate()
    json.dump(
      {
        'host': platform.node(),
        'pid': os.getpid(),
        'started_utc': time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime()),
      },
      self._file,
    )
    self._file.flush()

  def _holder(self) -> str:
    self._file.seek(0)
    try:
      holder = json.loads(self._file.read())
      return (
        f'on host {holder["host"]}, PID {holder["pid"]}, started '
        f'{holder["started_utc"]} UTC'
      )
    except (ValueError, KeyError, TypeError):
      return 'of unknown origin'

  def release(self) -> None:
    if self._file is not None:
      self._file.seek(0)
      self._file.truncate()
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None
