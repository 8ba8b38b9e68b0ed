"""Fine-tune an ImageNet ResNet-50 (timm's resnet50.a1_in1k) at 224 px.

Command:
  python main.py --config=configs/finetune_resnet50.py --workdir=/tmp/r50 \
    --config.data.root=../shared/data/kaggle200
  (--config.model.init_from=FILE.safetensors for a file already downloaded)

Every layer trains, the fresh one-logit head at 10x the learning rate;
AdamW 1e-4, 2 epochs, batch 32.

Measured 2026-11-25, 2-core Intel Xeon VM (CPU only), random weights of the
same shapes: 3.3 images/s for the train step, so about 2.7 hours for 2
epochs of kaggle200: a GPU config. Accuracy: not measured here (no network
to fetch the weights); docs/pretrained.md.
"""

import ml_collections

from configs import base
from configs import common


def get_config() -> ml_collections.ConfigDict:
  """timm's ResNet-50 fine-tuned whole, 2 epochs at 224 px."""
  config = base.get_config()
  common.apply_finetune(
    config,
    model=common.pretrained(
      'resnet50',
      'hf-hub:timm/resnet50.a1_in1k',
      stage_sizes=(3, 4, 6, 3),
      normalize='imagenet',
    ),
    learning_rate=1e-4,
  )
  config.optimizer.lr_multipliers = (('^logit/', 10.0),)
  return config
