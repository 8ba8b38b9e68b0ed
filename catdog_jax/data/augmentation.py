"""What the `augment` group asks of training images, read from the config
alone: the trainer (`augment.py` runs it on the device) and the report (it
says what training's loss was measured on) both ask.
"""

import ml_collections


def crops(config: ml_collections.ConfigDict) -> bool:
  """Whether `config` (the `augment` group) asks for random resized crops."""
  return config.crop_min_area < 1 or config.crop_max_area > 1


def is_enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether `config` (the `augment` group) changes any image."""
  return bool(
    crops(config)
    or config.flip
    or config.brightness
    or config.contrast
    or config.saturation
    or config.grayscale
    or config.blur
  )
