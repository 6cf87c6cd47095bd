"""The exact top-k threshold (`select.kth_largest_key`): 8-bit digits (4
histogram passes) against 16-bit digits (2 passes), by leaf size.

  python benchmarks/bench_select.py [--rounds 15]

`select.WIDE_FROM` picks the width by the number of keys; this prints the
median time of both widths on leaves from a LeNet kernel (784x300) to a
4M-weight one, interleaved in one process (only the ratio in one run means
anything), and checks that both give the same threshold.
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import statistics
import sys
import time

import jax

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
  args = ap.parse_args(argv)
  print(f'{platform.machine()}, {jax.devices()[0].platform}, jax {jax.__version__}; '
        f'WIDE_FROM = {select.WIDE_FROM:,} keys')
  print('| leaf | weights | 8-bit x4 ms | 16-bit x2 ms | 16-bit / 8-bit | used |')
  print('|---|---|---|---|---|---|')
  for shape in SHAPES:
    keys = select.ordered_keys(jax.random.normal(jax.random.key(0), shape))
    n = keys.size
    k = n // 10
    fns = {w: threshold_fn(k, w) for w in (False, True)}
    assert int(fns[False](keys)) == int(fns[True](keys))
    times = {w: [] for w in fns}
    for _ in range(args.rounds):
      for w, fn in fns.items():
        t = time.perf_counter()
        fn(keys).block_until_ready()
        times[w].append(1e3 * (time.perf_counter() - t))
    narrow, wide = statistics.median(times[False]), statistics.median(times[True])
    used = '16-bit' if n >= select.WIDE_FROM else '8-bit'
    print(f'| {shape[0]}x{shape[1]} | {n:,} | {narrow:.2f} | {wide:.2f} | {wide / narrow:.2f} '
          f'| {used} |')


if __name__ == '__main__':
  main()
