"""Two processes on localhost (jax.distributed over CPU collectives) train the
same run as one process: same losses and params within float tolerance."""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from sparsejax.train import checkpoint as ckpt_lib, inspection
from sparsejax.train import metrics as metrics_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent
ARGS = ['--config', str(ROOT / 'configs' / 'mnist1d_rigl.py'), '--no-progress',
        '--config.train.steps=60', '--config.train.log_every=10',
        '--config.train.eval_every=30', '--config.train.checkpoint_every=30',
        '--config.model.options.hidden=64', '--config.pruning.every=10',
        '--config.pruning.end=50']


def _env():
  e = dict(os.environ)
  e['JAX_PLATFORMS'] = 'cpu'
  e['PYTHONPATH'] = os.pathsep.join(p for p in (str(ROOT), e.get('PYTHONPATH', '')) if p)
  return e


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _train_losses(workdir):
  return np.array([r['loss'] for r in metrics_lib.read_rows(workdir / 'metrics.jsonl')
                   if r['kind'] == 'train'])


@pytest.mark.slow
@pytest.mark.extended
def test_two_processes_match_one(tmp_path):
  cmd = [sys.executable, '-m', 'sparsejax.cli', 'train', *ARGS]
  single = subprocess.run(cmd + ['--workdir', str(tmp_path / 'one')], env=_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert single.returncode == 0, single.stderr[-3000:]
  port = _free_port()
  procs = [subprocess.Popen(cmd + ['--workdir', str(tmp_path / 'two'),
                                   '--coordinator', f'localhost:{port}',
                                   '--num-processes', '2', '--process-id', str(i)],
                            env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=300))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail('the two-process run did not finish in 300 s')
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert '| test |' in outs[0][0] and '| test |' not in outs[1][0]   # process 0 reports
  l1, l2 = _train_losses(tmp_path / 'one'), _train_losses(tmp_path / 'two')
  assert len(l1) == len(l2) == 60
  np.testing.assert_allclose(l2, l1, rtol=1e-4, atol=1e-5)
  a = ckpt_lib.restore_raw(inspection.resolve(tmp_path / 'one'))
  b = ckpt_lib.restore_raw(inspection.resolve(tmp_path / 'two'))
  for x, y in zip(jax.tree.leaves(a['params'] if isinstance(a, dict) else a[1]),
                  jax.tree.leaves(b['params'] if isinstance(b, dict) else b[1])):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-5)


def test_importing_sparsejax_leaves_the_backend_alone():
  """jax.distributed.initialize must come before any backend use; importing
  our modules (constants included) must not start the backend."""
  code = ('import jax._src.xla_bridge as xb\n'
          'import sparsejax, sparsejax.cli, sparsejax.config, sparsejax.train.loop\n'
          'assert not xb._backends, "importing sparsejax initialised a JAX backend"\n')
  proc = subprocess.run([sys.executable, '-c', code], env=_env(), cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
