"""The `sparsejax` command line."""

from __future__ import annotations

import argparse


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='sparsejax', description=__doc__)
  sub = parser.add_subparsers(dest='command', required=True)
  demo = sub.add_parser('demo', help='train a 90%%-sparse MLP on MNIST-1D five ways')
  demo.add_argument('--steps', type=int, default=4000)
  demo.add_argument('--sparsity', type=float, default=0.9)
  demo.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  if args.command == 'demo':
    from sparsejax import demo as demo_lib
    demo_lib.main(steps=args.steps, sparsity=args.sparsity, seed=args.seed)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
