"""Fine-tune an AugReg ViT-S/16 (ImageNet-21k, then 1k) at 224 px.

Command:
  python main.py --config=configs/finetune_vit.py --workdir=/tmp/vit \
    --config.data.root=../shared/data/kaggle200
  (--config.model.init_from=FILE.npz for big_vision's own AugReg file;
  ViT-B/16: --config.model.width=768 --config.model.mlp_dim=3072
  --config.model.num_heads=12 and a B/16 checkpoint)

Every layer trains; big_vision's fine-tuning recipe: SGD with momentum at
0.01, no weight decay, 2 epochs, batch 32.

Measured 2026-11-25, 2-core Intel Xeon VM (CPU only), random weights of the
same shapes: 3.3 images/s for the train step, so about 2.7 hours for 2
epochs of kaggle200: a GPU config. Accuracy: not measured here (no network
to fetch the weights); docs/pretrained.md.
"""

import ml_collections

from configs import base
from configs import common


def get_config() -> ml_collections.ConfigDict:
  """timm's AugReg ViT-S/16 fine-tuned whole, 2 epochs at 224 px."""
  config = base.get_config()
  common.apply_finetune(
    config,
    model=common.pretrained(
      'vit',
      'hf-hub:timm/vit_small_patch16_224.augreg_in21k_ft_in1k',
      patch_size=16,
      width=384,
      depth=12,
      mlp_dim=1536,
      num_heads=6,
      normalize='inception',
    ),
    learning_rate=0.01,
    optimizer='sgd',
    weight_decay=0.0,
  )
  return config
