"""Retraining the pruned SmolLM2 with the mask fixed, with and without the
dense model as a teacher in the same step. Setting and claims: claims.md,
"Retraining with the mask fixed" (fixed before these runs).

Needs the prune workdirs that run.py keeps (Wanda 50% and 2:4, calibration
seed 0) under --prune-dir. For each pruned model, kind (plain, distilled)
and training seed, one command, skipped when its summary.json exists (a
killed run resumes from its last checkpoint when rerun):

  sparsejax finetune --config configs/smollm2_kjv.py --workdir W/<kind>_<model>_s<seed>
      --config.finetune.init_from=P/<model>_s0 --config.pruning.schedule=fixed
      --config.seed=<seed> [--config.distill.teacher=start]

(under /usr/bin/time -v: peak RSS of the whole command, resumes
excepted), then `sparsejax perplexity --weights` of the result with --save-nll (the
per-token NLLs for paired intervals). The context arm fine-tunes the dense
model the same way (plain, dense Adam state). Perplexity against steps
comes from each run's evaluations (steps 0, 25, 50, 75, 100 on the 32
held-out windows: exp(test loss)).

  nice -n 10 .venv/bin/python experiments/smollm2_prune/retrain.py --seeds 0
  .venv/bin/python experiments/smollm2_prune/retrain.py --collect --record

--record writes results/retrain_curves.csv (perplexity at every evaluation
of every run), results/retrain.csv (one row per run) and
results/retrain_claims.csv, and keeps each finished run's per-token NLLs,
curve and costs in results/retrain_runs/<run>.npz (33 kB): run folders do
not outlive a session, and --collect reads a run from there when its folder
is gone, so the paired claims can pool seeds run in different sessions.
Recording merges by run (and by claim): rows this collection lacks stay as
recorded, and a claim it cannot judge keeps its recorded verdict.
--models limits the runs to some pruned models (the dense context arm
runs with any), e.g. `--models wanda_2of4`.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE.parent))   # experiments/pipeline_tools.py
sys.path.insert(0, str(HERE))

from pipeline_tools import (load_run, merge_csv, parse_time_v, refuse_to_lose,  # noqa: E402
                            run, save_run, sparsejax_bin)
from run import CONFIG, DENSE_NLL, SEQLEN, WINDOWS, bootstrap_ci  # noqa: E402

MODELS = ('wanda_50', 'wanda_2of4')
KINDS = {'plain': [], 'distilled': ['--config.distill.teacher=start']}
DENSE_CONTEXT = 'dense_plain'
HALVES = 0.5
ARCHIVE = HERE / 'results' / 'retrain_runs'


def run_name(kind: str, model: str, seed: int) -> str:
  return f'{kind}_{model}_s{seed}'


def plan(seeds, models=MODELS) -> list[tuple[str, list[str]]]:
  """(run name, finetune overrides) in order: seed-major, the context arm
  once, after the first seed's pruned models."""
  out = []
  for seed in seeds:
    for model in models:
      for kind, extra in KINDS.items():
        out.append((run_name(kind, model, seed), [
            f'--config.finetune.init_from={{prune}}/{model}_s0',
            '--config.pruning.schedule=fixed', f'--config.seed={seed}', *extra]))
    if seed == seeds[0]:
      out.append((f'{DENSE_CONTEXT}_s{seed}', [
          f'--config.seed={seed}', '--config.train.optimizer_state=None']))
  return out


def pipeline(root: pathlib.Path, prune_dir: pathlib.Path, seeds, models) -> None:
  sj = sparsejax_bin()
  root.mkdir(parents=True, exist_ok=True)
  for name, overrides in plan(seeds, models):
    out = root / name
    if not (out / 'summary.json').exists():
      run(['/usr/bin/time', '-v', '-o', str(root / f'{name}.time'), sj, 'finetune',
           '--config', CONFIG, '--workdir', str(out), '--no-progress',
           *[o.format(prune=prune_dir) for o in overrides]], root / f'{name}.log')
    if not (out / 'nll.npz').exists():
      run([sj, 'perplexity', '--model', 'smollm2', '--weights', str(out), '--corpus', 'eval',
           '--seqlen', str(SEQLEN), '--max-windows', str(WINDOWS), '--save-nll',
           str(out / 'nll.npz')], root / f'{name}.ppl.log')


def curve(workdir: pathlib.Path) -> list[tuple[int, float]]:
  """(step, perplexity) of every evaluation of a run."""
  rows = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return [(r['step'], math.exp(r['test_loss'])) for r in rows if 'test_loss' in r]


def measure(root: pathlib.Path, name: str) -> dict | None:
  """One finished run's per-token NLLs, curve and costs: from its folder
  under `root`, else from the archive; None if neither has it."""
  out = root / name
  if (out / 'nll.npz').exists() and (out / 'summary.json').exists():
    with np.load(out / 'nll.npz') as f, np.load(DENSE_NLL) as dense:
      nll, index = f['nll'], f['window_index']
      if not np.array_equal(f['windows'], dense['windows']):   # the same tokens, not just places
        raise SystemExit(f'{out}: evaluation windows differ from {DENSE_NLL}')
    points = curve(out)
    summary = json.loads((out / 'summary.json').read_text())
    return {'nll': nll, 'window_index': index, 'curve': [list(p) for p in points],
            'final_step': summary.get('final_step'),
            'train_seconds': summary.get('train_seconds_this_process', 0.0),
            'peak_rss_mib': parse_time_v(root / f'{name}.time')['peak_rss_mib'],
            'fresh': True}
  kept = load_run(ARCHIVE, name)
  if kept is None:
    return None
  arrays, meta = kept
  return {**arrays, **meta, 'fresh': False}


def archive(name: str, m: dict) -> None:
  """Keeps a run's measurements in results/retrain_runs/<name>.npz."""
  save_run(ARCHIVE, name, {'nll': m['nll'], 'window_index': m['window_index']},
           {k: m[k] for k in ('curve', 'final_step', 'train_seconds', 'peak_rss_mib')})


def collect(root: pathlib.Path, seeds, models=MODELS):
  dense = np.load(DENSE_NLL)
  dense_ppl = math.exp(dense['nll'].mean())
  curves, rows, nlls, fresh = [], [], {}, {}
  for name, _ in plan(seeds, models):
    m = measure(root, name)
    if m is None:
      continue
    if not np.array_equal(m['window_index'], dense['window_index']):
      raise SystemExit(f'{name}: evaluation windows differ from {DENSE_NLL}')
    for step, ppl in m['curve']:
      curves.append({'run': name, 'step': int(step), 'perplexity': round(float(ppl), 4)})
    nll = m['nll'].astype(np.float64)
    nlls[name] = nll
    if m['fresh']:
      fresh[name] = m
    lo, hi = bootstrap_ci(nll - dense['nll'], np.random.default_rng(0), axis_windows=False)
    rows.append({'run': name, 'start_perplexity': round(float(m['curve'][0][1]), 4),
                 'final_perplexity': round(math.exp(nll.mean()), 4),
                 'dense_perplexity': round(dense_ppl, 4),
                 'ratio_vs_dense_ci95_tokens_lo': round(math.exp(lo), 4),
                 'ratio_vs_dense_ci95_tokens_hi': round(math.exp(hi), 4),
                 'steps': m['final_step'],
                 'train_seconds': round(m['train_seconds'], 1),
                 'peak_rss_mib': round(m['peak_rss_mib'], 1)})
  return curves, rows, nlls, dense_ppl, fresh


def claims(rows, nlls, seeds, dense_ppl, models=MODELS) -> list[dict]:
  by = {r['run']: r for r in rows}
  out = []
  for model in models:
    both = [s for s in seeds if run_name('plain', model, s) in nlls
            and run_name('distilled', model, s) in nlls]
    if not both:
      out.append({'claim': f'R1 distilled < plain at step 100 ({model})', 'ours': '',
                  'verdict': 'not run'})
      continue
    pd = np.mean([by[run_name('distilled', model, s)]['final_perplexity'] for s in both])
    pp = np.mean([by[run_name('plain', model, s)]['final_perplexity'] for s in both])
    diff = np.concatenate([nlls[run_name('distilled', model, s)] -
                           nlls[run_name('plain', model, s)] for s in both])
    lo, hi = bootstrap_ci(diff, np.random.default_rng(0), axis_windows=False)
    out.append({'claim': f'R1 distilled < plain at step 100 ({model})',
                'ours': f'{pd:.3f} vs {pp:.3f}; mean NLL diff {diff.mean():+.4f} '
                        f'(95% CI {lo:+.4f} to {hi:+.4f}), {len(both)} seed(s)',
                'verdict': 'pass' if pd < pp else 'miss'})
  for kind in ('distilled', 'plain') if 'wanda_2of4' in models else ():
    runs = [by[n] for n in (run_name(kind, 'wanda_2of4', s) for s in seeds) if n in by]
    label = f'R2 2:4 gap to dense at least halves ({kind})'
    if not runs:
      out.append({'claim': label, 'ours': '', 'verdict': 'not run'})
      continue
    start = np.mean([r['start_perplexity'] for r in runs])
    final = np.mean([r['final_perplexity'] for r in runs])
    ratio = (final - dense_ppl) / (start - dense_ppl)
    out.append({'claim': label, 'ours': f'gap {start - dense_ppl:.2f} -> {final - dense_ppl:.2f} '
                f'(x{ratio:.3f}), {len(runs)} seed(s)',
                'verdict': ('pass' if ratio <= HALVES else 'miss') if kind == 'distilled'
                else 'context'})
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', default='runs/smollm2_retrain')
  parser.add_argument('--prune-dir', default='runs/smollm2_prune')
  parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
  parser.add_argument('--collect', action='store_true')
  parser.add_argument('--record', action='store_true')
  parser.add_argument('--models', nargs='+', choices=MODELS, default=list(MODELS))
  args = parser.parse_args(argv)
  root = pathlib.Path(args.workdir)
  if not args.collect:
    pipeline(root, pathlib.Path(args.prune_dir), args.seeds, args.models)
  curves, rows, nlls, dense_ppl, fresh = collect(root, args.seeds, args.models)
  for r in rows:
    print(f"{r['run']:>24}: {r['start_perplexity']:9.3f} -> {r['final_perplexity']:9.3f} "
          f"(dense {r['dense_perplexity']})")
  judged = claims(rows, nlls, args.seeds, dense_ppl, args.models)
  for c in judged:
    print(f"{c['verdict']:>8}  {c['claim']}: {c['ours']}")
  if args.record:
    refuse_to_lose(HERE / 'results' / 'retrain.csv', ('run',),
                   {(name,) for name, _ in plan(args.seeds, args.models)}, {(r['run'],) for r in rows})
    for name, m in fresh.items():
      archive(name, m)
    results = HERE / 'results'
    merge_csv(results / 'retrain_curves.csv', curves, ('run', 'step'))
    merge_csv(results / 'retrain.csv', rows, ('run',))
    merge_csv(results / 'retrain_claims.csv', judged, ('claim',),
              keep_old=lambda old, new: new['verdict'] == 'not run')


if __name__ == '__main__':
  main()
