"""The seed's CNN, unchanged, trained with the recipe: how far training goes.

Command:
  python main.py --config=configs/seed_cnn_tuned.py --workdir=/tmp/tuned \
    --config.data.root=../shared/data/kaggle200

The architecture is the seed's (255x255 input, 16,880,961 parameters);
dropout adds none. What changes is the training: random resized crops,
flips and colour jitter on the device, AdamW with warm-up and cosine decay,
weight decay off biases, clipping, label smoothing, an EMA of the weights
for evaluation, flip test-time augmentation, and the decoded images cached
in memory (16,075 x 255 x 255 x 3 bytes, 3.1 GB).

Not measured yet: 30 epochs are 7,535 steps of batch 64, about 8 hours on
a 2-core CPU at the ~17 images/s the benchmarks measure for this model, so
it is meant for a GPU or a long CPU run.
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  """base.py's model with the training recipe of fast_cpu.py."""
  config = base.get_config()
  config.batch_size = 64
  config.num_epochs = 30
  config.label_smoothing = 0.1
  config.eval_flip = True

  config.data.cache = True

  config.augment.crop_min_area = 0.6
  config.augment.flip = True
  config.augment.brightness = 0.1
  config.augment.contrast = 0.1
  config.augment.saturation = 0.1

  config.model.dropout_rate = 0.3

  config.optimizer.name = 'adamw'
  config.optimizer.learning_rate = 5e-4
  config.optimizer.schedule = 'warmup_cosine'
  config.optimizer.warmup_steps = 500
  config.optimizer.weight_decay = 0.05
  config.optimizer.grad_clip_norm = 1.0
  return config
