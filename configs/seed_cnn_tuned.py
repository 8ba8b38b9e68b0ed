"""The seed's CNN, unchanged, trained with the common recipe.

Command:
  python main.py --config=configs/seed_cnn_tuned.py --workdir=/tmp/tuned \
    --config.data.root=../shared/data/kaggle200

The seed's exact network (255x255 input, 16,880,961 parameters; dropout 0.3
adds none), 30 epochs of batch 32: about 6 hours on a 2-core CPU at ~23
images/s, so not run to the end here.

Measured 2026-11-24, 2-core Intel Xeon VM (CPU only), kaggle200, with
--config.num_epochs=2 (1,004 steps): 44 min 45 s for the whole command
(before the XLA:CPU options), peak RSS 7.4 GB; val accuracy 0.7555; test
accuracy 0.7360, F1 0.7383, ROC AUC 0.8041; kaggle-orig 0.7760 on all
1,000, 0.7802 on the 182 photos not in the training split.
Roofline (benchmarks/roofline.py, an estimate): 4.16 GFLOP and 334 MB per
train image; an H100 would train 10,037 to 118,701 images/s.
"""

import ml_collections

from configs import base
from configs import common


def get_config() -> ml_collections.ConfigDict:
  """base.py's model with the common recipe."""
  config = base.get_config()
  common.apply_recipe(config)
  config.num_epochs = 30
  config.model.dropout_rate = 0.3
  config.optimizer.learning_rate = 5e-4
  config.optimizer.warmup_steps = 500
  return config
