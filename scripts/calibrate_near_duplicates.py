"""Calibrates data.near_duplicate_bits on a real folder.

Indexes the folder (or reuses WORKDIR/index_cache.json), finds every pair of
images whose perceptual hashes differ in at most --max_bits bits, and prints
how many pairs there are at each distance, as a JSON line. With --sheet it
also draws sample pairs per distance, to look at which are the same photo.

  python scripts/calibrate_near_duplicates.py --root=../shared/data/kaggle200 \
    --workdir=/tmp/audit --max_bits=14 --sheet=/tmp/pairs.png
"""

import collections
import json
import os

import cv2
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from catdog_jax import workdir
from catdog_jax.data import dataset
from catdog_jax.data import duplicates
from catdog_jax.data import images
from catdog_jax.data import sources

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/base.py', 'Base config.')
flags.DEFINE_string('root', None, 'Folder of labelled images.', required=True)
flags.DEFINE_string('workdir', None, 'Where the index cache lives.')
flags.DEFINE_integer('max_bits', 14, 'Largest Hamming distance to count.')
flags.DEFINE_string('sheet', None, 'PNG of sample pairs per distance.')
flags.DEFINE_integer('samples', 3, 'Pairs per distance on the sheet.')


def thumbnail(path: str) -> np.ndarray:
  with open(path, 'rb') as f:
    return images.resize(images.decode_rgb(f.read()), 128)


def pair_sheet(root, keys, by_distance, samples, path):
  """Rows of (distance: left | right) thumbnails."""
  rows = []
  for distance in sorted(by_distance):
    for i, j in by_distance[distance][:samples]:
      label = np.full((128, 64, 3), 255, np.uint8)
      cv2.putText(label, str(distance), (8, 72), cv2.FONT_HERSHEY_SIMPLEX,
                  1.0, (0, 0, 0), 2)  # fmt: skip
      left, right = (thumbnail(os.path.join(root, keys[k])) for k in (i, j))
      rows.append(np.concatenate([label, left, right], axis=1))
  cv2.imwrite(path, cv2.cvtColor(np.concatenate(rows), cv2.COLOR_RGB2BGR))


def main(argv):
  del argv
  config = FLAGS.config.data
  source = sources.FolderSource(FLAGS.root)
  keys, _ = source.list_keys()
  cache = FLAGS.workdir and os.path.join(FLAGS.workdir, workdir.INDEX_CACHE)
  records = dataset.inspect_all(source, keys, config, cache)
  keys = [k for k in keys if 'phash' in records[k]]
  hashes = [int(records[k]['phash'], 16) for k in keys]
  pairs = duplicates.near_duplicate_pairs(hashes, FLAGS.max_bits)
  by_distance = collections.defaultdict(list)
  for i, j in pairs.tolist():
    by_distance[duplicates.hamming_distance(hashes[i], hashes[j])].append(
      (i, j)
    )
  if FLAGS.sheet:
    pair_sheet(source.root, keys, by_distance, FLAGS.samples, FLAGS.sheet)
  print(
    json.dumps(
      {
        'root': source.root,
        'num_images': len(keys),
        'pairs_by_distance': {
          d: len(p) for d, p in sorted(by_distance.items())
        },
        'examples': {
          d: [[keys[i], keys[j]] for i, j in p[: FLAGS.samples]]
          for d, p in sorted(by_distance.items())
        },
      }
    )
  )


if __name__ == '__main__':
  app.run(main)
