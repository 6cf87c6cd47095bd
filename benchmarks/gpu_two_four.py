"""Issue 13.7 on a GPU: is there a 2:4 sparse matmul path in the toolchain, and does it pay?

Not part of sparsejax (it imports PyTorch, which sparsejax does not depend on):
a probe run on the lent GPU machine, whose image has JAX and PyTorch.
JAX side: looks for a semi-structured (N:M) op in jax.experimental.sparse and
for cuSPARSELt in jaxlib's and the CUDA plugin's shared objects. PyTorch side:
times W @ X with W 2:4-sparse (torch.sparse.to_sparse_semi_structured, the
cuSPARSELt and CUTLASS backends) against the dense product, CUDA events, 50
calls after 5 warm-ups. X gets at least 32 columns (cuSPARSELt's minimum), so
the m=16 and m=1 cases both run at 32 columns. Output of its one run:
benchmarks/logs/gpu_two_four_h200_2026-12-04.log.

  python3 benchmarks/gpu_two_four.py
"""
import glob, os, subprocess, time
print('--- JAX side')
try:
  import jax, jax.experimental.sparse as js
  print('jax', jax.__version__, jax.devices())
  names = [n for n in dir(js) if any(s in n.lower() for s in ('semi', 'structur', '2_4', 'nm'))]
  print('jax.experimental.sparse names with semi/structur/2_4/nm:', names)
  import jaxlib, jax_plugins
  hits = {}
  for root in set(os.path.dirname(m.__file__) for m in (jaxlib,)) | set(jax_plugins.__path__):
    for so in glob.glob(root + '/**/*.so*', recursive=True):
      out = subprocess.run(['grep', '-c', 'cusparseLt', so], capture_output=True, text=True).stdout.strip()
      if out not in ('', '0'):
        hits[so] = out
  print('jaxlib / plugin shared objects mentioning cusparseLt:', hits or 'none')
except Exception as e:
  print('jax check failed:', repr(e))
print('--- PyTorch side')
import torch
print('torch', torch.__version__, torch.cuda.get_device_name())
from torch.sparse import to_sparse_semi_structured, SparseSemiStructuredTensor
def bench(f, n=50):
  for _ in range(5): f()
  torch.cuda.synchronize(); s, e = torch.cuda.Event(True), torch.cuda.Event(True)
  s.record()
  for _ in range(n): f()
  e.record(); torch.cuda.synchronize(); return s.elapsed_time(e) / n
for (m, k, n) in ((8192, 8192, 8192), (4096, 4096, 4096), (16, 4096, 4096), (1, 4096, 4096)):
  for dt in (torch.bfloat16, torch.float16):
    w = torch.randn(k, n, device='cuda', dtype=dt)   # weight (out=k, in=n) used as W @ x
    mask = torch.tensor([0, 0, 1, 1], device='cuda', dtype=torch.bool).tile((k, n // 4))
    w = w * mask
    x = torch.randn(n, max(m, 32), device='cuda', dtype=dt)   # cuSPARSELt needs >= 32-ish cols
    dense = bench(lambda: w @ x)
    row = f'W {k}x{n} @ X {n}x{x.shape[1]} {str(dt)[6:]}: dense {dense:.4f} ms'
    for force_cutlass in (False, True):
      SparseSemiStructuredTensor._FORCE_CUTLASS = force_cutlass
      try:
        ws = to_sparse_semi_structured(w)
        sp = bench(lambda: ws @ x)
        err = (ws @ x - w @ x).abs().max().item()
        row += f'; {"cutlass" if force_cutlass else "cusparselt"} {sp:.4f} ms ({dense / sp:.2f}x, max err {err:.3g})'
      except Exception as e:
        row += f'; {"cutlass" if force_cutlass else "cusparselt"} failed: {str(e)[:120]!r}'
    print(row, flush=True)
