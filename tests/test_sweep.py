"""Sweeps: every point its own process; killed and re-run, only the missing
points run; a failing point is reported with its error, the others finish."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from sparsejax import sweep
from sparsejax.programs import report

ROOT = pathlib.Path(__file__).resolve().parent.parent

SWEEP = '''
import pathlib
from sparsejax.config import load_config

def get_config():
  c = load_config(pathlib.Path({configs!r}) / 'mnist1d_mlp.py')
  c.train.steps = 20
  c.train.eval_every = 20
  c.train.checkpoint_every = 20
  c.train.log_every = 10
  c.model.options = {{'hidden': 16}}
  return c

def get_sweep():
  for seed in (0, 1):
    for sparsity in (0.5, 0.8):
      yield {{'seed': seed, 'sparsity': sparsity, 'pruning.schedule': 'oneshot',
              '_arm': 'oneshot'}}
  # fails at run time: more validation examples than the split has
  yield {{'seed': 0, 'data.options': {{'validation': 10 ** 6}}, '_arm': 'broken'}}
'''


def _env():
  e = dict(os.environ)
  e['PYTHONPATH'] = os.pathsep.join(p for p in (str(ROOT), e.get('PYTHONPATH', '')) if p)
  return e


def _group_running(pgid):
  """Whether process group `pgid` still has a member that is not a zombie."""
  try:
    os.killpg(pgid, 0)
  except ProcessLookupError:
    return False
  proc_fs = pathlib.Path('/proc')
  if not proc_fs.is_dir():
    return True
  for stat in proc_fs.glob('[0-9]*/stat'):
    try:
      state, _, group = stat.read_text().rsplit(')', 1)[1].split()[:3]
    except (OSError, IndexError, ValueError):
      continue                          # the process ended meanwhile
    if int(group) == pgid and state != 'Z':
      return True
  return False


def _kill_group(proc):
  """SIGKILL the process group led by `proc` (started with
  start_new_session=True, so it holds the sweep and the points it runs and
  nothing else), reap `proc`, and wait until the group's members are dead."""
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  proc.communicate()
  deadline = time.time() + 30
  while time.time() < deadline and _group_running(proc.pid):
    time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.extended
def test_sweep_killed_rerun_and_failure(tmp_path):
  path = tmp_path / 'sweep_cfg.py'
  path.write_text(SWEEP.format(configs=str(ROOT / 'configs')))
  points, program = sweep.load_sweep(path)
  assert len(points) == 5 and program == 'train'
  root = tmp_path / 'run'
  cmd = [sys.executable, '-m', 'sparsejax.cli', 'sweep', '--config', str(path),
         '--workdir', str(root), '--jobs', '1']
  # Its own session and process group: the sweep's points (its children) share
  # that group, so killing the group ends exactly what this test started.
  proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True)
  try:
    deadline = time.time() + 240
    while time.time() < deadline and not list(root.glob('*/summary.json')):
      assert proc.poll() is None, proc.communicate()
      time.sleep(0.05)
  finally:
    _kill_group(proc)                   # the sweep and its running point die
  finished = {p.parent.name: p.stat().st_mtime_ns for p in root.glob('*/summary.json')}
  assert 1 <= len(finished) < 5
  again = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=400)
  assert again.returncode == 1, again.stderr[-3000:]     # one point failed
  for name, mtime in finished.items():                    # not run again
    assert (root / name / 'summary.json').stat().st_mtime_ns == mtime
    assert f'{name} skipped' in again.stdout
  rows = [json.loads(line) for line in (root / 'results.jsonl').read_text().splitlines()]
  ok = [r for r in rows if r['status'] == 'ok']
  bad = [r for r in rows if r['status'] == 'failed']
  assert len(ok) == 4 and len(bad) == 1
  assert 'validation' in bad[0]['error'] and bad[0]['arm'] == 'broken'
  table = report.summary_table(rows)
  assert 'failed (1 of 1)' in table
  assert {r['setting']['sparsity'] for r in ok} == {0.5, 0.8}
  for r in ok:
    assert r['density'] == pytest.approx(1 - r['setting']['sparsity'], abs=1e-3)
  # One point by index (a job array), then collect.
  single = subprocess.run(cmd[:-2] + ['--index', '0'], env=_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=200)
  assert single.returncode == 0 and 'skipped' in single.stdout
