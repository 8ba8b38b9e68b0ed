"""The best test accuracy in 30 minutes on a 2-core CPU: a small ResNet.

Command:
  python main.py --config=configs/fast_cpu.py --workdir=/tmp/fast_cpu \
    --config.data.root=../shared/data/kaggle200

Not measured yet.
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  """A ResNet-10 at half width on 64x64 images, with the whole recipe."""
  config = base.get_config()
  config.batch_size = 64
  config.num_epochs = 14
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.label_smoothing = 0.1
  config.eval_flip = True

  config.data.image_size = 64
  config.data.cache = True

  config.augment.crop_min_area = 0.6
  config.augment.flip = True
  config.augment.brightness = 0.1
  config.augment.contrast = 0.1
  config.augment.saturation = 0.1

  config.model = ml_collections.ConfigDict()
  config.model.name = 'resnet'
  config.model.stage_sizes = (1, 1, 1, 1)
  config.model.widths = (32, 64, 128, 256)
  config.model.stem_strides = 2

  config.optimizer.name = 'adamw'
  config.optimizer.learning_rate = 2e-3
  config.optimizer.schedule = 'warmup_cosine'
  config.optimizer.warmup_steps = 200
  config.optimizer.weight_decay = 0.05
  config.optimizer.grad_clip_norm = 1.0
  return config
