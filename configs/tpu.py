"""The seed CNN on a TPU (Colab's v2-8 or larger): batch 256, bfloat16.

Command (see notebooks/colab_tpu.ipynb):
  python main.py --config=configs/tpu.py --workdir=/content/run \
    --config.data.source=tfds

Convolutions and matrix products run in bfloat16; parameters, optimizer
state, the loss and the metrics stay float32. The global batch of 256 is
split over the 8 TPU cores. Not measured: no TPU has been lent to this
project yet (docs/scale.md has its roofline estimate).
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  """base.py with a TPU-sized batch and bfloat16 computation."""
  config = base.get_config()
  config.batch_size = 256
  config.dtype = 'bfloat16'
  config.log_every_steps = 20
  config.eval_every_steps = 200
  config.checkpoint_every_steps = 200
  return config
