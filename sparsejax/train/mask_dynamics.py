"""What a mask update changed, as a metrics row: weights dropped and grown,
and the overlap of the new mask with the previous and the initial one (the
in-time over-parameterisation measure of Liu et al. 2021), with the wall time
of the step that ran the update."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from sparsejax.core import masks as masks_lib, transform


class MaskDynamics:
  """Call `before(state)` ahead of an update step and `after(state, t)` after
  it; `initial_masks` are the run's masks at step 0."""

  def __init__(self, initial_masks):
    self.initial = jax.tree.map(jnp.copy, initial_masks)
    self._fn = jax.jit(masks_lib.mask_dynamics)
    self.previous = None

  def before(self, state) -> float:
    """Keeps the masks before the update; waits for the state to be ready
    and returns the time, so that `after` can time the update's step."""
    self.previous = jax.block_until_ready(
        jax.tree.map(jnp.copy, transform.get_masks(state.opt_state)))
    jax.block_until_ready(state.params)
    return time.perf_counter()

  def after(self, state, t_before: float) -> dict:
    """The row: counts, overlaps and step_seconds, the wall time of the
    train step that ran the update (the update included)."""
    jax.block_until_ready(state)
    seconds = time.perf_counter() - t_before
    out = self._fn(self.previous, transform.get_masks(state.opt_state), self.initial)
    return {**{k: v.item() for k, v in jax.device_get(out).items()}, 'step_seconds': seconds}
