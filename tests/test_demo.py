"""The README's main job end to end, shortened: real MNIST-1D data, all five
schedules through the command line."""

import numpy as np

from sparsejax import cli, demo
from sparsejax.data import mnist1d


def test_mnist1d_default_split(tmp_path, monkeypatch):
  monkeypatch.setenv('SPARSEJAX_DATA', str(tmp_path))
  state = np.random.get_state()
  data = mnist1d.load()
  assert data['x_train'].shape == (4000, 40) and data['x_test'].shape == (1000, 40)
  assert set(np.unique(data['y_train'])) == set(range(10))
  assert (tmp_path / 'mnist1d_default.npz').exists()
  again = mnist1d.load()   # from the cache
  np.testing.assert_array_equal(again['x_test'], data['x_test'])
  # Generation must not leave numpy's global RNG reseeded.
  np.testing.assert_array_equal(np.random.get_state()[1], state[1])


def test_demo_runs_and_learns(capsys):
  rows = demo.main(steps=400, sparsity=0.9)
  out = capsys.readouterr().out
  assert '| RigL |' in out and '| dense |' in out
  by = {r['method']: r for r in rows}
  assert by['dense']['density'] == 1.0
  for name in ('static (random mask)', 'gradual magnitude', 'SET', 'RigL'):
    np.testing.assert_allclose(by[name]['density'], 0.1, atol=1e-3)
  for r in rows:
    assert r['test_acc'] > 0.2, r   # chance is 0.1


def test_cli_demo(capsys):
  assert cli.main(['demo', '--steps', '20', '--sparsity', '0.8']) == 0
  assert 'target sparsity 80%' in capsys.readouterr().out
