"""benchmarks/bench_update.py's state bytes per device: params, masks and
optimizer state, counted from each array's addressable shards."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _bench_update():
  spec = importlib.util.spec_from_file_location('bench_update',
                                                ROOT / 'benchmarks' / 'bench_update.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_state_bytes_per_device():
  bu = _bench_update()
  params = {'a': {'kernel': jnp.ones((8, 6)), 'bias': jnp.ones((6,))},
            'b': {'kernel': jnp.ones((6, 4)), 'bias': jnp.ones((4,))}}
  assert sum(bu.device_bytes(params).values()) == 4 * (48 + 6 + 24 + 4)
  loss = lambda p, x, y: 0.0   # never called: no step runs
  scheds = bu.schedules(params, modes=('separate',))
  dense = bu.Runner(loss, params, scheds['dense']).state_bytes()
  rigl = bu.Runner(loss, params, scheds['rigl (separate)']).state_bytes()
  n, prunable = 48 + 6 + 24 + 4, 48 + 24
  assert dense == {'params': 4 * n, 'masks': 0, 'optimizer state': dense['optimizer state'],
                   'all': 4 * n + dense['optimizer state']}
  assert dense['optimizer state'] >= 2 * 4 * n          # Adam's two moments (+ count)
  assert rigl['params'] == 4 * n and rigl['masks'] == prunable   # bool masks: 1 byte each
  assert rigl['optimizer state'] >= dense['optimizer state']
  assert rigl['all'] == rigl['params'] + rigl['masks'] + rigl['optimizer state']
