"""Compiled programs shared across runs of one process.

A lottery trains many runs of the same shapes whose masks live in the state
(its levels and controls): they compile to the same train, eval and density
programs. `programs(run, ...)` returns those of an earlier run with the same
`program_key` (jit then finds its compiled executables: no tracing, no
compiling), or builds them; `init_program(run)` does the same for the
initialisation. `run` is a `loop.Run` (module `run_setup`).
"""

from __future__ import annotations

import collections

import jax

from sparsejax.core import fields, masks as masks_lib, protocol, transform
from sparsejax.train import step as step_lib

# Compiled programs of recent runs, by `program_key`: the levels and controls
# of a lottery (same shapes, masks in the state) share one set.
_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_KEEP_PROGRAMS = 4
# The compiled initialisations, by `program_key` (see `init_program`).
_INITS: collections.OrderedDict = collections.OrderedDict()
# The Task fields left out of its key: its loop settings, which no compiled
# program reads (see `loop_settings`), and the schedule, which gives its own
# key. Every other field, one added later included, is in the key: runs that
# differ in it never share a program.
_NOT_IN_KEY = ('loop', 'schedule')


def program_key(run):
  """Hashable: equal for runs that compile to the same train, eval and
  density programs; None when the schedule cannot say (no reuse). It holds
  every Task field but `loop` and the schedule (the resolved schedule's
  `program_key` instead), the mesh, and the state's shapes and shardings."""
  sched = protocol.program_key(run.schedule)
  if sched is None:
    return None
  leaves = tuple((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(run.abstract))
  return (sched, fields.fields_key(run.task, skip=_NOT_IN_KEY), run.mesh,
          jax.tree.structure(run.abstract), leaves, tuple(jax.tree.leaves(run.state_sh)),
          run.teacher_sh is None)


def init_program(run):
  """jit(run.init_program), the run's initialisation with the schedule's init
  data (a fixed mask) as its first argument, shared by the runs with the same
  `program_key` (the levels and controls of a lottery compile it once); None
  when the run cannot share it (no key, or no `init_program`)."""
  key = program_key(run)
  if key is None or run.init_program is None:
    return None
  if key in _INITS:
    _INITS.move_to_end(key)
    return _INITS[key][1]
  fn = jax.jit(run.init_program, out_shardings=run.state_sh)
  _INITS[key] = (run, fn)   # the run keeps the key's objects alive
  while len(_INITS) > _KEEP_PROGRAMS:
    _INITS.popitem(last=False)
  return fn


def programs(run, x_nd: int, y_nd: int):
  """(step_fn, {update_masks: jitted train step}, eval step, density) for the
  run, reused from an earlier run with the same `program_key` (jit then finds
  its compiled programs: no tracing, no compiling)."""
  key = program_key(run)
  if key is not None and key in _PROGRAMS:
    _PROGRAMS.move_to_end(key)
    return _PROGRAMS[key][1]
  t = run.task
  eval_fn = step_lib.compile_eval_step(step_lib.make_eval_step(t), run.mesh, run.state_sh,
                                       x_nd, y_nd)
  step_fn = step_lib.make_train_step(t, run.tx)
  # Two programs with the same shardings and donation: the plain step, and
  # the step with the mask update, compiled on its first use.
  train_fns = {flag: step_lib.compile_train_step(step_fn, run.mesh, run.state_sh, x_nd, y_nd,
                                                 update_masks=flag, teacher_sh=run.teacher_sh)
               for flag in (False, True)}
  density_fn = jax.jit(lambda s: masks_lib.overall_density(transform.get_masks(s)))
  programs = (step_fn, train_fns, eval_fn, density_fn)
  if key is not None:
    _PROGRAMS[key] = (run, programs)   # the run keeps the key's objects alive
    while len(_PROGRAMS) > _KEEP_PROGRAMS:
      _PROGRAMS.popitem(last=False)
  return programs
