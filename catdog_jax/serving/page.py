"""--mode=serve: a local page to try a trained model on your own photos.

Built on Gradio, the demo library this field's users know (and what a
Hugging Face Space runs), installed with the `serve` extra. A person drops
one or many photos; each gets its label, p(dog) as a bar, where the model
looked (Grad-CAM), or the reason it was skipped. The page says which
checkpoint it serves and what that model measured, so nobody mistakes it
for a 99% model.

A photo is classified as --mode=predict does it: the same checks, the same
compiled evaluation step (weights, test-time augmentation), one photo at a
time.
"""

import base64
import html
import io
import os

import numpy as np
from PIL import Image

from catdog_jax import fileio
from catdog_jax import mesh
from catdog_jax import models
from catdog_jax import text
from catdog_jax import workdir as workdir_lib
from catdog_jax.data import dataset
from catdog_jax.data import input_pipeline
from catdog_jax.data import sources
from catdog_jax.errors import UsageError
from catdog_jax.evaluation import gradcam
from catdog_jax.evaluation import metrics
from catdog_jax.evaluation import plots
from catdog_jax.evaluation import predict
from catdog_jax.models import pretrained
from catdog_jax.serving import export

HOST = '127.0.0.1'  # Reachable from this machine only.


class Classifier:
  """A workdir's model, one photo at a time: p(dog), label and Grad-CAM."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.predictor = predict.Predictor(workdir)
    self.config = self.predictor.config
    self.size = self.config.data.image_size
    self._sharding, _ = mesh.create_shardings()
    model = models.create_model(self.config.model)
    self._layer = gradcam.last_pooling_layer(model, self.size)

  def classify(self, path: str, with_gradcam: bool = True) -> dict:
    """{'name', 'prob_dog', 'label', 'gradcam' (PNG bytes or None)}, or
    {'name', 'skipped': reason} for a file that cannot be used."""
    name = os.path.basename(path)
    source = sources.FilesSource([path])
    record = dataset.inspect_item(source, path, self.config.data.max_pixels)
    if 'reason' in record:
      return {'name': name, 'skipped': record['reason']}
    image = input_pipeline.load_image(source, path, self.size)
    batch = {
      'image': image[None],
      'label': np.zeros(1, np.int32),
      'mask': np.ones(1, bool),
    }
    variables = self.predictor.variables
    out = self.predictor.eval_fn(
      variables, mesh.to_global(batch, self._sharding)
    )
    logit = float(np.asarray(out['logit'])[0])
    result = {
      'name': name,
      'prob_dog': float(metrics.sigmoid(logit)),
      'label': 'dog' if logit >= 0 else 'cat',
      'gradcam': None,
    }
    if with_gradcam and self._layer is not None:
      heatmap = gradcam.gradcam(
        self.predictor.apply_fn, variables, image[None], self._layer
      )[0]
      result['gradcam'] = png(plots.overlay_heatmap(image, heatmap))
    return result

  def about(self) -> str:
    """What the page serves, and what that model measured (Markdown)."""
    step = self.predictor.step
    run_path = workdir_lib.path(self.workdir, workdir_lib.RUN)
    run = fileio.read_json(run_path) if os.path.exists(run_path) else {}
    lines = [
      f'**Model:** `{self.config.model.name}`, checkpoint {step} of '
      f'`{os.path.abspath(self.workdir)}`'
      + (
        f', trained with `{run["config_file"]}`' if 'config_file' in run else ''
      )  # fmt: skip
      + f'; photos are squashed to {self.size}x{self.size}.',
    ]
    if source := pretrained.describe_source(self.config.model):
      variant = self.config.model.get('variant')
      lines.append(
        f'**Backbone:** `{self.config.model.name}`'
        + (f' `{variant}`' if variant else '')
        + f', its ImageNet weights from {source}.'
      )
    figures = export.measured(self.workdir, step)
    if 'test' in figures:
      lines.append(
        f'**Measured:** test accuracy {figures["test"]["accuracy"]:.3f} on '
        'photos of the training collection it never trained on.'
      )
    elif figures['validation']:
      lines.append(
        'Measured: validation accuracy '
        f'{figures["validation"]["accuracy"]:.3f} (training collection).'
      )
    if 'other_folder' in figures:
      lines.append(other_folder_line(figures['other_folder']))
    origin = (
      'Fine-tuned from ImageNet weights' if source else 'Trained from scratch'
    )
    lines.append(
      f'{origin} on one collection: photos unlike those are wrong more often '
      'than these figures say.'
    )
    return '\n\n'.join(lines)


def other_folder_line(other: dict) -> str:
  """A labelled folder's accuracy (`export.measured`), with how many of its
  photos are of the training split and the accuracy on the others."""
  line = (
    f'On {text.counted(other["num_examples"], "photo")} of another '
    f'collection (`{other["folder"]}`): accuracy {other["accuracy"]:.3f}'
  )
  if other.get('photos_of_training_split'):
    unseen = other['unseen']
    rest = (
      f'accuracy {unseen["accuracy"]:.3f}'
      if unseen['num_examples']
      else 'none left'
    )
    line += (
      f', but {other["photos_of_training_split"]} of them are photos of '
      f'the training split; on the other {unseen["num_examples"]}: {rest}'
    )
  return line + '.'


def png(image_rgb: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image_rgb).save(buffer, format='PNG')
  return buffer.getvalue()


def results_html(results: list[dict]) -> str:
  """One card per photo: name, label and p(dog) (as a bar), Grad-CAM; or
  the reason it was skipped. Data attributes carry the exact values."""
  cards = []
  for r in results:
    name = html.escape(r['name'])
    if 'skipped' in r:
      cards.append(
        f'<div class="catdog-skipped" data-name="{name}">'
        f'<b>{name}</b>: skipped, {html.escape(r["skipped"])}</div>'
      )
      continue
    image = ''
    if r['gradcam']:
      data = base64.b64encode(r['gradcam']).decode()
      image = f'<img src="data:image/png;base64,{data}" width="200" alt="">'
    percent = 100 * r['prob_dog']
    cards.append(
      f'<div class="catdog-result" data-name="{name}" '
      f'data-label="{r["label"]}" data-prob="{r["prob_dog"]!r}" '
      'style="display:inline-block;margin:8px;width:210px;'
      'vertical-align:top">'
      f'{image}<div><b>{r["label"]}</b> · {name}</div>'
      '<div style="background:#ddd;height:10px;width:200px">'
      f'<div style="background:#e67e22;height:10px;width:{percent:.1f}%">'
      f'</div></div><div>p(dog) = {r["prob_dog"]:.4f}</div></div>'
    )
  return '\n'.join(cards)


def build(classifier: Classifier):
  """The page, as a Gradio Blocks app."""
  import gradio as gr  # The serve extra.

  def classify(paths):
    return results_html([classifier.classify(p) for p in paths or []])

  with gr.Blocks(title='catdog-jax', analytics_enabled=False) as page:
    gr.Markdown('# Cat or dog?\n\n' + classifier.about())
    photos = gr.File(
      file_count='multiple', type='filepath', label='Your photos'
    )
    button = gr.Button('Classify', variant='primary')
    output = gr.HTML()
    button.click(classify, photos, output, api_name='classify')
  return page


def serve(workdir: str, port: int, host: str = HOST, block: bool = True):
  """Serves the page at http://host:port and says so on one line, once it
  answers; returns the Gradio app (with `block`, when it is stopped)."""
  try:
    import gradio  # noqa: F401 - only to say what to install.
  except ImportError as e:
    raise UsageError(
      '--mode=serve needs Gradio: pip install "catdog-jax[serve]" (or pip '
      'install gradio)'
    ) from e
  classifier = Classifier(workdir)
  page = build(classifier)
  page.launch(
    server_name=host,
    server_port=port,
    prevent_thread_lock=True,
    quiet=True,
    show_error=True,
  )
  print(
    f'Serving checkpoint {classifier.predictor.step} of '
    f'{os.path.abspath(workdir)} at http://{host}:{port}/'
    + (' (Ctrl-C stops)' if block else ''),
    flush=True,
  )
  if block:
    page.block_thread()
  return page
