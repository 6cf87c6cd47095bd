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


def test_npz_keeps_bfloat16_and_the_export_formats_load_it(tmp_path):
  """np.savez stores bfloat16 as raw 2-byte void; the '__dtypes__' key makes
  every .npz reader (weights files, exports of every format) get bfloat16
  back bitwise. A void array from an .npz used to reach jnp.asarray in
  `export_formats.load` and fail."""
  import jax
  import jax.numpy as jnp
  import ml_dtypes
  import pytest

  from sparsejax.io.arrays import DTYPES_KEY, WeightsFileError, read_arrays, write_arrays
  from sparsejax.programs import export_formats

  bf16 = np.dtype(ml_dtypes.bfloat16)
  x = (np.arange(6, dtype=np.float32) / 7).astype(bf16)
  path = write_arrays(tmp_path / 'w.npz', {'a': x, 'b': ONES})
  with np.load(path) as f:
    assert f['a'].dtype.kind == 'V' and DTYPES_KEY in f.files      # what numpy alone sees
  back = read_arrays(path)
  assert list(back) == ['a', 'b'] and back['a'].dtype == bf16 and back['b'].dtype == np.float32
  assert np.array_equal(back['a'].view(np.uint16), x.view(np.uint16))
  with pytest.raises(WeightsFileError, match=DTYPES_KEY):
    write_arrays(tmp_path / 'x.npz', {DTYPES_KEY: ONES})

  mask = np.tile([[True], [True], [False], [False]], (1, 4))    # 2:4 along the input axis
  params = {'d': {'kernel': ((np.arange(16.).reshape(4, 4) / 7) * mask).astype(bf16),
                  'bias': np.ones(4, bf16)}}
  state = {'bn': {'mean': np.ones(3, bf16)}}
  for fmt in export_formats.FORMATS:
    for safetensors in (False, True):
      out = tmp_path / f'{fmt}_{safetensors}'
      export_formats.write_export(params, state, {'d': {'kernel': mask, 'bias': None}}, fmt,
                                  out, safetensors=safetensors)
      got = export_formats.load(out, as_sparse=False)
      for a, b in zip(jax.tree.leaves(got), jax.tree.leaves((params, state))):
        assert a.dtype == jnp.bfloat16, (fmt, safetensors)
        assert np.array_equal(np.asarray(a).view(np.uint16), b.view(np.uint16)), (fmt, safetensors)
