"""Resume equals uninterrupted, with real processes and real signals.

A run of `sparsejax train` is killed with SIGKILL at random points (twice,
drawn from the fixed seed KILL_SEED so that a failure reproduces),
then stopped with SIGTERM (which must save a checkpoint and exit cleanly),
then finished by running the same command again. Its final params, masks,
optimizer state and metrics must be bitwise identical to a run that was never
interrupted.
"""

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from sparsejax.train import checkpoint as ckpt_lib, inspection
from sparsejax.train import metrics as metrics_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent
ARGS = ['--config', str(ROOT / 'configs' / 'mnist1d_rigl.py'), '--config.train.steps=1000',
        '--config.train.checkpoint_every=100', '--config.train.log_every=50',
        '--config.train.eval_every=500', '--config.pruning.end=800']
KILL_SEED = 1234   # the kill points and the SIGTERM delay are drawn from this


def command(workdir):
  return [sys.executable, '-m', 'sparsejax.cli', 'train', '--workdir', str(workdir), *ARGS]


def env():
  e = dict(os.environ)
  e['PYTHONPATH'] = os.pathsep.join(p for p in (str(ROOT), e.get('PYTHONPATH', '')) if p)
  return e


def rows(workdir):
  return [{k: v for k, v in r.items() if k not in metrics_lib.TIMING_KEYS}
          for r in metrics_lib.read_rows(pathlib.Path(workdir) / 'metrics.jsonl')]


def train_rows_written(workdir):
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return 0
  with open(path) as f:
    return sum(1 for _ in f)


def start_and_signal(workdir, after_rows, sig, delay=0.0):
  """Starts a run and sends `sig` `delay` seconds after the metrics file has
  `after_rows` lines (rows are flushed in blocks, so a delay lands mid-block)."""
  proc = subprocess.Popen(command(workdir), env=env(), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while train_rows_written(workdir) < after_rows:
    if proc.poll() is not None:
      out, err = proc.communicate()
      pytest.fail(f'run ended before the signal (rc {proc.returncode}, waiting for '
                  f'{after_rows} rows):\n{out}\n{err[-3000:]}')
    if time.time() > deadline:
      proc.kill()
      proc.communicate()
      pytest.fail(f'run made no progress (waiting for {after_rows} rows)')
    time.sleep(0.01)
  time.sleep(delay)
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=120)
  return proc.returncode, out, err


def final_state(workdir):
  return ckpt_lib.restore_raw(inspection.resolve(workdir))


@pytest.mark.slow
@pytest.mark.extended
def test_killed_and_terminated_run_resumes_bitwise(tmp_path):
  ref, run = tmp_path / 'reference', tmp_path / 'interrupted'
  proc = subprocess.run(command(ref), env=env(), cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]

  rng = np.random.default_rng(KILL_SEED)
  kills = [int(k) for k in sorted(rng.integers(150, 650, size=2))]
  term_delay = float(rng.uniform(0.005, 0.03))
  drawn = (f'[seed {KILL_SEED}: SIGKILL after rows {kills} (+60 per restart), '
           f'SIGTERM {term_delay:.4f}s after 100 more rows]')
  resumed_from = []
  for i, at in enumerate(kills):
    # Each later start resumes first; the row count grows monotonically past `at`.
    rc, _, err = start_and_signal(run, at + 60 * i, signal.SIGKILL)
    assert rc == -signal.SIGKILL, f'{drawn}\n{err[-2000:]}'
    latest = ckpt_lib.Checkpoints(run / 'checkpoints').latest_step()
    resumed_from.append(latest)

  rc, _, err = start_and_signal(run, train_rows_written(run) + 100, signal.SIGTERM,
                                delay=term_delay)
  if rc == 0:
    pytest.skip(f'the run finished before SIGTERM arrived {drawn}')   # a very fast machine
  assert rc == 128 + signal.SIGTERM, f'{drawn}\n{err[-3000:]}'
  assert 'SIGTERM' in err and 'checkpoint saved' in err, f'{drawn}\n{err[-3000:]}'
  saved = ckpt_lib.Checkpoints(run / 'checkpoints').latest_step()
  assert saved % 100 != 0 or saved > max(x or 0 for x in resumed_from), (
      f'{drawn} resumed from {resumed_from}, SIGTERM saved {saved}')

  proc = subprocess.run(command(run), env=env(), cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, f'{drawn}\n{proc.stderr[-3000:]}'

  a, b = final_state(ref), final_state(run)
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb) and len(la) > 10, drawn
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=drawn)
  assert rows(ref) == rows(run), drawn
  print(f'killed after rows {kills}, resumed from steps {resumed_from}, SIGTERM saved {saved}')
