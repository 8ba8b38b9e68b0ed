"""main.py re-executes itself under mimalloc (catdog_jax/allocator.py)."""

import os
import subprocess
import sys

import pytest

from catdog_jax import allocator
from tests import helpers


def summary_log(**env) -> str:
  """What main.py --mode=summary logs about its allocator."""
  result = subprocess.run(
    [sys.executable, 'main.py', '--mode=summary', '--config=configs/base.py'],
    cwd=helpers.REPO,
    env={**os.environ, **env},
    capture_output=True,
    text=True,
    timeout=120,
    check=True,
  )
  return next(
    line for line in result.stderr.splitlines() if 'Memory allocator' in line
  )


def test_the_installed_library_is_found():
  path = allocator.library_path()
  if path is None:
    pytest.skip('cmeel-mimalloc is not installed')
  assert os.path.isfile(path) and 'libmimalloc.so' in path


@pytest.mark.slow  # Starts main.py twice.
@pytest.mark.skipif(
  allocator.library_path() is None or not sys.platform.startswith('linux'),
  reason='needs cmeel-mimalloc, on Linux',
)
def test_main_runs_under_mimalloc_unless_switched_off():
  # The line comes from the new process's own memory map.
  assert 'mimalloc (freed pages kept' in summary_log()
  assert 'the system malloc' in summary_log(CATDOG_JAX_ALLOCATOR='system')
  # This process (pytest) was not re-executed.
  assert not allocator.is_loaded()
