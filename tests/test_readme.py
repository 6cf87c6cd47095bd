"""The README's Python example runs as written and does what it says."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parent.parent / 'README.md'


def test_fine_tune_example_runs(capsys):
  text = README.read_text()
  blocks = re.findall(r'```python\n(.*?)```', text, re.S)
  example = next(b for b in blocks if 'from sparsejax.programs.finetune import fine_tune' in b)
  scope = {}
  exec(compile(example, 'README example', 'exec'), scope)
  out = capsys.readouterr().out
  assert 'recovered' in out and 'sparsity 0.90' in out
  masks, recovered = scope['masks'], scope['recovered']
  for w, m in zip(jax_leaves(recovered), jax_leaves(masks)):
    if m is not None:
      assert np.all(np.asarray(w)[~np.asarray(m)] == 0.0)
  assert scope['accuracy'](scope['recovered']) > scope['accuracy'](scope['pruned'])


def jax_leaves(tree):
  import jax
  return jax.tree.leaves(tree, is_leaf=lambda x: x is None)


def test_own_model_example_runs(tmp_path, monkeypatch):
  text = README.read_text()
  blocks = re.findall(r'```python\n(.*?)```', text, re.S)
  example = next(b for b in blocks if 'result = loop.train(task' in b)
  monkeypatch.chdir(tmp_path)
  scope = {}
  exec(compile(example, 'README own-model example', 'exec'), scope)
  result, rows = scope['result'], scope['rows']
  assert result.summary['density'] == 0.1 or abs(result.summary['density'] - 0.1) < 0.01
  assert result.summary['eval']['test']['accuracy'] > 0.5
  assert [r['status'] for r in rows] == ['ok', 'ok']
  assert (tmp_path / 'runs' / 'mine_lottery' / 'results.jsonl').exists()
