"""`sparsejax.io.arrays`: the one flat-key convention ('a/b/c' in jax's leaf
order, on flax.traverse_util) that every weights file is written with."""

import numpy as np
from flax.core import FrozenDict

from sparsejax.core.tree import leaves_with_paths
from sparsejax.io.arrays import flat_arrays, flatten, section, unflatten

ONES = np.ones(2, np.float32)


def test_flatten_gives_jax_paths_in_jax_order():
  trees = [
      {'z': ONES, 'Dense_10': {'kernel': ONES}, 'Dense_2': {'kernel': ONES}},   # insertion order
      {'a-x': {'w': ONES}, 'a': {'b': ONES}},          # 'a-x' < 'a/b' as strings, not as paths
      FrozenDict({'b': {'k': ONES}, 'a': ONES}),
      {'x': [ONES, ONES], 'y': (ONES,)},
      {'a': None, 'b': {}, 'c': ONES},                  # jax leaves out None and empty nodes
  ]
  for tree in trees:
    assert list(flatten(tree)) == [p for p, _ in leaves_with_paths(tree)], tree
  assert list(flatten({'b': ONES, 'a': ONES}, 'params/')) == ['params/a', 'params/b']
  assert flatten(None) == {}


def test_unflatten_and_sections():
  tree = {'enc': {'w': ONES, 'b': ONES}, 'out': ONES}
  arrays = flat_arrays(tree, {'bn': {'mean': ONES}})
  assert list(arrays) == ['params/enc/b', 'params/enc/w', 'params/out', 'model_state/bn/mean']
  assert section(arrays, 'model_state/') == {'bn/mean': ONES}
  assert unflatten(arrays, 'params/') == {'enc': {'b': ONES, 'w': ONES}, 'out': ONES}
  assert unflatten({'a/b': None}) == {'a': {'b': None}}
