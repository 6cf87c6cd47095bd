"""Sharding checks for `sparsify`, run in its own process by test_sharding.py.

Needs 8 devices: run with XLA_FLAGS=--xla_force_host_platform_device_count=8
(set before JAX starts; forcing devices slows single-device code, so the
main test process never does it).

For each schedule, on a 2x4 ('data', 'model') mesh with kernels sharded over
'model' and the batch over 'data':
  1. `tx.init` on sharded params gives masks and Adam moments with the
     params' shardings, and `jax.jit(tx.init, out_shardings=...)` gives the
     same masks. (Plain `jax.jit(tx.init)` cannot: nothing in init reads the
     params' values, so jit drops them as unused arguments and compiles for
     one device; that holds for plain optax.adam too. The script prints how
     many leaves it keeps, for information.)
  2. a jitted step with explicit in/out shardings for every state leaf
     (scalars replicated) and donation trains 30 steps, mask updates included;
  3. masks and moments still have the params' shardings, pruned weights are
     exactly 0.0, and params, masks, optimizer state and losses equal an
     unsharded run on the same data (masks exactly).
Numeric checks are plain asserts; sharding mismatches are collected so that
one run reports all of them. One summary line per schedule on stdout; the
exit status is 0 only if everything passed.
"""

import sys
import time
import traceback

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import sparsejax as sj

jax.config.update('jax_numpy_rank_promotion', 'raise')

STEPS = 30
BLOCK_EVERY = 4          # fake CPU devices deadlock on >~30 queued collective steps
SPARSITY = 0.8
BATCH = 32
SHAPES = {'fc1': {'kernel': (64, 128), 'bias': (128,)},
          'fc2': {'kernel': (128, 32), 'bias': (32,)},
          'out': {'kernel': (32, 8), 'bias': (8,)}}
N_IN, N_OUT = 64, 8


def host_params(seed=0):
  """Params as numpy arrays, so each run makes its own device copies."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, leaves in SHAPES.items():
    fan_in = leaves['kernel'][0]
    out[name] = {
        'kernel': (rng.standard_normal(leaves['kernel']) / np.sqrt(fan_in)).astype(np.float32),
        'bias': (0.1 * rng.standard_normal(leaves['bias'])).astype(np.float32)}
  return out


def host_batches(seed=1):
  rng = np.random.default_rng(seed)
  xs = rng.standard_normal((STEPS, BATCH, N_IN)).astype(np.float32)
  ys = rng.integers(0, N_OUT, (STEPS, BATCH)).astype(np.int32)
  return xs, ys


def apply_fn(p, x):
  h = jax.nn.relu(x @ p['fc1']['kernel'] + p['fc1']['bias'][None, :])
  h = jax.nn.relu(h @ p['fc2']['kernel'] + p['fc2']['bias'][None, :])
  return h @ p['out']['kernel'] + p['out']['bias'][None, :]


def loss_fn(p, batch):
  x, y = batch
  return optax.softmax_cross_entropy_with_integer_labels(apply_fn(p, x), y).mean()


NAMES = ('fixed', 'oneshot', 'gradual', 'set', 'rigl', 'at_init')


def make_schedule(name, params):
  """The schedule `name`; 'fixed' prunes `params` (sharded or not) for its masks."""
  if name == 'fixed':
    return sj.make_schedule('fixed', masks=sj.prune(params, SPARSITY)[1])
  kwargs = {
      'oneshot': dict(at_step=3),
      'gradual': dict(start=0, end=20, every=5),
      'set': dict(every=5, end=40, allocation='uniform'),
      'rigl': dict(every=5, end=40),
      'at_init': dict(criterion='random'),
  }[name]
  return sj.make_schedule(name, sparsity=SPARSITY, **kwargs)


# --- sharding helpers -----------------------------------------------------------

def param_shardings(mesh, params):
  n_model = mesh.shape['model']
  def fn(path, p):
    is_kernel = getattr(path[-1], 'key', None) == 'kernel'
    if is_kernel and p.shape[-1] % n_model == 0:
      return NamedSharding(mesh, P(None, 'model'))
    return NamedSharding(mesh, P())
  return jax.tree_util.tree_map_with_path(fn, params)


def state_shardings(mesh, inner, state, param_sh):
  """Params' shardings for masks and moments, replicated for everything else."""
  rep = NamedSharding(mesh, P())
  masks = jax.tree.map(lambda s, m: None if m is None else s, param_sh, state.masks)
  inner_sh = optax.tree.map_params(inner, lambda _, s: s, state.inner_state, param_sh,
                                   transform_non_params=lambda _: rep)
  return sj.SparsityState(count=rep, masks=masks,
                          schedule_state=jax.tree.map(lambda _: rep, state.schedule_state),
                          inner_state=inner_sh)


def params_shaped_parts(inner, state, params):
  """[(name, leaf, param)] for every mask and every params-shaped inner-state leaf."""
  out = [(f'mask{path}', m, p) for path, p, m in mask_items(params, sj.get_masks(state))
         if m is not None]
  paths = jax.tree_util.tree_map_with_path(lambda k, _: jax.tree_util.keystr(k), params)
  seen = {}
  def collect(v, p, path):
    i = seen[path] = seen.get(path, -1) + 1        # Adam: 0 is mu, 1 is nu
    out.append((f'moment{i}{path}', v, p))
    return v
  optax.tree.map_params(inner, collect, state.inner_state, params, paths)
  return out


PROBLEMS = []   # sharding problems: recorded, the run goes on, the script fails at the end


def check_shardings(where, inner, state, params):
  """Records every mask or moment whose sharding differs from its param's."""
  parts = params_shaped_parts(inner, state, params)
  n_masks = sum(what.startswith('mask') for what, _, _ in parts)
  assert n_masks == 3, f'{where}: expected 3 masked kernels, got {n_masks}'
  # Adam: mu and nu, one per param leaf.
  assert len(parts) - n_masks == 2 * len(jax.tree.leaves(params)), (where, len(parts))
  bad = [f'{what} {tuple(v.shape)}: {_short(v.sharding)}, param {_short(p.sharding)}'
         for what, v, p in parts
         if not v.sharding.is_equivalent_to(p.sharding, p.ndim)]
  if bad:
    PROBLEMS.append(f'{where}: {len(bad)} of {len(parts)} params-shaped leaves lost the '
                    f'params\' sharding:\n    ' + '\n    '.join(bad))
  return len(parts) - len(bad), len(parts)


def _short(sharding):
  if isinstance(sharding, NamedSharding):
    return f'NamedSharding({sharding.spec})'
  return type(sharding).__name__ + f'({sorted(d.id for d in sharding.device_set)})'


def check_pruned_zero(where, params, masks):
  for path, p, m in mask_items(params, masks):
    if m is None:
      continue
    p, m = np.asarray(p), np.asarray(m)
    assert m.dtype == np.bool_, (where, path, m.dtype)
    nonzero = int(np.count_nonzero(p[~m]))
    assert nonzero == 0, f'{where}: {nonzero} pruned weights of {path} are not 0.0'


def mask_items(params, masks):
  """[(path, param, mask or None)] over all param leaves."""
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  ms = jax.tree.leaves(jax.tree.map(lambda _, m: m, params, masks), is_leaf=lambda x: x is None)
  assert len(ms) == len(flat)
  return [(jax.tree_util.keystr(k), p, m) for (k, p), m in zip(flat, ms)]


# --- training ---------------------------------------------------------------------

def make_step(tx):
  def step(params, state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss
  return step


def train(step_fn, params, state, batches, put_batch):
  xs, ys = batches
  losses = []
  for i in range(STEPS):
    params, state, loss = step_fn(params, state, put_batch(xs[i], ys[i]))
    losses.append(loss)
    if (i + 1) % BLOCK_EVERY == 0:
      jax.block_until_ready(loss)
  jax.block_until_ready((params, state))
  return params, state, np.array([float(l) for l in losses])


def run_schedule(name, mesh, host_p, batches):
  t0 = time.perf_counter()
  inner = optax.adam(1e-2)
  rep = NamedSharding(mesh, P())
  x_sh, y_sh = NamedSharding(mesh, P('data', None)), NamedSharding(mesh, P('data'))

  # --- sharded run -------------------------------------------------------------
  param_sh = param_shardings(mesh, host_p)
  params = jax.device_put(host_p, param_sh)
  tx = sj.sparsify(inner, make_schedule(name, params))
  step = make_step(tx)
  # Eager init: masks and moments should follow the params' shardings by themselves.
  eager_state = tx.init(params)
  kept, total = check_shardings(f'{name} after eager tx.init', inner, eager_state, params)
  init_masks = jax.tree.map(np.asarray, sj.get_masks(eager_state))
  # Jitted init: nothing in these inits reads the params' values, so plain
  # jax.jit(tx.init) drops them as unused arguments and puts the whole state on
  # one device; give every leaf's sharding explicitly (scalars replicated).
  state_sh = state_shardings(mesh, inner, jax.eval_shape(tx.init, params), param_sh)
  state = jax.jit(tx.init, out_shardings=state_sh)(params)
  check_shardings(f'{name} after jitted tx.init', inner, state, params)
  chex.assert_trees_all_equal(jax.tree.map(np.asarray, sj.get_masks(state)), init_masks)

  sharded_step = jax.jit(step, in_shardings=(param_sh, state_sh, (x_sh, y_sh)),
                         out_shardings=(param_sh, state_sh, rep), donate_argnums=(0, 1))
  params, state, losses = train(
      sharded_step, params, state, batches,
      lambda x, y: (jax.device_put(x, x_sh), jax.device_put(y, y_sh)))

  check_shardings(f'{name} after {STEPS} steps', inner, state, params)
  for leaf, sh in zip(jax.tree.leaves(params), jax.tree.leaves(param_sh)):
    assert leaf.sharding.is_equivalent_to(sh, leaf.ndim), (name, leaf.sharding, sh)
  assert state.count.sharding.is_equivalent_to(rep, 0), (name, state.count.sharding)
  assert int(state.count) == STEPS, (name, int(state.count))
  masks = sj.get_masks(state)
  check_pruned_zero(f'{name} sharded', params, masks)

  # --- unsharded run on the same data --------------------------------------------
  u_params = jax.tree.map(jnp.asarray, host_p)
  u_tx = sj.sparsify(inner, make_schedule(name, u_params))
  u_state = jax.jit(u_tx.init)(u_params)
  chex.assert_trees_all_equal(jax.tree.map(np.asarray, sj.get_masks(u_state)), init_masks)
  u_params, u_state, u_losses = train(jax.jit(make_step(u_tx)), u_params, u_state, batches,
                                      lambda x, y: (jnp.asarray(x), jnp.asarray(y)))
  u_masks = sj.get_masks(u_state)
  check_pruned_zero(f'{name} unsharded', u_params, u_masks)

  # --- sharded == unsharded --------------------------------------------------------
  np_masks, np_u_masks = jax.tree.map(np.asarray, masks), jax.tree.map(np.asarray, u_masks)
  diff = {path: int(np.sum(a != b))
          for (path, _, a), (_, _, b) in zip(mask_items(params, np_masks),
                                             mask_items(params, np_u_masks))
          if a is not None or b is not None}
  assert not any(diff.values()), f'{name}: masks differ from the unsharded run: {diff}'
  chex.assert_trees_all_close(jax.tree.map(np.asarray, params),
                              jax.tree.map(np.asarray, u_params), atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(jax.tree.map(np.asarray, state.inner_state),
                              jax.tree.map(np.asarray, u_state.inner_state),
                              atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(losses, u_losses, atol=1e-5, rtol=1e-5)

  # --- the run did something --------------------------------------------------------
  sparsity = float(sj.overall_sparsity(masks))
  assert abs(sparsity - SPARSITY) < 0.02, (name, sparsity)
  moved = sum(int(np.sum(a != b)) for a, b in zip(jax.tree.leaves(np_masks),
                                                 jax.tree.leaves(init_masks)))
  if name in ('set', 'rigl', 'oneshot', 'gradual'):
    assert moved > 0, f'{name}: the masks never changed'
  else:
    assert moved == 0, f'{name}: a fixed mask changed in {moved} places'
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], (name, losses[[0, -1]])
  print(f'{name:8s} numerics ok, eager init kept the params\' sharding on {kept}/{total} '
        f'masks+moments; '
        f'sparsity {sparsity:.3f}, {moved} mask entries changed, '
        f'loss {losses[0]:.3f} -> {losses[-1]:.3f}, '
        f'max |param diff| vs unsharded {_max_diff(params, u_params):.1e} '
        f'({time.perf_counter() - t0:.1f} s)', flush=True)


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def plain_jit_init_note(mesh, host_p):
  """How many params-shaped state leaves plain jax.jit(tx.init) leaves on one device."""
  params = jax.device_put(host_p, param_shardings(mesh, host_p))
  inner = optax.adam(1e-2)
  state = jax.jit(sj.sparsify(inner, make_schedule('oneshot', params)).init)(params)
  parts = params_shaped_parts(inner, state, params)
  lost = sum(not v.sharding.is_equivalent_to(p.sharding, p.ndim) for _, v, p in parts)
  return f'note: plain jax.jit(tx.init) kept the params\' sharding on {len(parts) - lost} of ' \
         f'{len(parts)} params-shaped leaves (oneshot)'


def main(argv):
  t0 = time.perf_counter()
  assert jax.device_count() == 8, (
      f'need 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8), '
      f'got {jax.device_count()}')
  mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ('data', 'model'))
  host_p = host_params()
  batches = host_batches()
  names = argv[1:] or NAMES
  failed = []
  for name in names:
    try:
      run_schedule(name, mesh, host_p, batches)
    except AssertionError as e:
      traceback.print_exc()
      failed.append(name)
      print(f'{name:8s} FAILED: {str(e)[:2000]}', flush=True)
  print(plain_jit_init_note(mesh, host_p))
  for p in PROBLEMS:
    print('SHARDING PROBLEM', p)
  print(f'{len(names) - len(failed)} of {len(names)} schedules passed the numeric checks, '
        f'{len(PROBLEMS)} sharding problems, {time.perf_counter() - t0:.1f} s', flush=True)
  return 1 if failed or PROBLEMS else 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
