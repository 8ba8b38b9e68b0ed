"""Linear probe of timm's ResNet-50: the CPU route to pretrained accuracy.

Command:
  python main.py --config=configs/probe_resnet50.py --workdir=/tmp/probe \
    --config.data.root=../shared/data/kaggle200

No training steps: the frozen backbone runs once over every split at 224 px
(features cached in the workdir), then a logistic-regression head is fitted
on the 2,048 pooled features (1,000 full-batch Adam steps, L2 1e-3).

Measured 2026-11-25, 2-core Intel Xeon VM (CPU only), random weights of the
same shapes: features
19.0 images/s (kaggle200's 20,000 photos: about 18 min, once), the head's
fit on 16,000 x 2,048 features 10 s.
Accuracy: not measured here (no network to fetch the weights). Anchors:
README, "Pretrained backbones".
"""

import ml_collections

from configs import base
from configs import common


def get_config() -> ml_collections.ConfigDict:
  """ResNet-50 features once, then a fitted logistic-regression head."""
  config = base.get_config()
  config.model = common.pretrained(
    'resnet50',
    'hf-hub:timm/resnet50.a1_in1k',
    stage_sizes=(3, 4, 6, 3),
    normalize='imagenet',
  )
  config.probe = True
  config.freeze = '^(?!logit/)'  # Everything but the head.
  config.batch_size = 64
  config.data.image_size = 224
  # The head's fit: Adam at this rate, this L2 penalty (probe.fit_head).
  config.optimizer.name = 'adamw'
  config.optimizer.learning_rate = 0.01
  config.optimizer.weight_decay = 1e-3
  return config
