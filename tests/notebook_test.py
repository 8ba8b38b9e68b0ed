"""Runs notebooks/colab_tpu.ipynb's cells on CPU with a tiny config.

Cells marked `# needs: network` or `# needs: tpu` (installing, downloading
TFDS) cannot run here and are skipped; the settings cell is replaced by one
pointing at a synthetic folder. Everything else runs as Colab would run it,
bfloat16 computation included.
"""

import json
import os

import pytest

from tests import helpers

pytestmark = pytest.mark.slow

NOTEBOOK = os.path.join(
  os.path.dirname(__file__), os.pardir, 'notebooks', 'colab_tpu.ipynb'
)
SKIP_MARKERS = ('# needs: network', '# needs: tpu')


def load_notebook():
  with open(NOTEBOOK) as f:
    notebook = json.load(f)
  assert notebook['nbformat'] == 4
  for cell in notebook['cells']:
    assert cell['cell_type'] in ('markdown', 'code')
    assert isinstance(cell['source'], list)
  return notebook


def test_notebook_runs_on_cpu_with_a_tiny_config(flat_dataset, tmp_path):
  overrides = {
    **helpers.TINY_OVERRIDES, 'num_train_steps': 4, 'eval_every_steps': 4
  }  # fmt: skip
  settings = (
    f"DATA_SOURCE = 'folder'\nDATA_ROOT = {flat_dataset!r}\n"
    f'WORKDIR = {str(tmp_path)!r}\nOVERRIDES = {overrides!r}\n'
  )
  namespace = {}
  ran = skipped = 0
  for cell in load_notebook()['cells']:
    source = ''.join(cell['source'])
    if cell['cell_type'] != 'code':
      continue
    if source.startswith(SKIP_MARKERS):
      skipped += 1
      continue
    if source.startswith('# Settings'):
      source = settings
    assert '\n!' not in source and not source.startswith(('!', '%'))
    exec(compile(source, NOTEBOOK, 'exec'), namespace)  # noqa: S102
    ran += 1
  assert ran >= 4 and skipped == 2
  assert namespace['config'].dtype == 'bfloat16'
  assert int(namespace['state'].step) == 4
  assert (tmp_path / 'report.md').exists()
  assert (tmp_path / 'plots' / 'gradcam.png').exists()
