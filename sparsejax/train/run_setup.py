"""A run's pieces built from a `Task` before any training: where it starts
(`Start`), the resolved schedule, optimizer, mesh, shapes and shardings
(`Run`, from `build`), its state at step 0, the steps that run the mask
update, and its description (config.json's 'resolved') and banner. Every
setup error is raised here, before the loop touches a workdir; the loop
(`loop.train`) takes a `Run`. All of these are importable from `loop` too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.core import protocol, schedules
from sparsejax.core import tree as tree_lib
from sparsejax.data import base as data_base
from sparsejax.train import checkpoint as ckpt_lib, compiled, distill as distill_lib
from sparsejax.train import initial as initial_lib, sharding as sharding_lib
from sparsejax.train import teacher as teacher_lib
from sparsejax.train.task import SetupError, Task


@dataclasses.dataclass(frozen=True)
class Start:
  """Where a run starts instead of a fresh initialisation: given params (and
  model state). Programs use it (IMP levels, controls, fine-tuning), with a
  `FixedMask(masks)` schedule in the task to keep a given mask."""
  params: Any
  model_state: Any = None


@dataclasses.dataclass
class Run:
  """Everything built from a task, before any training."""
  task: Task
  schedule: schedules.Schedule     # resolved for the run (fractions -> steps, bound)
  warnings: list[str]              # settings that may not be what was meant
  mesh: Any
  tx: Any
  init_state: Callable             # key -> TrainState (pure)
  abstract: Any                    # TrainState of ShapeDtypeStructs
  state_sh: Any                    # TrainState of shardings
  start: Start | None = None
  teacher: Any = None              # {'params', 'model_state'} of a task that distills
  teacher_sh: Any = None           # their shardings (those of the params and model state)
  # (data, key, start_params, start_model_state) -> the TrainState of
  # init_state, with data = protocol.init_data(schedule) an argument (None: no sharing)
  init_program: Callable | None = None


def build(task: Task, mesh=None, start: Start | None = None) -> Run:
  """The compiled-to-be pieces of a run; every setup error is raised here,
  before a workdir is touched."""
  try:
    mesh = mesh or sharding_lib.make_mesh(task.mesh_shape)
    sharding_lib.check_batch(mesh, task.batch_size, 'batch_size')
    sharding_lib.check_batch(mesh, task.eval_batch_size, 'eval_batch_size')
  except ValueError as e:
    raise SetupError(str(e)) from None
  if start is None and task.schedule.needs_start:
    raise SetupError(f'{type(task.schedule).__name__} takes its mask from the weights it '
                     'starts from, but this run starts from a fresh initialisation: it would '
                     'train a dense network. Start from pruned weights (finetune) or give masks')
  schedule = task.schedule.for_run(task.updates)
  if protocol.needs_binding(schedule):   # criteria at initialisation score on the first batch
    x0, y0 = task.dataset.train.get(data_base.batch_indices(
        len(task.dataset.train), task.batch_size, task.loop.seed, 0))
    batch0 = (jnp.asarray(x0), jnp.asarray(y0))
    state0 = task.initial_model_state()
    schedule = protocol.bind(
        schedule,
        loss_fn=lambda params, batch: task.eval_loss(params, state0, batch), batch=batch0,
        apply_fn=lambda params, x: task.apply(params, state0, x)[0],
        input_shape=(1, *task.dataset.input_shape))
  # The mask update runs as its own program, only on update steps (see _loop),
  # so every other step costs what a fixed-mask step costs.
  tx = initial_lib.make_tx(task, schedule, None if start is None else start.params)

  def init_state(key, start_params=None, start_model_state=None):
    return initial_lib.init_state(task, tx, key, start_params, start_model_state)

  init_program = None
  if task.optimizer_state != 'compact':   # its inner optimizer holds the kept indices
    def init_program(data, key, start_params=None, start_model_state=None):
      # The same state as init_state, with the schedule's init data (a fixed
      # mask) an argument instead of a constant: runs with the same program
      # key share one compiled program (compiled.init_program). `start`
      # reaches it only as arguments (make_tx reads it for compact state).
      tx_data = initial_lib.make_tx(task, protocol.with_init_data(schedule, data))
      return initial_lib.init_state(task, tx_data, key, start_params, start_model_state)

  abstract = jax.eval_shape(init_state, jax.random.key(task.loop.seed))
  if start is not None:
    try:
      tree_lib.check_same_structure(start.params, abstract.params, 'the starting params')
      if start.model_state is not None:
        tree_lib.check_same_structure(start.model_state, abstract.model_state,
                                      'the starting model state')
    except ValueError as e:
      raise ckpt_lib.CheckpointError(str(e)) from None
  try:
    param_sh = sharding_lib.param_shardings(mesh, abstract.params, task.mesh_rules,
                                            fsdp=task.mesh_fsdp)
  except ValueError as e:
    raise SetupError(f'mesh rules: {e}') from None
  state_sh = sharding_lib.state_shardings(mesh, abstract, abstract.params, param_sh)
  warnings = schedule.warnings(task.updates)
  teacher, teacher_sh = None, None
  if task.distill is not None:
    teacher = teacher_lib.resolve(task, start, abstract)
    teacher_sh = {'params': state_sh.params, 'model_state': state_sh.model_state}
    zeros = teacher_lib.zero_fraction(teacher['params'], task.rule)
    if zeros > 0:
      warnings = [*warnings, f'the distillation teacher has {100 * zeros:.2f}% of its '
                  'prunable weights at exactly zero: is it pruned already?']
  return Run(task, schedule, warnings, mesh, tx, init_state, abstract, state_sh, start,
             teacher, teacher_sh, init_program)


def initial_state(run: Run):
  """The run's state at step 0, placed with its shardings. Runs with the same
  program key share one compiled program (the schedule's init data, a fixed
  mask, is its argument): an IMP level or control compiles no init of its own."""
  args = [jax.random.key(run.task.loop.seed)]
  if run.start is not None:
    args += [run.start.params, run.start.model_state]
  shared = compiled.init_program(run)
  if shared is not None:
    return shared(protocol.init_data(run.schedule), *args)
  return jax.jit(run.init_state, out_shardings=run.state_sh)(*args)


def mask_update_steps(run: Run) -> set[int]:
  """Train steps (0-based) on which the schedule changes the mask."""
  n = run.task.updates
  if not run.schedule.changes_mask or n == 0:
    return set()
  flags = np.asarray(jax.jit(jax.vmap(run.schedule.should_update))(jnp.arange(n)))
  k = run.task.accumulate
  return {int(u) * k + k - 1 for u in np.nonzero(flags)[0]}


def update_program_steps(run: Run) -> set[int]:
  """Train steps (0-based micro-steps) that run the program with the mask
  update (and IMP's rewind): the schedule counts real updates, and under
  accumulation by k update c is made on micro-step c * k + k - 1."""
  k = run.task.accumulate
  return {c * k + k - 1 for c in run.schedule.update_steps(run.task.updates)}


def describe(run: Run) -> dict:
  """The resolved run, JSON-friendly: schedule (type and every field) and loop settings."""
  t = run.task
  out = {'schedule': run.schedule.describe(),
         'loop': {'steps': t.loop.steps, 'batch_size': t.batch_size, 'seed': t.loop.seed,
                  'accumulate': t.accumulate},
         'model': type(t.model).__qualname__ if t.model is not None else None,
         'dataset': t.dataset.name}
  for key, default in (('optimizer_state', 'dense'), ('compute_dtype', 'float32'),
                       ('param_dtype', 'float32'), ('mesh_fsdp', False),
                       ('pack_masks', False)):
    if getattr(t, key) != default:   # absent at the default: older records still match
      out[key] = getattr(t, key)
  if t.distill is not None:   # the teacher's checksum: a resume with another is refused
    out['distill'] = {**t.distill.settings(), 'teacher': distill_lib.fingerprint(run.teacher)}
  return out


def banner(run: Run, workdir) -> str:
  """The start banner: devices, mesh, counts, the resolved schedule, workdir."""
  params = run.abstract.params
  n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  prunable = tree_lib.prunable_shapes(params, run.task.rule)
  n_prunable = sum(int(np.prod(s)) for s in prunable.values())
  sched = run.schedule.describe()
  fields = ', '.join(f'{k}={v}' for k, v in sched.items() if k != 'type' and k != 'masks')
  devices = jax.devices()
  distill = ''
  if run.task.distill is not None:
    distill = 'distill from a teacher (' + ', '.join(
        f'{k}={v}' for k, v in run.task.distill.settings().items()) + ')\n'
  return (f'run: {len(devices)} {devices[0].platform} device(s), mesh '
          f'{dict(run.mesh.shape)}; {n_params:,} params, {n_prunable:,} prunable in '
          f'{len(prunable)} leaves\nschedule {sched["type"].rsplit(".", 1)[-1]}({fields})\n'
          f'{distill}{run.task.loop.steps} steps, batch {run.task.batch_size}; workdir {workdir}')
