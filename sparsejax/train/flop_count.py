"""The FLOPs account of a training run, as the RigL paper counts them
(`sparsejax.core.flops`): the model's per-layer forward FLOPs, traced once,
and the per-layer densities of every mask the run trained with; `Counter`
keeps them for the loop, which writes its `summary()` as the `flops` block of
summary.json.

A convolution's cost depends on its output size, which its kernel does not
give, so the per-layer FLOPs come from the model itself: one abstract forward
pass of a batch of one (`jax.eval_shape`: nothing is computed) records, for
every product of a weight kernel, the kernel's path and the output's shape,
and the layer costs 2 * prod(kernel shape) * (output positions):
- Flax Linen: method interception (`nn.intercept_methods`) of `nn.Dense`,
  `nn.DenseGeneral` and `nn.Conv` calls and of `nn.Embed.attend` (a tied
  output layer); a module called twice counts twice;
- Flax NNX (`task.nnx_model`): each `nnx.Linear` and `nnx.Conv` of a merged
  copy of the model gets a recording `dot_general` / `conv_general_dilated`;
- no model (your own init and loss), or a model whose trace records nothing
  or fails: every prunable leaf of two dimensions counts as a Dense kernel
  applied once per example, 2 * fan_in * fan_out. This is a stated
  approximation (`counted: 'kernel_shapes'` and a `note` in the block): it
  undercounts kernels applied at every token or pixel and leaves out kernels
  of other ranks.
Other products (`nn.Einsum`, attention scores, layers of one's own) are not
counted, nor are evaluation, a distillation teacher's forward pass or the
mask updates themselves (the paper omits the drop step too).

The densities are measured, not derived from the schedule: the mask changes
only on the steps that run the update program, so the counter reads the
per-layer densities at step 0 and after each of those steps (dispatched
without waiting, fetched when the loop writes its metrics) and writes them as
'mask_density' rows of metrics.jsonl, which a resumed run reads back.
"""

from __future__ import annotations

import math
import pathlib

import flax.linen as nn
import jax

from sparsejax.core import flops as flops_lib, masks as masks_lib, transform
from sparsejax.core import tree as tree_lib
from sparsejax.train import metrics as metrics_lib
from sparsejax.train.task import nnx_model

ROW_KIND = 'mask_density'


def linen_layer_flops(apply_fn, params, *args) -> dict[str, int]:
  """{kernel path: dense forward FLOPs per example} of a Linen model, from
  `apply_fn(params, *args)` traced abstractly on a batch of one."""
  shapes = {p: tuple(x.shape) for p, x in tree_lib.leaves_with_paths(params)}
  calls = []

  def interceptor(next_fun, a, kw, context):
    out = next_fun(*a, **kw)
    m, name = context.module, context.method_name
    if name == '__call__' and isinstance(m, (nn.Dense, nn.Conv)):
      calls.append(('/'.join(m.path) + '/kernel', out, 1))
    elif name == '__call__' and isinstance(m, nn.DenseGeneral):
      features = m.features if isinstance(m.features, tuple) else (m.features,)
      calls.append(('/'.join(m.path) + '/kernel', out, len(features)))
    elif name == 'attend' and isinstance(m, nn.Embed):
      calls.append(('/'.join(m.path) + '/embedding', out, 1))
    return out

  with nn.intercept_methods(interceptor):
    jax.eval_shape(apply_fn, params, *args)
  out = {}
  for path, y, n_features in calls:
    if path in shapes:
      positions = math.prod(y.shape) // math.prod(y.shape[len(y.shape) - n_features:])
      out[path] = out.get(path, 0) + flops_lib.kernel_flops(shapes[path], positions)
  return out


def nnx_layer_flops(model: nnx_model, params, model_state, x) -> dict[str, int]:
  """{kernel path: dense forward FLOPs per example} of an NNX model wrapped by
  `nnx_model`, traced abstractly on `x` (a batch of one)."""
  from flax import nnx
  calls = []

  def run(params, model_state, x):
    module = model.module({'params': params, **dict(model_state or {})}, train=False)
    for path, layer in nnx.iter_graph(module):
      name = ('dot_general' if isinstance(layer, nnx.Linear) else
              'conv_general_dilated' if isinstance(layer, nnx.Conv) else None)
      if name is None:
        continue

      def spy(*a, _inner=getattr(layer, name), _path=tuple(path), _layer=layer, **kw):
        out = _inner(*a, **kw)
        calls.append((_path, tuple(_layer.kernel.shape), out))
        return out

      setattr(layer, name, spy)    # on this merged copy only
    return module(x)

  jax.eval_shape(run, params, model_state, x)
  out = {}
  for path, kernel, y in calls:
    key = '/'.join(map(str, (*path, 'kernel')))
    positions = math.prod(y.shape) // y.shape[-1]
    out[key] = out.get(key, 0) + flops_lib.kernel_flops(kernel, positions)
  return out


def kernel_shape_flops(params, rule=tree_lib.DEFAULT_RULE) -> dict[str, int]:
  """{path: 2 * fan_in * fan_out} of every prunable 2-D leaf: a Dense kernel
  applied once per example (the fallback; see the module docstring)."""
  return {p: flops_lib.kernel_flops(s) for p, s in tree_lib.prunable_shapes(params, rule).items()
          if len(s) == 2}


def task_layer_flops(task, params, model_state) -> tuple[dict[str, int], str, str | None]:
  """(per-layer FLOPs, how counted: 'linen' | 'nnx' | 'kernel_shapes', note)
  for a task's model; `params` and `model_state` may be abstract."""
  if task.model is None:
    return (kernel_shape_flops(params, task.rule), 'kernel_shapes',
            'no model to trace: prunable 2-D leaves counted as Dense kernels applied once '
            'per example')
  x = jax.ShapeDtypeStruct((1, *task.dataset.input_shape), task.dataset.input_dtype)
  try:
    if isinstance(task.model, nnx_model):
      layers, method = nnx_layer_flops(task.model, params, model_state, x), 'nnx'
    elif isinstance(task.model, nn.Module):
      layers = linen_layer_flops(lambda p, s, x: task.apply(p, s, x)[0], params,
                                 model_state, x)
      method = 'linen'
    else:
      raise TypeError(f'{type(task.model).__name__} is neither a Linen module nor nnx_model')
  except Exception as e:   # noqa: BLE001  (a count must not end a finished run)
    why = f'tracing the model failed ({type(e).__name__}: {str(e)[:200]})'
  else:
    if layers:
      return layers, method, None
    why = 'the traced model called no Dense or Conv layer'
  return (kernel_shape_flops(params, task.rule), 'kernel_shapes',
          f'{why}: prunable 2-D leaves counted as Dense kernels applied once per example')


@jax.jit
def _active_counts(masks):
  return masks_lib.count_active(transform.unpack_masks(masks))


class Counter:
  """The FLOPs account of one run for the loop: `record(step, state)` at
  step 0 and after every step that ran the update program, `write(writer)`
  where the loop writes its metrics, `summary(...)` at the end.
  `program_steps` are all the run's update-program steps (0-based)."""

  def __init__(self, run, program_steps, workdir, start: int):
    t = run.task
    self.layer_flops, self.method, self.note = task_layer_flops(
        t, run.abstract.params, run.abstract.model_state)
    self.mode = flops_lib.dense_gradients(run.schedule)
    self.examples_per_step = t.batch_size
    k = t.accumulate   # an update reads the gradient of all its k micro-batches
    self.dense_steps = (range(t.loop.steps) if self.mode == 'always' else
                        sorted({s - j for s in program_steps for j in range(k)})
                        if self.mode == 'updates' else ())
    self.history: list[tuple[int, dict]] = []
    self._pending: list = []
    self._sizes = None
    if start:
      self.history = [(r['step'], r['layer_density']) for r in
                      metrics_lib.read_rows(pathlib.Path(workdir) / 'metrics.jsonl')
                      if r.get('kind') == ROW_KIND and r['step'] <= start]

  def begin(self, step: int, state) -> None:
    """At the loop's first step: records the mask it starts with, unless a
    resumed run read the earlier masks back (a workdir without those rows
    counts its first mask from step 0)."""
    if not self.history:
      self.record(step, state)

  def record(self, step: int, state) -> None:
    """Queues the densities of the mask that trains from `step` on (no wait)."""
    masks = transform.stored_masks(state.opt_state)
    if self._sizes is None:   # static: the entries of each masked leaf
      self._sizes = masks_lib.count_total(jax.eval_shape(transform.unpack_masks, masks))
    self._pending.append((step, _active_counts(masks)))

  def write(self, writer=None) -> None:
    """Fetches the queued densities and writes them as metrics rows."""
    for step, dens in self._pending:
      dens = {p: int(v) / self._sizes[p] for p, v in jax.device_get(dens).items()}
      self.history.append((step, dens))
      if writer is not None:
        writer.write(ROW_KIND, step, {'layer_density': dens}, summary=False)
    self._pending = []

  def summary(self, steps: int, layer_density: dict) -> dict:
    """The summary.json block: inference FLOPs of the final mask (per example),
    training FLOPs of the `steps` steps run (all examples)."""
    self.write()
    history = sorted(self.history or [(0, layer_density)], key=lambda h: h[0])
    out = {**flops_lib.inference(self.layer_flops, history[-1][1]),   # the final mask
           **flops_lib.train_summary(self.layer_flops, history, steps,
                                     self.dense_steps, self.examples_per_step),
           'flops_per_mac': flops_lib.FLOPS_PER_MAC, 'counted': self.method,
           'dense_gradients': self.mode, 'examples_per_step': self.examples_per_step}
    if self.note:
      out['note'] = self.note
    return out
