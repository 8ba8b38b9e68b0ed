"""Pretrained checkpoints: conversion checked against PyTorch references.

Every tensor of the reference models is scrambled (torch_reference.scramble)
before saving, so a swapped or mis-transposed tensor changes the outputs.
Logits are compared on the same photos (real ones from ../shared/data when
present, else synthetic), relative to the largest reference logit.
"""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from catdog_jax import mesh
from catdog_jax import models
from catdog_jax import state as state_lib
from catdog_jax.data import images as images_lib
from catdog_jax.data import input_pipeline
from catdog_jax.data import sources
from catdog_jax.errors import UsageError
from catdog_jax.models import pretrained
from tests import helpers

torch = pytest.importorskip('torch')
safetensors_torch = pytest.importorskip('safetensors.torch')
from tests.models import torch_reference  # noqa: E402 - needs torch.

TOLERANCE = 1e-4  # Relative: max |ours - reference| / max |reference|.
VIT_S = {'width': 384, 'depth': 12, 'num_heads': 6, 'mlp_dim': 1536}
REPO = helpers.REPO


def photos(size: int, count: int = 4) -> np.ndarray:
  """[0, 1] float32 images: real photos if ../shared is there."""
  folder = os.path.join(helpers.SHARED_DATA, 'kaggle-orig')
  if os.path.isdir(folder):
    source = sources.FolderSource(folder)
    keys = [
      os.path.join(kind, name)
      for kind in ('Cat', 'Dog')
      for name in sorted(os.listdir(os.path.join(folder, kind)))[: count // 2]
    ]
    images = [input_pipeline.load_image(source, key, size) for key in keys]
  else:
    rng = np.random.default_rng(0)
    images = [
      images_lib.resize(helpers.synthetic_image(i % 2, rng), size)
      for i in range(count)
    ]
  return np.stack(images).astype(np.float32) / 255.0


def torch_logits(model, images01, normalization: str, features=False):
  mean, std = (np.asarray(v, np.float32) for v in
               pretrained.backbones.NORMALIZATIONS[normalization])  # fmt: skip
  x = torch.from_numpy(((images01 - mean) / std).transpose(0, 3, 1, 2))
  with torch.no_grad():
    out = model.features(x) if features else model(x)[:, 0]
  return out.numpy()


def save_safetensors(model, path) -> str:
  state = {k: v.contiguous() for k, v in model.state_dict().items()}
  safetensors_torch.save_file(state, str(path))
  return str(path)


def model_config(name: str, **fields) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({'name': name, **fields})


def load_all(config, path, image_size: int):
  """(model, every variable loaded from `path`): the model's shapes traced,
  nothing initialised (compiling the initialisers costs seconds)."""
  model = models.create_model(config)
  shapes = models.variable_shapes(model, image_size)
  variables = pretrained.load_variables(config, shapes, path)
  assert not any(
    isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(variables)
  )
  return model, variables


def load(config, path, image_size: int):
  """(model, fresh variables, the same with `path`'s loaded): for the
  checks of what stays fresh."""
  model = models.create_model(config)
  images = jnp.zeros((1, image_size, image_size, 3))
  variables = jax.jit(model.init)(jax.random.key(0), images)  # Not op by op.
  fresh = {'params': variables['params'],
           'batch_stats': variables.get('batch_stats', {})}  # fmt: skip
  return model, fresh, pretrained.load_variables(config, fresh, path)


def relative_error(ours, reference) -> float:
  return float(np.abs(ours - reference).max() / np.abs(reference).max())


def assert_logits_match(reference, path: str, config, normalization: str):
  """Our model loaded from `path` gives the reference's logits on photos."""
  model, variables = load_all(config, path, 224)
  images = photos(224)
  ours = np.asarray(model.apply(variables, images))
  expected = torch_logits(reference, images, normalization)
  assert relative_error(ours, expected) < TOLERANCE


@pytest.fixture(scope='module')
def resnet_file(tmp_path_factory):
  """A scrambled ResNet-50 with an ImageNet-sized head, as timm saves it."""
  model = torch_reference.ResNet50(num_classes=1000).eval()
  torch_reference.scramble(model, seed=1)
  path = tmp_path_factory.mktemp('resnet') / 'resnet50.safetensors'
  return model, save_safetensors(model, path)


@pytest.mark.slow
def test_resnet50_safetensors_matches_pytorch(tmp_path):
  reference = torch_reference.ResNet50(num_classes=1).eval()
  torch_reference.scramble(reference, seed=0)
  path = save_safetensors(reference, tmp_path / 'r.safetensors')
  config = model_config('resnet50', dont_load=())  # The head too.
  assert_logits_match(reference, path, config, 'imagenet')


@pytest.mark.slow
def test_resnet50_head_is_fresh_and_features_match(resnet_file):
  reference, path = resnet_file
  config = model_config('resnet50')  # dont_load: the head, by default.
  model, fresh, variables = load(config, path, 224)
  images = photos(224)
  ours = np.asarray(model.apply(variables, images, features_only=True))
  expected = torch_logits(reference, images, 'imagenet', features=True)
  assert relative_error(ours, expected) < TOLERANCE
  for leaf in ('kernel', 'bias'):
    np.testing.assert_array_equal(
      variables['params']['logit'][leaf], fresh['params']['logit'][leaf]
    )


@pytest.fixture(scope='module')
def vit_reference():
  model = torch_reference.VisionTransformer(
    VIT_S['width'], VIT_S['depth'], VIT_S['num_heads'], VIT_S['mlp_dim'], 1
  ).eval()
  torch_reference.scramble(model, seed=2)
  return model


@pytest.mark.slow
def test_vit_safetensors_matches_pytorch(vit_reference, tmp_path):
  path = save_safetensors(vit_reference, tmp_path / 'vit.safetensors')
  config = model_config('vit', **VIT_S, dont_load=())
  assert_logits_match(vit_reference, path, config, 'inception')


@pytest.mark.slow
def test_vit_big_vision_npz_matches_pytorch(vit_reference, tmp_path):
  path = str(tmp_path / 'augreg.npz')
  np.savez(path, **torch_reference.big_vision_npz(vit_reference))
  config = model_config('vit', **VIT_S, dont_load=())
  assert_logits_match(vit_reference, path, config, 'inception')


def small_vit_file(tmp_path, image_size=32) -> str:
  model = torch_reference.VisionTransformer(32, 2, 2, 64, 1000, image_size)
  torch_reference.scramble(model, seed=3)
  return save_safetensors(model, tmp_path / 'small_vit.safetensors')


SMALL_VIT = {'width': 32, 'depth': 2, 'num_heads': 2, 'mlp_dim': 64}


def test_position_embeddings_are_resized_to_the_image_size(tmp_path):
  path = small_vit_file(tmp_path, image_size=64)  # A 4x4 grid of patches.
  config = model_config('vit', **SMALL_VIT)
  _, _, same = load(config, path, 64)
  _, _, larger = load(config, path, 96)  # 6x6.
  posemb = 'Transformer/posembed_input/pos_embedding'
  same = traverse_util.flatten_dict(same['params'], sep='/')[posemb]
  larger = traverse_util.flatten_dict(larger['params'], sep='/')[posemb]
  assert larger.shape == (1, 37, 32)
  np.testing.assert_array_equal(larger[:, 0], same[:, 0])  # The class token.
  # Bilinear: the corners of the grid stay where they were.
  grid, big = same[0, 1:].reshape(4, 4, 32), larger[0, 1:].reshape(6, 6, 32)
  np.testing.assert_allclose(big[0, 0], grid[0, 0], rtol=0.3, atol=0.05)
  assert np.abs(big.mean((0, 1)) - grid.mean((0, 1))).max() < 0.05


def test_a_checkpoint_that_does_not_fit_names_every_problem(tmp_path):
  model = torch_reference.VisionTransformer(32, 2, 2, 64, 1000, 32)
  state = {k: v.contiguous() for k, v in model.state_dict().items()}
  del state['blocks.1.norm2.bias']
  state['blocks.0.ls1.gamma'] = torch.ones(32)
  state['blocks.0.mlp.fc1.weight'] = torch.ones(48, 32)
  path = tmp_path / 'odd.safetensors'
  safetensors_torch.save_file(state, str(path))
  with pytest.raises(UsageError) as error:
    load(model_config('vit', **SMALL_VIT), str(path), 32)
  message = str(error.value)
  assert '\n' not in message
  assert 'missing (1): Transformer/encoderblock_1/LayerNorm_2/bias' in message
  assert 'unexpected (1): blocks.0.ls1.gamma' in message
  assert (
    'of another shape (1): Transformer/encoderblock_0/MlpBlock_3/Dense_0/'
    'kernel (32, 48) vs (32, 64)' in message
  )


def test_dont_load_keeps_what_it_matches_fresh(tmp_path):
  path = small_vit_file(tmp_path)
  config = model_config(
    'vit', **SMALL_VIT, dont_load=('^logit/', 'encoder_norm')
  )
  _, fresh, loaded = load(config, path, 32)
  fresh, loaded = (
    traverse_util.flatten_dict(fresh, sep='/'),
    traverse_util.flatten_dict(loaded, sep='/'),
  )
  for path_, value in loaded.items():
    same = np.array_equal(value, fresh[path_])
    assert same == ('logit/' in path_ or 'encoder_norm' in path_), path_


def test_a_fresh_state_is_the_checkpoint_on_the_same_fresh_initialisation(
  tmp_path,
):
  """Training's start: what initialising everything and then loading gives,
  without the loaded layers' initialisers in the compiled program."""
  path = small_vit_file(tmp_path)
  config = helpers.tiny_config('/data', ema_decay=0.9)
  config.model = model_config(
    'vit', **SMALL_VIT, dont_load=('^logit/', 'encoder_norm')
  )
  key = jax.random.key(3)
  state = state_lib.fresh_state(
    key, config, 1, path, mesh.create_shardings()[1]
  )
  init = functools.partial(state_lib.create_train_state, config=config,
                           num_steps=1)  # fmt: skip
  everything = jax.jit(init)(key)
  expected = pretrained.load_variables(
    config.model,
    {'params': everything.params, 'batch_stats': everything.batch_stats},
    path,
  )
  ours = {'params': state.params, 'batch_stats': state.batch_stats}
  jax.tree.map(np.testing.assert_array_equal, ours, expected)
  jax.tree.map(np.testing.assert_array_equal, state.ema_params, state.params)
  start = state_lib.pretrained_variables(config, path)
  loaded_program = jax.jit(init).lower(key, start=start).as_text()
  everything_program = jax.jit(init).lower(key).as_text()
  # Random bits drawn for the fresh layers only (and the key's split).
  drawn = loaded_program.count('threefry')
  assert 0 < 3 * drawn < everything_program.count('threefry')


def test_unknown_files_and_routes_are_one_line(tmp_path):
  with pytest.raises(UsageError, match='is not a file'):
    pretrained.resolve(str(tmp_path / 'none.safetensors'))
  (tmp_path / 'w.pt').write_bytes(b'x')
  with pytest.raises(UsageError, match=r'expected a \.safetensors'):
    pretrained.read_tensors(str(tmp_path / 'w.pt'))
  with pytest.raises(UsageError, match='no conversion from a .npz file'):
    pretrained.convert({}, 'resnet50', 'npz')


_HUB = """
import sys
from catdog_jax.models import pretrained
from catdog_jax.data import sources
try:
  print(pretrained.resolve(sys.argv[1]))
except pretrained.UsageError as e:
  print('error:', e)
"""


def run_hub(name: str, cache) -> str:
  """resolve() in a process whose hub cache is `cache`, offline."""
  env = {**os.environ, 'HF_HUB_CACHE': str(cache), 'HF_HUB_OFFLINE': '1'}
  result = subprocess.run(
    [sys.executable, '-c', _HUB, name],
    cwd=REPO, env=env, capture_output=True, text=True, check=True,
  )  # fmt: skip
  return result.stdout.strip()


@pytest.mark.slow
def test_hub_names_resolve_from_the_local_cache_and_say_what_to_do_offline(
  tmp_path,
):
  pytest.importorskip('huggingface_hub')
  # The layout huggingface_hub writes: refs/main names the snapshot.
  repo = tmp_path / 'models--timm--resnet50.a1_in1k'
  commit = 'a' * 40
  snapshot = repo / 'snapshots' / commit
  snapshot.mkdir(parents=True)
  (repo / 'refs').mkdir()
  (repo / 'refs' / 'main').write_text(commit)
  (snapshot / 'model.safetensors').write_bytes(b'weights')
  found = run_hub('hf-hub:timm/resnet50.a1_in1k', tmp_path)
  assert found == str(snapshot / 'model.safetensors')

  missing = run_hub('hf-hub:timm/vit_small_patch16_224.augreg_in21k', tmp_path)
  assert missing.startswith('error: cannot get hf-hub:timm/vit_small_patch16')
  assert (
    'download https://huggingface.co/timm/vit_small_patch16_224.augreg_in21k/'
    'resolve/main/model.safetensors and pass its path' in missing
  )
