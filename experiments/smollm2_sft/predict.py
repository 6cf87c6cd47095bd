"""Per-example predictions of fine-tuned weights on a split of kjv-books, for
the paired comparisons of run.py (the training loop reports only means).

For every example of the split: the label token, the argmax over the whole
vocabulary (what the task's accuracy counts), the argmax over the eight
books' label tokens only (accuracy restricted to the candidates), and the
negative log-likelihood of the label. The model, data and batch size are the
config's (with the same overrides as the run), the weights a run's
merged.npz (or any weights `finetune.init_from` takes, e.g. 'smollm2' for
the model before fine-tuning).

  python experiments/smollm2_sft/predict.py --config configs/smollm2_sft.py \\
      --weights runs/smollm2_sft/row-structural_s0/merged.npz \\
      --out runs/smollm2_sft/row-structural_s0/test_predictions.npz [--config.KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

LABEL_OPTIONS = ('tokenizer', 'books', 'label_prefix')   # kjv_books options that fix labels


def predictions(config, weights, split: str = 'test') -> dict[str, np.ndarray]:
  """{'label', 'pred', 'pred_books', 'nll', 'candidates', 'seconds'} over
  `split` of the config's dataset, with `weights` in the config's model."""
  import jax
  import jax.numpy as jnp

  from sparsejax import config as config_lib, experiment
  from sparsejax.data import base as data_base, kjv_books
  from sparsejax.train import weights as weights_lib

  s = config_lib.to_settings(config)
  if s.data.name != 'kjv_books':
    raise SystemExit(f'predict.py reads kjv_books, the config has data.name {s.data.name!r}')
  task = experiment.build_task(config)
  source = getattr(task.dataset, split)
  if source is None:
    raise SystemExit(f'the dataset has no {split!r} split')
  abstract = jax.eval_shape(task.init_variables, jax.random.key(0))
  params, _ = weights_lib.load_weights(str(weights), abstract['params'])
  options = {k: v for k, v in s.data.options.items() if k in LABEL_OPTIONS}
  candidates = np.asarray(kjv_books.label_tokens(**options), np.int32)

  @jax.jit
  def one(params, x, y):
    logits = task.model.apply({'params': params}, x)
    logp = jax.nn.log_softmax(logits, axis=-1)
    books = jnp.asarray(candidates)[jnp.argmax(logits[:, candidates], axis=-1)]
    return (jnp.argmax(logits, -1), books,
            -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0])

  out = {'label': [], 'pred': [], 'pred_books': [], 'nll': []}
  start = time.perf_counter()
  for x, y, w in data_base.eval_batches(source, task.eval_batch_size):
    keep = w > 0
    for key, value in zip(('pred', 'pred_books', 'nll'), jax.device_get(one(params, x, y))):
      out[key].append(np.asarray(value)[keep])
    out['label'].append(y[keep])
  result = {k: np.concatenate(v) for k, v in out.items()}
  result['candidates'] = candidates
  result['seconds'] = np.float64(time.perf_counter() - start)
  return result


def main(argv=None) -> int:
  from sparsejax import config as config_lib
  rest, overrides = config_lib.split_overrides(list(sys.argv[1:] if argv is None else argv))
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', required=True)
  parser.add_argument('--weights', required=True, help='merged.npz of a run, or a model spec')
  parser.add_argument('--out', required=True, help='the .npz to write')
  parser.add_argument('--split', default='test', choices=('test', 'validation', 'train'))
  args = parser.parse_args(rest)
  config = config_lib.apply_overrides(config_lib.load_config(args.config), overrides)
  result = predictions(config, args.weights, args.split)
  out = pathlib.Path(args.out)
  tmp = out.with_name(out.stem + '.tmp.npz')
  np.savez(tmp, **result)
  tmp.replace(out)          # a killed run leaves no half-written predictions
  acc = float(np.mean(result['pred'] == result['label']))
  acc_books = float(np.mean(result['pred_books'] == result['label']))
  print(f"{args.split}: {len(result['label'])} examples, accuracy {acc:.4f} (over the "
        f"{len(result['candidates'])} books {acc_books:.4f}), {float(result['seconds']):.1f} s")
  return 0


if __name__ == '__main__':
  sys.exit(main())
