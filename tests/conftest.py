"""Shared fixtures: the same small MLP as Flax Linen params, as the state of a
Flax NNX model and as a plain nested dict, plus a loss on random data."""

import os
import shutil
import tempfile

# Tests compile hundreds of small programs; XLA's CPU backend at optimisation
# level 0 skips LLVM's optimisation passes and compiles them about a third
# faster (the contract tests: 220 s -> 138 s). Generated code may round
# differently in the last bits from an optimised build, so tests compare runs
# made under the same flags (subprocesses inherit them); benchmarks and real
# runs keep the default. Set before JAX starts.
#
# XLA's newer CPU fusion emitters (MLIR-based, the default) compile these
# small programs slower than its older loop emitters: turning them off cut the
# compile time of two contract runs (rigl, set_block with Adam) from 12.1-14.6
# s to 8.0-9.8 s, and the default suite from 1388 s to 819 s, on the 2-core CI
# machine (jax 0.10.2). The two kinds of emitters may fuse two programs that
# compute the same thing differently, so a test that claims two *different*
# programs agree bitwise under the default compiler runs itself again in a
# subprocess under the default emitters (`default_fusion_emitters`).
FUSION_FLAG = '--xla_cpu_use_fusion_emitters=false'
DEFAULT_EMITTERS = os.environ.get('SPARSEJAX_TEST_DEFAULT_EMITTERS') == '1'
os.environ['XLA_FLAGS'] = ' '.join(
    f for f in (os.environ.get('XLA_FLAGS', ''), '--xla_backend_optimization_level=0',
                '' if DEFAULT_EMITTERS else FUSION_FLAG) if f)

# Many tests build the same small programs afresh (a new closure each time),
# and the subprocess tests compile what the test workers already compiled.
# One persistent compilation cache per test session, shared by the xdist
# workers and the subprocesses they start (all inherit the environment set
# here by the first conftest import, in the controller), makes those repeats
# disk loads. Cache hits return the executable XLA compiled from the same
# program and flags, so results are unchanged. Set JAX_COMPILATION_CACHE_DIR
# to choose the directory, or to an empty string to turn the cache off.
_OWN_CACHE = None   # the directory this process made (removed when the session ends)
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _OWN_CACHE = os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(
      prefix='sparsejax-test-jit-')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

import flax.linen as nn  # noqa: E402
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

jax.config.update('jax_numpy_rank_promotion', 'raise')


class LinenMLP(nn.Module):
  sizes: tuple = (16, 12, 4)

  @nn.compact
  def __call__(self, x):
    for i, h in enumerate(self.sizes):
      x = nn.Dense(h)(x)
      if i < len(self.sizes) - 1:
        x = nn.relu(nn.LayerNorm()(x))
    return x


class NNXMLP(nnx.Module):
  def __init__(self, rngs):
    self.l1 = nnx.Linear(8, 16, rngs=rngs)
    self.norm = nnx.LayerNorm(16, rngs=rngs)
    self.l2 = nnx.Linear(16, 4, rngs=rngs)

  def __call__(self, x):
    return self.l2(nnx.relu(self.norm(self.l1(x))))


def linen_params(seed=0):
  return LinenMLP().init(jax.random.key(seed), jnp.ones((1, 8)))['params']


def nnx_state(seed=0):
  _, state = nnx.split(NNXMLP(nnx.Rngs(seed)), nnx.Param)
  return state


def dict_params(seed=0):
  k = jax.random.split(jax.random.key(seed), 3)
  return {'encoder': {'w1': jax.random.normal(k[0], (8, 16)), 'b1': jnp.zeros((16,)),
                      'w2': jax.random.normal(k[1], (16, 12))},
          'head': {'w': jax.random.normal(k[2], (12, 4)), 'scale': jnp.ones((4,))}}


def dict_apply(p, x):
  h = jax.nn.relu(x @ p['encoder']['w1'] + p['encoder']['b1'][None, :])
  h = jax.nn.relu(h @ p['encoder']['w2'])
  return (h @ p['head']['w']) * p['head']['scale'][None, :]


@pytest.fixture(params=['linen', 'nnx', 'dict'])
def any_params(request):
  return {'linen': linen_params, 'nnx': nnx_state, 'dict': dict_params}[request.param]()


@pytest.fixture
def batch():
  x = jax.random.normal(jax.random.key(7), (32, 8))
  y = jax.random.randint(jax.random.key(8), (32,), 0, 4)
  return x, y


def dict_loss(p, batch):
  x, y = batch
  return optax.softmax_cross_entropy_with_integer_labels(dict_apply(p, x), y).mean()


def np_tree(tree):
  return jax.tree.map(np.asarray, tree)


@pytest.fixture
def tfds_mock(monkeypatch):
  tfds = pytest.importorskip('tensorflow_datasets')
  from tensorflow_datasets.testing import mocking

  # tfds 4.9.10's mock installs `_getitems` unbound on a MagicMock, so the real
  # data source's `__getitems__` fails with a TypeError inside tfds' own mock.
  def getitems(record_keys, generator, serialized=False):
    return [mocking._getitem(None, k, generator, serialized) for k in record_keys]
  monkeypatch.setattr(mocking, '_getitems', getitems)
  # MockPolicy.USE_CODE: the features come from the builder class; USE_FILES
  # needs metadata files that the tfds wheel does not ship (AUTO falls back).
  return lambda n: tfds.testing.mock_data(num_examples=n, policy=tfds.testing.MockPolicy.USE_CODE)


def default_fusion_emitters(nodeid: str) -> bool:
  """Runs test `nodeid` in a pytest subprocess under XLA's default CPU
  fusion emitters (the compiler users get) and returns True; returns False
  inside that subprocess, where the test body runs."""
  if DEFAULT_EMITTERS:
    return False
  import subprocess
  import sys
  env = dict(os.environ, SPARSEJAX_TEST_DEFAULT_EMITTERS='1',
             XLA_FLAGS=' '.join(f for f in os.environ['XLA_FLAGS'].split() if f != FUSION_FLAG),
             PYTEST_ADDOPTS='')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  done = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                         '-o', 'addopts=', nodeid], cwd=root, env=env, capture_output=True,
                        text=True)
  assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
  assert '1 passed' in done.stdout, done.stdout[-2000:]
  return True


def pytest_unconfigure(config):
  if _OWN_CACHE and not hasattr(config, 'workerinput'):   # the controller, after the workers
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)
