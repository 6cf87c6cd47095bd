"""Row choice compiles its top-k once per score length (issue 24, claim C2 of
experiments/smollm2_sft): called eagerly, `select.topk_mask` traced and
compiled new loop bodies on every call, and JAX's caches kept them all, about
1 GB after the 210 matrices of SmolLM2-135M."""

import logging

import jax
import numpy as np

from sparsejax.programs import peft_methods


def test_choosing_rows_in_many_kernels_compiles_once(caplog):
  rng = np.random.RandomState(0)
  scores = {f'layer_{i}/kernel': rng.rand(48).astype(np.float32) for i in range(6)}
  scores['tied/kernel'] = np.zeros(48, np.float32)      # ties: the lowest rows win
  with jax.log_compiles(True), caplog.at_level(logging.WARNING, logger='jax'):
    rows = peft_methods.choose_rows(scores, 5, 'per_layer')
  compiles = [r for r in caplog.records if 'Finished XLA compilation' in r.getMessage()]
  for path, s in scores.items():
    assert rows[path] == tuple(sorted(np.argsort(-s, kind='stable')[:5].tolist()))
  assert rows['tied/kernel'] == (0, 1, 2, 3, 4)
  # the top-k for 48-long scores and a conversion; the eager top-k compiled
  # new programs for each of the 7 kernels (at least 7)
  assert 0 < len(compiles) <= 3, [r.getMessage()[:80] for r in compiles]
