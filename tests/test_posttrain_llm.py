"""Post-training pruning as the LLM papers define it: SparseGPT against a
line-by-line numpy transcription of the authors' `fasterprune`, OWL's
per-block sparsities on a hand case, the tie rule on tied weights (GGUF
quantization makes ties common), and the driver on a Llama (tiny Hugging
Face checkpoint in tests/fixtures/tiny_llama): Wanda 2:4, SparseGPT 50% and
OWL at 70%, pruned weights exactly 0 and counts exact."""

import numpy as np
import pytest
import scipy.linalg

import jax.numpy as jnp

from sparsejax.core import masks as masks_lib, tree as tree_lib
from sparsejax.posttrain import (OWL, Target, outlier_ratio, owl_sparsities, prune_magnitude,
                                 prune_model, prune_sparsegpt, prune_wanda, wanda_scores)
from sparsejax.posttrain.target import pruned_count
from test_posttrain import dense_inputs_grams


# --- SparseGPT = the reference `fasterprune` -------------------------------------------

class ReferenceSparseGPT:
  """The SparseGPT authors' `SparseGPT` class (sparsegpt.py of
  IST-DASLab/sparsegpt: `add_batch`, `fasterprune`), transcribed line by line
  from PyTorch into numpy (float64) for a linear layer W (out, in): torch's
  `cholesky_inverse(L)` is (L L^T)^-1, `cholesky(H, upper=True)` the U with
  U^T U = H, `topk(largest=False)` the stable ascending argsort's first k.
  Quantization and the loss bookkeeping are left out; `masks` records the
  per-block mask1 (True: pruned) that the reference keeps internal."""

  def __init__(self, weight):
    self.weight = np.array(weight, np.float64)
    self.rows, self.columns = self.weight.shape
    self.H = np.zeros((self.columns, self.columns))
    self.nsamples = 0

  def add_batch(self, inp):
    if len(inp.shape) == 2:
      inp = inp[None]
    tmp = inp.shape[0]
    if len(inp.shape) == 3:
      inp = inp.reshape((-1, inp.shape[-1]))
    inp = inp.T
    self.H *= self.nsamples / (self.nsamples + tmp)
    self.nsamples += tmp
    inp = np.sqrt(2 / self.nsamples) * inp.astype(np.float64)
    self.H += inp @ inp.T

  def fasterprune(self, sparsity, prunen=0, prunem=0, blocksize=128, percdamp=.01):
    W = self.weight.copy()
    H = self.H
    del self.H
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0

    damp = percdamp * np.mean(np.diag(H))
    diag = np.arange(self.columns)
    H[diag, diag] += damp
    H = np.linalg.cholesky(H)
    H = scipy.linalg.cho_solve((H, True), np.eye(self.columns))    # cholesky_inverse
    H = np.linalg.cholesky(H).T                                   # cholesky(upper=True)
    Hinv = H

    mask = None
    self.masks, self.margins = [], []     # bookkeeping of the test, not the reference's
    for i1 in range(0, self.columns, blocksize):
      i2 = min(i1 + blocksize, self.columns)
      count = i2 - i1

      W1 = W[:, i1:i2].copy()
      Q1 = np.zeros_like(W1)
      Err1 = np.zeros_like(W1)
      Hinv1 = Hinv[i1:i2, i1:i2]

      if prunen == 0:
        if mask is not None:
          mask1 = mask[:, i1:i2]
        else:
          tmp = W1 ** 2 / (np.diag(Hinv1).reshape((1, -1))) ** 2
          thresh = np.sort(tmp.flatten())[int(tmp.size * sparsity)]
          mask1 = tmp <= thresh
          above = np.sort(tmp.flatten())[int(tmp.size * sparsity) + 1]
          self.margins.append((above - thresh) / thresh)
      else:
        mask1 = np.zeros_like(W1) == 1

      for i in range(count):
        w = W1[:, i]
        d = Hinv1[i, i]

        if prunen != 0 and i % prunem == 0:
          tmp = W1[:, i:(i + prunem)] ** 2 / (np.diag(Hinv1)[i:(i + prunem)].reshape((1, -1))) ** 2
          smallest = np.argsort(tmp, axis=1, kind='stable')[:, :prunen]
          np.put_along_axis(mask1, i + smallest, True, axis=1)

        q = w.copy()
        q[mask1[:, i]] = 0

        Q1[:, i] = q

        err1 = (w - q) / d
        W1[:, i:] -= np.outer(err1, Hinv1[i, i:])
        Err1[:, i] = err1

      W[:, i1:i2] = Q1
      W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
      self.masks.append(mask1)

    self.weight = W


def reference_layer(seed=0, dead=(5, 21, 40)):
  """W (16 out, 64 in), and 200 calibration tokens X (200, 64) with a few
  dead inputs (never nonzero), scaled so that the mean diagonal of H = 2 X^T X
  over the live inputs is 1: there the reference's dead-input handling
  (diagonal 1) and ours (the live mean) give the same Hessian and damping."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(200, 64)) @ (np.eye(64) + 0.2 * rng.normal(size=(64, 64)))
  x *= np.exp(rng.normal(size=64))
  x[:, list(dead)] = 0.0
  live = np.ones(64, bool)
  live[list(dead)] = False
  x /= np.sqrt(np.mean(2 * np.sum(x[:, live] ** 2, axis=0)))
  return rng.normal(size=(16, 64)), x


# The reference prunes int(k * sparsity) + 1 of a block's k weights (its
# threshold is the sorted score at index int(k * s), pruned by <=); ours
# prunes round(s * size) per layer, spread over the blocks. At s = 128.9/256
# both prune 129 of every 256 (16 x 16 blocks) and 516 of 1024 (one block).
SPARSITY = 128.9 / 256


@pytest.mark.parametrize('blocksize', [128, 16])
@pytest.mark.parametrize('nm', [None, (2, 4)], ids=['unstructured', '2:4'])
def test_sparsegpt_equals_a_transcription_of_the_reference_fasterprune(blocksize, nm):
  w, x = reference_layer()
  ref = ReferenceSparseGPT(w)
  ref.add_batch(x)           # one calibration sequence of 200 tokens: H = 2 X^T X
  if nm is None:
    ref.fasterprune(SPARSITY, blocksize=blocksize)
    target = Target(SPARSITY)
    for m1 in ref.masks:     # the premise: the reference's count is ours
      assert m1.sum() == 16 * m1.shape[1] * 516 // 1024
    # No tie, nor a near-tie that float32 could flip, at any block's threshold.
    assert min(ref.margins) > 1e-4, ref.margins
  else:
    ref.fasterprune(0.0, prunen=nm[1] - nm[0], prunem=nm[1], blocksize=blocksize)
    target = Target(nm=nm)
  want_mask = ~np.concatenate(ref.masks, axis=1)       # keep-mask, (out, in)
  got, mask = prune_sparsegpt(jnp.asarray(w.T, jnp.float32), x.T @ x, target,
                              blocksize=blocksize)
  np.testing.assert_array_equal(np.asarray(mask).T, want_mask)
  np.testing.assert_allclose(np.asarray(got).T, ref.weight, rtol=0, atol=1e-5)
  assert np.all(np.asarray(got).T[~want_mask] == 0.0)
  if nm is None:   # joint over the block: output neurons end at different sparsities
    assert len(set((~want_mask).sum(1))) > 1


def test_sparsegpt_per_row_is_the_named_variant():
  w, x = reference_layer()
  kernel, gram = jnp.asarray(w.T, jnp.float32), x.T @ x
  _, joint = prune_sparsegpt(kernel, gram, Target(0.5))
  _, per_row = prune_sparsegpt(kernel, gram, Target(0.5), per_row=True)
  joint, per_row = np.asarray(joint), np.asarray(per_row)
  assert (~joint).sum() == (~per_row).sum() == 512
  np.testing.assert_array_equal((~per_row).sum(0), 32)   # every output neuron exactly half
  assert len(set((~joint).sum(0))) > 1
  with pytest.raises(ValueError, match='per_row'):
    prune_sparsegpt(kernel, gram, Target(nm='2:4'), per_row=True)


# --- OWL ---------------------------------------------------------------------------------

def test_owl_sparsities_on_a_hand_case():
  # Three blocks of 100 scores: k outliers of 50 among ones. The mean is
  # (100 - k + 50 k) / 100, five times it is 7.45, 14.8, 9.9 for k = 1, 4, 2:
  # exactly k scores exceed it.
  blocks = [[np.r_[np.full(k, 50.0), np.ones(100 - k)].reshape(10, 10)] for k in (1, 4, 2)]
  ratios = [outlier_ratio(b, 5.0) for b in blocks]
  assert ratios == pytest.approx([0.01, 0.04, 0.02], abs=1e-7)
  # a_l = 2 lambda (D_l - min D) / (max D - min D) = 0, 0.16, 0.16/3; S_l =
  # S - (a_l - mean a): the most outliers pruned least, mean S, span 2 lambda.
  s = owl_sparsities([0.01, 0.04, 0.02], 0.7, 0.08)
  mean_a = (0.16 + 0.16 / 3) / 3
  np.testing.assert_allclose(s, [0.7 + mean_a, 0.7 - 0.16 + mean_a, 0.7 - 0.16 / 3 + mean_a],
                             rtol=0, atol=1e-12)
  np.testing.assert_allclose(s, [0.771111111, 0.611111111, 0.717777778], atol=1e-9)
  assert np.mean(s) == pytest.approx(0.7, abs=1e-12)
  assert max(s) - min(s) == pytest.approx(0.16, abs=1e-12)
  # Equal ratios: the target everywhere; outside [0, 1): an error.
  np.testing.assert_array_equal(owl_sparsities([0.03, 0.03], 0.7, 0.08), [0.7, 0.7])
  with pytest.raises(ValueError, match='lambda'):
    owl_sparsities([0.0, 1.0], 0.95, 0.2)
  with pytest.raises(ValueError):
    OWL(lam=0.6)


# --- Ties --------------------------------------------------------------------------------

def test_ties_keep_the_lower_index():
  # One kernel (8 inputs, 3 outputs) of tied magnitudes, as in a quantized
  # checkpoint: +-0.5 and 0.25 levels, -0.0 against 0.0.
  kernel = np.array([[0.5, 0.25, -0.0],
                     [-0.5, 0.25, 0.0],
                     [0.5, 0.5, 0.0],
                     [0.25, 0.5, 0.0],
                     [0.25, -0.25, 1.0],
                     [0.25, 0.25, 1.0],
                     [0.25, 0.25, -1.0],
                     [0.25, 0.25, 1.0]], np.float32)
  eye = jnp.eye(8)   # equal input norms: Wanda's scores are |W|, ties included
  nm_keep = np.array([[1, 0, 1], [1, 0, 1], [0, 1, 0], [0, 1, 0],
                      [1, 1, 1], [1, 1, 1], [0, 0, 0], [0, 0, 0]], bool)
  col_keep = np.array([[1, 1, 0]] * 4 + [[0, 0, 1]] * 4, bool)
  for fn in (prune_magnitude, prune_wanda):
    pruned, mask = fn(jnp.asarray(kernel), eye, Target(nm='2:4'))
    np.testing.assert_array_equal(np.asarray(mask), nm_keep, err_msg=fn.__name__)
    np.testing.assert_array_equal(np.asarray(pruned), np.where(nm_keep, kernel, 0.0))
  # Wanda unstructured: per output neuron, the lower inputs among equals.
  _, mask = prune_wanda(jnp.asarray(kernel), eye, Target(0.5))
  np.testing.assert_array_equal(np.asarray(mask), col_keep)
  # Magnitude unstructured: over the layer, the lower flat index (input-major).
  _, mask = prune_magnitude(jnp.asarray(kernel), None, Target(0.5))
  flat_keep = np.zeros(24, bool)
  flat_keep[[0, 3, 6, 7, 10, 14, 17, 20, 23]] = True   # the five 0.5s and four 1.0s
  flat_keep[[1, 4, 9]] = True                          # the first three 0.25s of eleven
  np.testing.assert_array_equal(np.asarray(mask), flat_keep.reshape(8, 3))
  # Wanda with unequal norms: no tie, the larger input norm wins.
  gram = jnp.diag(jnp.arange(1.0, 9.0))   # input norms grow with the index
  _, mask = prune_wanda(jnp.asarray(kernel), gram, Target(nm='2:4'))
  assert np.asarray(mask)[4:8, 0].tolist() == [False, False, True, True]
  # The rule is the same under jit and on repeats (deterministic).
  again = prune_magnitude(jnp.asarray(kernel), None, Target(0.5))[1]
  np.testing.assert_array_equal(np.asarray(again), flat_keep.reshape(8, 3))


# --- A Llama ---------------------------------------------------------------------------

KERNELS = ('attention/query', 'attention/key', 'attention/value', 'attention/out',
           'mlp/gate', 'mlp/up', 'mlp/down')


def tiny_llama():
  pytest.importorskip('safetensors.numpy')
  import pathlib
  from sparsejax.models import llama_weights as lw
  params, config = lw.load_hf(pathlib.Path(__file__).resolve().parent / 'fixtures' / 'tiny_llama')
  rng = np.random.default_rng(0)
  batches = [rng.integers(0, config.vocab_size, (2, 32)) for _ in range(2)]
  return config.module(), params, batches


def _check_llama(params, pruned, masks, report, num_layers):
  masks_lib.validate_masks(masks, pruned)
  kernels = [f'block_{b}/{k}/kernel' for b in range(num_layers) for k in KERNELS]
  assert [row['path'] for row in report['layers']] == kernels   # call order
  assert sorted(report['left_dense']) == ['embed/embedding', 'output/kernel']
  flat_m, flat_p, flat_0 = (dict(tree_lib.leaves_with_paths(t)) for t in (masks, pruned, params))
  for path, value in flat_0.items():    # norms, embedding, head: untouched
    if path not in kernels:
      np.testing.assert_array_equal(np.asarray(flat_p[path]), np.asarray(value))
  for path in kernels:
    mask, w = np.asarray(flat_m[path]), np.asarray(flat_p[path])
    assert np.all(w[~mask] == 0.0) and np.all(w[mask] != 0.0), path
  return kernels, flat_m, flat_p, flat_0


def test_llama_wanda_2_of_4():
  model, params, batches = tiny_llama()
  pruned, masks, report = prune_model(model, params, batches, 'wanda', nm='2:4')
  kernels, flat_m, flat_p, flat_0 = _check_llama(params, pruned, masks, report, 2)
  for path in kernels:
    mask = np.asarray(flat_m[path])
    np.testing.assert_array_equal(mask.reshape(mask.shape[0] // 4, 4, -1).sum(1), 2)
    np.testing.assert_array_equal(np.asarray(flat_p[path])[mask], np.asarray(flat_0[path])[mask])
  assert report['calibration_tokens'] == 128 and report['pruned_fraction'] == 0.5


def test_llama_sparsegpt_half_joint():
  model, params, batches = tiny_llama()
  pruned, masks, report = prune_model(model, params, batches, 'sparsegpt', sparsity=0.5)
  assert report['options'] == {'percdamp': 0.01, 'blocksize': 128, 'per_row': False}
  kernels, flat_m, _, _ = _check_llama(params, pruned, masks, report, 2)
  for path in kernels:
    mask = np.asarray(flat_m[path])
    assert (~mask).sum() == pruned_count(mask.size, 0.5) == mask.size // 2, path
  assert any(len(set((~np.asarray(flat_m[p])).sum(0))) > 1 for p in kernels)  # joint


def test_llama_owl_at_70_percent():
  model, params, batches = tiny_llama()
  owl = OWL(m=3.0, lam=0.05)
  pruned, masks, report = prune_model(model, params, batches, 'wanda', sparsity=0.7, owl=owl)
  kernels, flat_m, _, flat_0 = _check_llama(params, pruned, masks, report, 2)
  # The outlier ratios come from the dense model's inputs and Wanda's scores,
  # over each block's seven matrices together.
  grams = dense_inputs_grams(model, params, batches)
  for b in range(2):
    ks = [f'block_{b}/{k}/kernel' for k in KERNELS]
    want = outlier_ratio([wanda_scores(flat_0[k], grams[k]) for k in ks], 3.0)
    assert report['owl']['outlier_ratios'][f'block_{b}'] == pytest.approx(want, abs=1e-6)
  ratios = report['owl']['outlier_ratios']
  s = report['owl']['sparsities']
  assert ratios['block_0'] != ratios['block_1']
  # Two blocks: the one with more outliers at S - lambda, the other at S + lambda.
  more = max(ratios, key=ratios.get)
  assert s[more] == pytest.approx(0.65) and s[min(ratios, key=ratios.get)] == pytest.approx(0.75)
  for path in kernels:    # Wanda per output neuron at its block's sparsity, exactly
    mask = np.asarray(flat_m[path])
    n_prune = pruned_count(mask.shape[0], s[path.split('/')[0]])
    np.testing.assert_array_equal((~mask).sum(0), n_prune, err_msg=path)
  with pytest.raises(ValueError, match='OWL'):
    prune_model(model, params, batches, 'wanda', nm='2:4', owl=owl)
