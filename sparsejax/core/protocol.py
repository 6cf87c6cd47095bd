"""What `sparsify` asks of a schedule, and the capabilities a few add.

Every schedule speaks the traced protocol `SparsitySchedule` (four methods;
`schedules.Schedule` is a convenience base implementing it). A few schedules
need more, and say so by mixing in one small capability class rather than
every schedule carrying methods that only one of them uses:

  Rewinding        IMP: jump back to saved params and restart the inner
                   optimizer (`sparsify` composes the `rewinding` wrapper)
  StraightThrough  STE, SR-STE: train dense shadow weights (`sparsify` hands
                   the step to `ste.straight_through`)
  Bindable         pruning at initialisation: needs the model and a batch
  SharesPrograms   compiled programs may be reused across runs (IMP levels
                   and their controls)

Code that drives a schedule asks through the functions at the bottom
(`is_rewinding(s)`, `program_key(s)`, `bind(s, ...)`, ...), which give each
capability's neutral answer for a schedule that lacks it, so a schedule that
only implements the protocol (no `Schedule` base) runs too. They look each
capability up on the schedule's type, past the deprecated neutral defaults
that `Schedule` still inherits from `compat` (which warn when reached), and
honour an older-style subclass's own overrides (`rewinds = True` with
`should_rewind` / `rewind_target`; `compat` warns when such a class is defined).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Protocol, runtime_checkable

PyTree = Any


@runtime_checkable
class SparsitySchedule(Protocol):
  """The traced protocol: all that `sparsify` calls on every schedule.

  `init` runs once, outside the train step (it is jitted with `rule`
  static); the others run inside the jitted step, with `step` traced.
  `update` runs under `lax.cond` on `should_update(step)` and must return
  masks and state of the same structure, shapes and dtypes as it received;
  `accumulate` runs on every step (in both update modes) before it.
  """

  def init(self, params: PyTree, rule: Callable) -> tuple[PyTree, PyTree]:
    """(masks, schedule state) for the initial params."""

  def should_update(self, step) -> Any:
    """Traced bool: does the mask change at this step?"""

  def update(self, masks, params, grads, step, state) -> tuple[PyTree, PyTree]:
    """(new masks, new state) on the steps `should_update` picks."""

  def accumulate(self, state, params, grads, step) -> PyTree:
    """The state after this step's per-step statistics (movement scores)."""


class Rewinding:
  """Capability: IMP-style rewinding.

  On steps where `should_rewind`, the `rewinding` wrapper replaces the update
  by a jump to `rewind_target(masks, state)` and restarts the inner
  optimizer (its count too, so a learning-rate schedule restarts: `lr_step`
  is the step it then sees, `restart_period` the steps between restarts).
  """
  rewinds: ClassVar[bool] = True     # the flag older code reads

  def should_rewind(self, step):
    raise NotImplementedError

  def rewind_target(self, masks, state):
    """The params to continue from after a rewind."""
    raise NotImplementedError

  def lr_step(self, step):
    return step

  @property
  def restart_period(self) -> int | None:
    return None


class StraightThrough:
  """Capability: dense shadow weights in the schedule state, trained straight
  through the mask (STE, SR-STE); see `ste.py` for the contract. A schedule
  with it has `every` and `sr_decay` fields."""
  straight_through: ClassVar[bool] = True    # the flag older code reads


class Bindable:
  """Capability: the schedule needs the model and a batch before `init`
  (criteria at initialisation); the loop calls `bind` when `needs_binding`."""

  @property
  def needs_binding(self) -> bool:
    return False

  def bind(self, **context):
    """This schedule with what it needs from the model and data."""
    raise NotImplementedError


class SharesPrograms:
  """Capability: two runs whose schedules have equal `program_key` trace to the
  same train step, so the loop reuses the compiled programs (IMP levels and
  their controls). What the key leaves out must be read only by `init` and be
  returned by `init_data` (the loop then passes it to the shared compiled
  initialisation as an argument, via `with_init_data`)."""

  def program_key(self):
    raise NotImplementedError

  def init_data(self) -> PyTree:
    return None

  def with_init_data(self, data: PyTree):
    del data
    return self


# -- asking a schedule (neutral answers for capabilities it lacks) -------------
_NONE = object()


def _own(schedule, name):
  """`schedule.<name>` as the schedule's own classes define it (a capability
  mixin's, or an override in an older-style subclass), or _NONE where it has
  none. Looked up on the type's MRO, skipping the deprecated neutral defaults
  of `compat.CapabilityDefaults` (which warn when reached)."""
  instance = getattr(schedule, '__dict__', None)
  if isinstance(instance, dict) and name in instance:
    return instance[name]
  for klass in type(schedule).__mro__:
    own = vars(klass)
    if name in own and not own.get('_deprecated_capability_defaults', False):
      value = own[name]
      return value.__get__(schedule, type(schedule)) if hasattr(value, '__get__') else value
  return _NONE


def _flag(schedule, name) -> bool:
  value = _own(schedule, name)
  return value is not _NONE and bool(value)


def is_rewinding(schedule) -> bool:
  """True for schedules that rewind (the `Rewinding` capability, or a
  subclass of `Schedule` that sets the older flag `rewinds = True`)."""
  return isinstance(schedule, Rewinding) or _flag(schedule, 'rewinds')


def is_straight_through(schedule) -> bool:
  """True for straight-through schedules (`StraightThrough`, or the older flag)."""
  return isinstance(schedule, StraightThrough) or _flag(schedule, 'straight_through')


def should_rewind(schedule, step):
  """Does a rewinding schedule rewind at `step` (traced or not); False for others."""
  fn = _own(schedule, 'should_rewind') if is_rewinding(schedule) else _NONE
  return False if fn is _NONE else fn(step)


def needs_update(schedule, step):
  """should_update, or should_rewind too for rewinding schedules (traced or not)."""
  flag = schedule.should_update(step)
  return flag | should_rewind(schedule, step) if is_rewinding(schedule) else flag


def lr_step(schedule, step):
  """The step a learning-rate schedule sees at train step `step`."""
  fn = _own(schedule, 'lr_step')
  return step if fn is _NONE else fn(step)


def restart_period(schedule) -> int | None:
  """Steps after which the inner optimizer restarts (None: never)."""
  period = _own(schedule, 'restart_period')
  return None if period is _NONE else period


def needs_binding(schedule) -> bool:
  """True for a schedule that needs the model and a batch before `init`."""
  return _flag(schedule, 'needs_binding')


def bind(schedule, **context):
  """`schedule.bind(**context)` where it binds; the schedule itself otherwise."""
  return _own(schedule, 'bind')(**context) if needs_binding(schedule) else schedule


def program_key(schedule):
  """The schedule's program key; None (compile per run) when it has none."""
  fn = _own(schedule, 'program_key')
  return None if fn is _NONE else fn()


def init_data(schedule) -> PyTree:
  """What `init` reads that the program key leaves out (None: nothing)."""
  fn = _own(schedule, 'init_data')
  return None if fn is _NONE else fn()


def with_init_data(schedule, data: PyTree):
  """The schedule with `init_data` replaced by `data` (itself where it shares none)."""
  fn = _own(schedule, 'with_init_data')
  return schedule if fn is _NONE else fn(data)
