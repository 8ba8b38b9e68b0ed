"""The package's shape: imports point down, configs come from one recipe.

Read from the source with `ast`, so these hold without importing anything.
"""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = 'catdog_jax'
# Modules that only evaluate, predict or report: none may need the trainer.
EVALUATION_MODULES = ('evaluate', 'predict', 'report', 'gradcam', 'metrics')


def imported_modules(path: str, package: str) -> set[str]:
  """Names of `package`'s modules that the file at `path` imports."""
  with open(path) as f:
    tree = ast.parse(f.read())
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module:
      if node.module == package:
        found.update(alias.name for alias in node.names)
      elif node.module.startswith(f'{package}.'):
        found.add(node.module.split('.')[1])
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith(f'{package}.'):
          found.add(alias.name.split('.')[1])
  return found


def import_graph(package: str) -> dict[str, set[str]]:
  folder = os.path.join(REPO, package)
  return {
    name[:-3]: imported_modules(os.path.join(folder, name), package)
    for name in sorted(os.listdir(folder))
    if name.endswith('.py') and name != '__init__.py'
  }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle as a path of module names, or None."""
  visiting, done = [], set()

  def visit(node):
    if node in visiting:
      return visiting[visiting.index(node) :] + [node]
    if node in done:
      return None
    visiting.append(node)
    for child in sorted(graph.get(node, ())):
      cycle = visit(child)
      if cycle:
        return cycle
    visiting.pop()
    done.add(node)
    return None

  for node in graph:
    cycle = visit(node)
    if cycle:
      return cycle
  return None


def reachable(graph, start: str) -> set[str]:
  seen, stack = set(), [start]
  while stack:
    for child in graph.get(stack.pop(), ()):
      if child not in seen:
        seen.add(child)
        stack.append(child)
  return seen


def test_find_cycle_finds_one():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == [
    'a', 'b', 'c', 'a'
  ]  # fmt: skip
  assert find_cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) is None


def test_the_package_has_no_import_cycle():
  assert find_cycle(import_graph(PACKAGE)) is None


@pytest.mark.parametrize('module', EVALUATION_MODULES)
def test_evaluation_never_reaches_the_trainer(module):
  graph = import_graph(PACKAGE)
  assert module in graph
  assert 'train' not in reachable(graph, module)


def test_configs_import_only_base_and_common():
  graph = import_graph('configs')
  for name, imports in graph.items():
    allowed = {'base': set(), 'common': set()}.get(name, {'base', 'common'})
    assert imports <= allowed, f'configs/{name}.py imports {imports}'
