"""Tests on the real files in ../shared/data: broken files and duplicates.

Skipped when that folder is absent (a user's fresh clone has no ../shared).
"""

import json
import os
import shutil
import subprocess
import sys

import cv2
import pytest

from catdog_jax.data import dataset
from catdog_jax.data import sources
from tests import helpers

BAD_MIXED = os.path.join(helpers.SHARED_DATA, 'bad-mixed')
KAGGLE_ORIG = os.path.join(helpers.SHARED_DATA, 'kaggle-orig')
REPO = helpers.REPO

pytestmark = [
  pytest.mark.slow,
  pytest.mark.skipif(
    not os.path.isdir(helpers.SHARED_DATA),
    reason=f'{helpers.SHARED_DATA} is absent',
  ),
]


def expected_outcome(what: str) -> set[str]:
  """What MANIFEST.json allows for a file: used, skipped and/or ignored."""
  if what.startswith('good'):
    return {'used'}
  if what.startswith('not an image'):
    return {'ignored'}
  if what.startswith(('unreadable', 'decompression bomb')):
    return {'skipped'}
  return {'used', 'skipped'}  # Damaged or odd: either, never a crash.


def test_bad_mixed_follows_its_manifest():
  with open(os.path.join(BAD_MIXED, 'MANIFEST.json')) as f:
    manifest = json.load(f)
  config = helpers.tiny_config(BAD_MIXED).data
  index = dataset.build_index(sources.create_source(config), config)
  used = {e.key for e in index.examples}
  skipped = {item['path']: item['reason'] for item in index.skipped}
  for path, what in manifest.items():
    outcome = (
      'used' if path in used else 'skipped' if path in skipped else ('ignored')
    )
    assert outcome in expected_outcome(what), (path, what, skipped.get(path))
  assert all(skipped.values())  # Every skip has a reason.
  # Odd but valid files decode into 3-channel RGB.
  for path in ('cats/gray.jpg', 'cats/rgba.png', 'dogs/cmyk.jpg'):
    with open(os.path.join(BAD_MIXED, path), 'rb') as f:
      image = helpers.decode_resized(f.read(), 32)
    assert image.shape == (32, 32, 3)


# Runs a command and prints its peak resident memory (KiB). Linux carries a
# process's peak over exec from the memory it was started in, so a child
# started by a large pytest worker would report the worker's peak: the
# command is started from this small process instead.
PEAK_OF_CHILD = (
  'import resource, subprocess, sys; '
  'code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; '
  'print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); '
  'sys.exit(code)'
)


def test_training_on_bad_mixed_runs_in_bounded_memory(tmp_path):
  flags = helpers.tiny_flags(BAD_MIXED, num_train_steps=6)
  process = subprocess.run(
    [sys.executable, '-c', PEAK_OF_CHILD, sys.executable, 'main.py', *flags,
     f'--workdir={tmp_path}'],
    cwd=REPO, capture_output=True, text=True,
  )  # fmt: skip
  assert process.returncode == 0, process.stderr[-3000:]
  peak_kib = int(process.stdout)
  assert peak_kib < 4 * 1024 * 1024, f'peak memory {peak_kib} KiB'
  with open(tmp_path / 'data_report.json') as f:
    report = json.load(f)
  assert report['num_used'] == 60 + 7  # 60 photos, 7 odd-but-valid files.
  assert {item['path'] for item in report['skipped']} >= {
    'cats/empty.jpg',
    'cats/text.jpg',
    'cats/truncated.jpg',
    'dogs/huge.jpg',
  }


def test_audit_mode_prints_and_writes_the_report(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      'main.py',
      '--mode=audit',
      '--config=configs/base.py',
      f'--config.data.root={BAD_MIXED}',
      f'--workdir={tmp_path}',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'skipped cats/empty.jpg: empty file' in result.stdout
  with open(tmp_path / 'data_report.json') as f:
    report = json.load(f)
  for key in ('root', 'num_files', 'num_used', 'skipped', 'splits',
              'duplicate_groups', 'cross_split_duplicates'):  # fmt: skip
    assert key in report
  assert report['cross_split_duplicates'] == 0


def crop(image, fraction):
  height, width = image.shape[:2]
  dy, dx = int(height * fraction), int(width * fraction)
  return image[dy : height - dy, dx : width - dx]


def test_planted_duplicates_of_real_photos_are_grouped(tmp_path):
  """Copies, re-encodings, resizes and crops of real photos are grouped."""
  originals = []
  for folder in ('Cat', 'Dog'):
    names = sorted(os.listdir(os.path.join(KAGGLE_ORIG, folder)))[:150]
    os.makedirs(tmp_path / folder)
    for name in names:
      shutil.copy(
        os.path.join(KAGGLE_ORIG, folder, name), tmp_path / folder / name
      )
      originals.append(os.path.join(folder, name))
  planted = {}  # original -> its planted variant
  for i, original in enumerate(originals[::10]):
    kind = ('copy', 'q40', 'half', 'crop1pct')[i % 4]
    target = tmp_path / f'{original}.{kind}.jpg'
    image = cv2.imread(str(tmp_path / original))
    if kind == 'copy':
      shutil.copy(tmp_path / original, target)
    elif kind == 'q40':
      cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, 40])
    elif kind == 'half':
      half = cv2.resize(
        image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA
      )
      cv2.imwrite(str(target), half)
    else:
      cv2.imwrite(str(target), crop(image, 0.01))
    planted[original] = os.path.relpath(target, tmp_path)

  config = helpers.tiny_config(str(tmp_path)).data
  index = dataset.build_index(sources.create_source(config), config)
  group_of = {p: tuple(sorted(g)) for g in index.duplicate_groups for p in g}
  for original, copy in planted.items():
    assert original in group_of, f'{copy} not grouped with {original}'
    assert group_of[original] == group_of.get(copy)
  false_alarms = [
    g for g in index.duplicate_groups if not any(p in planted for p in g)
  ]
  assert len(false_alarms) <= 1, false_alarms
  splits = dataset.split_examples(index.examples, 0.1, 0.1)
  assert dataset.data_report(index, splits)['cross_split_duplicates'] == 0
