"""The best test accuracy in 30 minutes on a 2-core CPU: a small ResNet.

Command:
  python main.py --config=configs/fast_cpu.py --workdir=/tmp/fast_cpu \
    --config.data.root=../shared/data/kaggle200

A ResNet-10 at half width (1,228,097 parameters) with the common recipe,
24 epochs at 48 to 80 px (progressive resizing), evaluated at 80 px.

Measured 2026-11-25, 2-core Intel Xeon VM (CPU only), kaggle200 (content-
hash split: train 16,075 / val 1,959 / test 1,966): 27 min 1 s for the
whole command, peak RSS 1.7 GB; val accuracy 0.9290; test accuracy 0.9227,
F1 0.9264, ROC AUC 0.9780; kaggle-orig 0.9450 on all 1,000, 0.9341 on the
182 photos not in the training split. A rerun gave identical figures.
How it was chosen: the README's accuracy section.
Roofline (benchmarks/roofline.py, an estimate): 0.38 GFLOP and 28 MB per
train image; an H100 would train 119,020 to 1,299,447 images/s.
"""

import ml_collections

from configs import base
from configs import common


def get_config() -> ml_collections.ConfigDict:
  """A ResNet-10 at half width, 48 to 80 px, with the common recipe."""
  config = base.get_config()
  common.apply_recipe(config)
  config.batch_size = 64
  config.num_epochs = 24
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.data.image_size = 80
  config.progressive_sizes = (48, 56, 64, 64, 80, 80)
  config.model = common.resnet((1, 1, 1, 1), (32, 64, 128, 256))
  config.optimizer.learning_rate = 2e-3
  config.optimizer.warmup_steps = 200
  return config
