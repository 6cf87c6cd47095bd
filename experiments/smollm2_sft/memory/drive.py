"""Runs `sparsejax finetune ...` in-process with an RSS sampler and phase labels.

usage: python drive.py OUT_PREFIX [--ma] -- <sparsejax cli args...>
Writes OUT_PREFIX.rss.tsv (t, rss_mib, hwm_mib, heap_inuse_mib, heap_free_mib, mmap_mib,
phase) and OUT_PREFIX.events.tsv, OUT_PREFIX.ma.json (memory_analysis, with --ma).
"""
import ctypes
import json
import os
import sys
import threading
import time

out = sys.argv[1]
ma = '--ma' in sys.argv
argv = sys.argv[sys.argv.index('--') + 1:]

T0 = time.time()
phase = ['startup']
events = open(out + '.events.tsv', 'w')


def mark(label):
  phase[0] = label
  events.write(f'{time.time() - T0:.3f}\t{rss()[0]:.1f}\t{label}\n')
  events.flush()


def rss():
  r = h = 0
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmRSS:'):
        r = int(line.split()[1]) / 1024
      elif line.startswith('VmHWM:'):
        h = int(line.split()[1]) / 1024
  return r, h


class Mallinfo2(ctypes.Structure):
  _fields_ = [(n, ctypes.c_size_t) for n in
              ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks',
               'uordblks', 'fordblks', 'keepcost')]


libc = ctypes.CDLL('libc.so.6')
libc.mallinfo2.restype = Mallinfo2
stop = threading.Event()


def sampler():
  with open(out + '.rss.tsv', 'w') as f:
    f.write('t\trss\thwm\theap_inuse\theap_free\tmmap\tphase\n')
    i = 0
    while not stop.wait(0.1):
      r, h = rss()
      if i % 5 == 0:
        m = libc.mallinfo2()
        extra = f'{m.uordblks / 2**20:.1f}\t{m.fordblks / 2**20:.1f}\t{m.hblkhd / 2**20:.1f}'
      else:
        extra = '\t\t'
      f.write(f'{time.time() - T0:.2f}\t{r:.1f}\t{h:.1f}\t{extra}\t{phase[0]}\n')
      i += 1
      if i % 20 == 0:
        f.flush()


threading.Thread(target=sampler, daemon=True).start()
mark('import')

import jax  # noqa: E402
from sparsejax import cli  # noqa: E402
from sparsejax.programs import peft, peft_select  # noqa: E402
from sparsejax.train import loop, compiled, peak_memory, checkpoint as ckpt_lib  # noqa: E402


def wrap(mod, name, label, after=None):
  fn = getattr(mod, name)

  def w(*a, **k):
    prev = phase[0]
    mark(label)
    try:
      return fn(*a, **k)
    finally:
      mark(after or (prev + '+'))
  setattr(mod, name, w)


wrap(peft_select, 'load_pretrained', 'load_pretrained')
wrap(peft_select, 'build_method', 'build_method(scoring)')
wrap(loop, 'evaluate_splits', 'eval')
wrap(ckpt_lib.Checkpoints, 'save', 'ckpt_save')
wrap(ckpt_lib.Checkpoints, 'save_named', 'ckpt_save_named')
wrap(peft, 'save_merged', 'save_merged')
wrap(loop, 'initial_state', 'initial_state')

_reset = peak_memory.reset_host_peak


def reset():
  ok = _reset()
  mark(phase[0] + ' [HWM reset]')
  return ok


peak_memory.reset_host_peak = reset

captured = {}
_programs = compiled.programs


def programs(run, x_nd, y_nd):
  step_fn, train_fns, eval_fn, density_fn = _programs(run, x_nd, y_nd)
  if 'peft' not in repr(type(run.task.model)).lower() and 'Reparam' not in repr(type(run.task.model)):
    return step_fn, train_fns, eval_fn, density_fn
  n = [0]

  def make(flag, f):
    def call(state, batch, *rest):
      n[0] += 1
      if 'train' not in captured:
        sd = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        captured['train'] = (f, jax.tree.map(sd, (state, batch, *rest)))
      mark(f'train_step {n[0]}')
      r = f(state, batch, *rest)
      jax.block_until_ready(r)
      mark(f'after_step {n[0]}')
      return r
    return call
  wrapped = {k: make(k, f) for k, f in train_fns.items()}

  def ev(params, ms, batch):
    if 'eval' not in captured:
      sd = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
      captured['eval'] = (eval_fn, jax.tree.map(sd, (params, ms, batch)))
    return eval_fn(params, ms, batch)
  return step_fn, wrapped, ev, density_fn


compiled.programs = programs
loop.compiled.programs = programs

rc = 1
try:
  rc = cli.main(argv)
finally:
  mark('done')
  res = {}
  if ma:
    for k, (f, args) in captured.items():
      mark(f'memory_analysis {k}')
      m = f.lower(*args).compile().memory_analysis()
      res[k] = {a: getattr(m, a) for a in dir(m) if a.endswith('size_in_bytes')}
      print(k, json.dumps(res[k]), file=sys.stderr, flush=True)
    json.dump(res, open(out + '.ma.json', 'w'), indent=1)
  mark('end')
  time.sleep(0.3)
  stop.set()
  time.sleep(0.2)
sys.exit(rc)
