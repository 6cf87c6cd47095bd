"""`Task` split into what is trained and the loop's `LoopSettings`: the
deprecated flat keywords still build the same Task (with a warning), and the
program key holds every Task field but `loop` and the schedule, so runs that
differ only in loop settings share compiled programs and a field added to
Task later is in the key without anyone listing it."""

import dataclasses
import warnings

import numpy as np
import optax
import pytest

from sparsejax import models
from sparsejax.data import base as data_base
from sparsejax.train import compiled, loop
from sparsejax.train.loop_settings import LOOP_FIELDS
from sparsejax.train.task import LoopSettings, SetupError, Task

_X = np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32)
DATA = data_base.Dataset('toy', data_base.ArraySource(_X, (_X[:, 0] > 0).astype(np.int32)),
                         data_base.ArraySource(_X, (_X[:, 0] > 0).astype(np.int32)), None,
                         2, (8,), np.float32)
OPT = optax.adam(1e-2)
MODEL = models.MLP((16,), num_classes=2)


def _task(**changes) -> Task:
  return Task(**{'dataset': DATA, 'optimizer': OPT, 'model': MODEL, 'batch_size': 8,
                 'eval_batch_size': 16, **changes})


def test_loop_fields_are_those_no_compiled_program_reads():
  assert LOOP_FIELDS == ('steps', 'seed', 'learning_rate', 'log_every', 'eval_every',
                         'checkpoint_every', 'keep_checkpoints', 'eval_splits',
                         'eval_at_start', 'early_stopping', 'prefetch', 'writers')
  assert not set(LOOP_FIELDS) & {f.name for f in dataclasses.fields(Task)}


def test_flat_keywords_warn_and_build_the_new_form():
  new = _task(loop=LoopSettings(steps=7, seed=3, log_every=2, eval_splits=()))
  with pytest.warns(DeprecationWarning, match=r'loop=LoopSettings\(steps=\.\.\.') as caught:
    old = _task(steps=7, seed=3, log_every=2, eval_splits=())
  assert old == new
  assert caught[0].filename == __file__        # points at the caller's line
  with pytest.warns(DeprecationWarning, match='loop=LoopSettings'):   # flat wins over loop=
    mixed = _task(loop=LoopSettings(steps=7, log_every=2), seed=3, eval_splits=())
  assert mixed == new


def test_replace_with_flat_keywords_warns_and_equals_with_loop():
  task = _task()
  with pytest.warns(DeprecationWarning, match=r'task\.with_loop\(seed=\.\.\.\)'):
    old = task.replace(seed=5, batch_size=4)
  assert old == task.with_loop(seed=5).replace(batch_size=4)
  assert old.loop == LoopSettings(seed=5) and old.batch_size == 4
  with pytest.warns(DeprecationWarning):
    assert dataclasses.replace(task, steps=9).loop.steps == 9


def test_reading_a_loop_setting_from_the_task_warns_and_delegates():
  task = _task(loop=LoopSettings(steps=12, eval_every=6))
  with pytest.warns(DeprecationWarning, match=r'task\.loop\.steps'):
    assert task.steps == 12
  with pytest.warns(DeprecationWarning):
    assert task.eval_every == 6
  with pytest.raises(AttributeError):
    task.steps = 3                               # read-only, as every field of the frozen Task


def test_the_new_form_warns_nothing():
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    task = _task(loop=LoopSettings(steps=4)).with_loop(seed=1).replace(batch_size=4)
    assert task.updates == 4 and task.loop.seed == 1


def test_loop_settings_are_checked():
  with pytest.raises(SetupError, match='steps must be a positive integer'):
    LoopSettings(steps=0)
  with pytest.raises(SetupError, match="early_stopping needs 'validation'"):
    LoopSettings(early_stopping=2)
  with pytest.raises(SetupError, match='unknown split'):
    LoopSettings(eval_splits=('dev',))
  with pytest.raises(SetupError, match="has no 'validation' split"):   # needs the dataset
    _task(loop=LoopSettings(eval_splits=('validation',)))
  with pytest.raises(SetupError, match='loop must be a LoopSettings'):
    _task(loop={'steps': 3})


def test_runs_differing_only_in_loop_settings_share_a_program_key():
  base = _task(loop=LoopSettings(steps=20))
  key = compiled.program_key(loop.build(base))
  for other in (base.with_loop(seed=4), base.with_loop(log_every=5, eval_every=5),
                base.with_loop(eval_splits=(), checkpoint_every=3, writers=(),
                               learning_rate=lambda s: 0.1)):
    assert compiled.program_key(loop.build(other)) == key
  for other in (base.replace(eval_batch_size=8), base.replace(optimizer=optax.sgd(0.1)),
                base.replace(compute_dtype='bfloat16')):
    assert compiled.program_key(loop.build(other)) != key


def test_a_field_added_to_task_is_in_the_program_key():
  @dataclasses.dataclass(frozen=True)
  class Extended(Task):
    extra: int = 0

  def key(task):
    return compiled.program_key(loop.build(task))

  a = Extended(dataset=DATA, optimizer=OPT, model=MODEL, batch_size=8, eval_batch_size=16)
  assert key(a) == key(a.replace(loop=LoopSettings(seed=2)))
  assert key(a) != key(a.replace(extra=1))   # nobody listed it: it is in the key anyway


def test_the_recorded_description_keeps_its_form():
  """config.json's 'resolved' holds the same 'loop' entry as before the split,
  so a workdir recorded then resumes (its record is compared key by key)."""
  run = loop.build(_task(accumulate=2, loop=LoopSettings(steps=20, seed=3)))
  assert list(loop.describe(run)['loop'].items()) == [
      ('steps', 20), ('batch_size', 8), ('seed', 3), ('accumulate', 2)]
