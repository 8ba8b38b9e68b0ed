"""A trained workdir's model as files that run with jax alone.

`export_workdir` writes, into a folder (default WORKDIR/export/):

  model.jax    the best checkpoint's inference function, serialized with
               `jax.export`: uint8 RGB images [batch, size, size, 3] in
               (any batch), p(dog) [batch] out; the weights, the scaling
               to [0, 1], the test-time augmentation and the fitted
               temperature (calibration.py) folded in.
  resize.jax   a photo of any height and width, uint8 RGB [height, width,
               3], resized to [size, size, 3] as predict resizes it
               (serving/resize.py): no resize rule for the user to copy.
               A file of its own, so that a new photo size compiles this
               small function again, not the model.
  model.json   what a user of them needs: the classes and decision rule,
               the input size, the checkpoint step, its measured figures,
               the weights' SHA-256, and the lines that run them on a JPEG.

Both are lowered for CPU, CUDA and TPU.

Convolutions are XLA's own in float32 (never the oneDNN custom calls of
cpu_convolutions, which need this project's library to run).
"""

import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from catdog_jax import fileio
from catdog_jax import inference
from catdog_jax import metric_writers
from catdog_jax import models
from catdog_jax import workdir as workdir_lib
from catdog_jax.classes import CLASS_NAMES
from catdog_jax.errors import UsageError
from catdog_jax.evaluation import calibration
from catdog_jax.evaluation import evaluate
from catdog_jax.evaluation import predict
from catdog_jax.serving import resize

ARTIFACT = 'model.jax'
RESIZER = 'resize.jax'
METADATA = 'model.json'
PLATFORMS = ('cpu', 'cuda', 'tpu')
# What model.json shows a user: these lines take a JPEG to a label with
# Pillow (export_test.py runs them, with catdog_jax, flax, optax and orbax
# unimportable, and compares with predict).
LOADER = """\
import jax
import numpy as np
from PIL import Image, ImageOps

def load(name):
  with open(name, 'rb') as f:
    return jax.export.deserialize(bytearray(f.read()))

photo = Image.open('photo.jpg')
# As predict: a JPEG with a short side of 2048+ px decodes at 1/2, 1/4, 1/8.
factor = max([f for f in (2, 4, 8) if min(photo.size) // f >= 1024], default=1)
photo.draft('RGB', (photo.width // factor, photo.height // factor))
photo = np.asarray(ImageOps.exif_transpose(photo).convert('RGB'))
p_dog = float(load('model.jax').call(load('resize.jax').call(photo)[None])[0])
print('dog' if p_dog >= 0.5 else 'cat', p_dog)
"""


def weights_sha256(variables) -> str:
  """SHA-256 of the weights' bytes, in the order jax.tree flattens them."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(variables):
    digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return digest.hexdigest()


def inference_fn(config, variables, temperature: float = 1.0):
  """uint8 images [B, S, S, 3] -> p(dog) [B], as evaluation computes it,
  the logits divided by `temperature` (the checkpoint's fitted one)."""
  # XLA's convolutions: oneDNN's custom call would not run elsewhere.
  model = inference.create_model(config, cpu_convolutions='xla')

  def p_dog(images):
    logits = evaluate.tta_logits(
      model.apply,
      variables,
      models.preprocess(images),
      config.eval.flip,
      config.eval.translate,
      temperature,
    )
    return jax.nn.sigmoid(logits)

  return p_dog


def measured(workdir: str, step: int) -> dict:
  """The figures measured on the exported checkpoint, each with its
  caveats: validation at its step (of the logits before any temperature),
  the test split and other folders (--mode=eval) where they were measured
  on it too ('calibrated': divided by the step's fitted temperature; a
  folder's photos of the training split counted, its figures without them
  under 'unseen')."""
  records = metric_writers.read_jsonl(
    workdir_lib.path(workdir, workdir_lib.METRICS)
  )
  validation = {
    key.removeprefix('val_'): value
    for record in records
    if record['step'] == step
    for key, value in record.items()
    if key.startswith('val_')
  }
  figures = {'validation': validation | {'calibrated': False}}
  calibrated = step in calibration.read_fits(workdir)
  test_path = workdir_lib.path(workdir, workdir_lib.EVAL_TEST)
  if os.path.exists(test_path):
    test = fileio.read_json(test_path)
    if test.get('step') == step:
      figures['test'] = {k: test[k] for k in ('accuracy', 'log_loss', 'f1')}
      figures['test']['calibrated'] = calibrated
  folder_path = workdir_lib.path(workdir, workdir_lib.EVAL_FOLDER)
  if os.path.exists(folder_path):
    folder = fileio.read_json(folder_path)
    if folder.get('checkpoint_step') == step:
      other = {
        'folder': folder.get('root'),
        'accuracy': folder['accuracy'],
        'log_loss': folder['log_loss'],
        'num_examples': folder['num_examples'],
        'calibrated': calibrated,
      }
      if 'duplicates_of_training_data' in folder:
        seen = folder['duplicates_of_training_data']['train']
        other['photos_of_training_split'] = seen
        unseen = folder['unseen']
        other['unseen'] = {
          'num_examples': unseen['num_examples'],
          'accuracy': unseen.get('accuracy'),
        }
      figures['other_folder'] = other
  return figures


def export_workdir(workdir: str, output: str | None = None) -> str:
  """Writes the export folder; returns its path.

  Raises:
    UsageError: one line, for a workdir without a checkpoint or a model
      that does not export.
  """
  predictor = predict.Predictor(workdir)
  config = predictor.config
  variables = predictor.variables
  size = config.data.image_size
  images = jax.ShapeDtypeStruct(
    jax.export.symbolic_shape(f'batch, {size}, {size}, 3'), jnp.uint8
  )
  try:
    exported = jax.export.export(
      jax.jit(inference_fn(config, variables, predictor.temperature)),
      platforms=PLATFORMS,
    )(images)
    resizer = resize.export(size, PLATFORMS)
  except Exception as e:  # noqa: BLE001 - lowering fails in many ways.
    first = str(e).strip().splitlines()[0] if str(e).strip() else ''
    raise UsageError(
      f'model {config.model.name!r} does not export: {type(e).__name__}: '
      f'{first}'
    ) from e
  output = output or workdir_lib.path(workdir, workdir_lib.EXPORT)
  os.makedirs(output, exist_ok=True)
  for name, artifact in ((ARTIFACT, exported), (RESIZER, resizer)):
    with fileio.atomic_write(os.path.join(output, name), 'wb') as f:
      f.write(artifact.serialize())
  fileio.write_json(
    os.path.join(output, METADATA),
    {
      'classes': list(CLASS_NAMES),
      'input': {
        'size': size,
        'layout': 'NHWC: [batch, height, width, RGB]',
        'dtype': 'uint8',
        'resize': f'{RESIZER}: a uint8 RGB photo [height, width, 3] of any '
        'size to [size, size, 3], squashed as training and predict do',
      },
      'output': 'p(dog), float32 [batch]',
      'decision': 'dog when p(dog) >= 0.5, else cat',
      'model': config.model.name,
      # The pretrained weights it started from: {} for none.
      'initialised_from': {
        key: config.model.get(key)
        for key in ('init_from', 'init_package', 'init_sha256')
        if config.model.get(key)
      },
      'checkpoint_step': predictor.step,
      # Folded into model.jax (calibration.json); 1.0: none fitted.
      'temperature': predictor.temperature,
      'measured': measured(workdir, predictor.step),
      'weights_sha256': weights_sha256(variables),
      'platforms': list(PLATFORMS),
      'jax_version': jax.__version__,
      'load_and_run': LOADER.splitlines(),
    },
  )
  logging.info('Exported checkpoint %d of %s to %s.', predictor.step, workdir,
               output)  # fmt: skip
  return output
