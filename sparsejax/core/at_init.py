"""Pruning at initialisation: the mask is chosen once, before the first step,
from scores of the initial weights, then kept fixed. SNIP (Lee et al. 2019),
GraSP (Wang et al. 2020) and SynFlow (Tanaka et al. 2020) need the model and a
batch (`bind`); random and magnitude need nothing."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp

from sparsejax.core import allocation as alloc_lib
from sparsejax.core import criteria as criteria_lib
from sparsejax.core import masks as masks_lib
from sparsejax.core import protocol
from sparsejax.core import select
from sparsejax.core import tree as tree_lib
from sparsejax.core.schedules import Schedule, ScheduleError


@dataclasses.dataclass(frozen=True)
class AtInit(protocol.Bindable, Schedule):
  """Prune before the first step, then keep the mask fixed.

  `score_fn(params) -> scores` is any criterion closed over what it needs,
  for example `functools.partial(criteria.snip_scores, loss_fn, batch=batch)`.
  Without one, the criterion names the scores: 'snip' (Lee et al. 2019),
  'grasp' (Wang et al. 2020) and 'synflow' (Tanaka et al. 2020) are bound to
  the model and a batch by `bind` (the training loop calls it); 'random' and
  'magnitude' need nothing. With iterations > 1 the mask is refined over
  rounds whose density falls exponentially to the target, rescoring the
  masked params each round: SynFlow's iterative pruning (None: 100 rounds for
  'synflow', else 1). With `counts_from` (a criterion name) the mask keeps,
  in every leaf, as many weights as `counts_from`'s mask keeps there, chosen
  by this schedule's own criterion: a random control with SNIP's per-layer
  sparsities is criterion='random', counts_from='snip'.
  """
  score_fn: Callable | None = None
  iterations: int | None = None
  counts_from: str | None = None
  reference: Any = None        # the bound counts_from schedule (set by bind)
  changes_mask: ClassVar[bool] = False

  def __post_init__(self):
    super().__post_init__()
    if self.iterations is not None and self.iterations < 1:
      raise ScheduleError(f'iterations must be >= 1, got {self.iterations}')

  @property
  def needs_binding(self):
    return ((self.score_fn is None and self.criterion in AT_INIT_BOUND)
            or (self.counts_from is not None and self.reference is None))

  def check_criterion(self):
    if self.criterion not in AT_INIT_BOUND:
      super().check_criterion()

  def bind(self, *, loss_fn=None, batch=None, apply_fn=None, input_shape=None):
    """This schedule with its score function made from the model and a batch."""
    context = dict(loss_fn=loss_fn, batch=batch, apply_fn=apply_fn, input_shape=input_shape)
    if self.counts_from is not None and self.reference is None:
      reference = dataclasses.replace(self, criterion=self.counts_from, counts_from=None,
                                      score_fn=None).bind(**context)
      return dataclasses.replace(self, reference=reference).bind(**context)
    if self.score_fn is not None or self.criterion not in AT_INIT_BOUND:
      return self
    if self.criterion in ('snip', 'grasp'):
      if loss_fn is None or batch is None:
        raise ScheduleError(f'{self.criterion!r} at initialisation needs loss_fn and batch')
      fn = criteria_lib.snip_scores if self.criterion == 'snip' else criteria_lib.grasp_scores
      score_fn = lambda p: fn(loss_fn, p, batch)
    else:
      if apply_fn is None or input_shape is None:
        raise ScheduleError("'synflow' at initialisation needs apply_fn and input_shape")
      score_fn = lambda p: criteria_lib.synflow_scores(apply_fn, p, input_shape)
    return dataclasses.replace(self, score_fn=score_fn)

  @property
  def rounds(self) -> int:
    if self.iterations is not None:
      return self.iterations
    return 100 if self.criterion == 'synflow' else 1

  def init(self, params, rule=tree_lib.DEFAULT_RULE):
    if self.counts_from is not None:
      if self.reference is None:
        raise ScheduleError(f'at_init with counts_from={self.counts_from!r} needs bind(...) '
                            'first')
      ref_masks, _ = self.reference.init(params, rule)
      own = dataclasses.replace(self, counts_from=None, reference=None)
      scores = dict(tree_lib.leaves_with_paths(
          (own.score_fn or (lambda p: own.scores(p, None, 0)))(params)))
      return tree_lib.map_with_path(
          lambda path, m: select.topk_mask(scores[path], jnp.sum(m, dtype=jnp.int32)),
          ref_masks), ()
    masks, _ = super().init(params, rule)
    if self.score_fn is None and self.criterion in AT_INIT_BOUND:
      raise ScheduleError(f'at_init with criterion {self.criterion!r} needs bind(...) first '
                          '(the model and a batch) or a score_fn')
    score_fn = self.score_fn or (lambda p: self.scores(p, None, 0))
    n = self.rounds
    # Round i prunes to density (1 - s)^(i/n); per-leaf targets come from the
    # allocation on the host and enter the loop as arrays, so it compiles once.
    rounds = [1.0 - (1.0 - self.sparsity) ** (i / n) for i in range(1, n + 1)]
    per_round = [self.layer_sparsities(masks, s) for s in rounds]
    per_leaf = {p: None if per_round[0][p] is None
                else jnp.asarray([r[p] for r in per_round], jnp.float32)
                for p in per_round[0]}
    global_s = jnp.asarray(rounds, jnp.float32)

    def one_round(i, m):
      scores = score_fn(masks_lib.apply_masks(params, m))
      targets = {p: None if v is None else v[i] for p, v in per_leaf.items()}
      return self.masks_at(m, scores, targets, global_s[i])

    return jax.lax.fori_loop(0, n, one_round, masks), ()


AT_INIT_BOUND = ('snip', 'grasp', 'synflow')


def at_init(criterion: str, sparsity: float, *, loss_fn=None, batch=None,
            apply_fn=None, input_shape=None, iterations=None, **kwargs) -> AtInit:
  """Pruning at initialisation by name: 'snip', 'grasp', 'synflow', 'random', 'magnitude'.
  SynFlow defaults to global allocation, as in its paper."""
  if criterion not in AT_INIT_BOUND + ('random', 'magnitude'):
    raise ValueError(f'unknown criterion for pruning at initialisation {criterion!r}; '
                     "choose from ['grasp', 'magnitude', 'random', 'snip', 'synflow']")
  if criterion == 'synflow':
    kwargs.setdefault('allocation', alloc_lib.Allocation('global'))
  schedule = AtInit(sparsity, criterion=criterion, iterations=iterations, **kwargs)
  return schedule.bind(loss_fn=loss_fn, batch=batch, apply_fn=apply_fn,
                       input_shape=input_shape)
