"""Speed of the exported model and of the page, against --mode=predict.

  python benchmarks/serving.py --workdir=DIR --images=FOLDER [--photos=40]

One JSON line per figure: the export's wall time; images/s at batch 1 and
64 of the exported model and of predict's compiled evaluation step (the
same weights and test-time augmentation); the page's latency per photo,
p50 and p95, with and without Grad-CAM. Medians of --repeats timed calls
after --warmup.
"""

import json
import os
import tempfile
import time

import jax
import numpy as np
import timing  # benchmarks/timing.py, beside this script
from absl import app
from absl import flags

from catdog_jax import mesh
from catdog_jax.evaluation import predict
from catdog_jax.serving import export
from catdog_jax.serving import page

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'A trained workdir.', required=True)
flags.DEFINE_string('images', None, 'Photos for the page.', required=True)
flags.DEFINE_integer('photos', 40, 'Photos the page classifies.')
flags.DEFINE_integer('repeats', 10, 'Timed calls (the median is kept).')
flags.DEFINE_integer('warmup', 2, 'Untimed calls first.')


def emit(**record):
  print(json.dumps(record), flush=True)


def main(argv):
  del argv
  out = tempfile.mkdtemp()
  started = time.perf_counter()
  export.export_workdir(FLAGS.workdir, out)
  emit(what='export', seconds=round(time.perf_counter() - started, 2))
  with open(os.path.join(out, export.ARTIFACT), 'rb') as f:
    exported = jax.export.deserialize(bytearray(f.read()))

  predictor = predict.Predictor(FLAGS.workdir)
  size = predictor.config.data.image_size
  sharding, _ = mesh.create_shardings()
  for batch in (1, 64):
    images = np.random.default_rng(0).integers(
      0, 256, (batch, size, size, 3), np.uint8
    )
    batch_arrays = {
      'image': images,
      'label': np.zeros(batch, np.int32),
      'mask': np.ones(batch, bool),
    }
    inputs = mesh.to_global(batch_arrays, sharding)
    for name, call in (
      ('exported', lambda images=images: exported.call(images)),
      (
        'predict',
        lambda inputs=inputs: predictor.eval_fn(predictor.variables, inputs),
      ),  # fmt: skip
    ):
      seconds = timing.median_seconds(
        lambda call=call: jax.block_until_ready(call()),
        FLAGS.repeats,
        FLAGS.warmup,
      )
      emit(what=name, batch=batch, images_per_sec=round(batch / seconds, 1),
           ms_per_call=round(1e3 * seconds, 2))  # fmt: skip

  classifier = page.Classifier(FLAGS.workdir)
  paths = predict.find_images(FLAGS.images)[: FLAGS.photos]
  for with_gradcam in (False, True):
    for path in paths[: FLAGS.warmup]:
      classifier.classify(path, with_gradcam)
    latencies = []
    for path in paths:
      start = time.perf_counter()
      classifier.classify(path, with_gradcam)
      latencies.append(1e3 * (time.perf_counter() - start))
    emit(what='page', gradcam=with_gradcam, photos=len(paths),
         p50_ms=round(float(np.percentile(latencies, 50)), 1),
         p95_ms=round(float(np.percentile(latencies, 95)), 1))  # fmt: skip


if __name__ == '__main__':
  app.run(main)
