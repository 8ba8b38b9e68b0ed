"""Tests for catdog_jax.models."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from catdog_jax import models
from catdog_jax.models import cnn
from catdog_jax.models import layers
from catdog_jax.models import resnet
from catdog_jax.models import summary
from catdog_jax.models import xception
from configs import base


def seed_model():
  return models.create_model(base.get_config().model)


def test_seed_cnn_has_the_seed_parameter_count():
  images = jnp.zeros((1, 255, 255, 3))
  variables = jax.eval_shape(seed_model().init, jax.random.key(0), images)
  assert summary.count_params(variables['params']) == 16_880_961


def test_summary_matches_the_seed_table():
  rows = summary.summarize(seed_model(), 255)
  names = [row[0] for row in rows]
  assert names == [
      'conv1', 'pool1', 'conv2', 'pool2', 'conv3', 'pool3', 'flatten',
      'dense1', 'dense2', 'dense3', 'logit',
  ]  # fmt: skip
  shapes = {row[0]: row[2] for row in rows}
  assert shapes['pool1'] == ('None', 128, 128, 32)
  assert shapes['pool3'] == ('None', 32, 32, 128)
  assert shapes['flatten'] == ('None', 131072)
  assert sum(row[3] for row in rows) == 16_880_961
  table = summary.format_summary(rows)
  assert '131072' in table and '16,880,961' in table


def test_summary_lists_each_layer_of_a_frozen_backbone_once():
  # Its frozen BatchNorm calls its parent's __call__: intercepted twice.
  from configs import finetune_resnet50

  rows = summary.summarize(
    models.create_model(finetune_resnet50.get_config().model), 64
  )
  names = [row[0] for row in rows]
  assert len(names) == len(set(names))
  assert names.count('bn1') == 1
  assert sum(row[3] for row in rows) == 23_510_081


@pytest.mark.parametrize('size, flat', [(96, 12 * 12 * 128), (64, 8192)])
def test_flatten_width_follows_image_size(size, flat):
  rows = summary.summarize(seed_model(), size)
  assert dict((r[0], r[2]) for r in rows)['flatten'] == ('None', flat)


def test_forward_gives_one_logit_per_image():
  model = models.create_model(
    ml_collections.ConfigDict(
      {'name': 'seed_cnn', 'conv_features': (4,), 'dense_features': (8,)}
    )
  )
  images = jnp.ones((3, 20, 20, 3))
  variables = model.init(jax.random.key(0), images)
  logits = model.apply(variables, images)
  assert logits.shape == (3,) and logits.dtype == jnp.float32


def test_bfloat16_computation_keeps_float32_params():
  model = models.create_model(base.get_config().model, dtype=jnp.bfloat16)
  images = jnp.zeros((1, 32, 32, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  dtypes = {x.dtype for x in jax.tree.leaves(variables)}
  assert dtypes == {jnp.dtype('float32')}


def test_unknown_model_lists_the_known_ones():
  with pytest.raises(ValueError, match='known: seed_cnn, resnet'):
    models.create_model(ml_collections.ConfigDict({'name': 'vgg'}))


@pytest.mark.parametrize('size', [255, 128, 7])
def test_max_pool_matches_same_padded_max_pool(size):
  x = jax.random.normal(jax.random.key(size), (2, size, size + 1, 3))
  expected = nn.max_pool(x, (2, 2), strides=(2, 2), padding='SAME')
  got = layers.MaxPool2x2().apply({}, x)
  assert got.shape == expected.shape
  np.testing.assert_array_equal(got, expected)


def tiny_resnet():
  return resnet.ResNet(stage_sizes=(1, 1), widths=(4, 8))


def test_resnet18_has_the_expected_parameter_count():
  # CIFAR-style ResNet-18 (11,169,345 with one output) plus the 4,800
  # biases of its 20 convolutions, which flax's Conv keeps as Keras' does.
  images = jnp.zeros((1, 64, 64, 3))
  variables = jax.eval_shape(resnet.ResNet().init, jax.random.key(0), images)
  assert summary.count_params(variables['params']) == 11_174_145


def test_resnet_stem_pool_halves_the_resolution_and_adds_no_parameters():
  def layout(model):
    rows = summary.summarize(model, 32)
    shapes = {name: shape for name, _, shape, _ in rows}
    return shapes['stage2_0'], sum(row[3] for row in rows)

  plain = layout(resnet.ResNet((1, 1), (8, 16), stem_strides=2))
  pooled = layout(
    resnet.ResNet((1, 1), (8, 16), stem_strides=2, stem_pool=True)
  )
  assert plain[0] == ('None', 8, 8, 16)
  assert pooled[0] == ('None', 4, 4, 16)
  assert plain[1] == pooled[1]


def test_resnet_updates_batch_stats_in_training_only():
  model = tiny_resnet()
  images = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3))
  variables = model.init(jax.random.key(1), images)
  assert set(variables) == {'params', 'batch_stats'}
  logits, updates = model.apply(
    variables, images, train=True, mutable=['batch_stats']
  )
  assert logits.shape == (4,)
  before = jax.tree.leaves(variables['batch_stats'])
  after = jax.tree.leaves(updates['batch_stats'])
  assert any(not np.allclose(a, b) for a, b in zip(after, before, strict=True))
  # Evaluation uses the running statistics: no state to update.
  np.testing.assert_array_equal(
    model.apply(variables, images), model.apply(variables, images)
  )


def test_mini_xception_has_the_keras_example_layout():
  rows = summary.summarize(xception.MiniXception(), 180)
  shapes = {name: shape for name, _, shape, _ in rows}
  assert shapes['stem'] == ('None', 90, 90, 128)
  assert shapes['block3_proj'] == ('None', 12, 12, 728)
  assert shapes['pool'] == ('None', 1024)
  assert sum(row[3] for row in rows) == 2_722_777


def test_seed_dropout_adds_no_parameters_and_acts_in_training_only():
  model = cnn.SeedCNN(
    conv_features=(4,), dense_features=(32,), dropout_rate=0.5
  )
  images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
  variables = model.init(jax.random.key(1), images)
  plain = cnn.SeedCNN(conv_features=(4,), dense_features=(32,))
  np.testing.assert_array_equal(
    model.apply(variables, images), plain.apply(variables, images)
  )
  dropped = model.apply(
    variables, images, train=True, rngs={'dropout': jax.random.key(2)}
  )
  assert not np.allclose(dropped, plain.apply(variables, images))


def test_unknown_fields_names_fields_the_model_lacks():
  config = base.get_config().model
  assert models.unknown_fields(config) == []
  config.name = 'resnet'
  assert models.unknown_fields(config) == [
    'conv_features', 'dense_features', 'dropout_rate'
  ]  # fmt: skip
