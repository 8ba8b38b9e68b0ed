"""The best test accuracy in 30 minutes on a 2-core CPU: a small ResNet.

Command:
  python main.py --config=configs/fast_cpu.py --workdir=/tmp/fast_cpu \
    --config.data.root=../shared/data/kaggle200

A ResNet-10 at half width (1,228,097 parameters) behind a frozen whitened
stem and a 2x2 max pool, 21 epochs at 96 to 160 px (progressive resizing),
evaluated at 160 with flips and shifted copies; crops of at least 80% of
the image, flips, AdamW 1.2e-2.

Measured 2026-11-25, 2-core VM (AMD EPYC, CPU only), kaggle200 (train
16,075 / val 1,959 / test 1,966), seeds 0 / 1: 27 min 26 s / 27 min 47 s
for the whole command, peak RSS 3.6 GB; test accuracy 0.9588 / 0.9568
(mean 0.958), val 0.9632 / 0.9622; kaggle-orig 0.9790 (182 unseen:
0.9670, seed 0).
How it was chosen: the README's accuracy section.
Roofline (benchmarks/roofline.py, an estimate): 0.42 GFLOP and 28 MB per
train image; an H100 would train 118,229 to 1,186,959 images/s.
"""

import ml_collections

from configs import base
from configs import common


def get_config() -> ml_collections.ConfigDict:
  """The CPU recipe for 21 epochs."""
  config = base.get_config()
  common.apply_cpu_recipe(config)
  config.num_epochs = 21
  return config
