"""Checkpoints: train state and input-iterator state, saved together.

Layout: `WORKDIR/checkpoints/<step>/{state,data}`. The newest
`checkpoints_to_keep` are kept, plus the one with the best validation
accuracy for as long as it is the best.
"""

import contextlib
import json
import os
import shutil
import time

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers

from catdog_jax import fileio
from catdog_jax import workdir as workdir_lib
from catdog_jax.errors import CheckpointError
from catdog_jax.errors import UsageError

BEST_METRIC = 'val_accuracy'


def directory(workdir: str) -> str:
  """Where `workdir`'s checkpoints live, as an absolute path (orbax's need)."""
  return workdir_lib.path(os.path.abspath(workdir), workdir_lib.CHECKPOINTS)


def create_checkpoint_manager(
  workdir: str, checkpoints_to_keep: int
) -> ocp.CheckpointManager:
  """A manager over `workdir/checkpoints` keeping the newest and the best.

  Checkpoints whose metadata cannot be read (orbax would fail to open the
  directory) are moved aside first, with a warning.
  """
  checkpoints = directory(workdir)
  for step in unreadable_steps(checkpoints):
    moved = quarantine(checkpoints, step)
    logging.warning(
      'Checkpoint %d has unreadable metadata; moved to %s.', step, moved
    )
  best = checkpoint_managers.BestN(
    get_metric_fn=lambda metrics: metrics[BEST_METRIC],
    n=1,
    keep_checkpoints_without_metrics=False,
  )
  preservation = checkpoint_managers.AnyPreservationPolicy(
    [checkpoint_managers.LatestN(n=checkpoints_to_keep), best]
  )
  options = ocp.CheckpointManagerOptions(
    best_fn=lambda metrics: metrics[BEST_METRIC],
    best_mode='max',
    preservation_policy=preservation,
    create=True,
    # Half-written saves of a killed run are never valid checkpoints.
    cleanup_tmp_directories=True,
  )
  return ocp.CheckpointManager(checkpoints, options=options)


# Small JSON files orbax reads when it opens a checkpoint directory.
_METADATA_FILES = ('_CHECKPOINT_METADATA', 'metrics/metrics', 'state/_METADATA')


def unreadable_steps(directory: str) -> list[int]:
  """Steps under `directory` with a metadata file that is not valid JSON."""
  if not os.path.isdir(directory):
    return []
  bad = []
  for name in os.listdir(directory):
    step_dir = os.path.join(directory, name)
    if not name.isdigit():
      continue
    for relative in _METADATA_FILES:
      path = os.path.join(step_dir, relative)
      try:
        if os.path.exists(path):
          with open(path) as f:
            json.load(f)
      except (OSError, ValueError):
        bad.append(int(name))
        break
  return sorted(bad)


# Room kept beyond a checkpoint for what the run writes until the next one
# (metrics, events, the report and its plots at the end).
SPACE_MARGIN = 8 << 20


def space_needed(state) -> int:
  """Bytes a checkpoint of `state` may take, with SPACE_MARGIN."""
  return sum(x.nbytes for x in jax.tree.leaves(state)) + SPACE_MARGIN


@contextlib.contextmanager
def disk_full_said(what: str, directory: str, needed: int | None = None):
  """Turns a full disk met inside the block into one DiskFullError line."""
  try:
    yield
  except Exception as e:
    if fileio.is_disk_full(e):
      raise fileio.disk_full(what, directory, needed) from e
    raise


def save(manager, step, state, data_iterator, metrics=None) -> None:
  """Saves asynchronously; `metrics` (with val_accuracy) ranks the best and
  is kept beside the checkpoint (`validation`).

  Raises:
    DiskFullError: before writing, when the disk lacks the room the
      checkpoint needs; or when it fills up while writing (the torn
      checkpoint is never restored: orbax deletes it on the next start).
  """
  directory = str(manager.directory)
  needed = space_needed(state)
  fileio.check_space(directory, needed, f'checkpoint {step}')
  logging.info('Saving checkpoint %d.', step)
  with disk_full_said(f'checkpoint {step}', directory, needed):
    manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iterator),
      ),
      metrics=metrics,
    )


def wait_until_saved(manager) -> None:
  """Waits for the asynchronous saves; a full disk met there, one line."""
  with disk_full_said('a checkpoint', str(manager.directory)):
    manager.wait_until_finished()


def restore(manager, step, abstract_state, data_iterator):
  """Restores the state at `step` into `abstract_state`'s shapes/shardings.

  `data_iterator` is moved to its saved position in place.
  """
  restored = manager.restore(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data=grain.checkpoint.CheckpointRestore(data_iterator),
    ),
  )
  return restored.state


def quarantine(directory: str, step: int) -> str:
  """Moves checkpoint `step` aside (never deletes it); returns where."""
  source = os.path.join(directory, str(step))
  target_dir = workdir_lib.path(
    os.path.dirname(directory), workdir_lib.QUARANTINE
  )
  os.makedirs(target_dir, exist_ok=True)
  target = os.path.join(target_dir, f'{step}-{time.strftime("%Y%m%d-%H%M%S")}')
  shutil.move(source, target)
  return target


def restore_newest_intact(manager, abstract_state, data_iterator):
  """(step, state) from the newest checkpoint that restores, or None if none.

  A checkpoint that fails to restore (torn by a crash, emptied or missing
  files) is moved aside with a warning and the one before it is tried.

  Raises:
    CheckpointError: if checkpoints exist and none of them restores; a run
      never silently starts from scratch over them.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  for step in steps:
    try:
      state = restore(manager, step, abstract_state, data_iterator)
    except Exception as e:  # noqa: BLE001 - orbax raises many kinds here.
      moved = quarantine(str(manager.directory), step)
      logging.warning(
        'Checkpoint %d cannot be restored (%s: %s); moved to %s.',
        step,
        type(e).__name__,
        e,
        moved,
      )
      continue
    manager.reload()
    return step, state
  manager.reload()
  quarantined = workdir_lib.path(
    os.path.dirname(str(manager.directory)), workdir_lib.QUARANTINE
  )
  if steps or os.path.isdir(quarantined):
    raise CheckpointError(
      f'no checkpoint in {manager.directory} can be restored; the broken '
      f'ones are in {quarantined}. Use a new --workdir to start afresh.'
    )
  return None


def checkpoint_steps(workdir: str) -> list[int]:
  """The steps of `workdir`'s complete checkpoints, oldest first."""
  checkpoints = directory(workdir)
  if not os.path.isdir(checkpoints):
    return []
  return sorted(int(name) for name in os.listdir(checkpoints) if name.isdigit())


def metrics_path(workdir: str, step: int) -> str:
  """The JSON file of the metrics `save` gave checkpoint `step`."""
  return os.path.join(directory(workdir), str(step), 'metrics', 'metrics')


def inference_step(workdir: str) -> int | None:
  """The checkpoint predict and eval use: the best by validation accuracy,
  else the newest; None if `workdir` has none.

  Read from the files (each checkpoint's metrics/metrics JSON) rather than
  through a CheckpointManager, which would clean up the temporary folders
  of a save still in progress if training runs at the same time.
  """
  unreadable = unreadable_steps(directory(workdir))
  if unreadable:
    logging.warning('Skipping checkpoints with torn metadata: %s', unreadable)
  steps = [s for s in checkpoint_steps(workdir) if s not in unreadable]
  ranked = {}
  for step in steps:
    path = metrics_path(workdir, step)
    if os.path.exists(path):
      with open(path) as f:
        ranked[step] = json.load(f)[BEST_METRIC]
  if ranked:
    return max(ranked, key=lambda step: (ranked[step], step))
  return steps[-1] if steps else None


def validation(workdir: str, step: int) -> dict | None:
  """The validation figures saved with checkpoint `step` (`save`'s metrics
  'val'), or None where it has none (no validation split, older code)."""
  path = metrics_path(workdir, step)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f).get('val')


def restore_for_inference(workdir: str, abstract, step: int | None = None):
  """(tree, step): the part of checkpoint `step` (else `inference_step`'s)
  train state that `abstract` names, e.g. {'params': ..., 'batch_stats':
  ...}, in its shapes and shardings; nothing else is read
  (`inference.restore_variables`).

  Raises:
    UsageError: if `workdir` holds no such checkpoint.
  """
  step = step or inference_step(workdir)
  if step is None:
    raise UsageError(f'no checkpoints in {workdir!r}: train there first')
  path = os.path.join(directory(workdir), str(step), 'state')
  if not os.path.isdir(path):
    raise UsageError(f'{workdir!r} has no checkpoint {step}')
  restored = ocp.PyTreeCheckpointer().restore(
    path,
    args=ocp.args.PyTreeRestore(
      item=abstract,
      restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
      partial_restore=True,
    ),
  )
  logging.info('Restored checkpoint %d from %s.', step, workdir)
  return restored, step
