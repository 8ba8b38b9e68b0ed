"""Linear probe of timm's ResNet-50: the CPU route to pretrained accuracy.

Command:
  python main.py --config=configs/probe_resnet50.py --workdir=/tmp/probe \
    --config.data.root=../shared/data/kaggle200

No training steps: the frozen backbone runs once over every split at 224 px
(features cached in the workdir), then a logistic-regression head is fitted
on the 2,048 pooled features (probe.steps full-batch Adam steps).

Measured 2026-11-25, 2-core Intel Xeon VM (CPU only), random weights of the
same shapes: features at 19.0 images/s (kaggle200's 20,000 photos: about
18 min, once), the head's fit 10 s. Accuracy: not measured here (no network
to fetch the weights); docs/pretrained.md.
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
  config.probe.enabled = True
  config.optimizer.freeze = '^(?!logit/)'  # Everything but the head.
  config.batch_size = 64
  config.data.image_size = 224
  return config
