"""The best-accuracy recipe for a GPU or TPU budget: ResNet-18 at 160x160.

Command:
  python main.py --config=configs/gpu.py --workdir=/tmp/gpu \
    --config.data.root=../shared/data/kaggle200

A full-width ResNet-18 layout (11.2M parameters; a stride-2 stem, then
stages at 80, 40, 20 and 10 pixels), bfloat16 compute with float32 weights
and loss, batch 128, 60 epochs (7,535 steps) with the recipe of fast_cpu.py.

Expected time, an estimate, not a measurement: XLA's cost analysis puts
the train step at 20.4 GFLOP per image, so 60 epochs of kaggle200's 16,075
training photos are about 20 PFLOP; at a sustained 30 TFLOP/s (an assumed
fraction of a current GPU's bfloat16 peak) that is about 11 minutes of
steps, plus indexing, caching (1.2 GB at 160 px) and evaluation. No GPU or
TPU was available to this project when it was written, so neither its time
nor its accuracy has been measured; they will be recorded here once run.
"""

import ml_collections

from configs import fast_cpu


def get_config() -> ml_collections.ConfigDict:
  """fast_cpu.py's recipe, scaled up in width, resolution and epochs."""
  config = fast_cpu.get_config()
  config.batch_size = 128
  config.num_epochs = 60
  config.dtype = 'bfloat16'
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000

  config.data.image_size = 160
  # 160 px throughout, as the estimate below assumes (fast_cpu's 48-80 px
  # schedule is for its 80 px input).
  config.progressive_sizes = ()
  config.augment.crop_min_area = 0.25

  config.model.stage_sizes = (2, 2, 2, 2)
  config.model.widths = (64, 128, 256, 512)

  config.optimizer.learning_rate = 2e-3
  config.optimizer.warmup_steps = 500
  return config
