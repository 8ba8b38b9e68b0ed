"""Tests for catdog_jax.augment, on synthetic arrays."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from catdog_jax import augment
from catdog_jax.data import augmentation
from configs import base

SIZE = 24


def augment_config(**fields):
  config = ml_collections.ConfigDict(base.get_config().augment.to_dict())
  config.update(fields)
  return config


def augmenter(config, size=None):
  """augment.augment for `config`, jitted as the train step runs it: op by
  op, each primitive of the vmapped pipeline would compile on its own."""
  return jax.jit(functools.partial(augment.augment, config=config, size=size))


def augmented(rng, images, config, size=None):
  return augmenter(config, size)(rng, images)


def ramp(batch: int = 64):
  """Images whose value is the column's position, 0 at left to 1 at right."""
  row = jnp.linspace(0.0, 1.0, SIZE)
  return jnp.broadcast_to(row[None, None, :, None], (batch, SIZE, SIZE, 3))


def test_the_seed_recipe_augments_nothing():
  assert not augmentation.is_enabled(base.get_config().augment)
  assert augmentation.is_enabled(augment_config(flip=True))


def test_flip_mirrors_some_images_and_keeps_the_others():
  images = ramp()
  out = augmented(jax.random.key(0), images, augment_config(flip=True))
  kept = np.all(out == images, axis=(1, 2, 3))
  mirrored = np.all(out == images[:, :, ::-1], axis=(1, 2, 3))
  assert np.all(kept | mirrored)
  assert 10 < kept.sum() < 54


def test_crop_zooms_in_on_at_least_its_minimum_area():
  min_area = 0.4
  config = augment_config(crop_min_area=min_area)
  out = np.asarray(augmented(jax.random.key(1), ramp(), config))
  assert out.shape == (64, SIZE, SIZE, 3)
  # A crop spans crop_w / width of the ramp: at least sqrt(area * 3/4).
  spans = out[:, SIZE // 2, -1, 0] - out[:, SIZE // 2, 0, 0]
  assert np.all(spans >= np.sqrt(min_area * 3 / 4) - 0.1)
  assert np.all(spans <= 1.0 + 1e-6)
  assert np.median(spans) < 0.95  # It does zoom in.
  # Interpolation keeps a flat image flat.
  flat = jnp.full((4, SIZE, SIZE, 3), 0.3)
  np.testing.assert_allclose(
    augmented(jax.random.key(2), flat, config), 0.3, atol=1e-5
  )


def test_crop_interpolates_as_jax_image_scale_and_translate():
  # The gathers of sample_rows against jax's dense resampling, on random
  # crops (random aspect, position and zoom) of a random image.
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.random((40, 30, 3)), jnp.float32)
  for seed in range(8):
    crop_rng = jax.random.key(seed)
    out = augment.random_resized_crop(crop_rng, image, 0.2, SIZE)
    top, left, crop_h, crop_w = augment.random_crop_box(crop_rng, (40, 30), 0.2)
    scale = jnp.stack([SIZE / crop_h, SIZE / crop_w])
    expected = jax.image.scale_and_translate(
      image,
      (SIZE, SIZE, 3),
      spatial_dims=(0, 1),
      scale=scale,
      translation=-jnp.stack([top, left]) * scale,
      method='linear',
      antialias=False,
    )
    np.testing.assert_allclose(out, expected, atol=1e-5)
    mirrored = augment.random_resized_crop(crop_rng, image, 0.2, SIZE, True)
    np.testing.assert_allclose(mirrored, expected[:, ::-1], atol=1e-5)


def test_zooming_out_shows_the_whole_image_smaller_inside_gray():
  # Boxes of 1.5 to 2.5 times the image: the image covers 1 / area of the
  # output (within a pixel a side), gray around it, its ramp kept whole.
  image = ramp(1)[0]
  for seed in range(8):
    crop_rng = jax.random.key(seed)
    out = np.asarray(
      augment.random_resized_crop(crop_rng, image, 1.5, SIZE, max_area=2.5)
    )
    _, _, crop_h, crop_w = augment.random_crop_box(
      crop_rng, (SIZE, SIZE), 1.5, 2.5
    )
    assert crop_h > SIZE and crop_w > SIZE
    gray = np.all(out == augment.ZOOM_OUT_FILL, axis=-1)
    rows = np.flatnonzero(~gray.all(axis=1))
    columns = np.flatnonzero(~gray.all(axis=0))
    assert abs(len(rows) - SIZE * SIZE / crop_h) <= 1
    assert abs(len(columns) - SIZE * SIZE / crop_w) <= 1
    assert gray.sum() == gray.size - len(rows) * len(columns)
    shown = out[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1, 0]
    assert shown[:, 0].max() < 0.1 and shown[:, -1].min() > 0.9
    assert np.all(np.diff(shown, axis=1) > 0)
    mirrored = augment.random_resized_crop(
      crop_rng, image, 1.5, SIZE, True, max_area=2.5
    )
    np.testing.assert_allclose(mirrored, out[:, ::-1], atol=1e-6)


def test_zooming_out_alone_is_a_crop_switch():
  config = augment_config(crop_max_area=2.0)
  assert augmentation.crops(config) and augmentation.is_enabled(config)
  out = np.asarray(augmented(jax.random.key(3), ramp(8), config))
  # Every box is at least the image's size: gray shows in nearly all.
  assert (out == augment.ZOOM_OUT_FILL).all(axis=-1).any(axis=(1, 2)).sum() >= 6


def test_crop_and_resize_give_the_requested_size():
  images = ramp(8)
  crops = augmented(
    jax.random.key(7), images, augment_config(crop_min_area=0.5), size=16
  )
  assert crops.shape == (8, 16, 16, 3)
  # Still left-to-right ramps, each zoomed in on its own crop.
  assert np.all(np.diff(np.asarray(crops)[:, 8, :, 0], axis=1) > 0)
  assert len(np.unique(np.asarray(crops)[:, 8, 0, 0].round(4))) > 1
  # Without crops the whole image is resized (then maybe mirrored).
  out = augmented(jax.random.key(8), images, augment_config(flip=True), size=16)
  resized = jax.image.resize(images, (8, 16, 16, 3), 'linear')
  kept = np.all(np.isclose(out, resized, atol=1e-6), axis=(1, 2, 3))
  mirrored = np.all(
    np.isclose(out, resized[:, :, ::-1], atol=1e-6), axis=(1, 2, 3)
  )
  assert np.all(kept | mirrored) and kept.any() and mirrored.any()


def test_color_jitter_varies_images_within_range():
  images = jax.random.uniform(jax.random.key(3), (16, SIZE, SIZE, 3))
  config = augment_config(brightness=0.3, contrast=0.3, saturation=0.3)
  out = np.asarray(augmented(jax.random.key(4), images, config))
  assert out.min() >= 0.0 and out.max() <= 1.0
  changes = np.abs(out - np.asarray(images)).mean(axis=(1, 2, 3))
  assert np.all(changes > 1e-3) and np.std(changes) > 1e-4


def test_same_rng_same_images_other_rng_other_images():
  config = augment_config(crop_min_area=0.3, flip=True, brightness=0.2)
  images = ramp(8)
  augment_fn = augmenter(config)  # One compile for the three calls.
  first = augment_fn(jax.random.key(5), images)
  np.testing.assert_array_equal(first, augment_fn(jax.random.key(5), images))
  assert not np.allclose(first, augment_fn(jax.random.key(6), images))


def test_grayscale_turns_some_images_gray_and_keeps_the_others():
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.random((64, SIZE, SIZE, 3)), jnp.float32)
  out = np.asarray(
    augmented(jax.random.key(0), images, augment_config(grayscale=0.5))
  )
  gray = np.all(np.ptp(out, axis=-1) < 1e-6, axis=(1, 2))
  kept = np.all(out == np.asarray(images), axis=(1, 2, 3))
  assert np.all(gray | kept) and 16 < gray.sum() < 48
  luma = np.asarray(images[gray]) @ np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(out[gray][..., 0], luma, atol=1e-5)


def test_blur_keeps_the_mean_and_lowers_the_detail():
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.random((16, SIZE, SIZE, 3)), jnp.float32)
  out = np.asarray(
    augmented(jax.random.key(1), images, augment_config(blur=2.0))
  )
  np.testing.assert_allclose(out.mean(), np.asarray(images).mean(), atol=5e-3)
  detail = np.abs(np.diff(out, axis=2)).mean(axis=(1, 2, 3))
  before = np.abs(np.diff(np.asarray(images), axis=2)).mean(axis=(1, 2, 3))
  assert np.all(detail <= before + 1e-6) and detail.mean() < 0.8 * before.mean()
  # A flat image stays flat: the weights sum to one, the border reflects.
  flat = augment.gaussian_blur(jax.random.key(2), jnp.full((8, 8, 3), 0.3), 2)
  np.testing.assert_allclose(flat, 0.3, atol=1e-6)


def test_cutmix_pastes_a_box_and_mixes_labels_by_its_area():
  batch = 64
  images = jnp.broadcast_to(
    jnp.arange(batch, dtype=jnp.float32)[:, None, None, None],
    (batch, SIZE, SIZE, 3),
  )
  labels = jnp.arange(batch) % 2
  out, targets = augment.cutmix(jax.random.key(0), images, labels, 0.5)
  out, targets = np.asarray(out), np.asarray(targets)
  for i in range(batch):
    values, counts = np.unique(out[i, ..., 0], return_counts=True)
    own = counts[values == i].sum() / SIZE**2 if i in values else 0.0
    assert len(values) <= 2
    partner = values[values != i]
    partner_label = int(partner[0]) % 2 if len(partner) else labels[i]
    expected = own * int(labels[i]) + (1 - own) * partner_label
    np.testing.assert_allclose(targets[i], expected, atol=1e-6)
  mixed = np.array([len(np.unique(o[..., 0])) == 2 for o in out])
  assert 16 < mixed.sum() < 48
  # Off, nothing changes.
  same, hard = augment.cutmix(jax.random.key(0), images, labels, 0.0)
  np.testing.assert_array_equal(same, images)
  np.testing.assert_array_equal(hard, labels)
