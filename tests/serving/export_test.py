"""--mode=export: one file that runs with jax alone, predicting as predict."""

import glob
import io
import json
import os
import shutil
import subprocess
import sys

import cv2
import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image
from PIL import ImageOps

from catdog_jax import train
from catdog_jax.data import images
from catdog_jax.errors import UsageError
from catdog_jax.evaluation import predict
from catdog_jax.serving import export
from tests import helpers

KAGGLE_ORIG = os.path.join(helpers.SHARED_DATA, 'kaggle-orig')
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


def load(folder, name=export.ARTIFACT):
  with open(os.path.join(folder, name), 'rb') as f:
    return jax.export.deserialize(bytearray(f.read()))


def exported_p_dog(folder, paths, decode=images.decode_rgb):
  """p(dog) of the photos through the export alone: each decoded at its
  own size, resized by resize.jax, then model.jax on the batch."""
  resizer = load(folder, export.RESIZER)
  resized = []
  for path in paths:
    with open(path, 'rb') as f:
      resized.append(np.asarray(resizer.call(decode(f.read()))))
  return np.asarray(load(folder).call(np.stack(resized)))


def assert_exported_predicts_as_predict(workdir, photos, output=None):
  """`workdir` exported (into `output`, else the workdir's own folder)
  gives predict's p(dog) on `photos`."""
  folder = export.export_workdir(workdir, output)
  rows, _ = predict.predict(workdir, photos)
  got = exported_p_dog(folder, [row['path'] for row in rows])
  np.testing.assert_allclose(got, [r['prob_dog'] for r in rows], atol=1e-5)
  return folder


# Shapes that take each of predict's resize rules to 32 px: area averaging
# (2 x 2 blocks among them), bilinear shrinking and growing, and OpenCV's
# emulation of area where one axis grows.
PHOTO_SHAPES = [(80, 60), (64, 64), (50, 40), (20, 24), (90, 20)]


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  root = tmp_path_factory.mktemp('photos')
  rng = np.random.default_rng(11)
  for i, (height, width) in enumerate(PHOTO_SHAPES * 2):
    label = i % 2
    square = helpers.synthetic_image(label, rng, size=max(height, width))
    name = ('Cats', 'Dogs')[label]
    helpers.write_jpeg(str(root / name / f'{i}.jpg'), square[:height, :width])
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


def test_the_documented_lines_take_a_jpeg_to_predicts_answer_with_jax_alone(
  trained_run, photos, tmp_path
):
  folder = export.export_workdir(trained_run.workdir, str(tmp_path / 'out'))
  with open(os.path.join(folder, export.METADATA)) as f:
    lines = json.load(f)['load_and_run']
  assert len(lines) <= 16
  (row,), _ = predict.predict(trained_run.workdir, f'{photos}/Dogs/1.jpg')
  shutil.copy(row['path'], os.path.join(folder, 'photo.jpg'))
  result = subprocess.run(
    [sys.executable, '-c', GUARD + '\n'.join(lines)],
    cwd=folder, capture_output=True, text=True, timeout=120,
    env={k: v for k, v in os.environ.items() if k != 'PYTHONPATH'},
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-2000:]
  label, p_dog = result.stdout.split()
  assert label == row['predicted']
  assert float(p_dog) == pytest.approx(row['prob_dog'], abs=1e-5)


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


def pillow_rgb(data: bytes) -> np.ndarray:
  """A JPEG decoded as model.json's lines decode it, with Pillow."""
  photo = Image.open(io.BytesIO(data))
  short = min(photo.size)
  factor = max([f for f in (2, 4, 8) if short // f >= 1024], default=1)
  photo.draft('RGB', (photo.width // factor, photo.height // factor))
  return np.asarray(ImageOps.exif_transpose(photo).convert('RGB'))


@pytest.mark.parametrize('shape', [(3024, 4032), (2047, 3000)])
def test_pillow_decodes_a_large_jpeg_as_predict_does(shape):
  """Reduced by libjpeg's DCT scaling (predict's rule for a short side of
  2048 px or more) or not, Pillow's pixels are OpenCV's."""
  rng = np.random.default_rng(0)
  small = rng.integers(0, 256, (shape[0] // 16, shape[1] // 16, 3), np.uint8)
  image = cv2.resize(small, shape[::-1], interpolation=cv2.INTER_CUBIC)
  data = cv2.imencode('.jpg', image)[1].tobytes()
  np.testing.assert_array_equal(pillow_rgb(data), images.decode_rgb(data))


@pytest.mark.slow  # Reads ../shared/data; the zero-shot Lite0's tiny run.
@pytest.mark.skipif(
  not os.path.isdir(KAGGLE_ORIG), reason='../shared/data is absent'
)
def test_full_size_photos_decoded_by_opencv_or_pillow_give_predicts_answer(
  tiny_runs, float32_predict
):
  workdir = tiny_runs('zeroshot_lite0')
  folder = export.export_workdir(workdir)
  paths = sorted(glob.glob(os.path.join(KAGGLE_ORIG, '*', '*.jpg')))[::50]
  rows, skipped = predict.predict(workdir, paths)
  assert not skipped and len(rows) == 20
  paths = [row['path'] for row in rows]
  expected = [row['prob_dog'] for row in rows]
  for decode in (images.decode_rgb, pillow_rgb):
    got = exported_p_dog(folder, paths, decode)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_docs_show_the_lines_model_json_carries():
  with open(os.path.join(helpers.REPO, 'docs', 'serving.md')) as f:
    docs = f.read()
  snippet = docs.split('```python\n', 1)[1].split('```', 1)[0]
  code = [line for line in snippet.splitlines() if line.strip()]
  assert code == [line for line in export.LOADER.splitlines() if line.strip()]
