"""Accuracy per breed on ../shared/data/oxford-pets-sample, from the CSV
that --mode=predict wrote for it (the breed is in each file's name:
`Abyssinian_12.jpg`, `beagle_34.jpg`; the class is the folder).

  python main.py --mode=predict --workdir=W \
    --images=../shared/data/oxford-pets-sample --output=W/oxford.csv
  python benchmarks/oxford_breeds.py --predictions=W/oxford.csv

Prints one JSON line: per breed, its class, photos and accuracy; and the
mean over breeds of each class (the sample holds 200 Abyssinians and 200
Bengals among its 500 cats: a breed-weighted reading besides the plain one).
"""

import collections
import csv
import json
import os
import re

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string('predictions', None, "predict's CSV.")
flags.mark_flags_as_required(['predictions'])

_CLASS_OF_FOLDER = {'cats': 'cat', 'dogs': 'dog'}


def breed_accuracy(rows) -> dict:
  """{breed: {'class', 'photos', 'accuracy'}} from predict's CSV rows."""
  counts = collections.defaultdict(lambda: [0, 0])  # (right, photos)
  classes = {}
  for row in rows:
    folder, name = os.path.split(row['path'])
    true = _CLASS_OF_FOLDER[os.path.basename(folder)]
    breed = re.sub(r'_\d+\.\w+$', '', name)
    classes[breed] = true
    counts[breed][0] += row['predicted'] == true
    counts[breed][1] += 1
  return {
    breed: {'class': classes[breed], 'photos': n, 'accuracy': right / n}
    for breed, (right, n) in sorted(counts.items())
  }


def main(argv):
  del argv
  with open(FLAGS.predictions) as f:
    breeds = breed_accuracy(csv.DictReader(f))
  means = {}
  for name in ('cat', 'dog'):
    values = [b['accuracy'] for b in breeds.values() if b['class'] == name]
    means[name] = sum(values) / len(values)
  print(json.dumps({'breeds': breeds, 'mean_over_breeds': means}))


if __name__ == '__main__':
  app.run(main)
