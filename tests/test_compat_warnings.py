"""The deprecated capability defaults of `compat` warn only when user code
reaches them: training the built-in schedules (each capability among them)
through the loop warns nothing, and no module of the package reads one.
What each default's warning says is in test_schedule_protocol.py."""

import ast
import pathlib
import warnings

import jax
import numpy as np
import optax
import pytest

import sparsejax as sj
from sparsejax import models
from sparsejax.core import compat, imp, protocol
from sparsejax.data import base as data_base
from sparsejax.train import loop
from sparsejax.train.task import LoopSettings, Task

PACKAGE = pathlib.Path(sj.__file__).resolve().parent

# The messages of compat's warnings (a deprecated default reached, an
# older-style subclass defined); other DeprecationWarnings are not this test's.
COMPAT_MESSAGES = r'.*(is the deprecated neutral default|older schedule protocol)'


def _task(schedule, steps=2):
  x = np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32)
  ds = data_base.Dataset('toy', data_base.ArraySource(x, y), data_base.ArraySource(x, y), None,
                         2, (8,), np.float32)
  return Task(dataset=ds, optimizer=optax.adam(1e-2), model=models.MLP((16,), num_classes=2),
              batch_size=8, eval_batch_size=32, schedule=schedule,
              loop=LoopSettings(steps=steps, eval_every=steps, checkpoint_every=steps))


SCHEDULES = {
    'rigl': lambda: sj.make_schedule('rigl', sparsity=0.5, every=1, end=2),
    'imp': lambda: imp.IMP(every=1, rounds=1, prune_fraction=0.5),       # Rewinding
    'ste': lambda: sj.make_schedule('ste', sparsity=0.5),                # StraightThrough
    'snip': lambda: sj.make_schedule('at_init', sparsity=0.5, criterion='snip'),  # Bindable
    'dense': lambda: sj.make_schedule('dense'),                          # SharesPrograms
}


@pytest.mark.parametrize('name', sorted(SCHEDULES))
def test_training_a_builtin_schedule_warns_nothing(name, tmp_path):
  schedule = SCHEDULES[name]()
  with warnings.catch_warnings():
    warnings.filterwarnings('error', message=COMPAT_MESSAGES, category=DeprecationWarning)
    result = loop.train(_task(schedule), tmp_path / name, progress=False, log=lambda _: None)
  assert int(jax.device_get(result.state.step)) == 2
  assert result.masks is not None


def test_training_with_a_fixed_mask_warns_nothing(tmp_path):
  dense = loop.train(_task(sj.make_schedule('dense')), tmp_path / 'dense', progress=False,
                     log=lambda _: None)
  params = jax.device_get(dense.state.params)
  rng = np.random.default_rng(0)
  masks = jax.tree.map(lambda p: rng.random(p.shape) < 0.5 if p.ndim >= 2 else None, params)
  with warnings.catch_warnings():
    warnings.filterwarnings('error', message=COMPAT_MESSAGES, category=DeprecationWarning)
    start = loop.Start(jax.device_get(sj.apply_masks(params, masks)))
    result = loop.train(_task(sj.FixedMask(masks=masks)), tmp_path / 'fixed', start=start,
                        progress=False, log=lambda _: None)
  assert int(jax.device_get(result.state.step)) == 2


def test_the_warning_filter_catches_a_deprecated_default():
  with warnings.catch_warnings():
    warnings.filterwarnings('error', message=COMPAT_MESSAGES, category=DeprecationWarning)
    with pytest.raises(DeprecationWarning):
      sj.make_schedule('rigl', sparsity=0.5).program_key()


# Attribute uses of the deprecated names in the package that are not the
# deprecated defaults, with the reason; anything else must ask `protocol`.
ALLOWED = {
    ('core/at_init.py', 'bind'): "AtInit's own bind (it is Bindable)",
    ('core/rewinding.py', 'rewind_target'): 'composed only for rewinding schedules',
    ('core/transform.py', 'straight_through'): 'ste_lib.straight_through, a function',
    ('optim.py', 'bind'): 'inspect.Signature.bind',
}


def test_no_module_reads_a_deprecated_default():
  names = set(compat.DEPRECATED)
  found = set()
  for path in sorted(PACKAGE.rglob('*.py')):
    rel = str(path.relative_to(PACKAGE))
    if rel in ('core/compat.py', 'core/protocol.py'):
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if (isinstance(node, ast.Attribute) and node.attr in names
          and not (isinstance(node.value, ast.Name) and node.value.id == 'protocol')):
        found.add((rel, node.attr))
  assert found == set(ALLOWED), found ^ set(ALLOWED)
  for _, name in ALLOWED:
    assert name in names
  assert callable(protocol.should_rewind)
