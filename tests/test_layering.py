"""Imports point down: core, then data and models, then train, then programs,
then config, experiment, sweep and cli on top; no module imports one above it,
and no two modules import each other (directly or round a longer circle)."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'sparsejax'

# Layer of each module (by dotted name prefix, most specific first).
LAYERS = [
    ('sparsejax.core', 0), ('sparsejax.bundled', 0),
    ('sparsejax.data', 1),
    ('sparsejax.models', 2),
    ('sparsejax.train', 3),
    ('sparsejax.programs', 4),
    ('sparsejax.optim', 5), ('sparsejax.settings', 5), ('sparsejax.config_blocks', 5),
    ('sparsejax.config', 5),
    ('sparsejax.experiment', 6), ('sparsejax.prune_run', 6), ('sparsejax.sweep', 6), ('sparsejax.reproduce', 7),
    ('sparsejax.cli', 7),
    ('sparsejax', 0),          # the package's __init__ re-exports the core
]


def layer(name: str) -> int:
  for prefix, n in LAYERS:
    if name == prefix or name.startswith(prefix + '.'):
      return n
  raise AssertionError(f'module {name} has no layer: add it to LAYERS')


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imports_of(path: pathlib.Path) -> set[str]:
  """sparsejax modules imported anywhere in the file (lazy imports too)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names if a.name.startswith('sparsejax'))
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('sparsejax'):
      for a in node.names:     # 'from sparsejax.x import y' may import module x.y
        sub = f'{node.module}.{a.name}'
        out.add(sub if _exists(sub) else node.module)
  return out


def _exists(name: str) -> bool:
  rel = pathlib.Path(*name.split('.')[1:])
  return (PACKAGE / rel).with_suffix('.py').exists() or (PACKAGE / rel / '__init__.py').exists()


def graph() -> dict[str, set[str]]:
  return {module_name(p): imports_of(p) for p in PACKAGE.rglob('*.py')}


def test_imports_point_down():
  bad = []
  for mod, deps in graph().items():
    for dep in deps:
      if mod == 'sparsejax' or dep == mod:
        continue
      if layer(dep) > layer(mod):
        bad.append(f'{mod} (layer {layer(mod)}) imports {dep} (layer {layer(dep)})')
  assert not bad, '\n'.join(bad)


def test_no_import_cycles():
  full = graph()
  g = {m: {d for d in deps if d in full} for m, deps in full.items()}
  g.pop('sparsejax', None)
  for deps in g.values():
    deps.discard('sparsejax')
  state, cycles = {}, []

  def visit(node, stack):
    state[node] = 'open'
    for dep in sorted(g.get(node, ())):
      if dep == node:
        continue
      if state.get(dep) == 'open':
        cycles.append(' -> '.join(stack[stack.index(dep):] + [dep]))
      elif dep not in state:
        visit(dep, stack + [dep])
    state[node] = 'done'

  for node in sorted(g):
    if node not in state:
      visit(node, [node])
  assert not cycles, '\n'.join(cycles)


def test_the_check_catches_an_upward_import():
  assert layer('sparsejax.train.loop') < layer('sparsejax.config')
  assert layer('sparsejax.core.schedules') < layer('sparsejax.data.base')
