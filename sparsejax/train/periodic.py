"""The loop's periodic pieces: the lagged metric fetch, early stopping,
signals, and the workdir's record of what it runs."""

from __future__ import annotations

import contextlib
import json
import pathlib
import signal

import jax
import numpy as np

from sparsejax.train.task import SetupError

# Metrics are fetched LAG steps behind the newest step, so the devices still
# have LAG steps queued while the host writes rows; never more than 2 * LAG
# steps are in flight (fake CPU meshes deadlock past about 30; see DESIGN.md).
LAG = 8
# Record keys that change what is logged or saved, not what is trained: a
# resumed run may change them (matched on the last part of the dotted key).
NO_EFFECT_KEYS = ('log_every', 'eval_every', 'checkpoint_every', 'keep_checkpoints',
                  'eval_splits', 'prefetch', 'eval_batch_size', 'writers')


class NonFiniteError(RuntimeError):
  """The loss or the gradients became NaN or Inf."""


class Interrupted(RuntimeError):
  """SIGINT or SIGTERM arrived; a checkpoint was saved."""

  def __init__(self, signum: int, step: int, workdir):
    self.signum = signum
    super().__init__(f'{signal.Signals(signum).name} at step {step}: checkpoint saved in '
                     f'{workdir}; run the same command again to resume')


def lagged_rows(pending: list, names: list[str], done: int, boundary: bool, ckpts):
  """The metric rows to write now, or None to keep the devices busy.

  `pending` holds the train step's metric vectors, named by `names`. Returns
  (first step, names without 'finite', rows as a float64 array, what stays
  pending); raises NonFiniteError naming the step and the last good checkpoint.
  """
  if not boundary and len(pending) < 2 * LAG:
    return None
  fetch = len(pending) if boundary else LAG
  first = done - len(pending) + 1
  got = np.stack(jax.device_get(pending[:fetch])).astype(np.float64)
  keep = [i for i, n in enumerate(names) if n != 'finite']
  finite = got[:, names.index('finite')]
  if not finite.all():
    bad = int(np.argmin(finite))
    last = ckpts.latest_step()
    where = (f'The last good checkpoint is step {last} in {ckpts.steps_dir}'
             if last is not None else 'No checkpoint had been saved yet')
    raise NonFiniteError(
        f'the loss or gradients became non-finite at step {first + bad} (loss '
        f'{got[bad, names.index("loss")]}); stopped. {where}; lower the learning rate or '
        'clip gradients and resume or restart.')
  return first, [names[i] for i in keep], got[:, keep], pending[fetch:]


class EarlyStopping:
  """Stops after `patience` evaluations without a lower validation loss.

  Rebuilt from the metrics rows written so far, so a resumed run decides
  exactly as an uninterrupted one would.
  """

  def __init__(self, patience: int, rows=()):
    self.patience, self.best, self.best_step, self.waited = patience, None, None, 0
    for r in rows:
      if r.get('kind') == 'eval' and 'validation_loss' in r:
        self.update(r['step'], r['validation_loss'])

  def update(self, step: int, loss: float) -> bool:
    """Records an evaluation; True when it is the best so far."""
    if self.best is None or loss < self.best:
      self.best, self.best_step, self.waited = loss, step, 0
      return True
    self.waited += 1
    return False

  @property
  def should_stop(self) -> bool:
    return self.patience > 0 and self.waited >= self.patience


@contextlib.contextmanager
def catch_signals():
  """Records SIGINT/SIGTERM instead of dying, so the loop can save first."""
  caught = []
  handler = lambda signum, frame: caught.append(signum)
  old = {}
  for sig in (signal.SIGINT, signal.SIGTERM):
    try:
      old[sig] = signal.signal(sig, handler)
    except ValueError:      # not the main thread: leave signals alone
      pass
  try:
    yield caught
  finally:
    for sig, h in old.items():
      signal.signal(sig, h)


def check_record(workdir: pathlib.Path, record: dict, write: bool = False) -> None:
  """A workdir belongs to one run: resuming with a record that differs in keys
  that change results is an error. With `write`, records it in config.json."""
  if workdir.exists() and not workdir.is_dir():
    raise SetupError(f'workdir {str(workdir)!r} is a file, not a directory')
  path = workdir / 'config.json'
  text = json.dumps(record, indent=2, sort_keys=True, default=str)
  if path.exists():
    old, new = flat(json.loads(path.read_text())), flat(json.loads(text))
    # (settings_hash is a digest of the config keys compared one by one here: a
    # change of a no-effect key changes it too)
    changed = sorted(k for k in set(old) | set(new)
                     if old.get(k) != new.get(k) and k != 'settings_hash'
                     and k.rsplit('.', 1)[-1] not in NO_EFFECT_KEYS)
    if changed:
      raise SetupError(f'{workdir} holds a run of a different config (keys that differ: '
                       f'{changed}); use a new workdir or the same config')
  if write and jax.process_index() == 0:
    path.write_text(text + '\n')


def flat(d, prefix='') -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and v:
      out.update(flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out
