"""Heap retained by eager select.topk_mask calls (as peft_methods.choose_rows makes, one per target)."""
import ctypes, sys, time
import jax, jax.numpy as jnp, numpy as np
from sparsejax.core import select
from sparsejax.train import peak_memory
libc = ctypes.CDLL('libc.so.6')
class M(ctypes.Structure):
  _fields_ = [(n, ctypes.c_size_t) for n in ('arena','ordblks','smblks','hblks','hblkhd','usmblks','fsmblks','uordblks','fordblks','keepcost')]
libc.mallinfo2.restype = M
def heap():
  peak_memory.release_freed(); m = libc.mallinfo2()
  rss = int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]) / 1024
  return (m.uordblks + m.hblkhd) / 2**20, rss
mode, n = sys.argv[1], int(sys.argv[2])
fn = jax.jit(select.topk_mask) if mode == 'jit' else select.topk_mask
rng = np.random.default_rng(0)
sizes = [576, 576, 192, 192, 576, 1536, 1536]   # q, k, v, out, gate, up... like a llama block's 7 targets
h0, r0 = heap(); t = time.time(); out = []
for i in range(n):
  s = rng.standard_normal(sizes[i % 7])
  out.append(np.flatnonzero(np.asarray(fn(jnp.asarray(s), 8))))
h1, r1 = heap()
print(f'{mode}: {n} calls, {time.time() - t:.1f} s; heap in use +{h1 - h0:.1f} MiB, rss +{r1 - r0:.1f} MiB ({(h1 - h0) / n:.2f} MiB a call)', flush=True)
jax.clear_caches(); h2, r2 = heap()
print(f'{mode}: after jax.clear_caches(): heap in use +{h2 - h0:.1f} MiB, rss +{r2 - r0:.1f} MiB', flush=True)

