"""mimalloc under XLA:CPU's buffers: main.py re-executes itself with it.

XLA:CPU allocates its large per-execution buffers afresh on every step, and
glibc's malloc maps and unmaps anything that large (its mmap threshold is
at most 32 MiB): each step of the CPU configs' train step at 160 px then
pays ~54,000 page faults and a seventh of its time in the kernel
(docs/performance.md). mimalloc (the `cmeel-mimalloc` package) with purging
off keeps freed pages mapped and hands them out again: the same step takes
no fault. An allocator can only replace malloc from the process's start,
so main.py calls `reexec_with_mimalloc` before anything else; the new
process finds it loaded and goes on. CPU-only in effect, harmless elsewhere.

Set CATDOG_JAX_ALLOCATOR=system to keep glibc's malloc.
"""

import importlib.metadata
import os
import sys

SWITCH = 'CATDOG_JAX_ALLOCATOR'  # 'mimalloc' (the default) or 'system'.
_REEXECUTED = 'CATDOG_JAX_ALLOCATOR_REEXECUTED'  # Set in the new process.
# mimalloc's options: never return freed memory to the system.
MIMALLOC_OPTIONS = {'MIMALLOC_PURGE_DELAY': '-1'}


def library_path() -> str | None:
  """libmimalloc.so of the installed cmeel-mimalloc package, or None."""
  try:
    files = importlib.metadata.files('cmeel-mimalloc') or []
  except importlib.metadata.PackageNotFoundError:
    return None
  for file in files:
    if file.name.startswith('libmimalloc.so') and file.name.count('.') == 2:
      return str(file.locate())
  return None


def is_loaded() -> bool:
  """Whether mimalloc is mapped into this process."""
  try:
    with open('/proc/self/maps') as f:
      return 'libmimalloc' in f.read()
  except OSError:  # Not Linux.
    return False


def reexec_with_mimalloc() -> None:
  """Replaces this process by itself (the same interpreter, options and
  arguments) with mimalloc preloaded, when it is installed, not yet loaded,
  and not switched off; else returns."""
  if (
    os.environ.get(SWITCH, 'mimalloc') == 'system'
    or os.environ.get(_REEXECUTED)
    or not sys.platform.startswith('linux')
    or is_loaded()
  ):
    return
  library = library_path()
  if library is None:
    return
  env = dict(os.environ)
  env['LD_PRELOAD'] = ' '.join(filter(None, [library, env.get('LD_PRELOAD')]))
  env[_REEXECUTED] = '1'
  env.update({k: env.get(k, v) for k, v in MIMALLOC_OPTIONS.items()})
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def describe() -> str:
  """One line for the log: which allocator this process runs on, and why."""
  if is_loaded():
    return (
      'Memory allocator: mimalloc (freed pages kept for the next step); '
      f'{SWITCH}=system turns it off.'
    )
  if os.environ.get(SWITCH) == 'system':
    return f'Memory allocator: the system malloc ({SWITCH}=system).'
  if os.environ.get(_REEXECUTED):
    return 'Memory allocator: mimalloc did not load; the system malloc.'
  return (
    'Memory allocator: the system malloc (cmeel-mimalloc is not installed: '
    'each step pays page faults; pip install cmeel-mimalloc).'
  )
