"""--mode=serve's page, driven in a real headless Chromium.

Needs the serve extra (Gradio), Playwright's Python package and Debian's
chromium (CI installs them); skips, saying which is missing, elsewhere.
"""

import concurrent.futures
import os
import shutil

import pytest

from catdog_jax.evaluation import predict
from tests import helpers

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
pytestmark = [
  pytest.mark.slow,
  helpers.needs('gradio', 'the serve extra (Gradio) is missing'),
  helpers.needs('playwright', "Playwright's Python package is missing"),
  pytest.mark.skipif(CHROMIUM is None, reason='no chromium (apt install it)'),
]
# As a root CI user on a machine without a network: no sandbox, nothing
# fetched in the background.
CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
  '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run',
]  # fmt: skip


@pytest.fixture(scope='module')
def served(trained_run):
  from catdog_jax.serving import page

  port = helpers.free_port()
  app = page.serve(trained_run.workdir, port, block=False)
  yield f'http://127.0.0.1:{port}'
  app.close()


@pytest.fixture(scope='module')
def uploads(tmp_path_factory):
  root = tmp_path_factory.mktemp('uploads')
  helpers.write_dataset(root, 'flat', per_class=1, seed=21)
  (root / 'notes.txt').write_text('not a photo')
  return [str(root / name) for name in ('cat.0.jpg', 'dog.0.jpg', 'notes.txt')]


def test_a_person_uploads_photos_and_sees_what_predict_says(
  served, uploads, trained_run, tmp_path
):
  from playwright import sync_api

  with sync_api.sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={'width': 1200, 'height': 1000})
    page.goto(served)
    assert 'checkpoint 40' in page.content()  # Which model it serves.
    page.wait_for_selector('input[type=file]', state='attached')
    page.set_input_files('input[type=file]', uploads)
    page.get_by_role('button', name='Classify').click()
    page.wait_for_selector('.catdog-skipped', timeout=60_000)
    shown = {
      el.get_attribute('data-name'): (
        el.get_attribute('data-label'),
        float(el.get_attribute('data-prob')),
      )
      for el in page.query_selector_all('.catdog-result')
    }
    skipped = page.inner_text('.catdog-skipped')
    page.screenshot(path=str(tmp_path / 'page.png'), full_page=True)
    browser.close()
  rows, _ = predict.predict(trained_run.workdir, uploads[:2])
  assert len(shown) == 2
  for row in rows:
    label, prob = shown[os.path.basename(row['path'])]
    assert label == row['predicted']
    assert prob == pytest.approx(row['prob_dog'], abs=1e-5)
  assert 'notes.txt' in skipped and 'cannot decode it as an image' in skipped
  assert os.path.getsize(tmp_path / 'page.png') > 10_000


def test_twenty_requests_at_once_all_get_answers(served, uploads):
  from gradio_client import Client
  from gradio_client import handle_file

  def ask(i):
    client = Client(served, verbose=False)
    return client.predict([handle_file(uploads[i % 2])], api_name='/classify')

  with concurrent.futures.ThreadPoolExecutor(20) as pool:
    answers = list(pool.map(ask, range(20)))
  assert all(answer.count('class="catdog-result"') == 1 for answer in answers)
