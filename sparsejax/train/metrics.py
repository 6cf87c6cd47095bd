"""Metrics out: JSONL rows, metric writers (TensorBoard, and your own) and a
progress bar.

A metric writer is any object with CLU's `MetricWriter` methods
(`clu.metric_writers`: `write_scalars(step, scalars)`,
`write_hparams(hparams)`, `flush()`, `close()`), so a CLU writer works as
it is, and W&B or MLflow is a class of a few lines. TensorBoard is one such
writer (`TensorBoardWriter`, tensorboardX); `LoopSettings.writers` (config key
`train.writers`) adds factories `workdir -> writer` or their import paths
'pkg.module:fn'. Every writer gets the scalars of the logged rows (not the
per-step rows) as `<kind>/<name>` (`mask/...` for mask updates), and once,
at the start, the run's resolved config flattened to dotted keys as hparams.

Only process 0 writes. Rows carry a `kind` ('train', 'eval' or 'mask_update',
the drop/grow statistics of a mask update, shown in TensorBoard under
'mask/<name>') and the step;
fields whose values depend on wall-clock time are listed in TIMING_KEYS so
that comparisons between runs can leave them out. On resume, rows past the
restored step (of every kind) are dropped first, so the file reads as if the
run had never been interrupted. Without a terminal (or with progress off),
`progress` prints one plain line per call instead of a bar.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
import time
from typing import Any, Mapping

import jax

TIMING_KEYS = ('steps_per_sec', 'seconds', 'step_seconds')
TB_PREFIX = {'mask_update': 'mask'}   # writers' tag prefix by row kind (default: the kind)


class TensorBoardWriter:
  """The CLU writer interface over tensorboardX: scalars as scalar summaries,
  hparams through TensorBoard's HParams plugin in the same event files (no
  separate run folder, as `SummaryWriter.add_hparams` would make)."""

  def __init__(self, logdir, purge_step: int | None = None):
    from tensorboardX import SummaryWriter
    self._w = SummaryWriter(str(logdir), purge_step=purge_step)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    for k, v in scalars.items():
      self._w.add_scalar(k, v, step)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    from tensorboardX.summary import hparams as hparams_summary
    clean = {k: v if isinstance(v, (bool, int, float, str)) else str(v)
             for k, v in hparams.items()}
    for summary in hparams_summary(clean, {}):
      self._w.file_writer.add_summary(summary)

  def flush(self) -> None:
    self._w.flush()

  def close(self) -> None:
    self._w.close()


def flat_hparams(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'train.steps': 1000, ...}: nested dicts flattened to dotted keys, lists
  and tuples as their string."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping) and v:
      out.update(flat_hparams(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = str(v) if isinstance(v, (list, tuple, dict)) else v
  return out


def _clean(v):
  if hasattr(v, 'item'):
    v = v.item()
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)          # JSON has no NaN/Inf; keep them readable
  return v


def read_rows(path) -> list[dict]:
  path = pathlib.Path(path)
  if not path.exists():
    return []
  rows = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line:
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError:
          break            # a line cut short by a kill: everything after it is dropped
  return rows


class MetricsWriter:
  """JSONL + TensorBoard + progress bar; a no-op on processes other than 0."""

  def __init__(self, workdir, total_steps: int, start_step: int = 0, progress: bool = True,
               tensorboard: bool = True, writers=(), hparams: Mapping[str, Any] | None = None):
    self.enabled = jax.process_index() == 0
    self.path = pathlib.Path(workdir) / 'metrics.jsonl'
    self._writers = []
    self._bar = None
    self._plain = False          # one plain line per progress() call (no terminal / no bar)
    self._total, self._start_step = int(total_steps), int(start_step)
    self._t0 = time.perf_counter()
    if not self.enabled:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    # Rewritten atomically: a kill during the rewrite must not lose kept rows.
    kept = [r for r in read_rows(self.path) if r.get('step', 0) <= start_step]
    tmp = self.path.with_suffix('.jsonl.tmp')
    with open(tmp, 'w') as f:
      for r in kept:
        f.write(json.dumps(r) + '\n')
    os.replace(tmp, self.path)
    self._file = open(self.path, 'a')
    if tensorboard:
      try:
        self._writers.append(TensorBoardWriter(
            pathlib.Path(workdir) / 'tensorboard',
            purge_step=start_step + 1 if start_step else None))
      except ImportError:
        print('note: tensorboardX is not installed; no TensorBoard event files',
              file=sys.stderr)
    self._writers.extend(make_writer(w, workdir) for w in writers)
    if hparams:
      for w in self._writers:
        if hasattr(w, 'write_hparams'):
          w.write_hparams(dict(hparams))
    if progress:
      from tqdm import tqdm
      # disable=None: a bar on a terminal, nothing in logs or CI.
      self._bar = tqdm(total=total_steps, initial=start_step, disable=None, dynamic_ncols=True,
                       file=sys.stderr, desc='train')
      if self._bar.disable:      # stderr is not a terminal (batch job, nohup)
        self._bar = None
    self._plain = progress and self._bar is None   # progress=False: silent

  def write(self, kind: str, step: int, values: Mapping[str, Any],
            summary: bool = True) -> None:
    """One JSONL row; with `summary`, also TensorBoard scalars (these cost about
    50 us each, so per-step rows skip them and log rows carry them)."""
    if not self.enabled:
      return
    row = {'kind': kind, 'step': int(step)}
    for k, v in values.items():
      if isinstance(v, Mapping):
        row[k] = {kk: _clean(vv) for kk, vv in v.items()}
      else:
        row[k] = _clean(v)
    self._file.write(json.dumps(row) + '\n')
    if self._writers and summary:
      prefix = TB_PREFIX.get(kind, kind)
      scalars = {}
      for k, v in row.items():
        if k in ('kind', 'step'):
          continue
        if isinstance(v, Mapping):
          scalars.update({f'{prefix}/{k}/{kk}': vv for kk, vv in v.items()
                          if isinstance(vv, (int, float)) and not isinstance(vv, bool)})
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
          scalars[f'{prefix}/{k}'] = v
      for w in self._writers:
        w.write_scalars(int(step), scalars)

  def write_steps(self, kind: str, first_step: int, names, values) -> None:
    """Rows for consecutive steps from a (steps, len(names)) array of finite
    floats, formatted in one pass (per-step rows are on the hot path)."""
    if not self.enabled or not len(values):
      return
    head = [f'{{"kind": {json.dumps(kind)}, "step": ']
    keys = [f', {json.dumps(n)}: ' for n in names]
    lines = []
    for i, row in enumerate(values.tolist()):
      parts = [head[0], str(first_step + i)]
      for k, v in zip(keys, row):
        parts += [k, repr(v)]
      parts.append('}\n')
      lines.append(''.join(parts))
    self._file.write(''.join(lines))

  def flush(self) -> None:
    if self.enabled:
      self._file.flush()
      for w in self._writers:
        w.flush()

  def progress(self, step: int, **postfix) -> None:
    """Moves the bar; without one, prints a line such as
    `14:02:31  step 200/1000  loss 0.4312  acc 0.8810  12.3 steps/s  ETA 1m05s`.
    The rate is `steps_per_sec` from `postfix` if given (None: not measured
    yet, 'ETA ?'), else the steps done since the writer started over the wall
    time since then."""
    if self._bar is not None:
      self._bar.n = step
      self._bar.set_postfix({k: f'{v:.4g}' for k, v in postfix.items() if v is not None},
                            refresh=False)
      self._bar.refresh()
    elif self._plain:
      print(self._line(int(step), postfix), file=sys.stderr, flush=True)

  def _line(self, step: int, postfix: Mapping[str, Any]) -> str:
    parts = [time.strftime('%H:%M:%S'), f'step {step}/{self._total}']
    rate = postfix.get('steps_per_sec')
    parts += [f'{k} {_fmt(v)}' for k, v in postfix.items() if k != 'steps_per_sec']
    try:
      rate = float(_clean(rate)) if rate is not None else None
    except (TypeError, ValueError):
      rate = None
    if rate is None and 'steps_per_sec' not in postfix:   # given as None: not measured yet
      elapsed = time.perf_counter() - self._t0
      done = step - self._start_step
      rate = done / elapsed if done > 0 and elapsed > 0 else None
    if rate is not None and math.isfinite(rate) and rate > 0:
      parts.append(f'{rate:.1f} steps/s')
      parts.append(f'ETA {_duration(max(self._total - step, 0) / rate)}')
    else:
      parts.append('ETA ?')
    return '  '.join(parts)

  def close(self) -> None:
    if not self.enabled:
      return
    self._file.close()
    for w in self._writers:
      w.close()
    if self._bar is not None:
      self._bar.close()


def make_writer(spec, workdir):
  """A writer from a factory `workdir -> writer` or its import path
  'pkg.module:fn'; it must have write_scalars, flush and close."""
  from sparsejax.core import imports
  factory = imports.import_object(spec, 'metric writer') if isinstance(spec, str) else spec
  writer = factory(pathlib.Path(workdir))
  missing = [m for m in ('write_scalars', 'flush', 'close') if not hasattr(writer, m)]
  if missing:
    from sparsejax.train.task import SetupError
    raise SetupError(f'metric writer {spec!r} gave {type(writer).__name__}, which has no '
                     f'{", ".join(missing)} (the clu.metric_writers interface)')
  return writer


def _fmt(v) -> str:
  """Compact number: 4 decimals, or 4 significant digits when very large/small."""
  v = _clean(v)
  if isinstance(v, bool) or not isinstance(v, (int, float)):
    return str(v)
  if isinstance(v, int):
    return str(v)
  if v == 0 or not math.isfinite(v) or 1e-3 <= abs(v) < 1e4:
    return f'{v:.4f}'
  return f'{v:.4g}'


def _duration(seconds: float) -> str:
  s = int(round(seconds))
  if s < 60:
    return f'{s}s'
  if s < 3600:
    return f'{s // 60}m{s % 60:02d}s'
  return f'{s // 3600}h{s % 3600 // 60:02d}m'


def write_json(path, data) -> None:
  """Writes JSON atomically (process 0 only)."""
  if jax.process_index() != 0:
    return
  path = pathlib.Path(path)
  tmp = path.with_suffix(path.suffix + '.tmp')
  tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_clean) + '\n')
  tmp.replace(path)
