"""Post-training pruning of SmolLM2-135M-Instruct: magnitude, Wanda and
SparseGPT at 50%, 2:4 and 4:8, Wanda uniform and with OWL at 70%, over 3
calibration seeds; perplexity on held-out text with paired bootstrap
intervals against the dense model. Claims and setting: claims.md (fixed
before the runs).

Each arm is two `sparsejax` commands, skipped when their output exists (so
the script resumes where it stopped):

  1. sparsejax prune --config configs/smollm2_kjv.py --workdir W/<arm> --no-eval
     --method M (--sparsity S | --nm N:M) [--owl] --calibration 32 --config.seed=SEED
     under /usr/bin/time -v (wall time and peak RSS of the whole command)
  2. sparsejax perplexity --model smollm2 --weights W/<arm> --corpus eval
     --seqlen 256 --max-windows 32 --save-nll W/<arm>/nll.npz

then the pruned checkpoint is deleted (540 MB each) unless the arm is kept
for retraining (seed 0, Wanda and SparseGPT at 50% and 2:4). Arms run seed 0
first, so a partial run has every arm once.

  nice -n 10 .venv/bin/python experiments/smollm2_prune/run.py --workdir runs/smollm2_prune
  .venv/bin/python experiments/smollm2_prune/run.py --workdir runs/smollm2_prune --collect --record

--collect only summarizes what exists; --record writes results/prune.csv
(one row per arm), results/prune_summary.csv (per method and target over
seeds) and results/prune_claims.csv here.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import shutil
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE.parent))   # experiments/pipeline_tools.py

from pipeline_tools import parse_time_v, run, sparsejax_bin, write_csv  # noqa: E402

CONFIG = 'configs/smollm2_kjv.py'
DENSE_NLL = HERE / 'results' / 'dense_nll_smollm2.npz'
SEEDS = (0, 1, 2)
CALIBRATION = 32
SEQLEN, WINDOWS = 256, 32
TARGETS = {'50%': ['--sparsity', '0.5'], '2:4': ['--nm', '2:4'], '4:8': ['--nm', '4:8'],
           '70%': ['--sparsity', '0.7']}
# (method, target, owl)
ARMS = ([(m, t, False) for m in ('magnitude', 'wanda', 'sparsegpt') for t in ('50%', '2:4', '4:8')]
        + [('wanda', '70%', False), ('wanda', '70%', True), ('magnitude', '70%', False)])
KEEP = {(m, t, False, 0) for m in ('wanda', 'sparsegpt') for t in ('50%', '2:4')}
BOOTSTRAP = 2000
WELL_BELOW = 0.5


def arm_name(method: str, target: str, owl: bool, seed: int | None) -> str:
  t = target.replace('%', '').replace(':', 'of')
  return f"{method}{'_owl' if owl else ''}_{t}" + ('' if seed is None else f'_s{seed}')


def arms(seeds) -> list[tuple[str, str, bool, int | None]]:
  """Every (method, target, owl, seed), seed-major; magnitude once (no data)."""
  out = []
  for seed in seeds:
    for method, target, owl in ARMS:
      if method == 'magnitude':
        if seed == seeds[0]:
          out.append((method, target, owl, None))
      else:
        out.append((method, target, owl, seed))
  return out


def pipeline(root: pathlib.Path, seeds, calibration: int) -> None:
  sj = sparsejax_bin()
  root.mkdir(parents=True, exist_ok=True)
  for method, target, owl, seed in arms(seeds):
    out = root / arm_name(method, target, owl, seed)
    timing = root / f'{out.name}.time'
    if not ((out / 'prune.json').exists() and timing.exists()):
      run(['/usr/bin/time', '-v', '-o', str(timing), sj, 'prune', '--config', CONFIG,
           '--workdir', str(out), '--no-eval', '--method', method, *TARGETS[target],
           *(['--owl'] if owl else []), '--calibration', str(calibration),
           f'--config.seed={0 if seed is None else seed}'], root / f'{out.name}.log')
    if not (out / 'nll.npz').exists():
      run([sj, 'perplexity', '--model', 'smollm2', '--weights', str(out), '--corpus', 'eval',
           '--seqlen', str(SEQLEN), '--max-windows', str(WINDOWS), '--out',
           str(out / 'perplexity.jsonl'), '--save-nll', str(out / 'nll.npz')],
          root / f'{out.name}.ppl.log')
    if (method, target, owl, seed) not in KEEP and (out / 'state').exists():
      shutil.rmtree(out / 'state')


def bootstrap_ci(diff: np.ndarray, rng: np.random.Generator, axis_windows: bool
                 ) -> tuple[float, float]:
  """95% percentile interval of the mean of `diff` (windows, tokens),
  resampling tokens (all pooled) or whole windows."""
  if axis_windows:
    per = diff.mean(axis=1)
    idx = rng.integers(0, len(per), (BOOTSTRAP, len(per)))
    means = per[idx].mean(axis=1)
  else:
    flat = diff.ravel()
    means = np.empty(BOOTSTRAP)
    for b in range(BOOTSTRAP):
      means[b] = flat[rng.integers(0, flat.size, flat.size)].mean()
  lo, hi = np.percentile(means, [2.5, 97.5])
  return float(lo), float(hi)


def collect(root: pathlib.Path, seeds) -> tuple[list[dict], dict[tuple, np.ndarray]]:
  dense = np.load(DENSE_NLL)
  rows, nlls = [], {}
  for method, target, owl, seed in arms(seeds):
    out = root / arm_name(method, target, owl, seed)
    if not (out / 'nll.npz').exists():
      continue
    with np.load(out / 'nll.npz') as f:
      nll, windows = f['nll'].astype(np.float64), f['windows']
    if not np.array_equal(windows, dense['windows']):
      raise SystemExit(f'{out}: evaluation windows differ from {DENSE_NLL}')
    diff = nll - dense['nll']
    rng = np.random.default_rng(0)
    tok = bootstrap_ci(diff, rng, axis_windows=False)
    win = bootstrap_ci(diff, rng, axis_windows=True)
    report = json.loads((out / 'prune.json').read_text())['report']
    timing = parse_time_v(root / f'{out.name}.time')
    ppl = math.exp(nll.mean())
    nlls[(method, target, owl, seed)] = nll
    rows.append({
        'method': method + ('+owl' if owl else ''), 'target': target,
        'calibration_seed': '' if seed is None else seed,
        'calibration_tokens': report.get('calibration_tokens', ''),
        'perplexity': round(ppl, 4), 'dense_perplexity': round(math.exp(dense['nll'].mean()), 4),
        'ppl_ratio_vs_dense': round(math.exp(diff.mean()), 4),
        'ratio_ci95_tokens_lo': round(math.exp(tok[0]), 4),
        'ratio_ci95_tokens_hi': round(math.exp(tok[1]), 4),
        'ratio_ci95_windows_lo': round(math.exp(win[0]), 4),
        'ratio_ci95_windows_hi': round(math.exp(win[1]), 4),
        'pruned_fraction': round(report.get('pruned_fraction', float('nan')), 5),
        'prune_seconds': round(report['wall_seconds'], 1),
        'command_seconds': round(timing['command_wall_s'], 1),
        'peak_rss_mib': round(timing['peak_rss_mib'], 1),
        'windows': int(nll.shape[0]), 'predicted_tokens': int(nll.size)})
  return rows, nlls


def summarize(rows: list[dict]) -> list[dict]:
  """Per (method, target): mean and sd of perplexity over seeds."""
  groups: dict[tuple, list[float]] = {}
  for r in rows:
    groups.setdefault((r['method'], r['target']), []).append(r['perplexity'])
  dense = rows[0]['dense_perplexity'] if rows else float('nan')
  out = []
  for (method, target), ppls in groups.items():
    mean = float(np.mean(ppls))
    out.append({'method': method, 'target': target, 'seeds': len(ppls),
                'perplexity_mean': round(mean, 3),
                'perplexity_sd': round(float(np.std(ppls, ddof=1)), 3) if len(ppls) > 1 else '',
                'increase_over_dense': round(mean - dense, 3), 'dense_perplexity': dense})
  return out


def claims(summary: list[dict], nlls: dict, seeds) -> list[dict]:
  by = {(s['method'], s['target']): s for s in summary}
  out = []

  def add(claim, ours, passed, note=''):
    out.append({'claim': claim, 'ours': ours, 'verdict': {True: 'pass', False: 'miss',
                                                          None: 'not run'}[passed],
                'seeds': note})

  for method, number in (('wanda', 1), ('sparsegpt', 2)):
    for target in ('50%', '2:4', '4:8'):
      a, m = by.get((method, target)), by.get(('magnitude', target))
      claim = f'{number}. {method} increase <= 0.5 x magnitude increase at {target}'
      if not (a and m):
        add(claim, '', None)
        continue
      ratio = a['increase_over_dense'] / m['increase_over_dense']
      add(claim, f"{a['increase_over_dense']:.2f} vs {m['increase_over_dense']:.2f} "
          f'(ratio {ratio:.3f})', ratio <= WELL_BELOW, str(a['seeds']))
  pairs = ((3, 'sparsegpt <= wanda at 2:4', ('sparsegpt', '2:4', False), ('wanda', '2:4', False)),
           (4, 'wanda+owl <= wanda uniform at 70%', ('wanda', '70%', True),
            ('wanda', '70%', False)))
  for number, claim, a, b in pairs:
    both = [s for s in seeds if (*a, s) in nlls and (*b, s) in nlls]
    if not both:
      add(f'{number}. {claim}', '', None)
      continue
    pa = np.mean([math.exp(nlls[(*a, s)].mean()) for s in both])
    pb = np.mean([math.exp(nlls[(*b, s)].mean()) for s in both])
    diff = np.concatenate([nlls[(*a, s)] - nlls[(*b, s)] for s in both])
    lo, hi = bootstrap_ci(diff, np.random.default_rng(0), axis_windows=False)
    add(f'{number}. {claim}', f'{pa:.3f} vs {pb:.3f}; mean NLL diff {diff.mean():+.4f} '
        f'(95% CI {lo:+.4f} to {hi:+.4f} over tokens)', bool(pa <= pb), str(len(both)))
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', default='runs/smollm2_prune')
  parser.add_argument('--seeds', type=int, nargs='+', default=list(SEEDS))
  parser.add_argument('--calibration', type=int, default=CALIBRATION)
  parser.add_argument('--collect', action='store_true', help='only summarize what exists')
  parser.add_argument('--record', action='store_true', help='write the CSVs into results/')
  args = parser.parse_args(argv)
  root = pathlib.Path(args.workdir)
  if not args.collect:
    pipeline(root, args.seeds, args.calibration)
  rows, nlls = collect(root, args.seeds)
  summary = summarize(rows)
  judged = claims(summary, nlls, args.seeds)
  for r in summary:
    print(f"{r['method']:>14} {r['target']:>4}: ppl {r['perplexity_mean']:9.3f} "
          f"(sd {r['perplexity_sd']}, {r['seeds']} seeds)")
  for c in judged:
    print(f"{c['verdict']:>7}  {c['claim']}: {c['ours']}")
  if args.record:
    out = HERE / 'results'
    write_csv(out / 'prune.csv', rows)
    write_csv(out / 'prune_summary.csv', summary)
    write_csv(out / 'prune_claims.csv', judged)


if __name__ == '__main__':
  main()
