"""The exact top-k threshold (`select.kth_largest_key`): 8-bit digits (4
histogram passes) against 16-bit digits (2 passes), by leaf size.

  python benchmarks/bench_select.py [--rounds 15]

`select.WIDE_FROM` picks the width by the number of keys; this prints the
median time of both widths on leaves from a LeNet kernel (784x300) to a
4M-weight one, interleaved in one process (only the ratio in one run means
anything), and checks that both give the same threshold. `--sort` adds the
threshold read off a full sort of the keys (`jnp.sort`, what a GPU may do
faster than histograms) and `--big` a 4096x3072 leaf (12.6M weights).
`--floor` prints, per million weights, what the building blocks of an exact
selection cost here (issue 13.1's 3 ms per million for a RigL update, which
selects twice per leaf): one reading pass (a sum), one histogram pass of
each width (XLA's scatter-add), a cumsum (what compacting candidates would
cost), the whole threshold, and on the host numpy's np.partition and
np.bincount over the same keys.
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sparsejax.core import select  # noqa: E402

SHAPES = ((784, 300), (1024, 1024), (2048, 2048))


def threshold_fn(k: int, wide: bool):
  """A jitted kth_largest_key traced with 16-bit (wide) or 8-bit digits."""
  def fn(keys):
    saved = select.WIDE_FROM
    select.WIDE_FROM = 0 if wide else 1 << 62   # read while tracing
    try:
      return select.kth_largest_key([keys], k)
    finally:
      select.WIDE_FROM = saved
  return jax.jit(fn)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--rounds', type=int, default=15)
  ap.add_argument('--sort', action='store_true', help='also time a sort-based threshold')
  ap.add_argument('--big', action='store_true', help='also a 4096x3072 leaf')
  ap.add_argument('--floor', action='store_true',
                  help='only the cost of selection building blocks per million weights')
  args = ap.parse_args(argv)
  if args.floor:
    return floor(args.rounds)
  shapes = SHAPES + (((4096, 3072),) if args.big else ())
  print(f'{platform.machine()}, {jax.devices()[0].platform}, jax {jax.__version__}; '
        f'WIDE_FROM = {select.WIDE_FROM:,} keys')
  sort_cols = ' sort ms | sort / used |' if args.sort else ''
  print('| leaf | weights | 8-bit x4 ms | 16-bit x2 ms | 16-bit / 8-bit | used |' + sort_cols)
  print('|---|---|---|---|---|---|' + ('---|---|' if args.sort else ''))
  for shape in shapes:
    keys = select.ordered_keys(jax.random.normal(jax.random.key(0), shape))
    n = keys.size
    k = n // 10
    fns = {w: threshold_fn(k, w) for w in (False, True)}
    if args.sort:
      fns['sort'] = jax.jit(lambda keys, k=k: jax.numpy.sort(keys.ravel())[keys.size - k])
    assert len({int(fn(keys)) for fn in fns.values()}) == 1
    times = {w: [] for w in fns}
    for _ in range(args.rounds):
      for w, fn in fns.items():
        t = time.perf_counter()
        fn(keys).block_until_ready()
        times[w].append(1e3 * (time.perf_counter() - t))
    narrow, wide = statistics.median(times[False]), statistics.median(times[True])
    used = '16-bit' if n >= select.WIDE_FROM else '8-bit'
    extra = ''
    if args.sort:
      by_sort = statistics.median(times['sort'])
      extra = f' {by_sort:.2f} | {by_sort / (wide if used == "16-bit" else narrow):.2f} |'
    print(f'| {shape[0]}x{shape[1]} | {n:,} | {narrow:.2f} | {wide:.2f} | {wide / narrow:.2f} '
          f'| {used} |' + extra)


def _median_ms(fn, *args, rounds):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(rounds):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(1e3 * (time.perf_counter() - t))
  return statistics.median(times)


def floor(rounds: int, shape=(1024, 1024)):
  """Per-million-weight cost of the passes an exact selection is made of."""
  keys = select.ordered_keys(jnp.abs(jax.random.normal(jax.random.key(0), shape)))
  n, k = keys.size, keys.size // 10
  host = np.asarray(keys)
  blocks = {
      'sum (one reading pass)': (jax.jit(lambda x: jnp.sum(x >> 8)), keys),
      'histogram, 16-bit digit (one scatter-add pass)': (
          jax.jit(lambda x: select._histogram((x >> 16).astype(jnp.int32), 16)), keys),
      'histogram, 8-bit digit (one scatter-add pass)': (
          jax.jit(lambda x: select._histogram((x >> 24).astype(jnp.int32), 8)), keys),
      'cumsum (compaction of candidates)': (
          jax.jit(lambda x: jnp.cumsum((x > 0).ravel().astype(jnp.int32))), keys),
      f'kth_largest_key (the threshold, {"16" if n >= select.WIDE_FROM else "8"}-bit)': (
          jax.jit(lambda x: select.kth_largest_key([x], k)), keys),
      'topk_mask_from_keys (threshold, ties, mask)': (
          jax.jit(lambda x: select.topk_mask_from_keys(x, k)), keys),
      'numpy np.partition on the host': (lambda x: np.partition(x.ravel(), n - k), host),
      'numpy np.bincount of a 16-bit digit on the host': (
          lambda x: np.bincount(x.ravel() >> 16, minlength=1 << 16), host),
  }
  print(f'{platform.machine()}, {jax.devices()[0].platform}, jax {jax.__version__}; '
        f'{shape[0]}x{shape[1]} keys ({n:,}), k = {k:,}, median of {rounds}')
  print('| block | ms per million weights |')
  print('|---|---|')
  for name, (fn, arg) in blocks.items():
    print(f'| {name} | {_median_ms(fn, arg, rounds=rounds) * 1e6 / n:.2f} |')


if __name__ == '__main__':
  main()
