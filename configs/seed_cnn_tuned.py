"""The seed's CNN, unchanged, trained with the common recipe.

Command:
  python main.py --config=configs/seed_cnn_tuned.py --workdir=/tmp/tuned \
    --config.data.root=../shared/data/kaggle200

The seed's exact network (255x255 input, 16,880,961 parameters; dropout 0.3
adds none), 30 epochs of batch 32: about 6 hours on a 2-core CPU.

Measured 2026-11-24, 2-core Intel Xeon VM (CPU only), kaggle200, with
--config.num_epochs=2 (1,004 steps): 44 min 45 s for the whole command;
test accuracy 0.7360.
"""

import ml_collections

from configs import base
from configs import common


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  """base.py's model with the common recipe."""
  config = base.get_config()
  common.apply_recipe(
    config,
    crop_min_area=0.6,
    color_jitter=0.1,
    learning_rate=5e-4,
    warmup_steps=500,
  )
  config.num_epochs = 30
  config.model.dropout_rate = 0.3
  return common.variant(config, variant)
