"""Schedules own their settings: a config builds exactly the schedule class with
its own defaults, and every setting that would not do what it says is an error
before any work starts."""

import dataclasses
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparsejax as sj
from sparsejax import config as config_lib, experiment
from sparsejax.core import registry, schedules
from sparsejax.data import base as data_base
from sparsejax.train import loop
from sparsejax.train.task import LoopSettings, SetupError, Task

ROOT = pathlib.Path(__file__).resolve().parent.parent


def config(**over):
  return config_lib.apply_overrides(config_lib.default_config(), over)


def fields(schedule):
  return {f.name: getattr(schedule, f.name) for f in dataclasses.fields(schedule)}


@pytest.mark.parametrize('name', sorted(registry.SCHEDULES))
def test_config_with_only_schedule_and_sparsity_is_make_schedule(name):
  sparsity = 0.0 if name in ('dense', 'fixed', 'imp') else 0.9
  s = config_lib.to_settings(config(**{'pruning.schedule': name, 'sparsity': sparsity}))
  built = experiment.build_schedule(s.pruning, s.seed)
  want = sj.make_schedule(name, sparsity=sparsity)
  assert type(built) is type(want)
  assert fields(built) == fields(want)


def test_set_is_set_and_rigl_gets_erk():
  s = config_lib.to_settings(config(**{'pruning.schedule': 'set', 'sparsity': 0.9}))
  set_ = experiment.build_schedule(s.pruning)
  assert set_.grow == 'random' and set_.decay == 'constant'
  assert set_.allocation.method == 'uniform'
  s = config_lib.to_settings(config(**{'pruning.schedule': 'rigl', 'sparsity': 0.9}))
  assert experiment.build_schedule(s.pruning).allocation.method == 'erk'
  # allocation modifiers keep the class's allocation method
  s = config_lib.to_settings(config(**{'pruning.schedule': 'rigl', 'sparsity': 0.9,
                                       'pruning.scales': {'output': 0.5}}))
  alloc = experiment.build_schedule(s.pruning).allocation
  assert alloc.method == 'erk' and alloc.scales == (('output', 0.5),)


def test_key_the_schedule_does_not_take_is_named():
  with pytest.raises(config_lib.ConfigError,
                     match=r"'pruning.drop_fraction'.*'gradual'.*takes \[.*'end'"):
    config(**{'pruning.schedule': 'gradual', 'pruning.drop_fraction': 0.3})
  with pytest.raises(config_lib.ConfigError, match="'pruning.sparsity'.*top-level"):
    config(**{'pruning.schedule': 'gradual', 'pruning.sparsity': 0.3})


def test_fractions_of_the_run():
  s = sj.make_schedule('gradual', sparsity=0.9, start=0.1, end=0.75).for_run(2000)
  assert (s.start, s.end) == (200, 1500)
  s = sj.make_schedule('rigl', sparsity=0.9, end=0.5).for_run(1000)
  assert s.end == 500 and sj.make_schedule('oneshot', at_step=0.5).for_run(10).at_step == 5
  with pytest.raises(schedules.ScheduleError, match='fraction'):
    sj.make_schedule('gradual', sparsity=0.9, end=1.5).for_run(10)


@pytest.mark.parametrize('name, kwargs, steps, message', [
    ('gradual', {'end': 2000}, 1000, r'end=2000 lies beyond.*stop at 78.7% sparsity'),
    ('rigl', {'every': 100, 'end': 100}, 1000, 'never change its mask'),
    ('set', {'every': 500}, 400, 'never change its mask'),
    ('oneshot', {'at_step': 10}, 10, 'never prune'),
    ('imp', {'every': 100, 'rounds': 5}, 500, 'rounds'),
])
def test_schedules_that_would_not_do_what_they_say(name, kwargs, steps, message):
  sparsity = 0.0 if name == 'imp' else 0.9
  with pytest.raises(schedules.ScheduleError, match=message):
    sj.make_schedule(name, sparsity=sparsity, **kwargs).for_run(steps)


def test_fixed_and_dense_traps():
  with pytest.raises(schedules.ScheduleError, match='sparsity=0.9 would be ignored'):
    sj.make_schedule('fixed', sparsity=0.9)
  with pytest.raises(schedules.ScheduleError, match='dense does not prune'):
    sj.make_schedule('dense', sparsity=0.5)
  with pytest.raises(ValueError, match='not global'):
    sj.make_schedule('rigl', sparsity=0.5, allocation='global')


# --- the same traps through a config and the loop: errors before any work -----------------

def tiny_config(**over):
  base = {'train.steps': 20, 'model.options.hidden': 16, 'data.eval_batch_size': 100,
          'train.eval_every': 20, 'train.checkpoint_every': 20}
  return config_lib.apply_overrides(config_lib.load_config(ROOT / 'configs' / 'mnist1d_mlp.py'),
                                    {**base, **over})


@pytest.mark.parametrize('over, message', [
    ({'pruning.schedule': 'gradual', 'sparsity': 0.9, 'pruning.end': 100},
     'end=100 lies beyond the run'),
    ({'pruning.schedule': 'rigl', 'sparsity': 0.9, 'pruning.every': 20},
     'never change its mask'),
    ({'pruning.schedule': 'fixed'}, 'would train a dense network'),
    ({'pruning.schedule': 'rigl', 'sparsity': 0.9, 'pruning.allocation': 'global',
      'pruning.end': 15, 'pruning.every': 5}, 'not global'),
    ({'optimizer.options': {'momentum': 0.9}}, "'momentum'.*adam"),
    ({'train.steps': 21, 'optimizer.accumulate': 2}, 'not a multiple'),
])
def test_config_traps_are_errors_before_work(tmp_path, over, message):
  workdir = tmp_path / 'run'
  with pytest.raises(config_lib.ConfigError, match=message):
    experiment.train_and_evaluate(tiny_config(**over), workdir, progress=False)
  assert not workdir.exists()


def test_cli_error_is_one_line_and_leaves_no_workdir(tmp_path):
  workdir = tmp_path / 'run'
  proc = subprocess.run(
      [sys.executable, '-m', 'sparsejax.cli', 'train', '--config',
       str(ROOT / 'configs' / 'mnist1d_rigl.py'), '--workdir', str(workdir),
       '--config.pruning.allocation=global'], capture_output=True, text=True)
  assert proc.returncode == 2, proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith('sparsejax: ') and 'not global' in lines[0]
  assert not workdir.exists()


def test_resolved_schedule_recorded(tmp_path):
  c = tiny_config(**{'pruning.schedule': 'set', 'sparsity': 0.5, 'pruning.every': 5,
                     'pruning.end': 0.75})
  summary = experiment.train_and_evaluate(c, tmp_path, progress=False)
  assert summary['schedule']['type'].endswith('SET') and summary['schedule']['end'] == 15
  recorded = (tmp_path / 'config.json').read_text()
  assert '"grow": "random"' in recorded and '"end": 15' in recorded
  rows = [r for r in map(__import__('json').loads, open(tmp_path / 'metrics.jsonl'))
          if r['kind'] == 'mask_update']
  assert [r['step'] for r in rows] == [6, 11]            # updates at counts 5 and 10
  assert all(r['dropped'] == r['grown'] > 0 for r in rows)


# --- a schedule written in a test file --------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PruneHalfAt(schedules.Schedule):
  """Prunes the smallest half of every leaf once, at step `at`."""
  at: int = 3

  def should_update(self, step):
    return step == self.at

  def update(self, masks, params, grads, step, state):
    return self.masks_at(masks, self.scores(params, grads, step), fraction=1.0), state


def test_own_schedule_from_python_and_from_config(tmp_path):
  params = {'w': jnp.arange(1.0, 17.0).reshape(4, 4)}
  tx = sj.sparsify(optax.sgd(0.0), PruneHalfAt(sparsity=0.5))
  state = tx.init(params)
  for _ in range(5):
    updates, state = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
    params = optax.apply_updates(params, updates)
  assert int(jnp.sum(params['w'] == 0)) == 8 and float(params['w'][0, 0]) == 0.0
  c = tiny_config(**{'pruning.schedule': f'{__name__}:PruneHalfAt', 'sparsity': 0.5,
                     'pruning.at': 5})
  summary = experiment.train_and_evaluate(c, tmp_path, progress=False)
  assert summary['density'] == pytest.approx(0.5, abs=0.01)
  assert summary['schedule']['at'] == 5
  with pytest.raises(config_lib.ConfigError, match=r"'pruning.every'.*takes \['allocation'"):
    tiny_config(**{'pruning.schedule': f'{__name__}:PruneHalfAt', 'pruning.every': 3})


# --- gradient accumulation: the schedule counts real updates ----------------------------

def test_multisteps_schedule_counts_updates_not_micro_steps():
  """RigL every 100 updates under 4-way accumulation: its first mask update is
  the 101st real update (count 100), made on micro-step 404, not 101."""
  params = {'w': jax.random.normal(jax.random.key(0), (16, 16))}
  schedule = sj.make_schedule('rigl', sparsity=0.5, every=100, end=1000)
  steps = optax.MultiSteps(sj.sparsify(optax.adam(1e-3), schedule), every_k_schedule=4)
  state = steps.init(params)
  masks0 = np.asarray(sj.get_masks(state)['w'])
  step = jax.jit(lambda p, s, g: steps.update(g, s, p))
  changed_at = None
  for micro in range(1, 409):
    g = {'w': jax.random.normal(jax.random.key(micro), (16, 16))}
    updates, state = step(params, state, g)
    params = optax.apply_updates(params, updates)
    if changed_at is None and not np.array_equal(np.asarray(sj.get_masks(state)['w']), masks0):
      changed_at = micro
  assert changed_at == 404


def test_loop_knows_mask_update_micro_steps():
  x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32)
  ds = data_base.Dataset('toy', data_base.ArraySource(x, y), data_base.ArraySource(x, y), None,
                         2, (4,), np.float32)
  import flax.linen as nn
  task = Task(dataset=ds, optimizer=optax.adam(1e-2), model=nn.Dense(2),
              batch_size=8, eval_batch_size=8, accumulate=4, loop=LoopSettings(steps=1600),
              schedule=sj.make_schedule('rigl', sparsity=0.5, every=100, end=300))
  run = loop.build(task)
  assert sorted(loop.mask_update_steps(run)) == [403, 803]     # 0-based micro-steps
  with pytest.raises(SetupError, match='accumulate must be a positive integer'):
    task.replace(accumulate=0)


def test_warning_printed_and_recorded(tmp_path, capsys):
  """RigL's default end (10,000) past a 20-step run still trains, with a warning."""
  c = tiny_config(**{'pruning.schedule': 'rigl', 'sparsity': 0.5, 'pruning.every': 5})
  summary = experiment.train_and_evaluate(c, tmp_path, progress=False)
  assert len(summary['warnings']) == 1 and 'decays only to' in summary['warnings'][0]
  assert 'decays only to' in (tmp_path / 'config.json').read_text()
  assert 'warning: rigl: end=10000' in capsys.readouterr().err


def smallest_first(params, grads=None, key=None):
  """A criterion written in a test file: keeps the smallest weights."""
  return jax.tree.map(lambda p: -jnp.abs(p), params)


def test_criterion_and_pattern_by_import_path():
  c = config(**{'pruning.schedule': 'oneshot', 'sparsity': 0.5,
                'pruning.criterion': f'{__name__}:smallest_first',
                'pruning.pattern': 'sparsejax.core.select:NM', 'pruning.pattern_options':
                    {'n': 2, 'm': 4}})
  sched = experiment.build_schedule(config_lib.to_settings(c).pruning)
  assert isinstance(sched.pattern, sj.NM) and sched.pattern.n == 2
  params = {'w': jnp.arange(1.0, 17.0).reshape(4, 4)}
  masks, _ = sched.init(params)
  masks = sched.update(masks, params, None, 0, ())[0]
  assert np.array_equal(np.asarray(masks['w'])[:, 0], [True, True, False, False])
  with pytest.raises(config_lib.ConfigError, match="criterion.*'nowhere:fn'"):
    experiment.build_schedule(config_lib.to_settings(
        config(**{'pruning.schedule': 'oneshot', 'pruning.criterion': 'nowhere:fn'})).pruning)


def test_random_control_with_the_layer_counts_of_snip():
  params = {'a': {'w': jax.random.normal(jax.random.key(0), (20, 30))},
            'b': {'w': jax.random.normal(jax.random.key(1), (30, 10))}}
  loss = lambda p, b: jnp.sum((b[0] @ p['a']['w'] @ p['b']['w'] - b[1]) ** 2)
  batch = (jax.random.normal(jax.random.key(2), (4, 20)), jnp.zeros((4, 10)))
  snip = sj.make_schedule('at_init', sparsity=0.9, criterion='snip', allocation='global')
  masks, _ = snip.bind(loss_fn=loss, batch=batch).init(params)
  control = sj.make_schedule('at_init', sparsity=0.9, criterion='random', counts_from='snip',
                             allocation='global')
  assert control.needs_binding
  random_masks, _ = control.bind(loss_fn=loss, batch=batch).init(params)
  for layer in ('a', 'b'):
    assert int(random_masks[layer]['w'].sum()) == int(masks[layer]['w'].sum())
  assert not np.array_equal(np.asarray(random_masks['a']['w']), np.asarray(masks['a']['w']))
  with pytest.raises(schedules.ScheduleError, match='needs bind'):
    control.init(params)


def test_steps_and_fractions_mixed():
  """start in steps, end as a fraction: ordered once the run's length is known."""
  s = sj.make_schedule('gradual', sparsity=0.9, start=100, end=0.75, every=100).for_run(600)
  assert (s.start, s.end) == (100, 450)
  r = sj.make_schedule('rigl', sparsity=0.9, start=100, end=0.75, every=50).for_run(600)
  assert (r.start, r.end) == (100, 450)
  with pytest.raises(schedules.ScheduleError, match='start < end'):
    sj.make_schedule('gradual', sparsity=0.9, start=500, end=0.75).for_run(600)
  with pytest.raises(ValueError, match='start < end'):
    sj.make_schedule('gradual', sparsity=0.9, start=500, end=400)
