"""--mode=serve from the command line: one line says where the page is,
once it answers (the page itself is tested in Chromium by page_test.py)."""

import os
import subprocess
import sys
import time
import urllib.request

import pytest

from tests import helpers

pytestmark = [
  pytest.mark.slow,
  helpers.needs('gradio', 'the serve extra (Gradio) is missing'),
]


def test_serve_prints_its_url_once_the_page_answers(trained_run):
  port = helpers.free_port()
  process = subprocess.Popen(
    [sys.executable, 'main.py', '--mode=serve',
     f'--workdir={trained_run.workdir}', f'--port={port}'],
    cwd=helpers.REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    text=True, env={**os.environ, 'GRADIO_ANALYTICS_ENABLED': 'False'},
  )  # fmt: skip
  try:
    deadline = time.monotonic() + 120
    line = ''
    while 'Serving' not in line and time.monotonic() < deadline:
      line = process.stdout.readline()
      assert line or process.poll() is None, 'serve exited'
    url = f'http://127.0.0.1:{port}/'
    assert line.strip() == (
      f'Serving checkpoint 40 of {os.path.abspath(trained_run.workdir)} at '
      f'{url} (Ctrl-C stops)'
    )
    with urllib.request.urlopen(url, timeout=30) as response:
      assert response.status == 200
  finally:
    process.terminate()
    process.wait(timeout=30)
