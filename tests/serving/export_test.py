"""--mode=export: one file that runs with jax alone, predicting as predict."""

import json
import os
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from catdog_jax import train
from catdog_jax.data import images
from catdog_jax.errors import UsageError
from catdog_jax.evaluation import predict
from catdog_jax.serving import export
from tests import helpers

# Any of these imported by the loader would mean it needs this project.
FORBIDDEN = ('catdog_jax', 'flax', 'optax', 'orbax')
GUARD = f"""
import sys
class Forbid:
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in {FORBIDDEN!r}:
      raise ImportError(f'the loader imported {{name}}')
sys.meta_path.insert(0, Forbid())
"""


def load(folder):
  with open(os.path.join(folder, export.ARTIFACT), 'rb') as f:
    return jax.export.deserialize(bytearray(f.read()))


def photos_as_inputs(paths, size):
  """The photos as the exported model takes them: RGB uint8 at its size."""
  inputs = []
  for path in paths:
    with open(path, 'rb') as f:
      inputs.append(images.resize(images.decode_rgb(f.read()), size))
  return np.stack(inputs)


def assert_exported_predicts_as_predict(workdir, photos):
  folder = export.export_workdir(workdir)
  rows, _ = predict.predict(workdir, photos)
  size = predict.load_config(workdir).data.image_size
  paths = [row['path'] for row in rows]
  got = np.asarray(load(folder).call(photos_as_inputs(paths, size)))
  np.testing.assert_allclose(got, [r['prob_dog'] for r in rows], atol=1e-5)
  return folder


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  root = tmp_path_factory.mktemp('photos')
  helpers.write_dataset(root, 'folders', per_class=4, seed=11)
  return str(root)


def test_the_seed_cnn_exports_and_predicts_as_predict(trained_run, photos):
  folder = assert_exported_predicts_as_predict(trained_run.workdir, photos)
  with open(os.path.join(folder, export.METADATA)) as f:
    meta = json.load(f)
  assert meta['classes'] == ['cat', 'dog'] and meta['input']['size'] == 32
  assert meta['checkpoint_step'] == 40 and len(meta['weights_sha256']) == 64
  assert 'accuracy' in meta['measured']['validation']
  assert meta['decision'] == 'dog when p(dog) >= 0.5, else cat'


@pytest.mark.slow  # Trains two small models.
def test_the_cpu_resnet_and_a_backbone_export_exactly(
  flat_dataset, photos, tmp_path
):
  resnet = helpers.tiny_recipe_config(
    flat_dataset, num_train_steps=10, model__whiten_stem=True,
    model__stem_pool=True, eval__translate=1,
  )  # fmt: skip
  backbone = helpers.tiny_config(flat_dataset, num_train_steps=5)
  backbone.model = ml_collections.ConfigDict(
    {'name': 'resnet50', 'stage_sizes': (1, 1, 1, 1), 'normalize': 'imagenet'}
  )
  for name, config in (('resnet', resnet), ('resnet50', backbone)):
    train.train_and_evaluate(config, str(tmp_path / name))
    assert_exported_predicts_as_predict(str(tmp_path / name), photos)


def test_the_documented_lines_run_with_jax_alone(trained_run, tmp_path):
  folder = export.export_workdir(trained_run.workdir, str(tmp_path / 'out'))
  with open(os.path.join(folder, export.METADATA)) as f:
    lines = json.load(f)['load_and_run']
  assert len(lines) <= 12
  result = subprocess.run(
    [sys.executable, '-c', GUARD + '\n'.join(lines)],
    cwd=folder, capture_output=True, text=True, timeout=120,
    env={k: v for k, v in os.environ.items() if k != 'PYTHONPATH'},
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-2000:]
  expected = np.asarray(load(folder).call(np.zeros((2, 32, 32, 3), np.uint8)))
  assert "['" in result.stdout and f'{expected[0]:.4f}'[:5] in result.stdout


def test_the_guard_would_catch_an_import():
  result = subprocess.run(
    [sys.executable, '-c', GUARD + 'import flax'],
    capture_output=True, text=True, timeout=60,
  )  # fmt: skip
  assert result.returncode != 0 and 'the loader imported flax' in result.stderr


def test_what_cannot_export_says_so_in_one_line(
  trained_run, tmp_path, monkeypatch
):
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(UsageError, match='config.json is missing'):
    export.export_workdir(str(empty))

  def fails(*args, **kwargs):
    raise NotImplementedError('no lowering for op "foo" on cuda\nmore')

  monkeypatch.setattr(export.jax.export, 'export', fails)
  with pytest.raises(UsageError) as error:
    export.export_workdir(trained_run.workdir, str(tmp_path / 'x'))
  assert str(error.value) == (
    "model 'seed_cnn' does not export: NotImplementedError: no lowering for "
    'op "foo" on cuda'
  )


def test_the_measured_figures_carry_their_caveats(
  trained_run, folder_dataset, tmp_path
):
  """A folder of the run's own photos, evaluated: model.json and the page
  say how many are training photos, and which figures are calibrated."""
  from catdog_jax.serving import page

  workdir = str(tmp_path / 'run')
  shutil.copytree(trained_run.workdir, workdir)
  predict.evaluate_to_json(workdir, folder_dataset, None)
  figures = export.measured(workdir, 40)
  assert figures['validation']['calibrated'] is False  # Before any fit.
  assert figures['test']['calibrated'] is False  # No temperature fitted.
  other = figures['other_folder']
  assert other['num_examples'] == 80
  train_photos = other['photos_of_training_split']
  assert 0 < train_photos < 80
  assert other['unseen']['num_examples'] == 80 - train_photos
  line = page.other_folder_line(other)
  assert f'{train_photos} of them are photos of the training split' in line
  assert f'on the other {80 - train_photos}: accuracy' in line
