"""The common recipe at a GPU or TPU budget: ResNet-18 at 160x160.

Command:
  python main.py --config=configs/gpu.py --workdir=/tmp/gpu \
    --config.data.root=../shared/data/kaggle200

A full-width ResNet-18 layout (11,174,145 parameters), bfloat16 compute
with float32 weights and loss, batch 128, 60 epochs at 160 px.

Not measured: no GPU or TPU has been lent to this project yet
(docs/scale.md has its roofline estimate).
"""

import ml_collections

from configs import base
from configs import common


def get_config() -> ml_collections.ConfigDict:
  """A full-width ResNet-18 at 160 px for 60 epochs, bfloat16."""
  config = base.get_config()
  common.apply_recipe(
    config,
    crop_min_area=0.25,
    color_jitter=0.1,
    learning_rate=2e-3,
    warmup_steps=500,
  )
  config.batch_size = 128
  config.num_epochs = 60
  config.dtype = 'bfloat16'
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.data.image_size = 160
  config.model = common.resnet((2, 2, 2, 2), (64, 128, 256, 512))
  return config
