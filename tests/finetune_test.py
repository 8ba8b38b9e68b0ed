"""Fine-tuning and probing a pretrained checkpoint, end to end.

A small ResNet-50 (one bottleneck per stage) from the PyTorch reference,
scrambled and saved as timm would, is the pretrained checkpoint; the runs
are tiny (32 px, a few steps) but go through main's code paths.
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from flax import traverse_util

from catdog_jax import fileio
from catdog_jax import mesh
from catdog_jax import probe
from catdog_jax import settings
from catdog_jax import state as state_lib
from catdog_jax import train
from configs import finetune_resnet50
from configs import probe_resnet50
from tests import helpers

torch = pytest.importorskip('torch')
safetensors_torch = pytest.importorskip('safetensors.torch')
from tests.models import torch_reference  # noqa: E402 - needs torch.

TINY = {
  'model.stage_sizes': (1, 1, 1, 1),
  'data.image_size': 32,
  'data.val_fraction': 0.2,
  'data.test_fraction': 0.2,
  'data.num_workers': 2,
  'data.cache': False,
  'batch_size': 8,
  'num_train_steps': 6,
  'log_every_steps': 3,
  'eval_every_steps': 3,
  'checkpoint_every_steps': 3,
  'optimizer.warmup_steps': 2,
}
FROZEN = '^(?!logit/)'  # Everything but the head.


@pytest.fixture(scope='module')
def checkpoint_file(tmp_path_factory) -> str:
  model = torch_reference.ResNet50(num_classes=1000, stage_sizes=(1, 1, 1, 1))
  torch_reference.scramble(model, seed=4)
  path = tmp_path_factory.mktemp('r50') / 'small_resnet50.safetensors'
  state = {k: v.contiguous() for k, v in model.state_dict().items()}
  safetensors_torch.save_file(state, str(path))
  return str(path)


def tiny(module, root, init_from, **overrides):
  config = module.get_config()
  config.update_from_flattened_dict(TINY)
  config.data.root = root
  config.model.init_from = init_from
  config.update_from_flattened_dict(
    {k.replace('__', '.'): v for k, v in overrides.items()}
  )
  return config


def flat(tree) -> dict:
  return traverse_util.flatten_dict(jax.device_get(tree), sep='/')


@pytest.mark.slow
def test_fine_tuning_freezes_what_it_should_and_resumes_exactly(
  folder_dataset, checkpoint_file, tmp_path
):
  """The residual stages frozen, stem and head trained; a relaunch after a
  preemption restores the checkpoint and ends as the straight run."""
  config = tiny(finetune_resnet50, folder_dataset, checkpoint_file,
                optimizer__freeze='^layer')  # fmt: skip
  state = train.train_and_evaluate(config, tmp_path)
  init_rng, _ = jax.random.split(jax.random.key(config.seed))
  fresh = state_lib.fresh_state(  # As training starts.
    init_rng, config, 1, checkpoint_file, mesh.create_shardings()[1]
  )
  loaded = {'params': fresh.params, 'batch_stats': fresh.batch_stats}
  for collection in ('params', 'batch_stats'):
    start = flat(loaded[collection])
    for path, value in flat(getattr(state, collection)).items():
      if path.startswith('layer'):  # Bit-identical, statistics included.
        np.testing.assert_array_equal(value, start[path], err_msg=path)
      else:  # The stem (conv1, bn1) trained; the head from its fresh init.
        assert not np.array_equal(value, start[path]), path
  with open(tmp_path / 'config.json') as f:
    saved = json.load(f)['model']
  assert saved['init_sha256'] == fileio.sha256(checkpoint_file)
  with open(tmp_path / 'report.md') as f:
    assert saved['init_sha256'] in f.read()

  with open(tmp_path / 'eval_test.json') as f:
    straight = json.load(f)['log_loss']
  shutil.rmtree(tmp_path / 'checkpoints' / '6')  # Preempted after step 3.
  os.remove(tmp_path / 'eval_test.json')
  resumed = train.train_and_evaluate(config, tmp_path)
  assert int(resumed.step) == 6
  with open(tmp_path / 'eval_test.json') as f:
    assert json.load(f)['log_loss'] == pytest.approx(straight, rel=1e-5)


@pytest.mark.slow
def test_probe_fits_a_head_that_the_whole_model_predicts_with(
  folder_dataset, checkpoint_file, tmp_path
):
  config = tiny(probe_resnet50, folder_dataset, checkpoint_file)
  probe.probe_and_evaluate(config, tmp_path)
  with open(tmp_path / 'eval_test.json') as f:
    test_metrics = json.load(f)
  assert test_metrics['num_examples'] > 0 and 'accuracy' in test_metrics
  assert os.path.exists(tmp_path / 'report.md')

  # predict restores the checkpoint and runs the whole model on the images:
  # the same logits as the head on the cached features.
  whole_model, from_features = helpers.probe_logits(tmp_path)
  np.testing.assert_allclose(whole_model, from_features, rtol=1e-4,
                             atol=1e-4)  # fmt: skip
  # A second run reads the features instead of computing them.
  mtime = os.path.getmtime(tmp_path / 'features_train.npz')
  probe.probe_and_evaluate(config, tmp_path)
  assert os.path.getmtime(tmp_path / 'features_train.npz') == mtime


def test_probe_needs_pretrained_weights(folder_dataset, tmp_path):
  config = tiny(probe_resnet50, folder_dataset, None)
  with pytest.raises(probe.UsageError, match='needs pretrained weights'):
    probe.probe_and_evaluate(config, tmp_path)


def test_freeze_needs_a_model_that_can_freeze(folder_dataset, tmp_path):
  config = tiny(finetune_resnet50, folder_dataset, None)
  config.model = train.ml_collections.ConfigDict({'name': 'resnet'})
  config.optimizer.freeze = FROZEN
  with pytest.raises(settings.UsageError, match='cannot freeze'):
    settings.check_config(config)
