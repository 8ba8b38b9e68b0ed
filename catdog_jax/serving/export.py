"""A trained workdir's model as one file that runs with jax alone.

`export_workdir` writes, into a folder (default WORKDIR/export/):

  model.jax    the best checkpoint's inference function, serialized with
               `jax.export`: uint8 RGB images [batch, size, size, 3] in
               (any batch), p(dog) [batch] out; the weights, the scaling
               to [0, 1], the test-time augmentation and the fitted
               temperature (calibration.py) folded in. Lowered
               for CPU, CUDA and TPU.
  model.json   what a user of it needs: the classes and decision rule, the
               input size, the checkpoint step, its measured figures, the
               weights' SHA-256, and the ten lines that run it.

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

ARTIFACT = 'model.jax'
METADATA = 'model.json'
PLATFORMS = ('cpu', 'cuda', 'tpu')
# What model.json shows a user: these lines run the file (loader_test.py
# runs them, with catdog_jax, flax, optax and orbax unimportable).
LOADER = """\
import json
import jax
import numpy as np

with open('model.json') as f:
  size = json.load(f)['input']['size']
with open('model.jax', 'rb') as f:
  model = jax.export.deserialize(bytearray(f.read()))
images = np.zeros((2, size, size, 3), np.uint8)  # Your RGB photos, resized.
p_dog = np.asarray(model.call(images))
print(np.where(p_dog >= 0.5, 'dog', 'cat'), p_dog)
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
  except Exception as e:  # noqa: BLE001 - lowering fails in many ways.
    first = str(e).strip().splitlines()[0] if str(e).strip() else ''
    raise UsageError(
      f'model {config.model.name!r} does not export: {type(e).__name__}: '
      f'{first}'
    ) from e
  output = output or workdir_lib.path(workdir, workdir_lib.EXPORT)
  os.makedirs(output, exist_ok=True)
  with fileio.atomic_write(os.path.join(output, ARTIFACT), 'wb') as f:
    f.write(exported.serialize())
  fileio.write_json(
    os.path.join(output, METADATA),
    {
      'classes': list(CLASS_NAMES),
      'input': {
        'size': size,
        'layout': 'NHWC: [batch, height, width, RGB]',
        'dtype': 'uint8',
        'resize': 'squash the whole photo to size x size, as training did',
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
