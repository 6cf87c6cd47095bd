"""Adding a program is one module in `sparsejax/programs/` plus its line in
`cli_args.PROGRAMS` (docs/api/programs.md, "Adding a program").

The page's example module is written, as the page shows it, into a folder
that extends `sparsejax.programs` (so it imports as
`sparsejax.programs.zeros`, exactly the name of the page's registration
line); `cli_args.PROGRAMS` becomes the page's tuple; and `sparsejax.cli.main`
runs the new subcommand: its output, its exit status on good and bad input,
its lines in `sparsejax --help`. Nothing else of the package is edited. The
same module registered from a package of the user's own runs as well, and
the programs already in `PROGRAMS` (perplexity, generate) have no code in
`cli.py`. test_readme.py's runner of the page's blocks calls
`check_docs_example`.
"""

import pathlib
import re
import sys

import numpy as np
import pytest

import sparsejax.programs
from sparsejax import cli, cli_args

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = ROOT / 'docs' / 'api' / 'programs.md'
MODULE_MARKER = 'def add_arguments(parser)'
LINE_MARKER = "'sparsejax.programs.zeros',"


def page_blocks() -> dict[str, str]:
  """The page's two python blocks of the example: the module and the line."""
  blocks = re.findall(r'^```python\n(.*?)^```$', PAGE.read_text(), flags=re.M | re.S)
  found = {}
  for marker in (MODULE_MARKER, LINE_MARKER):
    holding = [b for b in blocks if marker in b]
    assert len(holding) == 1, marker
    found[marker] = holding[0]
  return found


def _weights(path):
  np.savez(path, w1=np.where(np.arange(160) % 10 == 0, 1.0, 0.0).reshape(10, 16),
           b1=np.zeros(16), w2=np.ones((16, 8)))
  return str(path)


def _cli(capsys, argv):
  capsys.readouterr()
  rc = cli.main(argv)
  out = capsys.readouterr()
  return rc, out.out, out.err


def _check_the_command(capsys, tmp_path, command='zeros'):
  weights = _weights(tmp_path / 'trained.npz')
  rc, out, err = _cli(capsys, [command, weights, '--min-size', '100'])
  assert (rc, out, err) == (0, 'w1: 90.0% zeros of 160\nw2: 0.0% zeros of 128\n', '')
  rc, out, _ = _cli(capsys, [command, weights])
  assert rc == 0 and out.splitlines()[0] == 'b1: 100.0% zeros of 16', out
  rc, out, err = _cli(capsys, [command, str(tmp_path / 'notes.txt')])
  assert (rc, out) == (2, '')
  assert err.startswith(f'sparsejax: {tmp_path / "notes.txt"} is not a .npz file'), err
  rc, _, err = _cli(capsys, [command, weights, '--config.train.steps=3'])   # no overrides
  assert rc == 2 and 'overrides apply to train, lottery, finetune, prune and config' in err
  with pytest.raises(SystemExit) as exit_:     # argparse: a missing argument
    cli.main([command])
  assert exit_.value.code == 2
  with pytest.raises(SystemExit):
    cli.main(['--help'])
  text = capsys.readouterr().out
  assert (f'{command} the fraction of zeros in each array of a .npz weights file'    # HELP
          in ' '.join(text.split())), text
  return text


@pytest.fixture
def clean_modules():
  """Forgets the example module (under either name) after the test."""
  yield
  for name in ('sparsejax.programs.zeros', 'myprograms', 'myprograms.zeros'):
    sys.modules.pop(name, None)


def check_docs_example(module_code: str, line_code: str, tmp_path, monkeypatch, capsys):
  """The page's module as `sparsejax/programs/zeros.py` (in a folder that
  `sparsejax.programs` also reads) and its `PROGRAMS` line, run as a command."""
  folder = tmp_path / 'programs'
  folder.mkdir()
  (folder / 'zeros.py').write_text(module_code)
  monkeypatch.setattr(sparsejax.programs, '__path__', [*sparsejax.programs.__path__,
                                                       str(folder)])
  scope = {}
  exec(compile(line_code, f'{PAGE} PROGRAMS block', 'exec'), scope)
  assert scope['PROGRAMS'] == cli_args.PROGRAMS + ('sparsejax.programs.zeros',)
  monkeypatch.setattr(cli_args, 'PROGRAMS', scope['PROGRAMS'])
  try:
    text = _check_the_command(capsys, tmp_path)
  finally:
    sys.modules.pop('sparsejax.programs.zeros', None)
  assert '  sparsejax zeros FILE.npz [--min-size N]\n\n`train` resumes' in text   # USAGE
  assert re.search(r'\{[^}]*,perplexity,generate,zeros\}', text), text


def test_the_docs_program_is_one_module_and_one_line(tmp_path, monkeypatch, capsys,
                                                     clean_modules):
  blocks = page_blocks()
  check_docs_example(blocks[MODULE_MARKER], blocks[LINE_MARKER], tmp_path, monkeypatch, capsys)
  # Registered no more, the command is gone (nothing else was changed).
  monkeypatch.undo()
  with pytest.raises(SystemExit):
    cli.main(['zeros', 'x.npz'])


def test_a_program_from_a_package_of_ones_own(tmp_path, monkeypatch, capsys, clean_modules):
  package = tmp_path / 'lib' / 'myprograms'
  package.mkdir(parents=True)
  (package / '__init__.py').write_text('')
  (package / 'zeros.py').write_text(page_blocks()[MODULE_MARKER] + "\nCOMMAND = 'sparsity'\n")
  monkeypatch.syspath_prepend(str(tmp_path / 'lib'))
  monkeypatch.setattr(cli_args, 'PROGRAMS', cli_args.PROGRAMS + ('myprograms.zeros',))
  _check_the_command(capsys, tmp_path, command='sparsity')    # COMMAND names it


def test_the_registered_programs_have_their_whole_command_in_their_module():
  cli_source = (ROOT / 'sparsejax' / 'cli.py').read_text()
  assert cli_args.PROGRAMS == ('sparsejax.programs.perplexity', 'sparsejax.programs.generate')
  for module in cli_args.programs():
    assert isinstance(module.HELP, str) and module.USAGE.startswith('  sparsejax ')
    assert callable(module.add_arguments) and callable(module.main)
    name = module.__name__.rpartition('.')[2]
    assert not re.search(rf'\b{name}\b', cli_source.split('"""', 2)[2]), name   # no handler
  assert len(cli_source.splitlines()) <= 150
