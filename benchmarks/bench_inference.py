"""Sparse inference on CPU: dense against the exported CSR and ELL models.

Run by hand, not in tests:

  PYTHONPATH=. python benchmarks/bench_inference.py [--rounds R] [--window S]
      [--sparsity 0.9 0.95] [--batch 1 8 128]

For a 784-1024-1024-10 MLP and LeNet-300-100 (784-300-100-10), pruned by
one-shot magnitude pruning to each sparsity (every kernel, the output layer
included, at the same rate; biases dense), it times a jitted forward at each
batch size for:
  dense         the masked model with dense kernels (`model.apply`);
  csr           the 'csr' export, `export.sparse_apply` on BCOO kernels;
  ell           the 'ell' export, `export.sparse_apply` on EllMatrix kernels
                (`sparse_inference.matmul` 'auto', which picks per layer);
  ell gather    the same, every layer forced to the gather product;
  ell densify   the same, every layer forced to scatter-to-dense then a
                dense product.
Variants are interleaved round-robin, `--rounds` windows each (a window
repeats the call for about `--window` seconds), so that machine noise hits
them alike; a variant's time is its median window, its ratio that median over
the dense median of the same run. It also prints the stored weights' bytes
(the export's weights.npz) per format. Every variant's output is checked
against dense first. Only ratios measured in one run mean anything.
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
try:
  import sparsejax
except ImportError:   # run from a checkout without PYTHONPATH=.
  sys.path.insert(0, str(HERE.parent))
  import sparsejax
sys.path.insert(0, str(HERE))
from bench_core import OtherLoad, load_line, source_fingerprint  # noqa: E402
from sparsejax import models  # noqa: E402
from sparsejax.programs import export, export_formats, sparse_inference as si  # noqa: E402

MODELS = {
    'MLP 784-1024-1024-10': lambda: models.get_model('mlp', features=(1024, 1024)),
    'LeNet-300-100': lambda: models.get_model('lenet300_100'),
}
VARIANTS = ('dense', 'csr', 'ell', 'ell gather', 'ell densify')


def forward(model, variant):
  """Jitted (params, x) -> logits for one variant."""
  if variant == 'dense':
    return jax.jit(lambda p, x: model.apply({'params': p}, x))
  method = {'csr': None, 'ell': 'auto', 'ell gather': 'gather', 'ell densify': 'densify'}[variant]

  def f(p, x):
    if method is None:
      return export.sparse_apply(model.apply, p, x)
    with mock.patch.object(si, 'matmul', functools.partial(si.matmul, method=method)):
      return export.sparse_apply(model.apply, p, x)   # patched while tracing
  return jax.jit(f)


def window(fn, p, x, n):
  t0 = time.perf_counter()
  for _ in range(n):
    out = fn(p, x)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / n


def bench_case(model, params, sparsity, batches, rounds, window_s, tmp):
  """Sizes {format: bytes} and {batch: {variant: [seconds per call]}}."""
  pruned, masks = sparsejax.prune(params, sparsity)
  sizes, loaded = {}, {'dense': pruned}
  for fmt in ('csr', 'ell'):
    rep = export_formats.write_export(pruned, {}, masks, fmt, pathlib.Path(tmp) / f'{sparsity}_{fmt}')
    sizes['dense'], sizes[fmt] = rep['dense_bytes_on_disk'], rep['bytes_on_disk']
    loaded[fmt] = export.load(pathlib.Path(tmp) / f'{sparsity}_{fmt}')[0]
  is_ell = lambda l: isinstance(l, si.EllMatrix)
  ell_kernels = [l for l in jax.tree.leaves(loaded['ell'], is_leaf=is_ell) if is_ell(l)]
  fns = {v: forward(model, v) for v in VARIANTS}
  args = {v: loaded['dense' if v == 'dense' else v.split()[0]] for v in VARIANTS}
  times, picks = {}, {}
  for b in batches:
    x = jnp.asarray(np.random.default_rng(b).standard_normal((b, 784), np.float32))
    want = fns['dense'](args['dense'], x)
    n = {}
    for v in VARIANTS:
      err = float(jnp.max(jnp.abs(fns[v](args[v], x) - want)))
      assert err < 1e-3 * max(1.0, float(jnp.max(jnp.abs(want)))), (v, b, err)
      t = window(fns[v], args[v], x, 3)
      n[v] = max(1, int(window_s / max(t, 1e-6)))
    names = list(VARIANTS)
    times[b] = {v: [] for v in names}
    for r in range(rounds):
      for v in names[r % len(names):] + names[:r % len(names)]:
        times[b][v].append(window(fns[v], args[v], x, n[v]))
    picks[b] = ''.join('g' if b <= k.gather_rows else 'd' for k in ell_kernels)
  return sizes, times, picks


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--rounds', type=int, default=15, help='windows per variant (default 15)')
  ap.add_argument('--window', type=float, default=0.02, help='seconds per window (default 0.02)')
  ap.add_argument('--sparsity', type=float, nargs='+', default=[0.9, 0.95])
  ap.add_argument('--batch', type=int, nargs='+', default=[1, 8, 128])
  args = ap.parse_args(argv)
  print('sparsejax inference benchmark: jitted forward, dense vs exported CSR and ELL')
  print(f'machine: {platform.machine()}, os.cpu_count()={os.cpu_count()}; python '
        f'{platform.python_version()}, jax {jax.__version__}, backend {jax.default_backend()}')
  print(f'sparsejax sources sha256 {source_fingerprint()}')
  print(f'{args.rounds} windows of ~{args.window * 1e3:.0f} ms per variant, variants interleaved '
        'round-robin; ratios are to dense of the same run')
  print(load_line('load at start'))
  sys.stdout.flush()
  t_start = time.perf_counter()
  hdr = (f'{"model":<21} {"sparse":>6} {"batch":>5} {"dense us":>9} '
         + ' '.join(f'{v + " x":>13}' for v in VARIANTS[1:]) + '  ell picks')
  with tempfile.TemporaryDirectory() as tmp, OtherLoad() as load:
    for name, make in MODELS.items():
      model = make()
      params = models.init_variables(model, jax.random.key(0), (784,))['params']
      for s in args.sparsity:
        sizes, times, picks = bench_case(model, params, s, args.batch, args.rounds,
                                         args.window, tmp)
        print()
        print(f'{name}, {100 * s:g}% sparse: weights.npz bytes dense {sizes["dense"]:,}, '
              f'csr {sizes["csr"]:,} ({sizes["csr"] / sizes["dense"]:.3f}x), '
              f'ell {sizes["ell"]:,} ({sizes["ell"] / sizes["dense"]:.3f}x)')
        print(hdr)
        print('-' * len(hdr))
        for b, per in times.items():
          med = {v: statistics.median(t) for v, t in per.items()}
          print(f'{name:<21} {100 * s:5g}% {b:5d} {med["dense"] * 1e6:9.1f} '
                + ' '.join(f'{med[v] / med["dense"]:12.2f}x' for v in VARIANTS[1:])
                + f'  {picks[b]}')
        sys.stdout.flush()
  print()
  print('x: median time over the dense median (below 1: faster than dense). ell picks: the '
        "method 'auto' chose per layer (g gather, d densify).")
  print(load.line('during the timing'))
  print(load_line('load at end'))
  print(f'(total {time.perf_counter() - t_start:.0f} s)')


if __name__ == '__main__':
  main()
