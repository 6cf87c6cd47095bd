"""Fixed-mask fine-tuning with optimizer state for the active weights only.

`sparsify(inner, FixedMask(...))` keeps the inner optimizer's state dense:
Adam holds two params-shaped moments, zero at every pruned weight. When the
mask never changes, `compact_masked(inner, masks)` stores them compacted
instead: for each masked leaf the flat int32 indices of its kept entries
(computed once, host side, so every size is static) and, for `inner`, one
1-D vector of the kept entries. Each update gathers the kept gradients,
runs `inner` on the compact tree and scatters its updates back into a dense
update. At 90% sparsity Adam's state shrinks from 8 bytes per weight to
12 bytes per kept weight (two fp32 moments and one int32 index), 0.15x.

The exact-zero contract of `sparsify` is unchanged: the update of a pruned
weight is -w, so after `optax.apply_updates` every pruned weight is exactly
0.0, whatever `inner` does; gradients of pruned weights never reach `inner`.
Leaves whose mask is None train densely, with dense state, as in `sparsify`.

Which inner optimizers give the same result as the dense-state path
(`sparsify(inner, make_schedule('fixed', masks=masks))`):

- elementwise ones give the same numbers (the same operations on the same
  values; the compiled code may vectorise differently): sgd with or without
  momentum/nesterov, adam, adamw (weight decay on every leaf, or masked by
  path), adamax, amsgrad, adagrad, rmsprop, adabelief, yogi, lion, lars,
  `clip` (elementwise), `add_decayed_weights`, learning-rate schedules and
  `inject_hyperparams`, `apply_if_finite`, `zero_nans`;
- reductions over a whole leaf or the whole tree give the same value summed
  in another order (last-bit differences, if any): `clip_by_global_norm`
  (pruned gradients are zero in the dense path, so they add nothing), and
  the per-leaf trust ratios of `lamb` and `lars` when the pruned params are
  zero (start from masked params);
- anything that looks at a leaf's shape or rank differs, because `inner`
  sees a masked leaf as one 1-D vector: `adafactor` (it factors the second
  moment of matrices only), `adaptive_grad_clip` (unit-wise norms over rows),
  `sm3`, `muon` and other matrix preconditioners, weight-decay masks
  computed from `ndim`, and `add_noise` (its random draw follows the shape). Such an inner
  still trains only the kept weights and keeps pruned ones at zero; it is
  just a different optimizer.

The indices live in the state (`CompactMaskedState.indices`), so they are
checkpointed and donated with it and not baked into the compiled program as
constants; count them when comparing memory. The compact vectors are not
sharded like the params (they carry no layout of their own): the training
loop replicates them on a mesh (sparsejax/train/sharding.py says why).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsejax.core import tree as tree_lib

PyTree = Any

_MAX_INDEX = np.iinfo(np.int32).max
# The indices are sorted, unique, in bounds and non-negative by construction:
# no clamping, and no pass over them to wrap negative ones (5% of the step at 50%).
_INDEXING = dict(mode='promise_in_bounds', indices_are_sorted=True, unique_indices=True,
                 wrap_negative_indices=False)


class CompactMaskedState(NamedTuple):
  """State of `compact_masked`: per-leaf kept indices (int32, None for dense
  leaves) and the inner optimizer's state over the compact tree."""
  indices: PyTree
  inner_state: optax.OptState


def _is_none(x) -> bool:
  return x is None


def host_indices(masks: PyTree) -> PyTree:
  """{leaf: flat int32 indices of its True entries} as numpy arrays, None
  where the mask is None. Needs concrete masks (not traced)."""
  def fn(path, m):
    if m is None:
      return None
    try:
      m = np.asarray(m)
    except jax.errors.TracerArrayConversionError:
      raise TypeError(f'compact_masked needs concrete masks (computed before jit); the mask '
                      f'for leaf {path!r} is traced') from None
    if m.dtype != np.bool_ and not np.issubdtype(m.dtype, np.integer):
      raise ValueError(f'mask for leaf {path!r} has dtype {m.dtype}; expected bool')
    if m.size > _MAX_INDEX:
      raise ValueError(f'leaf {path!r} has {m.size} entries, too many for int32 indices')
    return np.flatnonzero(m.reshape(-1)).astype(np.int32)
  return jax.tree_util.tree_map_with_path(
      lambda p, m: fn(tree_lib.path_str(p), m), masks, is_leaf=_is_none)


def gather(tree: PyTree, indices: PyTree) -> PyTree:
  """The compact tree: each masked leaf's kept entries as a 1-D vector,
  unmasked leaves as they are."""
  return jax.tree.map(
      lambda x, i: x if i is None else x.reshape(-1).at[i].get(**_INDEXING),
      tree, indices, is_leaf=_is_none)


def scatter(compact: PyTree, indices: PyTree, base: PyTree) -> PyTree:
  """`base` with each masked leaf's kept entries replaced by `compact`'s."""
  return jax.tree.map(
      lambda c, i, b: c if i is None else b.reshape(-1).at[i].set(
          c.astype(b.dtype), **_INDEXING).reshape(b.shape),
      compact, indices, base, is_leaf=_is_none)


def _mask_spec(masks: PyTree) -> dict[str, tuple[int, ...] | None]:
  """{path: shape or None} of a mask tree, None leaves included."""
  return {p: None if m is None else tuple(np.shape(m))
          for p, m in tree_lib.leaves_with_paths(masks, is_leaf=_is_none)}


def _check_fits(spec: dict, tree: PyTree, what: str) -> None:
  """ValueError naming the first leaf path where `tree` does not fit the masks."""
  got = {p: tuple(np.shape(x)) for p, x in tree_lib.leaves_with_paths(tree)}
  for path in got:
    if path not in spec:
      raise ValueError(f'compact_masked: the mask has no entry for the {what} leaf {path!r} '
                       '(use None for a leaf that stays dense)')
  for path, shape in spec.items():
    if path not in got:
      raise ValueError(f'compact_masked: the mask has a leaf {path!r} that the {what} '
                       'do not have')
    if shape is not None and shape != got[path]:
      raise ValueError(f'compact_masked: the mask for leaf {path!r} has shape {shape}, '
                       f'the {what} leaf has shape {got[path]}')


def compact_masked(inner: optax.GradientTransformation, masks: PyTree
                   ) -> optax.GradientTransformationExtraArgs:
  """Train under a fixed mask with `inner`'s state stored for the kept weights only.

  `masks` is a pytree shaped like the params: a bool array (True = kept) at
  every masked leaf, None at leaves that train densely (what `sparsify`'s
  state, `prune` or `masks_from_zeros` give). It must be concrete: the
  indices of its True entries are computed here, once, and kept on the host
  (the masks themselves are not kept). `init(params)` checks that the masks
  fit the params (a ValueError names the first leaf path that does not) and
  returns a `CompactMaskedState`; `update(grads, state, params)` needs the
  params. Extra arguments are passed on to `inner`.

  The same result as `sparsify(inner, make_schedule('fixed', masks=masks))`
  for elementwise inner optimizers (the module docstring lists which are
  exact), with every pruned weight exactly 0 after every update.
  """
  inner = optax.with_extra_args_support(inner)
  host_idx = host_indices(masks)
  spec = _mask_spec(masks)

  def init_fn(params):
    _check_fits(spec, params, 'params')
    indices = jax.tree.map(lambda i: None if i is None else jnp.asarray(i), host_idx,
                           is_leaf=_is_none)
    return CompactMaskedState(indices, inner.init(gather(params, indices)))

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError('compact_masked needs the params: call tx.update(grads, state, params)')
    _check_fits(spec, updates, 'updates')   # trace time only
    _check_fits(spec, params, 'params')
    indices = state.indices
    compact_updates, inner_state = inner.update(
        gather(updates, indices), state.inner_state, gather(params, indices), **extra_args)
    # Pruned weights: update -w, so that they are exactly 0 after apply_updates.
    base = jax.tree.map(lambda u, p, i: None if i is None else -p.astype(u.dtype),
                        compact_updates, params, indices)
    new_updates = scatter(compact_updates, indices, base)
    return new_updates, CompactMaskedState(indices, inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def expand(compact: PyTree, state: CompactMaskedState, like: PyTree) -> PyTree:
  """A compact tree (e.g. Adam's `mu` in `state.inner_state`) laid out like
  `like` again, zeros at the pruned entries."""
  base = jax.tree.map(lambda x, i: None if i is None else jnp.zeros_like(x), like,
                      state.indices, is_leaf=_is_none)
  return scatter(compact, state.indices, base)


def nbytes(tree: PyTree) -> int:
  """Bytes held by the array leaves of `tree` (optimizer-state size)."""
  return sum(int(x.nbytes) for x in jax.tree.leaves(tree) if hasattr(x, 'nbytes'))
