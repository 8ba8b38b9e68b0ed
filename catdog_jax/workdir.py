"""What a workdir holds: its file names, JSON in and out of it, and which
settings a relaunch on it may change."""

import json
import os

from catdog_jax.errors import UsageError

CONFIG = 'config.json'
DATA_REPORT = 'data_report.json'
EVAL_VAL = 'eval_val.json'
EVAL_TEST = 'eval_test.json'
REPORT = 'report.md'
RUN = 'run.json'  # The command, date, wall time and hardware of the run.


def write_json(path: str, value) -> None:
  """Writes atomically: a reader (another process, a relaunch after a
  crash) sees the old file or the new one, never half of one."""
  temporary = f'{path}.tmp'
  with open(temporary, 'w') as f:
    json.dump(value, f, indent=2)
    f.write('\n')
  os.replace(temporary, path)


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def path(workdir: str, name: str) -> str:
  return os.path.join(workdir, name)


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
    # What a fresh run loads; a resumed one restores its checkpoint instead.
    'model.init_from',
    'model.init_sha256',
  }
)
# Off values that earlier versions wrote as None.
_EARLIER_OFF_VALUES = {
  'ema_decay': 0.0,
  'augment.crop_min_area': 1.0,
  'optimizer.grad_clip_norm': 0.0,
}


def with_defaults(saved: dict, defaults: dict) -> dict:
  """A workdir's saved config with the fields added since it was written
  taken from `defaults` (base.py: every switch off), so older runs restore.
  The `model` group is the saved one as it is: its fields follow its model.
  """
  merged = dict(saved)
  for key, value in defaults.items():
    if key not in merged:
      merged[key] = value
    elif isinstance(value, dict) and key != 'model':
      merged[key] = with_defaults(merged[key], value)
  return merged


def flatten(tree: dict, prefix: str = '') -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def _comparable(config: dict) -> dict:
  """Flat, with tuples as lists (as JSON keeps them) and earlier Nones."""
  flat = json.loads(json.dumps(flatten(config)))
  for key, off in _EARLIER_OFF_VALUES.items():
    if key in flat and flat[key] is None:
      flat[key] = off
  return flat


def config_changes(saved: dict, config: dict) -> list[str]:
  """'key saved -> new' for each setting that may not change on resume.

  Settings present in only one of the two (added or removed by a newer
  version of the code) are not compared.
  """
  saved, config = _comparable(saved), _comparable(config)
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
  changes = config_changes(read_json(saved_path), config)
  if changes:
    raise UsageError(
      f'{workdir} holds a run with other settings ({"; ".join(changes)}): '
      f'relaunch it with the settings in {saved_path}, or pass a new '
      '--workdir to start afresh. A relaunch may change only '
      f'{", ".join(sorted(RESUMABLE_CHANGES))}.'
    )
