"""The common recipe at a GPU or TPU budget: ResNet-18 at 160x160.

Command:
  python main.py --config=configs/gpu.py --workdir=/tmp/gpu \
    --config.data.root=../shared/data/kaggle200

A full-width ResNet-18 layout (11,174,145 parameters; a stride-2 stem, then
stages at 80, 40, 20 and 10 px), bfloat16 compute with float32 weights and
loss, batch 128, 60 epochs (7,535 steps) at 160 px throughout.

Not measured: no GPU or TPU has been lent to this project yet.
Roofline (benchmarks/roofline.py, an estimate): 19.91 GFLOP and 508 MB
per train image, 19 PFLOP for the run; an H100 would train 6,595 to 49,663
images/s, i.e. 20 s to 2.4 min of steps (11 min at a sustained 30
TFLOP/s), plus indexing, caching (1.2 GB) and evaluation.
"""

import ml_collections

from configs import base
from configs import common


def get_config() -> ml_collections.ConfigDict:
  """A full-width ResNet-18 at 160 px for 60 epochs, bfloat16."""
  config = base.get_config()
  common.apply_recipe(config)
  config.batch_size = 128
  config.num_epochs = 60
  config.dtype = 'bfloat16'
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.data.image_size = 160
  config.augment.crop_min_area = 0.25
  config.model = common.resnet((2, 2, 2, 2), (64, 128, 256, 512))
  config.optimizer.learning_rate = 2e-3
  config.optimizer.warmup_steps = 500
  return config
