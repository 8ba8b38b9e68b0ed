"""The TensorBoard writer (tensorboardX)."""

import subprocess
import sys

import pytest

from tests import helpers

# In a fresh interpreter: this one may have imported PyTorch already.
WRITE_AND_REPORT = """
import sys
from catdog_jax import metric_writers
writer = metric_writers.TensorBoardWriter(sys.argv[1])
writer.write_scalars(3, {'train_loss': 0.25})
writer.close()
print('torch' in sys.modules)
import torch  # Still importable afterwards.
print(torch.tensor([1.0]).numpy())
"""


@pytest.mark.slow  # Starts a process.
@helpers.needs(
  'torch', 'PyTorch is not installed: tensorboardX could not import it anyway'
)
def test_tensorboard_events_are_written_without_importing_pytorch(tmp_path):
  done = subprocess.run(
    [sys.executable, '-c', WRITE_AND_REPORT, str(tmp_path)],
    cwd=helpers.REPO, capture_output=True, text=True, timeout=60, check=True,
  )  # fmt: skip
  assert done.stdout.split() == ['False', '[1.]'], done.stderr[-2000:]
  (events,) = tmp_path.glob('events.out.tfevents.*')
  assert b'train_loss' in events.read_bytes()
