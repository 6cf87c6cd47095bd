"""Bad input on the command line: one `sparsejax:` line, exit code 2, nothing
lost; and the overrides the README shows are accepted."""

import pathlib
import re

import pytest

from sparsejax import cli, config as config_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent
MLP = str(ROOT / 'configs' / 'mnist1d_mlp.py')


def error_lines(capsys) -> list[str]:
  return [l for l in capsys.readouterr().err.splitlines() if l.startswith('sparsejax:')]


@pytest.mark.parametrize('config, key, value', [
    ('mnist1d_rigl.py', 'pruning.end', '0.75'),       # an int step count in the file
    ('mnist1d_gradual.py', 'pruning.start', '0.1'),
    ('mnist1d_gradual.py', 'pruning.end', '0.75'),
    ('mnist1d_rigl.py', 'pruning.end', '900'),       # and a step count stays a step count
])
def test_step_fields_take_fractions_or_steps_on_the_command_line(config, key, value):
  c = config_lib.load_config(ROOT / 'configs' / config)
  got = config_lib.apply_overrides(c, {key: value})
  section, leaf = key.split('.')
  assert got[section][leaf] == config_lib.parse_value(value)
  # other pruning keys keep their types: a float for an int count is still an error
  with pytest.raises(config_lib.ConfigError, match="'pruning.every'.*expected int"):
    config_lib.apply_overrides(c, {'pruning.every': '0.5'})


def test_readme_shortened_rigl_run_is_accepted(tmp_path):
  """The README's first train command, with the run shortened the way the
  error advises (end as a fraction of the run)."""
  c = config_lib.load_config(ROOT / 'configs' / 'mnist1d_rigl.py')
  c = config_lib.apply_overrides(c, {'sparsity': '0.95', 'pruning.end': '0.75',
                                     'train.steps': '300'})
  from sparsejax import experiment
  task = experiment.build_task(c)
  assert task.schedule.for_run(task.updates).end == 225


def test_config_file_with_a_syntax_error(tmp_path, capsys):
  bad = tmp_path / 'bad.py'
  bad.write_text('import sparsejax.config\n\ndef get_config(:\n  pass\n')
  assert cli.main(['train', '--config', str(bad), '--workdir', str(tmp_path / 'w')]) == 2
  lines = error_lines(capsys)
  assert len(lines) == 1 and 'bad.py' in lines[0] and 'line 3' in lines[0]
  assert not (tmp_path / 'w').exists()


def test_config_file_replacing_a_group_by_a_value(tmp_path, capsys):
  """`c.loss = 'pkg:fn'` (a group set to a string): one line with the working form."""
  bad = tmp_path / 'bad_loss.py'
  bad.write_text('import sparsejax.config\n\ndef get_config():\n'
                 '  c = sparsejax.config.default_config()\n'
                 "  c.loss = 'mypkg.losses:focal'\n  return c\n")
  assert cli.main(['train', '--config', str(bad), '--workdir', str(tmp_path / 'w')]) == 2
  lines = error_lines(capsys)
  assert len(lines) == 1 and 'line 5' in lines[0] and "c.loss.name = 'pkg.mod:fn'" in lines[0]


def test_bad_key_of_a_pruning_block(tmp_path, capsys):
  """A misspelled key in a `pruning` block, in the file or in an override
  into the block: one line naming the dotted key, nothing created."""
  bad = tmp_path / 'bad_block.py'
  bad.write_text('import sparsejax.config\n\ndef get_config():\n'
                 '  c = sparsejax.config.default_config()\n'
                 "  c.pruning.schedule = 'rigl'\n"
                 "  c.pruning.allocation = {'name': 'erk', 'power': 2.0}\n  return c\n")
  assert cli.main(['train', '--config', str(bad), '--workdir', str(tmp_path / 'w')]) == 2
  lines = error_lines(capsys)
  assert len(lines) == 1 and "'pruning.allocation.power'" in lines[0]
  assert "did you mean 'erk_power_scale'" in lines[0]
  assert cli.main(['train', '--config', MLP, '--workdir', str(tmp_path / 'w'),
                   '--config.pruning.rule.min_dim=1']) == 2
  lines = error_lines(capsys)
  assert len(lines) == 1 and "'pruning.rule.min_dim'" in lines[0] and 'min_ndim' in lines[0]
  assert not (tmp_path / 'w').exists()


def test_workdir_that_is_a_file(tmp_path, capsys):
  afile = tmp_path / 'not_a_dir'
  afile.write_text('keep me')
  assert cli.main(['train', '--config', MLP, '--workdir', str(afile)]) == 2
  lines = error_lines(capsys)
  assert len(lines) == 1 and 'is a file, not a directory' in lines[0]
  assert afile.read_text() == 'keep me'


def test_failed_resume_reports_the_error_first_and_no_spec_text(tmp_path, capsys):
  """A corrupt checkpoint: the first `sparsejax:` line on stderr is the error
  (the run banner is not one), naming the step and the cause without
  TensorStore's spec dump."""
  args = ['train', '--config', MLP, '--workdir', str(tmp_path), '--no-progress',
          '--config.train.steps=10', '--config.train.checkpoint_every=10',
          '--config.train.eval_every=10', '--config.model.options.hidden=16']
  assert cli.main(args) == 0
  for f in (tmp_path / 'checkpoints' / 'steps' / '10' / 'state').rglob('*'):
    if f.is_file() and f.parent.name == 'd':      # the array data files
      f.write_bytes(b'garbage')
  capsys.readouterr()
  assert cli.main(args) == 2
  lines = error_lines(capsys)
  assert len(lines) == 1, lines
  assert 'steps/10 could not be restored' in lines[0]
  assert '<bound method' not in lines[0] and 'TensorStore(' not in lines[0]


def test_version_and_config_show(capsys):
  """`--version` names the package and its JAX stack; `config --show` lists
  every key with its value, the default beside a changed one, the loader's
  options and the schedule's fields with theirs, overrides applied, and a
  bad key is the usual one line."""
  with pytest.raises(SystemExit) as e:
    cli.main(['--version'])
  assert e.value.code == 0
  out = capsys.readouterr().out
  assert out.startswith('sparsejax 0.') and 'jax 0.' in out and 'flax' in out
  assert cli.main(['config', '--show', str(ROOT / 'configs' / 'mnist1d_rigl.py'),
                   '--config.seed=7']) == 0
  lines = dict(re.match(r'(\S+)\s+= (.*)', l).groups()
               for l in capsys.readouterr().out.splitlines())
  assert lines['seed'] == '7   (default 0)'
  assert lines['pruning.schedule'] == "'rigl'   (default 'dense')"
  assert lines['data.options.validation'] == '0'    # mnist1d's own option, its default
  assert 'pruning.drop_fraction' in lines and 'train.steps' in lines
  assert cli.main(['config', '--show', str(ROOT / 'configs' / 'mnist1d_rigl.py'),
                   '--config.trian.steps=3']) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'trian' in err[0]
