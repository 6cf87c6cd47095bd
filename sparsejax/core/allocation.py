"""Per-layer sparsity from shapes, computed once, outside jit.

An allocation splits a global sparsity target into per-layer sparsities.
`Allocation` holds the settings a schedule keeps: the method, by a name in
`ALLOCATIONS` or by import path 'pkg.module:Class', and two modifiers that
hold for every method. Overrides fix a leaf's sparsity (a dense first layer:
{'Dense_0': 0.0}); scales multiply the target (the output layer at half the
rate: {'Dense_2': 0.5}). The method splits the target over the other leaves
(so leaves with an override or scale are left out of the ER/ERK budget, as in
the RigL reference code).

Methods:
  uniform   every leaf at the target sparsity;
  global    one magnitude threshold across all leaves (per-layer sparsity is
            decided by the scores at pruning time, see `schedules`);
  er, erk   Erdos-Renyi(-Kernel) (Mocanu et al. 2018; Evci et al. 2020, RigL):
            density proportional to sum(dims)/prod(dims), scaled to meet the
            target, layers that would exceed density 1 kept dense and the
            budget redistributed over the others.

Adding a method: a subclass of `AllocationMethod` (or any class with its
`split` and flags) whose `split` returns {path: sparsity}; then one line in
`ALLOCATIONS` gives it a name, or, with no change here, a config names it by
import path: `c.pruning.allocation = 'mypkg.alloc:Mine'` (the class is
instantiated with no arguments; `Allocation(Mine())` from Python).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, ClassVar, Mapping

import numpy as np

from sparsejax.core.imports import resolve

Shapes = Mapping[str, tuple[int, ...]]


def check_sparsity(value, what: str = 'sparsity') -> float:
  """value as float if 0 <= value < 1, else a ValueError naming it."""
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ValueError(f'{what} must be a number in [0, 1), got {value!r}') from None
  if not 0.0 <= v < 1.0 or math.isnan(v):
    raise ValueError(f'{what} must be in [0, 1), got {value!r}')
  return v


class AllocationMethod:
  """How a target sparsity is split over leaves; the protocol of a method.

  `split(shapes, sparsity, allocation)` gets the shapes {path: shape} of the
  leaves that no override or scale fixes, the target and the `Allocation`
  (for options such as erk_power_scale) and returns {path: sparsity in [0, 1]}
  for exactly those leaves, or None for a leaf left to one global threshold at
  pruning time (then set `pooled`).
  """
  # Some leaves get None: a schedule that keeps per-layer counts (RigL, SET) refuses it.
  pooled: ClassVar[bool] = False
  # The rates `split` gives for a fraction f also hold as the share of each
  # leaf's *remaining* weights to prune, as IMP and the lottery use them
  # (prune_remaining). True for rates that depend on the leaf only (uniform) or
  # one threshold over what remains (global); not for ER/ERK, whose rates solve
  # a budget over the dense sizes.
  prunes_remaining: ClassVar[bool] = False

  def split(self, shapes: Shapes, sparsity: float,
            allocation: 'Allocation') -> dict[str, float | None]:
    raise NotImplementedError


class Uniform(AllocationMethod):
  """Every leaf at the target sparsity."""
  prunes_remaining = True

  def split(self, shapes, sparsity, allocation):
    return {p: sparsity for p in shapes}


class Global(AllocationMethod):
  """One threshold over all leaves at pruning time: each leaf gets None."""
  pooled = True
  prunes_remaining = True

  def split(self, shapes, sparsity, allocation):
    return {p: None for p in shapes}


class ER(AllocationMethod):
  """Erdos-Renyi (Mocanu et al. 2018): density ~ (fan-in + fan-out) / (fan-in * fan-out)."""
  kernel: ClassVar[bool] = False

  def split(self, shapes, sparsity, allocation):
    return erk_sparsities(shapes, sparsity, kernel=self.kernel,
                          power=allocation.erk_power_scale)


class ERK(ER):
  """Erdos-Renyi-Kernel (Evci et al. 2020, RigL): ER over all dims, kernel included."""
  kernel = True


# The methods by name; one line per method.
ALLOCATIONS: dict[str, type[AllocationMethod]] = {
    'uniform': Uniform,
    'global': Global,
    'er': ER,
    'erk': ERK,
}
METHODS = tuple(ALLOCATIONS)   # the names (kept for older code)
# The settings of `Allocation` besides the method: config keys pruning.<name>.
MODIFIERS = ('overrides', 'scales', 'erk_power_scale')


def resolve_method(method) -> Any:
  """The method object of a registry name, an import path 'pkg.module:Class',
  a class or an instance; ValueError if it has no `split`."""
  obj = resolve(method, ALLOCATIONS, 'allocation') if isinstance(method, str) else method
  if isinstance(obj, type):
    obj = obj()
  if not callable(getattr(obj, 'split', None)):
    raise ValueError(f'allocation {method!r} has no split(shapes, sparsity, allocation) '
                     'method: see sparsejax.core.allocation.AllocationMethod')
  return obj


def _pairs(value, what) -> tuple[tuple[str, float], ...]:
  items = value.items() if isinstance(value, Mapping) else tuple(value or ())
  out = []
  for pattern, v in items:
    try:
      re.compile(pattern)
    except re.error as e:
      raise ValueError(f'{what} pattern {pattern!r} is not a valid regular expression: {e}') from None
    out.append((str(pattern), float(v)))
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class Allocation:
  """How a target sparsity is spread over the prunable leaves: a method (name,
  import path or object, see the module docstring) and its modifiers."""
  method: Any = 'uniform'
  overrides: Mapping[str, float] | tuple = ()
  scales: Mapping[str, float] | tuple = ()
  erk_power_scale: float = 1.0

  def __post_init__(self):
    object.__setattr__(self, '_method', resolve_method(self.method))
    object.__setattr__(self, 'overrides', _pairs(self.overrides, 'override'))
    object.__setattr__(self, 'scales', _pairs(self.scales, 'scale'))
    for pattern, v in self.overrides:
      check_sparsity(v, f'override sparsity for {pattern!r}')
    for pattern, v in self.scales:
      if v < 0:
        raise ValueError(f'scale for {pattern!r} must be >= 0, got {v}')

  @property
  def method_object(self):
    """The resolved method (an `AllocationMethod` or alike)."""
    return self._method

  @property
  def is_global(self) -> bool:
    """True if the method leaves leaves to one global threshold (pooled)."""
    return bool(getattr(self._method, 'pooled', False))

  @property
  def prunes_remaining(self) -> bool:
    """True if its rates hold as fractions of what remains (see AllocationMethod)."""
    return bool(getattr(self._method, 'prunes_remaining', False))

  def check_prunes_remaining(self, who: str, error: type[Exception] = ValueError) -> None:
    """Raise `error` unless the method's rates can prune a fraction of what
    remains: the one check of IMP, `prune_remaining` and the lottery."""
    if not self.prunes_remaining:
      able = ' or '.join(n for n, c in ALLOCATIONS.items() if c.prunes_remaining)
      raise error(f'{who} prunes a fraction of what remains: use {able} allocation (with '
                  f'scales or overrides), or a method with prunes_remaining = True, not '
                  f'{self.method!r}')

  def _fixed(self, path: str, sparsity: float) -> float | None:
    for pattern, v in self.overrides:
      if re.search(pattern, path):
        return v
    for pattern, v in self.scales:
      if re.search(pattern, path):
        return check_sparsity(sparsity * v, f'scaled sparsity of leaf {path!r}')
    return None

  def layer_sparsities(self, shapes: Shapes, sparsity: float) -> dict[str, float | None]:
    """{path: sparsity}. Leaves in a global pool ('global') get None."""
    sparsity = check_sparsity(sparsity)
    out: dict[str, float | None] = {}
    free = {}
    for path in shapes:
      fixed = self._fixed(path, sparsity)
      if fixed is None:
        free[path] = shapes[path]
      out[path] = fixed
    out.update(self._checked(self._method.split(free, sparsity, self), free))
    return out

  def _checked(self, got: Mapping, free: Shapes) -> Mapping:
    if set(got) != set(free):
      raise ValueError(f'allocation {self.method!r} gave sparsities for {sorted(got)}, '
                       f'not for the leaves it was given, {sorted(free)}')
    for path, v in got.items():
      if v is None and not self.is_global:
        raise ValueError(f'allocation {self.method!r} left leaf {path!r} to a global pool '
                         '(None) but does not set pooled = True')
      if v is not None and not 0.0 <= v <= 1.0:
        raise ValueError(f'allocation {self.method!r} gave leaf {path!r} sparsity {v!r}, '
                         'outside [0, 1]')
    return got


def erk_sparsities(shapes: Shapes, sparsity: float,
                   kernel: bool = True, power: float = 1.0) -> dict[str, float]:
  """ER/ERK sparsities meeting `sparsity` over these leaves overall.

  Raw density of a leaf: (sum of dims / product of dims)**power, over all
  dims for ERK and over the last two (fan-in, fan-out) for ER. A common
  factor eps scales them to the budget; leaves whose density would pass 1 are
  made dense and eps is solved again without them.
  """
  if not shapes:
    return {}
  sizes = {p: int(np.prod(s)) for p, s in shapes.items()}
  raw = {}
  for p, s in shapes.items():
    dims = s if kernel else s[-2:]
    raw[p] = (float(np.sum(dims)) / float(np.prod(dims))) ** power
  dense: set[str] = set()
  while True:
    budget = sum((1 - sparsity) * sizes[p] for p in shapes if p not in dense)
    budget -= sum(sparsity * sizes[p] for p in dense)
    divisor = sum(raw[p] * sizes[p] for p in shapes if p not in dense)
    if divisor <= 0:
      break
    eps = budget / divisor
    rest = [p for p in shapes if p not in dense]
    top = max(raw[p] for p in rest)
    if eps * top <= 1.0:
      break
    dense.update(p for p in rest if raw[p] == top)
    if len(dense) == len(shapes):
      break
  return {p: 0.0 if p in dense else float(min(max(1.0 - eps * raw[p], 0.0), 1.0))
          for p in shapes}
