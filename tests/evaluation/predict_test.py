"""Tests for predict, eval and report on a trained tiny workdir."""

import csv
import logging
import os
import shutil
import subprocess
import sys

import cv2
import jax
import numpy as np
import pytest
from PIL import Image

from catdog_jax import fileio
from catdog_jax.data import dataset
from catdog_jax.errors import UsageError
from catdog_jax.evaluation import predict
from tests import helpers

REPO = helpers.REPO
PLOTS = ('curves', 'confusion_matrix', 'roc', 'errors', 'gradcam')


@pytest.fixture(scope='module')
def workdir(trained_run):
  return trained_run.workdir


@pytest.fixture(scope='module')
def new_photos(tmp_path_factory):
  """Unseen labelled images, plus broken files and a non-image."""
  root = tmp_path_factory.mktemp('new')
  helpers.write_dataset(root, 'folders', per_class=6, seed=99)
  (root / 'Cats' / 'empty.jpg').write_bytes(b'')
  (root / 'Dogs' / 'text.jpg').write_text('not a photo')
  (root / 'Dogs' / 'notes.txt').write_text('ignored')
  return str(root)


def test_predict_a_folder_with_broken_files(workdir, new_photos):
  rows, skipped = predict.predict(workdir, new_photos)
  assert len(rows) == 12
  assert sorted(os.path.basename(s['path']) for s in skipped) == [
    'empty.jpg',
    'text.jpg',
  ]
  assert all(s['reason'] for s in skipped)
  for row in rows:
    assert row['predicted'] == ('dog' if row['prob_dog'] >= 0.5 else 'cat')
  # Red cats, blue dogs: the tiny model tells them apart.
  right = sum(
    (row['predicted'] == 'dog') == ('Dogs' in row['path']) for row in rows
  )
  assert right >= 11


def test_predict_one_file_and_a_glob(workdir, new_photos):
  one = os.path.join(new_photos, 'Dogs', '0.jpg')
  rows, skipped = predict.predict(workdir, one)
  assert [r['path'] for r in rows] == [one] and not skipped
  rows, _ = predict.predict(workdir, os.path.join(new_photos, 'Cats', '*.jpg'))
  assert len(rows) == 6
  with pytest.raises(UsageError, match='no image files match'):
    predict.predict(workdir, os.path.join(new_photos, 'nothing*'))


def test_predict_several_files_and_globs_and_name_what_matched_nothing(
  workdir, new_photos
):
  dog = os.path.join(new_photos, 'Dogs', '0.jpg')
  cats = os.path.join(new_photos, 'Cats', '[0-2].jpg')
  rows, _ = predict.predict(workdir, [dog, cats, dog])
  assert len(rows) == 4  # Each photo once.
  missing = [os.path.join(new_photos, 'a.jpg,b.jpg'), 'nothing*']
  with pytest.raises(UsageError) as error:
    predict.predict(workdir, [dog, *missing])
  message = str(error.value)
  assert all(repr(p) in message for p in missing)
  assert "a glob in quotes (--images='photos/*.jpg')" in message


def test_predict_beside_a_run_without_a_checkpoint_says_when_it_comes(
  tmp_path, flat_dataset
):
  """A run at step 800 whose first checkpoint comes at step 1000."""
  config = helpers.tiny_config(flat_dataset, checkpoint_every_steps=1000)
  fileio.write_json(str(tmp_path / 'config.json'), config.to_dict())
  fileio.write_json(
    str(tmp_path / 'data_report.json'),
    {'splits': {'train': {'cat': 5000, 'dog': 5000}}},
  )
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    f.writelines(f'{{"step": {s}, "train_loss": 0.5}}\n' for s in (50, 800))
  with pytest.raises(UsageError) as error:
    predict.Predictor(str(tmp_path))
  assert str(error.value).endswith(
    'has no checkpoint yet: its run is at step 800 of 20, and its first '
    'checkpoint comes at step 1000 (checkpoint_every_steps); predict and '
    'eval work from then on'
  )


def test_prediction_matches_training_evaluation(
  workdir, folder_dataset, tmp_path
):
  """Predicting the test images gives the logits training's eval gave."""
  with open(os.path.join(workdir, 'predictions_test.csv')) as f:
    test_rows = list(csv.DictReader(f))
  paths = [os.path.join(folder_dataset, r['path']) for r in test_rows]
  tmp = str(tmp_path / 'test_copy')
  for path in paths:
    target = os.path.join(tmp, os.path.relpath(path, folder_dataset))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy(path, target)
  rows, _ = predict.predict(workdir, tmp)
  by_key = {os.path.relpath(r['path'], tmp): r['prob_dog'] for r in rows}
  for row in test_rows:
    assert by_key[row['path']] == pytest.approx(
      float(row['prob_dog']), abs=1e-6
    )


def test_eval_agrees_exactly_with_predict(workdir, new_photos):
  result, report_text = predict.evaluate_folder(workdir, new_photos)
  rows, _ = predict.predict(workdir, new_photos)
  right = sum(
    (row['predicted'] == 'dog') == (os.sep + 'Dogs' + os.sep in row['path'])
    for row in rows
  )
  assert result['accuracy'] == right / len(rows)
  assert result['num_examples'] == 12 and result['num_skipped'] == 2
  assert 'macro avg' in report_text


def test_a_second_predict_eval_or_report_compiles_nothing(
  workdir, new_photos, caplog
):
  """One compiled eval step (and Grad-CAM) per model in a process: the page
  and a session of predicts, evals and reports compile once."""
  predict.predict(workdir, new_photos)
  predict.regenerate_report(workdir)
  with jax.log_compiles(), caplog.at_level(logging.WARNING):
    predict.predict(workdir, new_photos)
    predict.evaluate_folder(workdir, new_photos)
    predict.regenerate_report(workdir)
  compiled = [r.getMessage() for r in caplog.records
              if 'Finished XLA compilation' in r.getMessage()]  # fmt: skip
  # Small helpers (a random key, a copy) may compile; no model does.
  assert not [m for m in compiled if 'eval_step' in m or '_cams' in m]


def test_report_regenerates_every_plot(workdir):
  shutil.rmtree(os.path.join(workdir, 'plots'))
  os.remove(os.path.join(workdir, 'report.md'))
  path = predict.regenerate_report(workdir)
  with open(path) as f:
    text = f.read()
  for name in PLOTS:
    png = os.path.join(workdir, 'plots', f'{name}.png')
    height, width = cv2.imread(png).shape[:2]
    assert min(height, width) >= 300, name
    assert f'(plots/{name}.png)' in text
  assert 'macro avg' in text and 'Total params' in text
  assert '| test |' in text


@pytest.mark.slow
def test_cli_predict_writes_the_csv(workdir, new_photos, tmp_path):
  output = tmp_path / 'out.csv'
  result = subprocess.run(
    [sys.executable, 'main.py', '--mode=predict', f'--workdir={workdir}',
     f'--images={new_photos}', f'--output={output}'],
    cwd=REPO, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  with open(output) as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ['path', 'predicted', 'prob_dog', 'logit']
  assert len(rows) == 12
  assert 'skipped' in result.stdout and 'empty file' in result.stdout


def test_eval_counts_photos_the_model_trained_on(
  workdir, folder_dataset, new_photos, tmp_path
):
  """Copies of training photos, even resized, are counted and set apart."""
  _, splits, _ = dataset.load_splits(predict.load_config(workdir).data, None)
  mixed = tmp_path / 'mixed'
  shutil.copytree(new_photos, mixed)
  copies = splits['train'][:3] + splits['test'][:1]
  for i, example in enumerate(copies):
    image = cv2.imread(os.path.join(folder_dataset, example.key))
    if i == 0:  # The same photo at twice the size, as PNG.
      image = cv2.resize(image, None, fx=2, fy=2)
    folder = 'Dogs' if example.label else 'Cats'
    cv2.imwrite(str(mixed / folder / f'copy{i}.png'), image)
  result, _ = predict.evaluate_folder(workdir, str(mixed))
  assert result['num_examples'] == 16
  assert result['duplicates_of_training_data'] == {
    'train': 3, 'val': 0, 'test': 1
  }  # fmt: skip
  assert result['unseen']['num_examples'] == 13


def test_eval_indexes_the_training_data_once_and_prints_its_metrics(
  workdir, new_photos, caplog
):
  caplog.set_level('INFO')
  result, report_text = predict.evaluate_folder(workdir, new_photos)
  indexing = [r for r in caplog.messages if r.startswith('Indexing')]
  # The folder once, the training data once.
  assert len(indexing) == 2, indexing
  printed = predict.format_eval(result, report_text)
  for key in ('accuracy', 'precision', 'recall', 'log_loss'):
    assert f'{result[key]:.4f}' in printed, key
  assert f'ROC AUC {result["roc_auc"]:.4f}' in printed
  assert f'F1 {result["f1"]:.4f}' in printed


def test_counts_read_as_english():
  one = [{'path': 'a.jpg', 'predicted': 'dog', 'prob_dog': 0.9, 'logit': 2.2}]
  assert '1 image: 1 dog, 0 cats; 0 skipped.' in predict.format_predictions(
    one, []
  )
  assert '2 images: 2 dogs, 0 cats' in predict.format_predictions(one * 2, [])


def test_photos_as_phones_save_them(workdir, tmp_path, monkeypatch):
  """EXIF-rotated JPEGs predict as their upright photo; HEIC is read, or
  skipped with what to install; never left out, never a crash."""
  upright = helpers.synthetic_image(1, np.random.default_rng(5), size=40)
  upright = np.concatenate([upright, upright[:20]], axis=0)  # 40 x 60.
  folder = tmp_path / 'phone'
  folder.mkdir()
  Image.fromarray(upright).save(folder / 'upright.jpg', quality=100)
  for orientation, stored in helpers.STORED.items():
    data = helpers.jpeg_with_orientation(stored(upright), orientation)
    (folder / f'turned{orientation}.jpg').write_bytes(data)
  (folder / 'photo.HEIC').write_bytes(helpers.heic(upright))
  rows, skipped = predict.predict(workdir, str(folder))
  prob = {os.path.basename(r['path']): r['prob_dog'] for r in rows}
  assert not skipped and len(prob) == 5
  for name in ('turned3.jpg', 'turned6.jpg', 'turned8.jpg', 'photo.HEIC'):
    assert prob[name] == pytest.approx(prob['upright.jpg'], abs=0.02), name
  # Without the heif extra: skipped, saying what to install.
  monkeypatch.setitem(sys.modules, 'pillow_heif', None)
  rows, skipped = predict.predict(workdir, str(folder / 'photo.HEIC'))
  assert rows == [] and 'needs the heif extra' in skipped[0]['reason']
