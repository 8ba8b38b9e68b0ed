"""The accuracy recipe that the tuned configs share, chosen on validation.

Each variant config is `base.get_config()`, then `apply_recipe` (and
`resnet` where it trains the ResNet), then its own overrides. Variants never
import one another, so a change here reaches every tuned config and nothing
else; what each of these settings does is in configs/base.py, and what it
was worth in the README's tables.
"""

import ml_collections


def apply_recipe(config: ml_collections.ConfigDict) -> None:
  """Augmentation on the device, AdamW with warm-up and cosine, and TTA."""
  config.label_smoothing = 0.1
  config.eval_flip = True
  config.data.cache = True

  config.augment.crop_min_area = 0.6
  config.augment.flip = True
  config.augment.brightness = 0.1
  config.augment.contrast = 0.1
  config.augment.saturation = 0.1

  config.optimizer.name = 'adamw'
  config.optimizer.schedule = 'warmup_cosine'
  config.optimizer.weight_decay = 0.05
  config.optimizer.grad_clip_norm = 1.0


def resnet(
  stage_sizes: tuple[int, ...],
  widths: tuple[int, ...],
  stem_strides: int = 2,
  stem_pool: bool = False,
) -> ml_collections.ConfigDict:
  """A `model` config for models.ResNet."""
  return ml_collections.ConfigDict(
    {
      'name': 'resnet',
      'stage_sizes': stage_sizes,
      'widths': widths,
      'stem_strides': stem_strides,
      'stem_pool': stem_pool,
    }
  )


def apply_cpu_recipe(config: ml_collections.ConfigDict) -> None:
  """The common recipe as the CPU configs run it: the half-width ResNet-10
  with a whitened, pooled stem, 96 to 160 px, lighter augmentation, a
  higher learning rate and shifted copies in the test-time augmentation
  (measured in the README's accuracy section)."""
  apply_recipe(config)
  config.batch_size = 64
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.data.image_size = 160
  config.progressive_sizes = (96, 112, 128, 128, 160, 160)
  config.model = resnet((1, 1, 1, 1), (32, 64, 128, 256), stem_pool=True)
  config.whiten_stem = True
  config.augment.crop_min_area = 0.8
  config.augment.brightness = 0.0
  config.augment.contrast = 0.0
  config.augment.saturation = 0.0
  config.optimizer.learning_rate = 1.2e-2
  config.optimizer.warmup_steps = 200
  config.eval_translate = 3


def apply_finetune(config: ml_collections.ConfigDict) -> None:
  """The common recipe, shortened for fine-tuning at 224 px."""
  apply_recipe(config)
  config.batch_size = 32
  config.num_epochs = 2
  config.eval_every_steps = 250
  config.checkpoint_every_steps = 250
  config.data.image_size = 224
  config.optimizer.warmup_steps = 100


def pretrained(
  name: str, init_from: str, **fields
) -> ml_collections.ConfigDict:
  """A `model` config for a backbone of backbones.py loading `init_from`
  (a file or hf-hub:timm/NAME), its head fresh."""
  return ml_collections.ConfigDict(
    {
      'name': name,
      **fields,
      'init_from': init_from,
      # Filled with the file's sha256 when a run starts; set it to pin one.
      'init_sha256': '',
      'dont_load': ('^logit/',),
    }
  )
