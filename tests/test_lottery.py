"""The lottery program: levels, rewinding, controls, resume after a kill."""

import json
import re
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from sparsejax import config as config_lib, experiment
from sparsejax.programs import results as results_lib
from sparsejax.train import checkpoint as ckpt_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = ROOT / 'configs' / 'mnist1d_lottery.py'
SMALL = {'train.steps': 60, 'train.eval_every': 20, 'train.checkpoint_every': 20,
         'train.log_every': 20, 'model.options.hidden': 32, 'lottery.levels': 2,
         'lottery.prune_fraction': 0.5, 'pruning.scales': {'output': 0.5}}


def small(**over):
  return config_lib.apply_overrides(config_lib.load_config(CONFIG), {**SMALL, **over})


def leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def start_params(workdir):
  return results_lib.named_weights(workdir, 'init')[0]


def test_levels_rewind_to_step_k_and_controls(tmp_path):
  cfg = small(**{'lottery.rewind': 'step', 'lottery.rewind_step': 10,
                 'lottery.controls': ('reinit', 'random_prune', 'oneshot')})
  lines = []
  rows = experiment.run_lottery(cfg, tmp_path, log=lines.append)
  root = experiment.lottery_dir(cfg, tmp_path)
  # progress: the time of day, [k/N] over all runs, and an ETA until the last
  assert lines[0].endswith(': 9 runs') and len(lines) == 10
  assert [l.split(' [')[1].split(']')[0] for l in lines[1:]] == [f'{k}/9' for k in range(1, 10)]
  assert all(re.match(r'\d\d:\d\d:\d\d ', l) for l in lines)
  assert all(', ETA ' in l for l in lines[1:-1]) and ', ETA ' not in lines[-1]
  assert [(r['level'], r['arm']) for r in rows] == [
      (0, 'ticket'), (1, 'ticket'), (1, 'reinit'), (1, 'random_prune'), (1, 'oneshot'),
      (2, 'ticket'), (2, 'reinit'), (2, 'random_prune'), (2, 'oneshot')]
  # Exact densities: 40x32 + 32x32 kernels at 50% per level, output 32x10 at 25%.
  sizes, rates = {'h0': 1280, 'h1': 1024, 'out': 320}, {'h0': 0.5, 'h1': 0.5, 'out': 0.25}
  counts, want = dict(sizes), [1.0]
  for _ in range(2):
    counts = {k: n - round(rates[k] * n) for k, n in counts.items()}
    want.append(sum(counts.values()) / sum(sizes.values()))
  got = {(r['level'], r['arm']): r['density'] for r in rows}
  for level in (0, 1, 2):
    assert got[(level, 'ticket')] == pytest.approx(want[level], abs=1e-9)
  rep = root / 'replicate_0'
  dense = rep / 'level_0' / 'ticket'
  step_k = results_lib.named_weights(dense, 'step_10')[0]
  for level in (1, 2):
    ticket = rep / f'level_{level}' / 'ticket'
    _, _, masks = results_lib.final_weights(ticket)
    # The level starts from the step-10 weights of level 0 under its mask.
    for a, w, m in zip(leaves(start_params(ticket)), leaves(step_k),
                       jax.tree.leaves(masks, is_leaf=lambda x: x is None)):
      np.testing.assert_array_equal(a, w if m is None else np.where(m, w, 0.0))
    for arm in ('reinit', 'random_prune', 'oneshot'):
      _, _, m_arm = results_lib.final_weights(rep / f'level_{level}' / arm)
      for x, y in zip(jax.tree.leaves(m_arm), jax.tree.leaves(masks)):
        assert x.sum() == y.sum()     # same per-layer sparsity as the ticket
      same = all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(m_arm),
                                                        jax.tree.leaves(masks)))
      # at level 1, pruning the dense weights once is what the ticket did
      assert same == (arm == 'reinit' or (arm == 'oneshot' and level == 1))
    reinit = leaves(start_params(rep / f'level_{level}' / 'reinit'))
    assert not all(np.array_equal(a, b) for a, b in zip(reinit, leaves(start_params(ticket))))
  written = [json.loads(line) for line in (root / 'results.jsonl').read_text().splitlines()]
  assert len(written) == 9


def test_run_dir_ignores_extent_and_defaults(tmp_path):
  a = experiment.lottery_dir(small(), tmp_path)
  assert a == experiment.lottery_dir(small(**{'lottery.levels': 5, 'lottery.replicates': 3,
                                       'lottery.controls': ('reinit',)}), tmp_path)
  assert a == experiment.lottery_dir(small(**{'lottery.rewind_step': 0}), tmp_path)   # a default
  assert a != experiment.lottery_dir(small(**{'lottery.prune_fraction': 0.3}), tmp_path)


def _env():
  e = dict(os.environ)
  e['PYTHONPATH'] = os.pathsep.join(p for p in (str(ROOT), e.get('PYTHONPATH', '')) if p)
  return e


def _cmd(workdir):
  over = [f'--config.{k}={v!r}' if isinstance(v, dict) else f'--config.{k}={v}'
          for k, v in SMALL.items()]
  return [sys.executable, '-m', 'sparsejax.cli', 'lottery', '--config', str(CONFIG),
          '--workdir', str(workdir), *over, '--config.lottery.controls=()']


def _comparable(root):
  rows = [json.loads(line) for line in (root / 'results.jsonl').read_text().splitlines()]
  return [{k: v for k, v in r.items() if k != 'workdir'} for r in rows]


@pytest.mark.slow
@pytest.mark.extended
def test_killed_lottery_finishes_like_an_uninterrupted_one(tmp_path):
  ref = subprocess.run(_cmd(tmp_path / 'ref'), env=_env(), cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
  assert ref.returncode == 0, ref.stderr[-3000:]
  proc = subprocess.Popen(_cmd(tmp_path / 'run'), env=_env(), cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  marker = None
  while time.time() < deadline and proc.poll() is None:
    found = list((tmp_path / 'run').glob('lottery_*/replicate_0/level_1/ticket/metrics.jsonl'))
    if found and found[0].stat().st_size > 0:
      marker = found[0]
      break
    time.sleep(0.02)
  assert marker is not None, 'level 1 never started'
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  level1 = marker.parent
  assert not (level1 / 'summary.json').exists()     # killed during level 1
  again = subprocess.run(_cmd(tmp_path / 'run'), env=_env(), cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  (r1,), (r2,) = (list((tmp_path / d).glob('lottery_*')) for d in ('ref', 'run'))
  assert _comparable(r1) == _comparable(r2)
  for level in (0, 1, 2):
    a = ckpt_lib.restore_raw(r1 / 'replicate_0' / f'level_{level}' / 'ticket' / 'checkpoints'
                             / 'steps' / '60')
    b = ckpt_lib.restore_raw(r2 / 'replicate_0' / f'level_{level}' / 'ticket' / 'checkpoints'
                             / 'steps' / '60')
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_per_level_sparsity_targets():
  """`lottery.sparsities` (e.g. the MNIST-1D notebook's linear schedule) sets
  each level's fraction of what remains so that the targets are reached."""
  from sparsejax.core import imp
  from sparsejax.programs import lottery as lottery_lib
  targets = tuple(k / 99 for k in range(1, 99))
  _, spec = experiment.build_lottery(small(**{'lottery.sparsities': targets,
                                              'lottery.levels': 98}))
  assert spec.fraction(1) == pytest.approx(1 / 99)
  assert spec.fraction(98) == pytest.approx(0.5)      # 97/99 -> 98/99 halves what remains
  rng = np.random.default_rng(0)
  params = {'w': rng.normal(size=(99, 100))}
  order = np.argsort(-np.abs(params['w']).ravel())
  for level in (1, 2, 49, 97, 98):   # each from the mask the level before it reached
    before = targets[level - 2] if level > 1 else 0.0
    keep = np.zeros(9900, bool)
    keep[order[:round(9900 * (1 - before))]] = True
    masks = imp.prune_remaining(params, {'w': keep.reshape(99, 100)}, spec.fraction(level))
    assert int(np.sum(masks['w'])) == round(9900 * (1 - targets[level - 1]))
  with pytest.raises(config_lib.ConfigError, match='one target per level'):
    experiment.build_lottery(small(**{'lottery.sparsities': (0.5, 0.9, 0.95)}))
  with pytest.raises(Exception, match='increase strictly'):
    lottery_lib.Lottery(levels=2, sparsities=(0.5, 0.4))


def test_levels_and_controls_share_compiled_programs(tmp_path, monkeypatch):
  """The levels and controls of a lottery reuse one set of compiled programs
  (13.6): the step is traced once for the dense level and once for all the
  fixed-mask runs, and every weight comes out as with a fresh compile per
  run. The jitted pruning between levels equals the op-by-op one."""
  from sparsejax.core import imp
  from sparsejax.train import compiled, step as step_lib
  traced = []
  make = step_lib.make_train_step
  monkeypatch.setattr(step_lib, 'make_train_step',
                      lambda *a, **k: traced.append(1) or make(*a, **k))
  cfg = small(**{'lottery.levels': 1, 'lottery.controls': ('random_prune',)})

  def run(where):
    compiled._PROGRAMS.clear()
    traced.clear()
    experiment.run_lottery(cfg, tmp_path / where, log=lambda s: None)
    root = experiment.lottery_dir(cfg, tmp_path / where) / 'replicate_0'
    return len(traced), {d: results_lib.final_weights(root / d)
                         for d in ('level_0/ticket', 'level_1/ticket', 'level_1/random_prune')}

  n_shared, shared = run('shared')
  monkeypatch.setattr(compiled, '_KEEP_PROGRAMS', 0)
  n_fresh, fresh = run('fresh')
  assert (n_shared, n_fresh) == (2, 3)
  for d in shared:
    for x, y in zip(jax.tree.leaves(shared[d]), jax.tree.leaves(fresh[d])):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=d)
  params0, _, masks0 = shared['level_0/ticket']
  _, lottery_spec = experiment.build_lottery(cfg)
  eager = imp.prune_remaining(params0, masks0, lottery_spec.fraction(1),
                              allocation=lottery_spec.allocation)
  for x, y in zip(jax.tree.leaves(eager), jax.tree.leaves(shared['level_1/ticket'][2])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
