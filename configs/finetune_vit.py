"""Fine-tune an AugReg ViT-S/16 (ImageNet-21k, then 1k) at 224 px.

Command:
  python main.py --config=configs/finetune_vit.py --workdir=/tmp/vit \
    --config.data.root=../shared/data/kaggle200
  (--config.model.init_from=FILE.npz for big_vision's own AugReg file;
  ViT-B/16: --config.model.width=768 --config.model.mlp_dim=3072
  --config.model.num_heads=12 and a B/16 checkpoint)

Every layer trains; big_vision's fine-tuning recipe: SGD with momentum at
0.01, warm-up and cosine, gradients clipped at norm 1, no weight decay;
flip and crop augmentation, 2 epochs, batch 32.

Measured 2026-11-25, 2-core Intel Xeon VM (CPU only), random weights of the
same shapes: train step 3.3
images/s, evaluation (with the flip) 8.4 images/s: about 2.7 hours for 2
epochs of kaggle200; a GPU config.
Accuracy: not measured here (no network to fetch the weights). Anchors:
README, "Pretrained backbones".
"""

import ml_collections

from configs import base
from configs import common


def get_config() -> ml_collections.ConfigDict:
  """timm's AugReg ViT-S/16 fine-tuned whole, 2 epochs at 224 px."""
  config = base.get_config()
  common.apply_finetune(config)
  config.model = common.pretrained(
    'vit',
    'hf-hub:timm/vit_small_patch16_224.augreg_in21k_ft_in1k',
    patch_size=16,
    width=384,
    depth=12,
    mlp_dim=1536,
    num_heads=6,
    normalize='inception',
  )
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.01
  config.optimizer.weight_decay = 0.0
  return config
