"""compact_masked: fixed-mask training with optimizer state for the kept weights only."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparsejax as sj
from sparsejax.core import compact

STEPS = 100


def mlp_params(seed=0, sizes=(8, 32, 24, 4)):
  """A small MLP as a plain dict: kernels (masked) and biases (dense)."""
  keys = jax.random.split(jax.random.key(seed), len(sizes) - 1)
  return {f'layer{i}': {'w': jax.random.normal(k, (a, b)) / np.sqrt(a),
                        'b': jnp.full((b,), 0.1)}
          for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:]))}


def mlp_loss(p, batch):
  x, y = batch
  n = len(p)
  for i in range(n):
    x = x @ p[f'layer{i}']['w'] + p[f'layer{i}']['b'][None, :]
    if i < n - 1:
      x = jnp.tanh(x)
  return optax.softmax_cross_entropy_with_integer_labels(x, y).mean()


def batches(n):
  xs = jax.random.normal(jax.random.key(1), (n, 16, 8))
  ys = jax.random.randint(jax.random.key(2), (n, 16), 0, 4)
  return xs, ys


def random_masks(params, sparsity, seed=0):
  """Exactly round(sparsity * size) pruned entries per kernel, None at biases."""
  rng = np.random.default_rng(seed)

  def one(p):
    if p.ndim < 2:
      return None
    keep = p.size - int(round(sparsity * p.size))
    flat = np.zeros(p.size, bool)
    flat[rng.permutation(p.size)[:keep]] = True
    return jnp.asarray(flat.reshape(p.shape))
  return jax.tree.map(one, params)


def stepper(tx):
  @jax.jit
  def step(p, s, batch):
    g = jax.grad(mlp_loss)(p, batch)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s
  return step


def pruned_max(params, masks):
  """Largest |w| over the pruned entries (0.0 when all are exactly zero)."""
  leaves = jax.tree.leaves(masks, is_leaf=lambda x: x is None)
  vals = [np.max(np.abs(np.asarray(p)[~np.asarray(m)]), initial=0.0)
          for p, m in zip(jax.tree.leaves(params), leaves) if m is not None]
  return max(vals)


INNERS = {
    'adam': lambda: optax.adam(1e-2),
    'clip+adamw': lambda: optax.chain(optax.clip_by_global_norm(0.5),
                                      optax.adamw(1e-2, weight_decay=1e-2)),
    'sgd momentum': lambda: optax.sgd(5e-2, momentum=0.9, nesterov=True),
}


@pytest.mark.parametrize('name', list(INNERS))
def test_matches_dense_state_path(name):
  params = mlp_params()
  masks = random_masks(params, 0.9)
  dense_tx = sj.sparsify(INNERS[name](), sj.make_schedule('fixed', masks=masks))
  comp_tx = compact.compact_masked(INNERS[name](), masks)
  # Both start from the unpruned params: the first update must zero the pruned ones.
  p_d, s_d = params, dense_tx.init(params)
  p_c, s_c = params, comp_tx.init(params)
  assert pruned_max(params, masks) > 0
  step_d, step_c = stepper(dense_tx), stepper(comp_tx)
  xs, ys = batches(STEPS)
  worst = 0.0
  for t in range(STEPS):
    p_d, s_d = step_d(p_d, s_d, (xs[t], ys[t]))
    p_c, s_c = step_c(p_c, s_c, (xs[t], ys[t]))
    assert pruned_max(p_c, masks) == 0.0, f'step {t}: a pruned weight is not exactly 0'
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
               zip(jax.tree.leaves(p_d), jax.tree.leaves(p_c)))
    worst = max(worst, diff)
    assert diff <= 1e-6, f'step {t}: params differ by {diff}'
  # the kept weights did train
  moved = [float(jnp.max(jnp.abs(a - b))) for a, b in
           zip(jax.tree.leaves(p_c), jax.tree.leaves(params))]
  assert min(moved) > 1e-3
  print(f'{name}: worst difference over {STEPS} steps {worst:.3g}')


def test_moments_are_the_kept_entries_of_the_dense_ones():
  params = mlp_params()
  masks = random_masks(params, 0.9)
  dense_tx = sj.sparsify(optax.adam(1e-2), sj.make_schedule('fixed', masks=masks))
  comp_tx = compact.compact_masked(optax.adam(1e-2), masks)
  p_d, s_d = params, dense_tx.init(params)
  p_c, s_c = params, comp_tx.init(params)
  step_d, step_c = stepper(dense_tx), stepper(comp_tx)
  xs, ys = batches(5)
  for t in range(5):
    p_d, s_d = step_d(p_d, s_d, (xs[t], ys[t]))
    p_c, s_c = step_c(p_c, s_c, (xs[t], ys[t]))
  adam_d, adam_c = s_d.inner_state[0], s_c.inner_state[0]
  for field in ('mu', 'nu'):
    c = getattr(adam_c, field)
    for path, leaf in sj.core.tree.leaves_with_paths(c):
      i = path.split('/')[0]
      if path.endswith('/w'):   # compacted: one entry per kept weight
        assert leaf.shape == (int(masks[i]['w'].sum()),), path
      else:
        assert leaf.shape == params[i]['b'].shape, path
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12),
                 compact.expand(c, s_c, params), getattr(adam_d, field))


def test_state_bytes_at_90_percent():
  params = mlp_params(sizes=(64, 256, 256, 10))
  masks = random_masks(params, 0.9)
  dense = compact.nbytes(optax.adam(1e-3).init(params))
  state = compact.compact_masked(optax.adam(1e-3), masks).init(params)
  ours = compact.nbytes(state)
  kept = sum(int(m.sum()) for m in jax.tree.leaves(masks))
  assert compact.nbytes(state.indices) == 4 * kept   # the indices are counted
  assert ours <= 0.35 * dense, (ours, dense)
  # and the saving is what the layout promises: 12 bytes per kept weight
  biases = sum(p.size for p in jax.tree.leaves(params) if p.ndim == 1)
  assert ours == 12 * kept + 8 * biases + 4   # + Adam's int32 count


def test_dense_leaf_trains_densely():
  params = mlp_params()
  masks = random_masks(params, 0.9)
  masks['layer1']['w'] = None
  dense_tx = sj.sparsify(optax.adam(1e-2), sj.make_schedule('fixed', masks=masks))
  comp_tx = compact.compact_masked(optax.adam(1e-2), masks)
  s_c = comp_tx.init(params)
  assert s_c.inner_state[0].mu['layer1']['w'].shape == params['layer1']['w'].shape
  assert s_c.indices['layer1']['w'] is None
  p_d, s_d, p_c = params, dense_tx.init(params), params
  step_d, step_c = stepper(dense_tx), stepper(comp_tx)
  xs, ys = batches(10)
  for t in range(10):
    p_d, s_d = step_d(p_d, s_d, (xs[t], ys[t]))
    p_c, s_c = step_c(p_c, s_c, (xs[t], ys[t]))
  w0, w = np.asarray(params['layer1']['w']), np.asarray(p_c['layer1']['w'])
  assert np.all(w != w0), 'every entry of the unmasked kernel trains'
  np.testing.assert_allclose(w, p_d['layer1']['w'], atol=1e-6)
  assert pruned_max(p_c, masks) == 0.0


def test_all_kept_and_all_pruned_leaves():
  params = mlp_params()
  masks = random_masks(params, 0.5)
  masks['layer0']['w'] = jnp.zeros_like(masks['layer0']['w'])
  masks['layer2']['w'] = jnp.ones_like(masks['layer2']['w'])
  tx = compact.compact_masked(optax.adam(1e-2), masks)
  s = tx.init(params)
  assert s.inner_state[0].mu['layer0']['w'].shape == (0,)
  p = params
  xs, ys = batches(3)
  step = stepper(tx)
  for t in range(3):
    p, s = step(p, s, (xs[t], ys[t]))
  assert not np.any(np.asarray(p['layer0']['w']))
  assert np.all(np.asarray(p['layer2']['w']) != np.asarray(params['layer2']['w']))


def test_mismatched_masks_name_the_leaf():
  params = mlp_params()
  masks = random_masks(params, 0.9)
  missing = {k: v for k, v in masks.items() if k != 'layer2'}
  missing['layer2'] = {'w': masks['layer2']['w']}          # no entry for the bias
  with pytest.raises(ValueError, match="'layer2/b'"):
    compact.compact_masked(optax.adam(1e-3), missing).init(params)
  extra = dict(masks, layer9={'w': masks['layer0']['w']})
  with pytest.raises(ValueError, match="'layer9/w'"):
    compact.compact_masked(optax.adam(1e-3), extra).init(params)
  shape = dict(masks, layer1={'w': masks['layer1']['w'].T, 'b': None})
  with pytest.raises(ValueError, match="'layer1/w'.*shape"):
    compact.compact_masked(optax.adam(1e-3), shape).init(params)
  # gradients of another model at update time
  tx = compact.compact_masked(optax.adam(1e-3), masks)
  state = tx.init(params)
  other = mlp_params(sizes=(8, 32, 24, 5))
  with pytest.raises(ValueError, match="'layer2/w'.*shape"):
    tx.update(other, state, params)
  with pytest.raises(ValueError, match='needs the params'):
    tx.update(params, state)


def test_traced_masks_are_refused():
  params = mlp_params()
  masks = random_masks(params, 0.9)

  @jax.jit
  def make(m):
    compact.compact_masked(optax.adam(1e-3), m)
    return 0
  with pytest.raises(TypeError, match='concrete masks'):
    make(masks)


def test_jit_donation_and_eval_shape():
  """The state works as a donated jit argument and under eval_shape."""
  params = mlp_params()
  masks = random_masks(params, 0.9)
  tx = compact.compact_masked(optax.adam(1e-2), masks)
  shapes = jax.eval_shape(tx.init, params)
  state = tx.init(params)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), shapes) == \
      jax.tree.map(lambda a: (a.shape, a.dtype), state)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(p, s, batch):
    g = jax.grad(mlp_loss)(p, batch)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s
  p = jax.tree.map(jnp.copy, params)
  xs, ys = batches(2)
  for t in range(2):
    p, state = step(p, state, (xs[t], ys[t]))
  assert pruned_max(p, masks) == 0.0


def test_training_loop_with_compact_state(tmp_path):
  """train.optimizer_state='compact' in the loop: a fixed-mask run (here a
  lottery-style start with given masks) ends where the dense-state run ends
  (adam, 40 steps, within 1e-6), keeps pruned weights at zero, holds compact
  moments; a schedule that moves the mask is refused before training."""
  import pathlib
  from sparsejax import config as config_lib, experiment
  from sparsejax.core import schedules
  from sparsejax.train import loop
  root = pathlib.Path(__file__).resolve().parent.parent
  cfg = config_lib.apply_overrides(
      config_lib.load_config(root / 'configs' / 'mnist1d_mlp.py'),
      {'train.steps': 40, 'train.eval_every': 40, 'train.checkpoint_every': 40,
       'train.log_every': 40, 'model.options.hidden': 32})
  task = experiment.build_task(cfg)
  params = jax.device_get(jax.jit(task.init_variables)(jax.random.key(1))['params'])
  pruned, masks = sj.prune(params, 0.9)
  fixed = task.replace(schedule=schedules.FixedMask(masks=jax.device_get(masks)))
  out = {}
  for layout in ('dense', 'compact'):
    result = loop.train(fixed.replace(optimizer_state=layout), tmp_path / layout,
                        start=loop.Start(jax.device_get(pruned)), progress=False,
                        log=lambda s: None)
    out[layout] = jax.device_get(result.state)
  for a, b in zip(jax.tree.leaves(out['dense'].params), jax.tree.leaves(out['compact'].params)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
  assert pruned_max(out['compact'].params, masks) == 0.0
  dense_bytes = compact.nbytes(out['dense'].opt_state.inner_state)
  compact_bytes = compact.nbytes(out['compact'].opt_state.inner_state)
  assert compact_bytes < 0.3 * dense_bytes
  with pytest.raises(loop.SetupError, match="optimizer_state='compact'.*RigL"):
    loop.build(task.replace(schedule=sj.make_schedule('rigl', sparsity=0.9, every=10),
                            optimizer_state='compact'))
  with pytest.raises(config_lib.ConfigError, match='train.optimizer_state'):
    config_lib.to_settings(config_lib.apply_overrides(cfg, {'train.optimizer_state': 'packed'}))
