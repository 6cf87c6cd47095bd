"""The documentation site and the quick-start notebook.

The code blocks of the README and the guides run in test_readme.py; here:
the quick-start notebook runs end to end (as a script, in its own process,
within a minute of CPU time) and its two files hold the same cells; the API
reference names every public name and module it promises; every page is in
the site's navigation; and, where the `docs` extra is installed, the site
builds with warnings as errors (CI builds it after the suite in any case).
"""

import importlib
import json
import os
import pathlib
import re
import resource
import subprocess
import sys
import time
import types

import pytest

import sparsejax

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / 'notebooks' / 'quickstart.ipynb'
SCRIPT = ROOT / 'notebooks' / 'quickstart.py'
API = ROOT / 'docs' / 'api'

# The modules the API reference documents, by page (mkdocstrings `::: name`).
API_MODULES = {
    'core.md': ['sparsejax', 'sparsejax.core.transform', 'sparsejax.core.masks',
                'sparsejax.core.prune', 'sparsejax.core.tree', 'sparsejax.core.registry',
                'sparsejax.core.compact', 'sparsejax.core.flops'],
    'schedules.md': ['sparsejax.core.protocol', 'sparsejax.core.schedules',
                     'sparsejax.core.dynamic', 'sparsejax.core.imp', 'sparsejax.core.rewinding',
                     'sparsejax.core.movement', 'sparsejax.core.ste', 'sparsejax.core.at_init'],
    'selection.md': ['sparsejax.core.criteria', 'sparsejax.core.allocation',
                     'sparsejax.core.select', 'sparsejax.core.select_keys',
                     'sparsejax.core.patterns'],
    'train.md': ['sparsejax.train.task', 'sparsejax.train.loop_settings', 'sparsejax.train.loop',
                 'sparsejax.train.weights',
                 'sparsejax.train.distill'],
    'programs.md': ['sparsejax.programs.lottery', 'sparsejax.programs.finetune',
                    'sparsejax.programs.grid', 'sparsejax.programs.results',
                    'sparsejax.programs.report', 'sparsejax.programs.export',
                    'sparsejax.programs.export_formats', 'sparsejax.programs.export_check',
                    'sparsejax.programs.sparse_inference', 'sparsejax.programs.sliced_ell',
                    'sparsejax.programs.evaluate', 'sparsejax.programs.export_verify',
                    'sparsejax.programs.prune', 'sparsejax.programs.perplexity',
                    'sparsejax.programs.generate', 'sparsejax.programs.peft',
                    'sparsejax.programs.sweep_points',
                    'sparsejax.programs.stats'],
    'posttrain.md': ['sparsejax.posttrain'],
    'models.md': ['sparsejax.models', 'sparsejax.models.llama', 'sparsejax.models.llama_layers',
                  'sparsejax.models.pretrained',
                  'sparsejax.models.llama_weights'],
    'data.md': ['sparsejax.data', 'sparsejax.data.corpus', 'sparsejax.data.lm_tokenizer'],
}


def script_cells(text: str) -> list[tuple[str, str]]:
  """(cell type, source) of a jupytext percent-format script, as the notebook
  holds them: the header comment left out, markdown cells uncommented, blank
  lines around each cell dropped."""
  cells = []
  for chunk in re.split(r'^(?=# %%)', text, flags=re.M)[1:]:
    marker, _, body = chunk.partition('\n')
    if '[markdown]' in marker:
      body = '\n'.join(re.sub(r'^# ?', '', line) for line in body.splitlines())
      cells.append(('markdown', body.strip('\n')))
    else:
      cells.append(('code', body.strip('\n')))
  return cells


def notebook_cells(notebook: dict) -> list[tuple[str, str]]:
  return [(c['cell_type'], ''.join(c['source']).strip('\n')) for c in notebook['cells']]


def test_notebook_and_its_script_hold_the_same_cells():
  script = script_cells(SCRIPT.read_text())
  notebook = json.loads(NOTEBOOK.read_text())
  assert notebook['nbformat'] == 4
  assert len(script) >= 8 and sum(kind == 'code' for kind, _ in script) >= 5
  assert notebook_cells(notebook) == script, (
      'notebooks/quickstart.ipynb and quickstart.py differ: pair them with '
      '`jupytext --sync notebooks/quickstart.py`')
  assert notebook['metadata']['jupytext']['formats'] == 'ipynb,py:percent'


def test_script_cells_parse_as_jupytext_writes_them():
  text = ('# ---\n# jupyter:\n#   x: 1\n# ---\n\n# %% [markdown]\n# # Title\n#\n# text\n\n'
          '# %%\nx = 1\n\n\n# %%\n# a comment\ny = 2\n')
  assert script_cells(text) == [('markdown', '# Title\n\ntext'), ('code', 'x = 1'),
                                ('code', '# a comment\ny = 2')]


@pytest.mark.slow
@pytest.mark.extended
def test_quickstart_runs_end_to_end_within_a_minute(tmp_path):
  """The script as a user runs it: RigL on its own MLP, the 3-level lottery,
  the report with its plots (under a temporary folder), in under a minute of
  CPU time (wall time on a loaded machine is longer, and printed)."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  started = time.perf_counter()
  proc = subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp_path, capture_output=True,
                        text=True, timeout=600, env={**os.environ, 'TMPDIR': str(tmp_path)})
  wall = time.perf_counter() - started
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  print(f'quickstart: {cpu:.1f} s CPU, {wall:.1f} s wall')
  assert re.search(r'RigL: sparsity 0\.900, test accuracy 0\.\d+', out), out
  assert re.search(r"\[\(0, 1\.0, [\d.]+\), \(1, 0\.5, [\d.]+\), \(2, 0\.25, [\d.]+\), "
                   r"\(3, 0\.125, [\d.]+\)\]", out), out
  [work] = tmp_path.glob('sparsejax_quickstart_*')
  for name in ('report.md', 'report.csv', 'accuracy_vs_density.png', 'curves.png'):
    assert (work / 'report' / name).stat().st_size > 0, name
    assert str(work / 'report' / name) in out
  assert re.search(r'\| 3 +\| 12\.5 +\|', out), out      # the level table
  assert cpu < 60, f'the quick start took {cpu:.0f} s of CPU time ({wall:.0f} s wall)'


def test_api_reference_documents_every_public_name_and_module():
  directives = {page.name: re.findall(r'^::: (\S+)', page.read_text(), flags=re.M)
                for page in API.glob('*.md')}
  for page, modules in API_MODULES.items():
    assert directives.get(page) == modules, (page, directives.get(page))
  for modules in directives.values():
    for name in modules:
      importlib.import_module(name)
  # Every name `import sparsejax` exports is linked from the core page to the
  # module that defines it (and is documented there, on one of the pages).
  core = (API / 'core.md').read_text()
  documented = {m for modules in API_MODULES.values() for m in modules}
  exported = [n for n in dir(sparsejax)
              if not n.startswith('_') and not isinstance(getattr(sparsejax, n), types.ModuleType)]
  assert len(exported) >= 40
  for name in exported:
    found = re.findall(rf'\[`{name}`\]\[(sparsejax\.[\w.]+)\.{name}\]', core)
    assert len(found) == 1, f'docs/api/core.md: no single entry for sparsejax.{name}'
    module = importlib.import_module(found[0])
    assert getattr(module, name) is getattr(sparsejax, name), name
    assert found[0] in documented, (name, found[0])


def test_every_page_is_in_the_site_navigation():
  yaml = pytest.importorskip('yaml')
  config = yaml.safe_load((ROOT / 'mkdocs.yml').read_text())

  def leaves(nav):
    for item in nav:
      for value in (item.values() if isinstance(item, dict) else [item]):
        if isinstance(value, list):
          yield from leaves(value)
        else:
          yield value

  nav = list(leaves(config['nav']))
  pages = {str(p.relative_to(ROOT / 'docs')) for p in (ROOT / 'docs').glob('**/*.md')}
  assert sorted(nav) == sorted(pages | {'README.md', 'CHANGELOG.md'})
  hooks = (ROOT / 'docs' / 'hooks.py').read_text()
  outside = re.search(r'OUTSIDE = \(([^)]*)\)', hooks).group(1)
  for name in re.findall(r"'([^']+)'", outside):
    assert (ROOT / name).is_file(), name


def test_site_builds_strict(tmp_path):
  """The strict build (about 5 s), where the docs extra is installed; CI's
  docs step runs it after the suite in any case."""
  pytest.importorskip('mkdocs')
  pytest.importorskip('mkdocstrings')
  proc = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--strict', '-f',
                         str(ROOT / 'mkdocs.yml'), '-d', str(tmp_path / 'site')],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'WARNING' not in proc.stderr, proc.stderr[-3000:]
  home = (tmp_path / 'site' / 'index.html').read_text()
  assert 'The two commands' in home and 'href="core/"' in home
  assert (tmp_path / 'site' / 'notebooks' / 'quickstart.ipynb').is_file()
  assert 'sparsejax.core.transform.sparsify' in (
      tmp_path / 'site' / 'api' / 'core' / 'index.html').read_text()
