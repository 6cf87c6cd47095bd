"""Per-layer sparsity from shapes, computed once, outside jit.

Methods:
  uniform   every prunable leaf at the target sparsity;
  global    one magnitude threshold across all leaves (per-layer sparsity is
            decided by the scores at pruning time, see `schedules`);
  er, erk   Erdos-Renyi(-Kernel) (Mocanu et al. 2018; Evci et al. 2020, RigL):
            density proportional to sum(dims)/prod(dims), scaled to meet the
            target, layers that would exceed density 1 kept dense and the
            budget redistributed over the others.
Overrides fix a leaf's sparsity (a dense first layer: {'Dense_0': 0.0});
scales multiply the target (the output layer at half the rate:
{'Dense_2': 0.5}). Leaves with an override or scale are left out of the ER/ERK
budget, as in the RigL reference code.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Mapping

import numpy as np

METHODS = ('uniform', 'global', 'er', 'erk')


def check_sparsity(value, what: str = 'sparsity') -> float:
  """value as float if 0 <= value < 1, else a ValueError naming it."""
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ValueError(f'{what} must be a number in [0, 1), got {value!r}') from None
  if not 0.0 <= v < 1.0 or math.isnan(v):
    raise ValueError(f'{what} must be in [0, 1), got {value!r}')
  return v


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
  """How a target sparsity is spread over the prunable leaves."""
  method: str = 'uniform'
  overrides: Mapping[str, float] | tuple = ()
  scales: Mapping[str, float] | tuple = ()
  erk_power_scale: float = 1.0

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f'unknown allocation {self.method!r}; choose from {list(METHODS)}')
    object.__setattr__(self, 'overrides', _pairs(self.overrides, 'override'))
    object.__setattr__(self, 'scales', _pairs(self.scales, 'scale'))
    for pattern, v in self.overrides:
      check_sparsity(v, f'override sparsity for {pattern!r}')
    for pattern, v in self.scales:
      if v < 0:
        raise ValueError(f'scale for {pattern!r} must be >= 0, got {v}')

  @property
  def is_global(self) -> bool:
    return self.method == 'global'

  def _fixed(self, path: str, sparsity: float) -> float | None:
    for pattern, v in self.overrides:
      if re.search(pattern, path):
        return v
    for pattern, v in self.scales:
      if re.search(pattern, path):
        return check_sparsity(sparsity * v, f'scaled sparsity of leaf {path!r}')
    return None

  def layer_sparsities(self, shapes: Mapping[str, tuple[int, ...]],
                       sparsity: float) -> dict[str, float | None]:
    """{path: sparsity}. With 'global', leaves in the global pool get None."""
    sparsity = check_sparsity(sparsity)
    out: dict[str, float | None] = {}
    free = []
    for path in shapes:
      fixed = self._fixed(path, sparsity)
      if fixed is None:
        free.append(path)
      out[path] = fixed
    if self.method == 'uniform':
      out.update({p: sparsity for p in free})
    elif self.method in ('er', 'erk'):
      out.update(erk_sparsities({p: shapes[p] for p in free}, sparsity,
                                kernel=self.method == 'erk',
                                power=self.erk_power_scale))
    return out


def erk_sparsities(shapes: Mapping[str, tuple[int, ...]], sparsity: float,
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

