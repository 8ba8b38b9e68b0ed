"""Checkpoints: train state and input-iterator state, saved together.

Layout: `WORKDIR/checkpoints/<step>/{state,data}`. The newest
`checkpoints_to_keep` are kept, plus the one with the best validation
accuracy for as long as it is the best.
"""

import os

import grain
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

BEST_METRIC = 'val_accuracy'


def create_checkpoint_manager(
  workdir: str, checkpoints_to_keep: int
) -> ocp.CheckpointManager:
  """A manager over `workdir/checkpoints` keeping the newest and the best."""
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
  )
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  return ocp.CheckpointManager(directory, options=options)


def save(manager, step, state, data_iterator, metrics=None) -> None:
  """Saves asynchronously; `metrics` (with val_accuracy) ranks the best."""
  manager.save(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=grain.checkpoint.CheckpointSave(data_iterator),
    ),
    metrics=metrics,
  )


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
