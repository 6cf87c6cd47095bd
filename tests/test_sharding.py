"""Masks and optimizer state keep the params' sharding on a 2x4 mesh, and a
sharded run matches an unsharded one (masks identical, values within float
tolerance), for every schedule (sharding_check.py) and for the whole training
stack (train_sharding_check.py, which also runs data parallel alone, 8x1,
against one device with RigL: what is exact and what only matches to the
reduction order).

The checks need 8 devices. Forcing 8 fake CPU devices slows single-device
code by about 30%, so they run in a separate process (sharding_check.py)
and this test only launches it and reports its output.
"""

import os
import pathlib
import subprocess
import sys

import pytest

TESTS = pathlib.Path(__file__).resolve().parent
ROOT = TESTS.parent
TIMEOUT_S = 300

# 8 fake CPU devices. Backend optimization level 0 only skips LLVM's
# optimisation of the generated CPU code (about 30% of this test's time goes
# to compiling); sharding propagation and SPMD partitioning, which are what
# this test checks, run as usual.
FLAGS = '--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0'


def _env():
  env = dict(os.environ)
  env['XLA_FLAGS'] = ' '.join(f for f in (env.get('XLA_FLAGS', ''), FLAGS) if f)
  env['JAX_PLATFORMS'] = 'cpu'   # the fake devices are CPUs, even where a GPU exists
  env['PYTHONPATH'] = os.pathsep.join(
      p for p in (str(ROOT), env.get('PYTHONPATH', '')) if p)
  return env


def _report(stdout, stderr):
  def text(x):
    return x.decode(errors='replace') if isinstance(x, bytes) else (x or '')
  return f'--- stdout ---\n{text(stdout)}\n--- stderr (tail) ---\n{text(stderr)[-20000:]}'


@pytest.mark.slow
@pytest.mark.parametrize('script', [pytest.param('sharding_check.py', marks=pytest.mark.extended),
                                    pytest.param('train_sharding_check.py',
                                                 marks=pytest.mark.extended)])
def test_sharded_matches_unsharded(script):
  path = TESTS / script
  try:
    proc = subprocess.run([sys.executable, str(path)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired as e:
    pytest.fail(f'{script} ran past {TIMEOUT_S} s\n{_report(e.stdout, e.stderr)}')
  assert proc.returncode == 0, (
      f'{script} exited with {proc.returncode}\n{_report(proc.stdout, proc.stderr)}')
