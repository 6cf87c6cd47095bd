"""SmolLM2-135M on CPU: forward throughput of sparsejax's JAX Llama against
transformers' PyTorch Llama on the same weights, and the time and memory of
SparseGPT over every matrix of the model, in one run so that the numbers are
comparable.

Run by hand on a quiet machine (the test runs it on the tiny Llama fixture):

  .venv/bin/python benchmarks/bench_llm.py --torch-python PYTHON_WITH_TORCH \\
      [--seqlen 256] [--windows 8] [--batch 1] [--repeats 3] [--calib-sequences 32] \\
      [--skip-sparsegpt] [--model smollm2] [--json bench_llm.json]

1. Forward pass, float32, logits (B, T, V) of `--windows` windows of
   `--seqlen` tokens of the eval corpus (`sparsejax.data.corpus`; the
   first windows of `sparsejax perplexity --corpus eval`), in batches of
   `--batch`. JAX: `load_lm(--model)`, the forward jitted and
   compiled ahead of time (compile time reported on its own), one warm-up
   pass, then `--repeats` timed passes. PyTorch: transformers'
   `AutoModelForCausalLM` on the same file (a GGUF dequantized to float32,
   or the Hugging Face folder), `torch.inference_mode()`, no KV cache, one
   warm-up pass, the same timed passes, with torch's threads set to
   os.cpu_count() (the threads XLA's CPU backend uses). Tokens/s is the
   median pass. The JAX side runs in this process first; the PyTorch side
   then runs in a worker, this script with --torch-worker under the
   interpreter `--torch-python` (default: $SPARSEJAX_TORCH_PYTHON, else this
   interpreter if it has torch and transformers, else the side is skipped),
   reading the windows from an .npz this process writes, so that both see
   the same token ids. Both sides' window-0 logits must agree within
   2e-3 (SmolLM2 agrees to ~1e-4); otherwise the sides compute different
   things and the run exits 1. Peak memory: each process's VmHWM, reset to
   the current RSS just before its model loads, so the peak of loading plus
   running, next to the RSS before the load.
2. SparseGPT (Frantar & Alistarh 2023) at unstructured 50%, the paper's
   joint mask over each block of columns, default options, over every
   matrix of every block (SmolLM2: 210 in 30 blocks; the tied embedding
   stays dense, as in configs/smollm2_kjv.py): `posttrain.prune_model` on
   one batch of the first `--calib-sequences` windows of `--seqlen` tokens
   of the calibration corpus. Wall time, peak RSS (VmHWM reset before, and sampled
   every 20 ms) and the pruned fraction, which must be 0.5.

Each side also records the load averages before its model load and after
its timing, and the CPUs other processes used meanwhile (from /proc/stat),
so that contention shows. `--json PATH` writes every number with the
versions, the machine and the command line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from proc_memory import PeakRSS, reset_peak, rss_mib  # noqa: E402

SPARSITY = 0.5
AGREE_LIMIT = 2e-3       # max |logit difference| on window 0 beyond which the sides differ
TORCH_ENV = 'SPARSEJAX_TORCH_PYTHON'
BUSY = 0.1               # other processes' CPUs beyond which a side's timing is noisy
CUT_MARGIN = 64          # tokens encoded past the last window (see leading_windows)
RULE_EXCLUDE = '^embed/'   # as configs/smollm2_kjv.py: the (tied) embedding stays dense


def fail(message: str) -> SystemExit:
  return SystemExit(f'bench_llm: error: {message}')


def loadavg() -> list[float]:
  return [round(v, 2) for v in os.getloadavg()] if hasattr(os, 'getloadavg') else []


def median_rate(tokens: int, seconds: list[float]) -> dict:
  rates = [tokens / s for s in seconds]
  return {'pass_seconds': seconds, 'tokens_per_second': rates,
          'tokens_per_second_median': statistics.median(rates)}


# ---------------------------------------------------------------- the PyTorch worker
# Runs under --torch-python: imports neither jax nor sparsejax.

def torch_worker(inp: str, out: str) -> None:
  data = np.load(inp)
  spec, windows = json.loads(str(data['spec'])), data['windows'].astype(np.int64)
  import torch
  import transformers
  torch.set_num_threads(spec['threads'])
  rss_before, reset = rss_mib(), reset_peak()
  load_before = loadavg()
  t0 = time.perf_counter()
  kw = {'gguf_file': spec['gguf_file']} if spec['gguf_file'] else {}
  model = transformers.AutoModelForCausalLM.from_pretrained(spec['folder'], dtype=torch.float32,
                                                            **kw)
  model.eval()
  load_s = time.perf_counter() - t0
  batches = [torch.from_numpy(windows[i:i + spec['batch']])
             for i in range(0, len(windows), spec['batch'])]
  with torch.inference_mode():
    t0 = time.perf_counter()
    first = model(input_ids=batches[0], use_cache=False).logits[0].float().numpy()
    for x in batches[1:]:
      model(input_ids=x, use_cache=False)
    warmup_s = time.perf_counter() - t0
    seconds = []
    for _ in range(spec['repeats']):
      t0 = time.perf_counter()
      for x in batches:
        model(input_ids=x, use_cache=False)
      seconds.append(time.perf_counter() - t0)
  summary = {'load_seconds': load_s, 'warmup_seconds': warmup_s,
             **median_rate(windows.size, seconds),
             'rss_before_load_mib': rss_before, 'peak_rss_mib': rss_mib('VmHWM'),
             'peak_reset': reset, 'loadavg_before': load_before, 'loadavg_after': loadavg(),
             'threads': torch.get_num_threads(), 'interop_threads': torch.get_num_interop_threads(),
             'attn_implementation': getattr(model.config, '_attn_implementation', None),
             'logits_dtype': str(first.dtype),
             'versions': {'torch': torch.__version__, 'transformers': transformers.__version__,
                          'numpy': np.__version__, 'python': platform.python_version()}}
  np.savez(out, logits=first, summary=np.asarray(json.dumps(summary)))


# ---------------------------------------------------------------- choosing and running it

def torch_python(arg: str | None, kind: str) -> tuple[str | None, dict | str]:
  """(interpreter, its versions) for the torch side, or (None, why it is skipped).
  One given by --torch-python or $SPARSEJAX_TORCH_PYTHON must work."""
  explicit = arg or os.environ.get(TORCH_ENV) or None
  if explicit is None:
    if not all(importlib.util.find_spec(m) for m in ('torch', 'transformers')):
      return None, (f'torch and transformers are not installed in {sys.executable}; give '
                    f'--torch-python or set {TORCH_ENV}')
    candidate = sys.executable
  else:
    candidate = explicit
    if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
      raise fail(f'--torch-python / {TORCH_ENV} {candidate!r} is not an executable file')
  mods = 'torch, transformers' + (', gguf' if kind == 'gguf' else '')
  probe = subprocess.run(
      [candidate, '-c', f'import json, {mods}; print(json.dumps({{"torch": torch.__version__, '
                        '"transformers": transformers.__version__}))'],
      capture_output=True, text=True)
  if probe.returncode != 0:
    why = (probe.stderr.strip().splitlines() or ['no output'])[-1]
    if explicit is not None:
      raise fail(f'{candidate} cannot import {mods}: {why}')
    return None, f'{candidate} cannot import {mods}: {why}'
  return candidate, json.loads(probe.stdout.strip().splitlines()[-1])


def _children_cpu() -> float:
  """CPU seconds of this process's finished children."""
  t = os.times()
  return t.children_user + t.children_system


def torch_side(python: str, kind: str, path: pathlib.Path, windows: np.ndarray, batch: int,
               repeats: int, tmp: pathlib.Path) -> tuple[dict, np.ndarray]:
  """Runs the worker; (its summary, its window-0 logits)."""
  from bench_core import OtherLoad
  spec = {'folder': str(path.parent if kind == 'gguf' else path),
          'gguf_file': path.name if kind == 'gguf' else None,
          'batch': batch, 'repeats': repeats, 'threads': os.cpu_count()}
  inp, out = tmp / 'windows.npz', tmp / 'torch_out.npz'
  np.savez(inp, windows=windows, spec=np.asarray(json.dumps(spec)))
  worker_cpu, t0 = _children_cpu(), time.perf_counter()
  with OtherLoad() as other:   # counts the worker's CPU time as other processes'
    run = subprocess.run([python, str(pathlib.Path(__file__).resolve()), '--torch-worker',
                          str(inp), str(out)], capture_output=True, text=True)
  wall, worker_cpu = time.perf_counter() - t0, _children_cpu() - worker_cpu
  if run.returncode != 0:
    sys.stderr.write('\n'.join(run.stderr.splitlines()[-20:]) + '\n')
    raise fail(f'the torch worker ({python}) exited {run.returncode}; its stderr is above')
  got = np.load(out)
  summary = json.loads(str(got['summary']))
  summary['other_cpus'] = (None if other.value is None
                           else max(0.0, other.value - worker_cpu / wall))
  return summary, got['logits']


# ---------------------------------------------------------------- JAX and SparseGPT

def leading_windows(tokenizer, part: str, seqlen: int, count: int) -> np.ndarray:
  """The first `count` windows of `seqlen` tokens of a corpus part, as the
  whole part's tokens cut them (windows 0..count-1 of `sparsejax perplexity
  --corpus PART`). Encodes only a prefix of the text, one that gives at
  least CUT_MARGIN tokens more than needed: those, where the cut could have
  changed the tokenization, are dropped."""
  from sparsejax.data import corpus
  text, need = corpus.corpus_text(part), count * seqlen
  chars = 2 * need + 1024
  while True:
    ids = tokenizer.encode(text[:chars]).ids
    if len(ids) >= need + CUT_MARGIN or chars >= len(text):
      break
    chars *= 2
  if len(ids) < need:
    raise fail(f'the {part} corpus has {len(ids) // seqlen} windows of {seqlen} tokens; '
               f'asked for {count}')
  return np.asarray(ids[:need], np.int32).reshape(count, seqlen)


def jax_side(spec: str, windows: np.ndarray, batch: int, repeats: int):
  """(the loaded model, summary, window-0 logits)."""
  import jax
  import jax.numpy as jnp
  from bench_core import OtherLoad
  from sparsejax.models import pretrained
  rss_before, reset = rss_mib(), reset_peak()
  load_before = loadavg()
  with OtherLoad() as other:
    t0 = time.perf_counter()
    lm = pretrained.load_lm(spec)
    params = jax.block_until_ready(jax.device_put(lm.params))
    load_s = time.perf_counter() - t0
    xs = [jnp.asarray(windows[i:i + batch]) for i in range(0, len(windows), batch)]
    t0 = time.perf_counter()
    forward = jax.jit(lambda p, x: lm.module.apply({'params': p}, x)).lower(params, xs[0]).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = np.asarray(forward(params, xs[0])[0])
    for x in xs[1:]:
      jax.block_until_ready(forward(params, x))
    warmup_s = time.perf_counter() - t0
    seconds = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      for x in xs:
        jax.block_until_ready(forward(params, x))
      seconds.append(time.perf_counter() - t0)
  summary = {'load_seconds': load_s, 'compile_seconds': compile_s, 'warmup_seconds': warmup_s,
             **median_rate(windows.size, seconds),
             'rss_before_load_mib': rss_before, 'peak_rss_mib': rss_mib('VmHWM'),
             'peak_reset': reset, 'loadavg_before': load_before, 'loadavg_after': loadavg(),
             'other_cpus': other.value, 'threads': os.cpu_count(),
             'logits_dtype': str(first.dtype)}
  return lm, summary, first


def sparsegpt_side(lm, calib: np.ndarray) -> dict:
  import gc
  import jax
  from bench_core import OtherLoad
  from sparsejax.core.tree import PrunableRule
  from sparsejax.posttrain import prune_model
  jax.clear_caches()
  gc.collect()
  rss_before, reset = rss_mib(), reset_peak()
  load_before, seen = loadavg(), set()

  def log(line: str) -> None:   # one line per block, at its first matrix
    block = line.split('/', 1)[0]
    if block not in seen:
      seen.add(block)
      print(f'  {time.perf_counter() - start:7.1f} s  RSS {rss_mib():6.0f} MiB  {line}',
            flush=True)

  with OtherLoad() as other, PeakRSS() as peak:
    start = time.perf_counter()
    report = prune_model(lm.module, lm.params, [calib], 'sparsegpt', sparsity=SPARSITY,
                         rule=PrunableRule(exclude=RULE_EXCLUDE), log=log)[2]
    wall = time.perf_counter() - start
  return {'seconds': wall, 'seconds_per_block': wall / len(report['blocks']),
          'solve_seconds': sum(r['seconds'] for r in report['layers']),
          'matrices': len(report['layers']), 'blocks': len(report['blocks']),
          'pruned_fraction': report['pruned_fraction'], 'target': report['target'],
          'options': report['options'], 'calibration_tokens': report['calibration_tokens'],
          'calibration_shape': list(calib.shape), 'rule_exclude': RULE_EXCLUDE,
          'mean_relative_error': float(np.mean([r['relative_error'] for r in report['layers']])),
          'rss_before_mib': rss_before, 'peak_rss_mib': max(peak.peak, rss_mib('VmHWM')),
          'peak_rss_sampled_mib': peak.peak, 'peak_reset': reset,
          'loadavg_before': load_before, 'loadavg_after': loadavg(), 'other_cpus': other.value}


# ---------------------------------------------------------------- the report

def mib(v) -> str:
  return '-' if v is None else f'{v:.0f}'


def forward_table(sides: dict) -> list[str]:
  hdr = (f'{"side":<6} {"load s":>7} {"compile s":>9} {"warm-up s":>9} {"tokens/s":>9} '
         f'{"min-max tokens/s":>17} {"RSS before":>10} {"peak":>6} {"+MiB":>6} '
         f'{"load avg before -> after":>24} {"other CPUs":>10}')
  rows = [hdr, '-' * len(hdr)]
  for name, s in sides.items():
    rates = s['tokens_per_second']
    compile_s = f'{s["compile_seconds"]:.2f}' if 'compile_seconds' in s else '-'
    other = '?' if s['other_cpus'] is None else f'{s["other_cpus"]:.2f}'
    avg = (f'{s["loadavg_before"][0]:.2f} -> {s["loadavg_after"][0]:.2f}'
           if s['loadavg_before'] else '?')
    rows.append(f'{name:<6} {s["load_seconds"]:7.2f} {compile_s:>9} {s["warmup_seconds"]:9.2f} '
                f'{s["tokens_per_second_median"]:9.1f} '
                f'{f"{min(rates):.1f}-{max(rates):.1f}":>17} {mib(s["rss_before_load_mib"]):>10} '
                f'{mib(s["peak_rss_mib"]):>6} '
                f'{mib(s["peak_rss_mib"] - s["rss_before_load_mib"]):>6} {avg:>24} {other:>10}')
  return rows


def write_json(path, out: dict) -> None:
  if path:
    pathlib.Path(path).write_text(json.dumps(out, indent=1) + '\n')


def versions() -> dict:
  import jax
  from importlib import metadata
  v = {'python': platform.python_version(), 'jax': jax.__version__, 'numpy': np.__version__}
  for name in ('jaxlib', 'flax'):
    try:
      v[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      v[name] = None
  return v


def parse(argv):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('--model', default='smollm2',
                  help="a model spec load_lm takes: 'smollm2', a .gguf, a Hugging Face folder")
  ap.add_argument('--seqlen', type=int, default=256, help='tokens per window (default 256)')
  ap.add_argument('--windows', type=int, default=8, help='eval windows per pass (default 8)')
  ap.add_argument('--batch', type=int, default=1, help='windows per forward call (default 1)')
  ap.add_argument('--repeats', type=int, default=3, help='timed passes per side (default 3)')
  ap.add_argument('--calib-sequences', type=int, default=32,
                  help='SparseGPT calibration windows of --seqlen tokens (default 32)')
  ap.add_argument('--skip-sparsegpt', action='store_true')
  ap.add_argument('--torch-python', default=None,
                  help=f'interpreter with torch and transformers (default ${TORCH_ENV}, else '
                       'this one if it has them, else no torch side)')
  ap.add_argument('--json', default=None, help='write every number here')
  ap.add_argument('--torch-worker', nargs=2, metavar=('IN', 'OUT'), help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  for name in ('seqlen', 'windows', 'batch', 'repeats', 'calib_sequences'):
    if getattr(args, name) < 1:
      raise fail(f'--{name.replace("_", "-")} must be at least 1, got {getattr(args, name)}')
  if args.windows % args.batch:
    raise fail(f'--windows {args.windows} is not a multiple of --batch {args.batch}')
  return args


def inputs(args):
  """(kind, path, config) of --model, the eval windows and the calibration
  windows (None with --skip-sparsegpt); bad input ends the run with one line."""
  from sparsejax.data.base import DataError
  from sparsejax.models import pretrained
  try:
    kind, path = pretrained.resolve(args.model)
    tokenizer, _, config = pretrained.load_tokenizer(args.model)
    windows = leading_windows(tokenizer, 'eval', args.seqlen, args.windows)
    calib = (None if args.skip_sparsegpt else
             leading_windows(tokenizer, 'calibration', args.seqlen, args.calib_sequences))
  except DataError as e:
    raise fail(str(e)) from None
  except (OSError, ValueError) as e:
    raise fail(f'--model {args.model}: {e}') from None
  return kind, path, config, windows, calib


def run_info(args, kind, path, windows, python, torch_info) -> dict:
  """The JSON's description of the run: command, settings, machine, versions."""
  import jax
  from bench_core import source_fingerprint
  out = {'command': shlex.join([sys.executable, *sys.argv]), 'model': args.model,
         'model_path': str(path), 'model_kind': kind,
         'settings': {'seqlen': args.seqlen, 'windows': args.windows, 'batch': args.batch,
                      'repeats': args.repeats, 'tokens_per_pass': int(windows.size),
                      'calib_sequences': args.calib_sequences,
                      'sparsity': SPARSITY, 'agree_limit': AGREE_LIMIT},
         'machine': {'machine': platform.machine(), 'system': platform.platform(),
                     'cpu_count': os.cpu_count(),
                     'sched_getaffinity': len(os.sched_getaffinity(0))
                     if hasattr(os, 'sched_getaffinity') else None},
         'versions': {**versions(), 'torch': None, 'transformers': None,
                      'sparsejax_sources_sha256': source_fingerprint()},
         'backend': jax.default_backend(),
         'env': {k: os.environ.get(k) for k in ('XLA_FLAGS', 'OMP_NUM_THREADS', 'OMP_WAIT_POLICY',
                                                'MKL_NUM_THREADS')},
         'compilation_cache_dir': jax.config.jax_compilation_cache_dir or None,
         'loadavg_start': loadavg()}
  if python:
    out['versions'].update(torch_info)
    out['torch_python'] = python
  return out


def print_header(out: dict, config, args) -> None:
  v, python = out['versions'], out.get('torch_python')
  print('sparsejax LLM benchmark: forward pass (JAX vs PyTorch) and SparseGPT, CPU, float32')
  print(f'model: {out["model"]} = {out["model_path"]} ({out["model_kind"]}): '
        f'{config.num_layers} blocks, hidden {config.hidden}, vocab {config.vocab_size}')
  print(f'machine: {platform.machine()}, os.cpu_count()={os.cpu_count()}, sched_getaffinity='
        f'{out["machine"]["sched_getaffinity"]}; {platform.platform()}')
  print(f'python {v["python"]}; jax {v["jax"]}, jaxlib {v["jaxlib"]} (backend {out["backend"]}); '
        + (f'torch {v["torch"]}, transformers {v["transformers"]} ({python})' if python
           else 'torch: skipped'))
  print(f'sparsejax sources sha256 {v["sparsejax_sources_sha256"]}'
        + ''.join(f'; {k}={val}' for k, val in out['env'].items() if val is not None)
        + (f'; JAX compilation cache {out["compilation_cache_dir"]}'
           if out['compilation_cache_dir'] else ''))
  print(f'threads: JAX (XLA CPU) os.cpu_count()={os.cpu_count()}; torch.set_num_threads('
        f'{os.cpu_count()})')
  print(f'windows: the first {args.windows} x {args.seqlen} tokens of the eval corpus, batch '
        f'{args.batch}; per side one warm-up pass, then {args.repeats} timed pass'
        + ('es' if args.repeats > 1 else ''))


def compare(out: dict, jax_logits: np.ndarray, torch_logits: np.ndarray) -> bool:
  """Records and prints the speed ratio and the logits' agreement; whether they agree."""
  ratio = out['jax']['tokens_per_second_median'] / out['torch']['tokens_per_second_median']
  diff = float(np.max(np.abs(jax_logits.astype(np.float64) - torch_logits)))
  ok = bool(diff <= AGREE_LIMIT)
  out['jax_over_torch_tokens_per_second'] = ratio
  out['agreement'] = {'max_abs_logit_diff_window0': diff, 'limit': AGREE_LIMIT, 'ok': ok,
                      'max_abs_logit_window0': float(np.max(np.abs(torch_logits)))}
  print(f'jax / torch tokens/s: {ratio:.3f}x (torch attention: '
        f'{out["torch"]["attn_implementation"]}, threads {out["torch"]["threads"]})')
  print(f'max |logit difference| on window 0 ({jax_logits.shape[0]} x {jax_logits.shape[1]}): '
        f'{diff:.2e} (max |logit| {out["agreement"]["max_abs_logit_window0"]:.1f}; limit '
        f'{AGREE_LIMIT:g}): {"agree" if ok else "FAIL: the two sides compute different things"}')
  return ok


def sparsegpt_table(s: dict) -> list[str]:
  other = '?' if s['other_cpus'] is None else f'{s["other_cpus"]:.2f}'
  hdr = (f'{"matrices":>8} {"blocks":>6} {"seconds":>8} {"s/block":>7} {"pruned":>8} '
         f'{"RSS before":>10} {"peak":>6} {"+MiB":>6} {"other CPUs":>10}')
  return [hdr, '-' * len(hdr),
          f'{s["matrices"]:8d} {s["blocks"]:6d} {s["seconds"]:8.1f} {s["seconds_per_block"]:7.2f} '
          f'{s["pruned_fraction"]:8.4f} {mib(s["rss_before_mib"]):>10} {mib(s["peak_rss_mib"]):>6} '
          f'{mib(s["peak_rss_mib"] - s["rss_before_mib"]):>6} {other:>10}',
          f'options {s["options"]}; per-matrix solves {s["solve_seconds"]:.1f} s of the '
          f'{s["seconds"]:.1f} s; mean relative error {s["mean_relative_error"]:.4f}']


def main(argv=None) -> None:
  args = parse(argv)
  if args.torch_worker:
    torch_worker(*args.torch_worker)
    return
  from bench_core import load_line   # (puts the checkout on sys.path)
  t_start = time.perf_counter()
  kind, path, config, windows, calib = inputs(args)
  python, torch_info = torch_python(args.torch_python, kind)
  out = run_info(args, kind, path, windows, python, torch_info)
  print_header(out, config, args)
  print(load_line('load at start'))
  print()
  print('1. forward pass, logits (B, T, V) float32: JAX in this process, then PyTorch in a worker')
  sys.stdout.flush()
  lm, out['jax'], jax_logits = jax_side(args.model, windows, args.batch, args.repeats)
  sides = {'jax': out['jax']}
  if python:
    with tempfile.TemporaryDirectory() as tmp:
      out['torch'], torch_logits = torch_side(python, kind, path, windows, args.batch,
                                              args.repeats, pathlib.Path(tmp))
    sides['torch'] = out['torch']
  else:
    out['torch'] = {'skipped': torch_info}
  print('\n'.join(forward_table(sides)))
  print('tokens/s: median of the timed passes; RSS before: MiB before the model load; peak: '
        'VmHWM from there (MiB); other CPUs: used by other processes, model load to last pass')
  if any((side['other_cpus'] or 0) > BUSY for side in sides.values()):
    print(f'warning: other processes used more than {BUSY} CPUs during a side: its tokens/s are '
          "not this machine's (torch's OpenMP threads spin-wait and slow down sharply on "
          'shared CPUs); rerun on a quiet machine')
  if not python:
    print(f'torch side skipped: {torch_info}')
  elif not compare(out, jax_logits, torch_logits):
    write_json(args.json, out)
    sys.exit(1)
  del jax_logits
  if args.skip_sparsegpt:
    out['sparsegpt'] = {'skipped': '--skip-sparsegpt'}
  else:
    print()
    print(f'2. SparseGPT, unstructured {SPARSITY:.0%}, joint mask over each block of columns '
          f'(the paper), default options: {args.calib_sequences} x {args.seqlen} calibration '
          'tokens in one batch')
    sys.stdout.flush()
    out['sparsegpt'] = sparsegpt_side(lm, calib)
    print('\n'.join(sparsegpt_table(out['sparsegpt'])))
  out['loadavg_end'] = loadavg()
  out['total_seconds'] = time.perf_counter() - t_start
  print(load_line('load at end'))
  print(f'(total {out["total_seconds"]:.0f} s)')
  write_json(args.json, out)
  if not args.skip_sparsegpt and abs(out['sparsegpt']['pruned_fraction'] - SPARSITY) > 0.01:
    print(f'FAIL: SparseGPT pruned {out["sparsegpt"]["pruned_fraction"]:.4f}, not {SPARSITY}')
    sys.exit(1)


if __name__ == '__main__':
  main()
