"""The seed's recipe: its CNN at 255x255, Adam at a constant 1e-3, batch 32.

Command (without data.root: Microsoft's PetImages, downloaded once):
  python main.py --config=configs/base.py --workdir=/tmp/base \
    --config.data.root=../shared/data/kaggle200

Pixels scaled to [0, 1] on the device, no augmentation, no schedule, as the
seed trained. Every switch of the other configs is here, off. Ten epochs of
kaggle200 are 5,020 steps: about 2 hours on a 2-core CPU at ~23 images/s;
not run to the end here.

Measured 2026-11-24, 2-core Intel Xeon VM (CPU only), kaggle200, with
--config.num_epochs=1 (502 steps, before the speed-ups): 37 min 28 s; test
accuracy 0.6953.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  """The seed CNN trained the way the seed trained it."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 32
  config.num_epochs = 10
  # Overrides num_epochs when set; not a switch: leave it out to use epochs.
  config.num_train_steps = config_dict.placeholder(int)
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.checkpoints_to_keep = 3
  config.dtype = 'float32'
  # Convolutions on a CPU: 'xla' (float32, XLA's own), 'onednn_bf16'
  # (bfloat16 through oneDNN: CPUs with AMX or AVX512-BF16), 'onednn_f32'
  # (float32 through oneDNN: any x86-64 CPU) or 'auto' (oneDNN in bfloat16
  # where the CPU has it, else in float32, else XLA; the log says which).
  # Other platforms always use XLA's.
  config.cpu_convolutions = 'xla'
  # Target smoothing towards 0.5 (0: the seed's hard labels).
  config.label_smoothing = 0.0
  # Evaluate an exponential moving average of the weights with this decay
  # (0: none).
  config.ema_decay = 0.0
  # Progressive resizing: training runs at each of these image sizes (each
  # at most data.image_size) for an equal share of the steps, in order;
  # empty: at data.image_size throughout. Evaluation is at data.image_size.
  config.progressive_sizes = ()

  config.data = ml_collections.ConfigDict()
  # 'folder' reads data.root; 'tfds' reads the prepared TFDS dataset
  # data.name (split data.tfds_split, carved into train/val/test).
  config.data.source = 'folder'
  config.data.root = config_dict.placeholder(str)
  # A folder source with no data.root reads Microsoft's PetImages archive
  # (the file TFDS's cats_vs_dogs downloads, 787 MiB), fetched once into
  # data.download_dir (unset: $CATDOG_JAX_DATA, else ~/.cache/catdog_jax).
  config.data.download_dir = config_dict.placeholder(str)
  config.data.download_url = (
    'https://download.microsoft.com/download/3/E/1/'
    '3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip'
  )
  config.data.download_sha256 = (
    'b7974bd00a84a99921f36ee4403f089853777b5ae8d151c76a86e64900334af9'
  )
  config.data.name = 'cats_vs_dogs'
  config.data.tfds_split = 'train'
  config.data.tfds_data_dir = config_dict.placeholder(str)
  config.data.image_size = 255
  config.data.val_fraction = 0.1
  config.data.test_fraction = 0.1
  # Decode threads; 0 means one per CPU core.
  config.data.num_workers = 0
  config.data.prefetch_batches = 2
  # Training batches kept already placed on the devices ahead of the step
  # (0: each is placed when the step needs it).
  config.data.device_prefetch = 2
  # Keep the decoded, resized training images in memory after the first
  # pass (image_size**2 * 3 bytes each), so later epochs decode nothing.
  config.data.cache = False
  # Images whose header claims more pixels are skipped before decoding
  # (large JPEGs decode reduced: catdog_jax/data/images.py).
  config.data.max_pixels = 50_000_000
  # Perceptual hashes this close (in bits, of 64) mark near duplicates.
  config.data.near_duplicate_bits = 4

  # Random augmentation on the device, in the train step; all off by default.
  config.augment = ml_collections.ConfigDict()
  # Random resized crop of at least this fraction of the area (1.0: the
  # whole image, no crop).
  config.augment.crop_min_area = 1.0
  # Zooming out: crop boxes up to this multiple of the image's area, the
  # image placed at random inside, gray beyond it (1.0: never).
  config.augment.crop_max_area = 1.0
  config.augment.flip = False
  # Colour jitter: factors drawn from 1 +- these.
  config.augment.brightness = 0.0
  config.augment.contrast = 0.0
  config.augment.saturation = 0.0
  # Probability that an image is turned gray.
  config.augment.grayscale = 0.0
  # Gaussian blur of sigma drawn uniformly up to this many pixels (at the
  # training size), for every image.
  config.augment.blur = 0.0
  # CutMix: probability that an image gets a box of another image of the
  # batch pasted in (its label mixed by area).
  config.augment.cutmix = 0.0

  config.model = ml_collections.ConfigDict()
  config.model.name = 'seed_cnn'
  config.model.conv_features = (32, 64, 128)
  config.model.dense_features = (128, 64, 32)
  config.model.dropout_rate = 0.0

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 1e-3
  # 'constant' or 'warmup_cosine' (linear warm-up, cosine decay to 0).
  config.optimizer.schedule = 'constant'
  config.optimizer.warmup_steps = 0
  # adamw/sgd only; never applied to biases or norm scales.
  config.optimizer.weight_decay = 0.0
  # sgd only (Nesterov).
  config.optimizer.momentum = 0.9
  # Clipping by global norm (0: none).
  config.optimizer.grad_clip_norm = 0.0
  # ((regex, multiplier), ...): the learning rate of the parameters whose
  # path first matches a regex, scaled (empty: one rate for all).
  config.optimizer.lr_multipliers = ()
  # A regex of parameter paths ('layer1_0/conv1/kernel') that never train;
  # BatchNorm layers whose scale it matches keep their running statistics
  # (resnet50 and vit only). '': everything trains.
  config.optimizer.freeze = ''

  # How every evaluation (validation, test, predict, eval) sees an image.
  config.eval = ml_collections.ConfigDict()
  # Test-time augmentation: average the logits of each image and its mirror.
  config.eval.flip = False
  # Test-time augmentation: also average over copies shifted this many
  # pixels along both diagonals (0: none).
  config.eval.translate = 0
  # After the last step, recompute the BatchNorm running statistics at
  # data.image_size over this many batches of training images, un-augmented
  # (FixRes). 0: keep those of training.
  config.eval.recalibrate_bn_batches = 0
  # Fit a temperature on the final validation predictions and divide every
  # later logit by it (test, predict, eval, export, serve): probabilities
  # that mean what they say; no decision changes (evaluation/calibration.py).
  config.eval.temperature_scaling = False

  # Linear probe (catdog_jax/probe.py): no training steps; the frozen
  # pretrained backbone's features, computed once, and a logistic-regression
  # head fitted on them by full-batch Adam.
  config.probe = ml_collections.ConfigDict()
  config.probe.enabled = False
  config.probe.steps = 1000
  config.probe.learning_rate = 0.01
  # L2 penalty on the head's weights (standardised features).
  config.probe.l2 = 1e-3
  return config
