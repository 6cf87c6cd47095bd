"""Sliced-ELL sparse inference: the product equals the dense masked one, the
format round-trips, and the 'ell' export runs a Flax model exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj
from conftest import LinenMLP, linen_params
from sparsejax.core import select
from sparsejax.programs import export, export_formats
from sparsejax.programs import sparse_inference as si

METHODS = ('gather', 'densify', 'auto')
matmul = jax.jit(si.matmul, static_argnames='method')    # one compile per case, not per op


def random_mask(shape, sparsity, seed=0):
  rng = np.random.default_rng(seed)
  w = rng.standard_normal(shape).astype(np.float32)
  return w, rng.random(shape) >= sparsity


def check_product(w, mask, batches=(1, 5), methods=METHODS):
  m = jax.tree.map(jnp.asarray, si.from_dense(w, mask))
  want_w = np.where(mask, w, 0)
  np.testing.assert_array_equal(np.asarray(jax.jit(si.todense)(m)), want_w)
  for b in batches:
    x = np.random.default_rng(b).standard_normal((b, w.shape[0])).astype(np.float32)
    for method in methods:
      got = np.asarray(matmul(x, m, method=method))
      np.testing.assert_allclose(got, x @ want_w, atol=1e-5, err_msg=f'{method}, batch {b}')
  return m


@pytest.mark.parametrize('sparsity', [0.5, 0.9, 0.99])
def test_random_masks(sparsity):
  w, mask = random_mask((70, 45), sparsity, seed=int(sparsity * 100))
  m = check_product(w, mask)
  assert m.block == (1, 1)
  assert m.stored() >= mask.sum()          # every kept weight is stored, plus padding
  # one row gathers, many rows go past the threshold that 'auto' switches at
  assert m.gather_rows >= 1
  check_product(w, mask, batches=(m.gather_rows + 3,))


def test_empty_columns_and_rows():
  w, mask = random_mask((40, 30), 0.8)
  mask[:, [0, 7, 29]] = False
  mask[[3, 4], :] = False
  m = check_product(w, mask)
  assert m.widths()[-1] == 3 and m.rows[-1].shape[0] == 0    # a group of empty columns
  empty = check_product(w, np.zeros_like(mask))
  assert empty.stored() == 0


def test_fully_dense_mask():
  w, _ = random_mask((30, 20), 0.0)
  assert check_product(w, np.ones((30, 20), bool)).block == (1, 1)    # 30 rows: no tiles
  w, _ = random_mask((32, 48), 0.0)
  assert check_product(w, np.ones((32, 48), bool)).block == (16, 16)


@pytest.mark.parametrize('block,tiled', [((16, 16), True), ((8, 8), True), ((4, 4), False)])
def test_block_masks(block, tiled):
  params = {'w': jax.random.normal(jax.random.key(1), (64, 96))}
  pruned, masks = sj.prune(params, 0.75, pattern=select.Block(block))
  w, mask = np.asarray(params['w']), np.asarray(masks['w'])
  assert si.block_of(mask) == (block if tiled else (1, 1))
  m = check_product(w, mask)
  assert m.tiled == tiled
  check_product(w, mask, batches=(m.gather_rows + 1,), methods=('gather', 'auto'))


def test_block_must_fit_the_mask():
  w, mask = random_mask((32, 32), 0.9)
  with pytest.raises(ValueError, match='whole'):
    si.from_dense(w, mask, block=(16, 16))
  with pytest.raises(ValueError, match='tile'):
    si.from_dense(w, mask, block=(5, 5))


def test_column_groups_are_optimal_cuts():
  counts = np.array([9, 9, 7, 7, 7, 3, 2, 2, 0, 0])
  for cost in (0, 5, 1000):
    groups = si.column_groups(counts, cost)
    assert groups[0][0] == 0 and groups[-1][1] == len(counts)
    assert all(a[1] == b[0] for a, b in zip(groups, groups[1:]))
    total = sum((b - a) * counts[a] + (cost if counts[a] else 0) for a, b in groups)
    # brute force over all cut sets
    best = np.inf
    for bits in range(2 ** (len(counts) - 1)):
      cuts = [0] + [i + 1 for i in range(len(counts) - 1) if bits >> i & 1] + [len(counts)]
      best = min(best, sum((b - a) * counts[a] + (cost if counts[a] else 0)
                           for a, b in zip(cuts, cuts[1:])))
    assert total == best
  assert len(si.column_groups(counts, 0)) == 5     # one per distinct count at no group cost


def test_arrays_round_trip(tmp_path):
  w, mask = random_mask((50, 40), 0.9)
  m = si.from_dense(w, mask)
  arrays, info = si.to_arrays(m)
  np.savez(tmp_path / 'ell.npz', **arrays)
  with np.load(tmp_path / 'ell.npz') as f:
    back = si.from_arrays({k: f[k] for k in f.files}, info)
  assert back.shape == m.shape and back.block == m.block and back.widths() == m.widths()
  for a, b in zip(m.rows + m.values, back.rows + back.values):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(np.asarray(back.inverse), np.argsort(np.asarray(m.order)))
  x = np.ones((2, 50), np.float32)
  np.testing.assert_allclose(np.asarray(si.matmul(x, back)), x @ np.where(mask, w, 0),
                             atol=1e-5)
  assert isinstance(si.from_arrays(arrays, info, as_jax=False).values[0], np.ndarray)
  with pytest.raises(ValueError, match='do not match'):
    si.from_arrays({**arrays, 'order': arrays['order'][1:]}, info)
  assert m.nbytes() < np.where(mask, w, 0).nbytes / 3     # values + uint8 indices at 90%


@pytest.mark.parametrize('batch', [1, 64])
def test_ell_export_runs_the_model(tmp_path, batch):
  model, params = LinenMLP(), linen_params()
  pruned, masks = sj.prune(params, 0.75)
  rep = export_formats.write_export(pruned, {}, masks, 'ell', tmp_path / 'ell')
  assert rep['leaves']['Dense_0/kernel'] == 'ell' and rep['leaves']['Dense_0/bias'] == 'dense'
  loaded, _ = export.load(tmp_path / 'ell')
  assert isinstance(loaded['Dense_1']['kernel'], si.EllMatrix)
  x = jax.random.normal(jax.random.key(batch), (batch, 8))
  want = model.apply({'params': pruned}, x)
  got = jax.jit(lambda p, x: export.sparse_apply(model.apply, p, x))(loaded, x)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
  assert export.verify(model.apply, pruned, {}, x, tmp_path / 'ell') < 1e-5
  dense, _ = export.load(tmp_path / 'ell', as_sparse=False)
  np.testing.assert_array_equal(np.asarray(dense['Dense_2']['kernel']),
                                np.asarray(pruned['Dense_2']['kernel']))


def test_cli_offers_ell():
  from sparsejax import cli
  assert cli._parser().parse_args(['export', 'run', '--format', 'ell']).format == 'ell'
  assert 'ell' in export_formats.FORMATS
