"""Integration test on real Kaggle photos in ../shared/data/kaggle200.

Skipped when that folder is absent (a user's fresh clone has no ../shared).
"""

import json
import os
import shutil

import pytest

from catdog_jax import train
from catdog_jax import workdir
from catdog_jax.data import dataset
from configs import base
from tests import helpers

KAGGLE200 = os.path.join(helpers.SHARED_DATA, 'kaggle200')

pytestmark = [
  pytest.mark.slow,
  pytest.mark.skipif(
    not os.path.isdir(KAGGLE200), reason=f'{KAGGLE200} is absent'
  ),
]


@pytest.fixture(scope='session')
def index_cache(shared):
  """One index of the 20,000 photos (11 s), made once for every worker."""

  def build(folder):
    dataset.load_splits(kaggle200_data(), f'{folder}/{workdir.INDEX_CACHE}')

  return f'{shared("kaggle200_index", build)}/{workdir.INDEX_CACHE}'


def kaggle200_data():
  config = base.get_config().data
  config.root = KAGGLE200
  return config


def test_kaggle200_split_is_stratified_and_disjoint(index_cache, tmp_path):
  cache = shutil.copy(index_cache, tmp_path / workdir.INDEX_CACHE)
  _, splits, _ = dataset.load_splits(kaggle200_data(), str(cache))
  counts = {name: dataset.class_counts(s) for name, s in splits.items()}
  assert sum(sum(c.values()) for c in counts.values()) == 20_000
  for name, fraction in (('val', 0.1), ('test', 0.1), ('train', 0.8)):
    for label in ('cat', 'dog'):
      assert counts[name][label] == pytest.approx(10_000 * fraction, rel=0.05)
  digests = [{e.split_key for e in s} for s in splits.values()]
  assert not (digests[0] & digests[1] or digests[0] & digests[2])
  assert not digests[1] & digests[2]


def test_seed_cnn_trains_on_kaggle200(tmp_path, index_cache):
  config = base.get_config()
  config.data.root = KAGGLE200
  config.data.image_size = 48
  config.num_train_steps = 40
  config.batch_size = 16
  config.eval_every_steps = config.checkpoint_every_steps = 20
  shutil.copy(index_cache, tmp_path / workdir.INDEX_CACHE)
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 40
  with open(tmp_path / 'eval_test.json') as f:
    test = json.load(f)
  with open(tmp_path / 'data_report.json') as f:
    report = json.load(f)
  assert test['num_examples'] == sum(report['splits']['test'].values())
  assert 0 < test['log_loss'] < 2
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['20', '40']
