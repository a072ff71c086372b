// One-pass fake quantization of a float32 buffer, on torch's own OpenMP threads.
// Built and loaded by sw/fused_quant.py (plain C ABI, called through ctypes).
//
// Per element, in float32 and in this order (pytorch-quantization's `_tensor_quant`, with an
// optional ReLU / ReLU6 in front):
//   v = floor if v < floor else v;  v = ceiling if v > ceiling else v   (selects: NaN and -0.0 kept)
//   y = nearbyint(v * mul)                                               (round half to even)
//   y = lo if y < lo else y;        y = hi if y > hi else y
//   out = y / div
// Built without -ffast-math and with -ffp-contract=off, so every operation is the IEEE one the
// library's torch ops perform, whatever vector width the compiler picks.
//
// The buffer is cut as at::parallel_for cuts an element-wise op: contiguous chunks of
// ceil(n / threads), at least `grain` elements each (torch's is 32768). So each thread reads the
// part of the activation that the same thread of torch's pool has just written, in its own
// core's cache. Linked against libgomp.so.1, which resolves to the copy torch has already loaded:
// torch's runtime, hence torch's pool of threads.

#include <cstdint>
#include <cmath>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SW_CLONES __attribute__((target_clones("avx512f", "avx2", "sse4.1", "default")))
#else
#define SW_CLONES
#endif

namespace {

constexpr int NEGATIVE = 1, NOT_A_NUMBER = 2;  // flags of the checked loop

struct Params {
  float mul, div, lo, hi, floor, ceiling;
};

inline float quantize(float v, const Params& p) {
  v = v < p.floor ? p.floor : v;
  v = v > p.ceiling ? p.ceiling : v;
  float y = std::nearbyint(v * p.mul);
  y = y < p.lo ? p.lo : y;
  y = y > p.hi ? p.hi : y;
  return y / p.div;
}

// An unsigned quantizer with nothing clamping its input: negatives are the caller's error to raise
// (lo is 0 there), and a NaN anywhere cancels that error, as `inputs.min() < 0` does in the library.
SW_CLONES int checked(const float* __restrict x, float* __restrict out, int64_t n, Params p) {
  int negative = 0, nan = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    negative |= v < p.lo;
    nan |= v != v;
    out[i] = quantize(v, p);
  }
  return (negative ? NEGATIVE : 0) | (nan ? NOT_A_NUMBER : 0);
}

SW_CLONES int unchecked(const float* __restrict x, float* __restrict out, int64_t n, Params p) {
  for (int64_t i = 0; i < n; ++i) out[i] = quantize(x[i], p);
  return 0;
}

// One pointer, so the compiler vectorises without a runtime overlap test (which fails for x == out).
SW_CLONES int in_place(float* x, int64_t n, Params p) {
  for (int64_t i = 0; i < n; ++i) x[i] = quantize(x[i], p);
  return 0;
}

int run_chunk(int mode, const float* x, float* out, int64_t begin, int64_t end, const Params& p) {
  const int64_t n = end - begin;
  if (mode == 0) return checked(x + begin, out + begin, n, p);
  if (mode == 1) return unchecked(x + begin, out + begin, n, p);
  return in_place(out + begin, n, p);
}

}  // namespace

// mode 0: checked (returns NEGATIVE | NOT_A_NUMBER flags), 1: unchecked, 2: in place (x == out).
extern "C" int sw_fake_quant(const float* x, float* out, int64_t n, float mul, float div, float lo, float hi,
                             float floor, float ceiling, int mode, int threads, int64_t grain) {
  const Params p{mul, div, lo, hi, floor, ceiling};
  int64_t tasks = (n + grain - 1) / grain;
  if (tasks > threads) tasks = threads;
  if (tasks <= 1) return run_chunk(mode, x, out, 0, n, p);
  int flags = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(tasks) reduction(| : flags)
  {
    const int64_t count = omp_get_num_threads();
    const int64_t chunk = (n + count - 1) / count;
    const int64_t begin = omp_get_thread_num() * chunk;
    const int64_t end = begin + chunk < n ? begin + chunk : n;
    if (begin < end) flags |= run_chunk(mode, x, out, begin, end, p);
  }
#else
  flags = run_chunk(mode, x, out, 0, n, p);
#endif
  return flags;
}

extern "C" int sw_fake_quant_openmp(void) {
#ifdef _OPENMP
  return 1;
#else
  return 0;
#endif
}
