"""What a plain (non-editable) install carries: the package list in
pyproject.toml is the source tree's, and shipped configs and experiments are
found by name or by their repository path from any working directory
(sparsejax.bundled). .ci/newest runs this file against the installed wheel
with SPARSEJAX_EXPECT_INSTALLED=1, where the files must come from the wheel."""

import os
import pathlib
import tomllib

import pytest

import sparsejax
from sparsejax import bundled, cli, reproduce

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_pyproject_lists_every_subpackage():
  listed = set(tomllib.loads((ROOT / 'pyproject.toml').read_text())
               ['tool']['setuptools']['packages'])
  source = {'.'.join(p.parent.relative_to(ROOT).parts)
            for p in (ROOT / 'sparsejax').rglob('__init__.py')}
  assert listed == source | {'sparsejax.bundled.configs', 'sparsejax.bundled.experiments'}


def test_installed_copy_is_used_when_expected():
  package = pathlib.Path(sparsejax.__file__).resolve().parent
  if os.environ.get('SPARSEJAX_EXPECT_INSTALLED'):
    assert bundled.root() == package / 'bundled'
    assert (bundled.root() / 'experiments' / 'rigl_lenet_mnist' / 'reproduce.py').is_file()
  else:
    assert bundled.root() in (package / 'bundled', package.parent)
  assert 'mnist1d_rigl' in bundled.config_names()


@pytest.mark.parametrize('spec', ['mnist1d_rigl', 'mnist1d_rigl.py', 'configs/mnist1d_rigl.py',
                                  'experiments/lottery_mnist1d/config_notebook.py'])
def test_shipped_configs_resolve_from_another_directory(spec, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  assert cli.main(['config', '--show', spec]) == 0
  out = capsys.readouterr().out
  assert 'sparsity' in out and 'train.steps' in out


def test_an_experiment_sweep_and_reproduce_resolve_from_another_directory(
    tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  assert cli.main(['sweep', '--config', 'experiments/rigl_lenet_mnist/sweep.py',
                   '--workdir', str(tmp_path / 'w'), '--count']) == 0
  assert int(capsys.readouterr().out.strip()) > 0
  assert reproduce.experiment_dir('rigl_lenet_mnist') == bundled.folder('experiments') / \
      'rigl_lenet_mnist'


def test_unknown_name_lists_the_shipped_configs(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  assert cli.main(['config', '--show', 'mnist1d_rgl']) == 2
  err = [l for l in capsys.readouterr().err.splitlines() if l.startswith('sparsejax:')]
  assert len(err) == 1 and "'mnist1d_rgl'" in err[0] and 'mnist1d_rigl' in err[0]
