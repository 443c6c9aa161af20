// tests/test_simt_wmma.cu — tensor-core WMMA (nvcuda::wmma, <mma.h>) and asynchronous
// global -> shared copies (pipeline primitives, <cuda_pipeline.h>, and libcu++'s thread-scope
// cuda::pipeline, <cuda/pipeline>), checked against plain loops.
//
// Built twice: by g++ against simt (build/test_simt, where simt/mma.h and simt/pipeline.h
// emulate them) and by nvcc (build/test_gpu, on the GPU's tensor cores and cp.async when there is
// one). Assertions that hold on any GPU run in both builds; those about simt's strictness (the
// scrambled element-to-lane mapping, NaN in destinations not yet waited for, aborts) are under
// #if defined(VIT_SIMT).
//
// The GEMM inputs are multiples of 1/4 in [-2, 2] (Philox), so every product and partial sum is
// exact in FP32 (and in half where the output is half): the result does not depend on the order
// in which a tensor core sums, and the comparison with the plain loop is exact.
#include <gtest/gtest.h>

#include <cuda/pipeline>
#include <cuda_pipeline.h>
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "common/philox.h"
#include "kernels/common.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_util.h"

using namespace nvcuda;
using vit_test::DeviceBuffer;

// Kernels run when the stream is synchronised (simt's streams are queues): a death test must
// synchronise inside the statement that is expected to die.
#define LAUNCH_SYNC(...)         \
  do {                           \
    LAUNCH(__VA_ARGS__);         \
    cudaDeviceSynchronize();     \
  } while (0)

namespace {

constexpr uint32_t kSite = 0x7E57;  // Philox site of this file's test data

// Host-side conversions of the storage types.
template <class T> T from_float(float v);
template <> float from_float<float>(float v) { return v; }
template <> __half from_float<__half>(float v) { return __float2half(v); }
template <> __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
inline float to_float(float v) { return v; }
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// n values, multiples of 1/4 in [-2, 2].
std::vector<float> quarter_values(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = (float)((int)(vit::philox_u32(seed, kSite, 0, i) % 17) - 8) * 0.25f;
  return v;
}

// Storage type of a fragment's input element: float for precision::tf32.
template <class T> struct storage { typedef T type; };
template <> struct storage<wmma::precision::tf32> { typedef float type; };

template <class L> constexpr bool is_row() { return std::is_same<L, wmma::row_major>::value; }

// ---------------------------------------------------------------------------------------------
// One warp: D (M x N) = A (M x K*ksteps) * B (K*ksteps x N) + C, a chain of ksteps mma_syncs.
// A is stored row- or column-major after LA, B after LB, C and D in the memory layouts lc / ldl,
// each with its own leading dimension.
template <int M, int N, int K, class T, class LA, class LB, class TC, class TD>
__global__ void wmma_chain_kernel(const typename storage<T>::type* A, unsigned lda,
                                  const typename storage<T>::type* B, unsigned ldb, const TC* C,
                                  unsigned ldc, wmma::layout_t lc, TD* D, unsigned ldd,
                                  wmma::layout_t ldl, int ksteps) {
  wmma::fragment<wmma::accumulator, M, N, K, TC> c;
  wmma::load_matrix_sync(c, C, ldc, lc);
  wmma::fragment<wmma::accumulator, M, N, K, TD> d;
  for (int s = 0; s < ksteps; ++s) {
    wmma::fragment<wmma::matrix_a, M, N, K, T, LA> a;
    wmma::fragment<wmma::matrix_b, M, N, K, T, LB> b;
    // Step s: columns [sK, sK + K) of A, rows [sK, sK + K) of B.
    wmma::load_matrix_sync(a, A + (is_row<LA>() ? (size_t)s * K : (size_t)s * K * lda), lda);
    wmma::load_matrix_sync(b, B + (is_row<LB>() ? (size_t)s * K * ldb : (size_t)s * K), ldb);
    if (std::is_same<T, wmma::precision::tf32>::value) {  // the documented tf32 idiom
      for (int i = 0; i < a.num_elements; ++i) a.x[i] = wmma::__float_to_tf32(a.x[i]);
      for (int i = 0; i < b.num_elements; ++i) b.x[i] = wmma::__float_to_tf32(b.x[i]);
    }
    if (s == 0) wmma::mma_sync(d, a, b, c);
    else wmma::mma_sync(d, a, b, d);
  }
  wmma::store_matrix_sync(D, d, ldd, ldl);
}

// Runs wmma_chain_kernel on Philox data and compares with the plain loop, exactly.
template <int M, int N, int K, class T, class LA, class LB, class TC, class TD>
void check_chain(int ksteps, bool c_row, bool d_row, unsigned pad, uint64_t seed) {
  typedef typename storage<T>::type S;
  const unsigned KT = (unsigned)(K * ksteps);
  const unsigned unit = 16 / sizeof(S);  // ldm granularity: 16 bytes
  // Leading dimensions: the tight one plus `pad` units (a valid but not tight ldm).
  const unsigned lda = (is_row<LA>() ? KT : M) + pad * unit;
  const unsigned ldb = (is_row<LB>() ? N : KT) + pad * unit;
  const unsigned ldc = (c_row ? N : M) + pad * (16 / (unsigned)sizeof(TC));
  const unsigned ldd = (d_row ? N : M) + pad * (16 / (unsigned)sizeof(TD));
  const size_t na = (size_t)lda * (is_row<LA>() ? M : KT), nb = (size_t)ldb * (is_row<LB>() ? KT : N);
  const size_t nc = (size_t)ldc * (c_row ? M : N), nd = (size_t)ldd * (d_row ? M : N);
  std::vector<float> a = quarter_values(na, seed), b = quarter_values(nb, seed + 1),
                     c = quarter_values(nc, seed + 2);
  std::vector<S> ha(na), hb(nb);
  std::vector<TC> hc(nc);
  for (size_t i = 0; i < na; ++i) ha[i] = from_float<S>(a[i]);
  for (size_t i = 0; i < nb; ++i) hb[i] = from_float<S>(b[i]);
  for (size_t i = 0; i < nc; ++i) hc[i] = from_float<TC>(c[i]);
  auto at = [](bool row, unsigned ld, unsigned r, unsigned col) { return row ? (size_t)r * ld + col : (size_t)col * ld + r; };
  // Plain loop, in double (exact here).
  std::vector<float> want(nd, 0.0f);
  std::vector<bool> written(nd, false);
  for (unsigned r = 0; r < (unsigned)M; ++r)
    for (unsigned col = 0; col < (unsigned)N; ++col) {
      double s = c[at(c_row, ldc, r, col)];
      for (unsigned k = 0; k < KT; ++k) s += (double)a[at(is_row<LA>(), lda, r, k)] * b[at(is_row<LB>(), ldb, k, col)];
      want[at(d_row, ldd, r, col)] = (float)s;
      written[at(d_row, ldd, r, col)] = true;
    }
  DeviceBuffer<S> da(ha), db(hb);
  DeviceBuffer<TC> dc(hc);
  DeviceBuffer<TD> dd(nd);
  CUDA_CHECK(cudaMemset(dd.ptr, 0, nd * sizeof(TD)));
  auto kernel = wmma_chain_kernel<M, N, K, T, LA, LB, TC, TD>;
  LAUNCH(kernel, 1, 32, 0, 0, da.ptr, lda, db.ptr, ldb, dc.ptr, ldc,
         c_row ? wmma::mem_row_major : wmma::mem_col_major, dd.ptr, ldd,
         d_row ? wmma::mem_row_major : wmma::mem_col_major, ksteps);
  std::vector<TD> got_raw = dd.download();
  std::vector<float> got(nd);
  for (size_t i = 0; i < nd; ++i) got[i] = written[i] ? to_float(got_raw[i]) : want[i];
  // Padding between rows/columns of D must be left alone.
  for (size_t i = 0; i < nd; ++i) {
    if (!written[i]) { EXPECT_EQ(to_float(got_raw[i]), 0.0f) << "store wrote padding element " << i; }
  }
  EXPECT_TRUE(vit_test::allclose(got, want, 0, 0))
      << "M" << M << " N" << N << " K" << K << " A " << (is_row<LA>() ? "row" : "col") << " B "
      << (is_row<LB>() ? "row" : "col") << " C " << (c_row ? "row" : "col") << " D "
      << (d_row ? "row" : "col") << " ksteps " << ksteps << " pad " << pad;
}

// All four A/B layout combinations of one shape and input type, float accumulators, with the
// C/D memory layouts and the padding varied between them.
template <int M, int N, int K, class T>
void check_shape(uint64_t seed) {
  using R = wmma::row_major;
  using C = wmma::col_major;
  check_chain<M, N, K, T, R, R, float, float>(1, true, true, 0, seed);
  check_chain<M, N, K, T, R, C, float, float>(3, true, false, 1, seed + 10);
  check_chain<M, N, K, T, C, R, float, float>(2, false, true, 3, seed + 20);
  check_chain<M, N, K, T, C, C, float, float>(3, false, false, 1, seed + 30);
}

#if defined(VIT_SIMT)
// Restores the WMMA mapping and thread order in effect at construction.
struct MapGuard {
  simt::WmmaMap map = simt::wmma_map();
  uint64_t seed = simt::wmma_map_seed();
  ~MapGuard() { simt::set_wmma_map(map, seed); }
};
// Runs f under the natural mapping and two scrambled ones, each under forward and reverse order.
void for_each_mapping(const std::function<void()>& f) {
  MapGuard restore;
  for (int m = 0; m < 3; ++m) {
    if (m == 0) simt::set_wmma_map(simt::WmmaMap::Natural);
    else simt::set_wmma_map(simt::WmmaMap::Scrambled, (uint64_t)m * 7919);
    vit_test::for_each_thread_order([&](const char*) { f(); });
  }
}
#else
void for_each_mapping(const std::function<void()>& f) { f(); }
#endif

TEST(SimtWmma, HalfAllShapesAndLayoutsMatchPlainLoop) {
  VIT_REQUIRE_GPU();
  for_each_mapping([] {
    check_shape<16, 16, 16, __half>(100);
    check_shape<32, 8, 16, __half>(200);
    check_shape<8, 32, 16, __half>(300);
  });
}

TEST(SimtWmma, Bf16AllShapesAndLayoutsMatchPlainLoop) {
  VIT_REQUIRE_GPU();
  for_each_mapping([] {
    check_shape<16, 16, 16, __nv_bfloat16>(400);
    check_shape<32, 8, 16, __nv_bfloat16>(500);
    check_shape<8, 32, 16, __nv_bfloat16>(600);
  });
}

TEST(SimtWmma, Tf32AllLayoutsMatchPlainLoop) {
  VIT_REQUIRE_GPU();
  for_each_mapping([] { check_shape<16, 16, 8, wmma::precision::tf32>(700); });
}

TEST(SimtWmma, HalfAccumulatorsAndMixedAccumulatorTypes) {
  VIT_REQUIRE_GPU();
  using R = wmma::row_major;
  using C = wmma::col_major;
  // One K step keeps every half result exact (|D| <= 68, multiples of 1/16).
  for_each_mapping([] {
    check_chain<16, 16, 16, __half, R, C, __half, __half>(1, true, true, 0, 800);
    check_chain<32, 8, 16, __half, C, R, __half, __half>(1, false, true, 1, 810);
    check_chain<8, 32, 16, __half, R, R, __half, __half>(1, true, false, 0, 820);
    check_chain<16, 16, 16, __half, R, C, __half, float>(2, true, true, 1, 830);
    check_chain<16, 16, 16, __half, C, C, float, __half>(1, false, true, 0, 840);
  });
}

// ---------------------------------------------------------------------------------------------
// tf32 rounding.
__global__ void tf32_convert_kernel(const float* in, float* out, int n) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = wmma::__float_to_tf32(in[i]);
}

// One 16x16x8 tf32 product with A = a_value everywhere, B = 1, C = 0; convert: whether the
// kernel applies __float_to_tf32 to the loaded fragments first.
__global__ void tf32_mma_kernel(const float* A, const float* B, float* D, bool convert) {
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> b;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> d;
  wmma::load_matrix_sync(a, A, 8);
  wmma::load_matrix_sync(b, B, 16);
  if (convert)
    for (int i = 0; i < a.num_elements; ++i) a.x[i] = wmma::__float_to_tf32(a.x[i]);
  wmma::fill_fragment(d, 0.0f);
  wmma::mma_sync(d, a, b, d);
  wmma::store_matrix_sync(D, d, 16, wmma::mem_row_major);
}

float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
uint32_t float_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

TEST(SimtWmma, Float2Tf32RoundsToNearestTiesAwayFromZero) {
  VIT_REQUIRE_GPU();
  const float ulp = std::ldexp(1.0f, -10);  // tf32 ulp at 1
  std::vector<float> in = {1.0f + 0.75f * ulp, 1.0f + 0.25f * ulp, 1.0f + 0.5f * ulp,
                           -(1.0f + 0.5f * ulp), 1.0f + 1.5f * ulp, 3.0f, 0.0f, -0.0f,
                           INFINITY, -INFINITY, bits_to_float(0x3f801fffu)};
  std::vector<float> want = {1.0f + ulp, 1.0f, 1.0f + ulp, -(1.0f + ulp), 1.0f + 2 * ulp, 3.0f,
                             0.0f, -0.0f, INFINITY, -INFINITY, bits_to_float(0x3f802000u)};
  DeviceBuffer<float> din(in), dout(in.size());
  LAUNCH(tf32_convert_kernel, 1, 32, 0, 0, din.ptr, dout.ptr, (int)in.size());
  std::vector<float> got = dout.download();
  for (size_t i = 0; i < in.size(); ++i)
    EXPECT_EQ(float_bits(got[i]), float_bits(want[i])) << "input " << in[i] << " (#" << i << ")";
  std::vector<float> nan_in = {NAN};
  DeviceBuffer<float> dnan(nan_in), dnan_out(1);
  LAUNCH(tf32_convert_kernel, 1, 32, 0, 0, dnan.ptr, dnan_out.ptr, 1);
  EXPECT_TRUE(std::isnan(dnan_out.download()[0]));
}

TEST(SimtWmma, Tf32MmaUsesRoundedInputs) {
  VIT_REQUIRE_GPU();
  const float ulp = std::ldexp(1.0f, -10);
  const float a_value = 1.0f + 0.75f * ulp;  // rounds up to 1 + ulp, truncates to 1
  std::vector<float> A(16 * 8, a_value), B(8 * 16, 1.0f);
  DeviceBuffer<float> dA(A), dB(B), dD(16 * 16);
  LAUNCH(tf32_mma_kernel, 1, 32, 0, 0, dA.ptr, dB.ptr, dD.ptr, true);
  // Plain loop on the rounded inputs: 8 * (1 + ulp), exact.
  std::vector<float> want(256, 8.0f * (1.0f + ulp));
  EXPECT_TRUE(vit_test::allclose(dD.download(), want, 0, 0));
#if defined(VIT_SIMT)
  // Without __float_to_tf32 the tensor core reads only the top 19 bits: the 0.75 ulp is lost.
  LAUNCH(tf32_mma_kernel, 1, 32, 0, 0, dA.ptr, dB.ptr, dD.ptr, false);
  EXPECT_TRUE(vit_test::allclose(dD.download(), std::vector<float>(256, 8.0f), 0, 0));
#endif
}

// ---------------------------------------------------------------------------------------------
// Element access: position-independent work passes under any mapping; code that assumes one
// fails under the scrambled mapping.

// D = 2 * C + 1 through x[i] of an accumulator, then a fill and an elementwise sum of two
// fragments of the same type: out2 = C + 0.5.
__global__ void elementwise_kernel(const float* C, float* out1, float* out2) {
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c, h;
  wmma::load_matrix_sync(c, C, 16, wmma::mem_row_major);
  wmma::fill_fragment(h, 0.5f);
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> s = c;
  for (int i = 0; i < s.num_elements; ++i) s.x[i] = c.x[i] + h.x[i];
  for (int i = 0; i < c.num_elements; ++i) c.x[i] = 2.0f * c.x[i] + 1.0f;
  wmma::store_matrix_sync(out1, c, 16, wmma::mem_row_major);
  wmma::store_matrix_sync(out2, s, 16, wmma::mem_col_major);
}

// Scaling a half A fragment in place (every copy of an element scaled alike), then D = A * I.
__global__ void scale_a_kernel(const __half* A, const __half* I, float* D) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> d;
  wmma::load_matrix_sync(a, A, 16);
  wmma::load_matrix_sync(b, I, 16);
  for (int i = 0; i < a.num_elements; ++i) a.x[i] = __float2half(-3.0f * __half2float(a.x[i]));
  wmma::fill_fragment(d, 0.0f);
  wmma::mma_sync(d, a, b, d);
  wmma::store_matrix_sync(D, d, 16, wmma::mem_row_major);
}

// Assumes lane l holds row-major elements [8l, 8l + 8) of the 16x16 accumulator: writes that
// index into x[i] and stores. Only right if the mapping is the assumed one.
__global__ void assumes_mapping_kernel(float* out) {
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
  const int lane = threadIdx.x % 32;
  for (int i = 0; i < c.num_elements; ++i) c.x[i] = (float)(lane * c.num_elements + i);
  wmma::store_matrix_sync(out, c, 16, wmma::mem_row_major);
}

TEST(SimtWmma, PositionIndependentElementAccessPassesUnderEveryMapping) {
  VIT_REQUIRE_GPU();
  EXPECT_EQ((wmma::fragment<wmma::accumulator, 16, 16, 16, float>::num_elements), 8);
  EXPECT_EQ((wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major>::num_elements), 16);
  EXPECT_EQ((wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>::num_elements), 8);
  EXPECT_EQ((wmma::fragment<wmma::matrix_b, 32, 8, 16, __nv_bfloat16, wmma::col_major>::num_elements), 4);
  EXPECT_EQ((wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major>::num_elements), 4);
  std::vector<float> C = quarter_values(256, 900);
  std::vector<float> want1(256), want2(256);
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) {
      want1[r * 16 + c] = 2.0f * C[r * 16 + c] + 1.0f;
      want2[c * 16 + r] = C[r * 16 + c] + 0.5f;
    }
  std::vector<float> Af = quarter_values(256, 901), Iden(256, 0.0f), want3(256);
  std::vector<__half> A(256), I(256);
  for (int i = 0; i < 256; ++i) A[i] = __float2half(Af[i]);
  for (int i = 0; i < 16; ++i) Iden[i * 16 + i] = 1.0f;  // symmetric: col-major = row-major
  for (int i = 0; i < 256; ++i) { I[i] = __float2half(Iden[i]); want3[i] = -3.0f * Af[i]; }
  DeviceBuffer<float> dC(C), d1(256), d2(256), d3(256);
  DeviceBuffer<__half> dA(A), dI(I);
  for_each_mapping([&] {
    LAUNCH(elementwise_kernel, 1, 32, 0, 0, dC.ptr, d1.ptr, d2.ptr);
    EXPECT_TRUE(vit_test::allclose(d1.download(), want1, 0, 0));
    EXPECT_TRUE(vit_test::allclose(d2.download(), want2, 0, 0));
    LAUNCH(scale_a_kernel, 1, 32, 0, 0, dA.ptr, dI.ptr, d3.ptr);
    EXPECT_TRUE(vit_test::allclose(d3.download(), want3, 0, 0));
  });
}

#if defined(VIT_SIMT)
TEST(SimtWmma, CodeAssumingAMappingFailsUnderScrambled) {
  MapGuard restore;
  DeviceBuffer<float> out(256);
  std::vector<float> iota(256);
  for (int i = 0; i < 256; ++i) iota[i] = (float)i;
  // The assumption happens to be simt's natural mapping: there it passes...
  simt::set_wmma_map(simt::WmmaMap::Natural);
  LAUNCH(assumes_mapping_kernel, 1, 32, 0, 0, out.ptr);
  EXPECT_EQ(out.download(), iota);
  // ...under the scrambled one (any seed) the same kernel is wrong, as on some GPU it would be.
  for (uint64_t seed : {0ull, 1ull, 99ull}) {
    simt::set_wmma_map(simt::WmmaMap::Scrambled, seed);
    LAUNCH(assumes_mapping_kernel, 1, 32, 0, 0, out.ptr);
    std::vector<float> got = out.download();
    EXPECT_NE(got, iota) << "seed " << seed;
    // Still a permutation of 0..255: every element written exactly once.
    std::vector<float> sorted = got;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, iota) << "seed " << seed;
  }
}

TEST(SimtWmma, ScrambledMappingsDifferByTypeAndHoldEachElementEqually) {
  MapGuard restore;
  using namespace simt::wmma_detail;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> ar;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::col_major> ac;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  const FragDesc& dar = wmma::simt_traits::desc(ar);
  const FragDesc& dac = wmma::simt_traits::desc(ac);
  const FragDesc& dacc = wmma::simt_traits::desc(acc);
  auto positions = [](const FragDesc& d) {
    std::vector<int> p;
    for (int l = 0; l < 32; ++l)
      for (int i = 0; i < d.ne; ++i) {
        int r, c;
        element_position(d, l, i, &r, &c);
        p.push_back(r * d.cols + c);
      }
    return p;
  };
  simt::set_wmma_map(simt::WmmaMap::Scrambled, 5);
  std::vector<int> pr = positions(dar), pc = positions(dac), pacc = positions(dacc);
  EXPECT_NE(pr, pc);
  // Half A tiles: 512 slots for 256 elements, each held exactly twice.
  std::vector<int> count(256, 0);
  for (int e : pr) ++count[e];
  EXPECT_EQ(count, std::vector<int>(256, 2));
  std::vector<int> sorted = pacc;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < 256; ++i) EXPECT_EQ(sorted[i], i);
  // The same seed gives the same mapping; another seed another one.
  EXPECT_EQ(positions(dar), pr);
  simt::set_wmma_map(simt::WmmaMap::Scrambled, 6);
  EXPECT_NE(positions(dar), pr);
  simt::set_wmma_map(simt::WmmaMap::Natural);
  std::vector<int> nat = positions(dacc);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(nat[i], i);
}

TEST(SimtWmma, EnvironmentVariableSelectsTheMapping) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  MapGuard restore;
  const char* old = getenv("SIMT_WMMA_MAP");
  std::string saved = old ? old : "";
  setenv("SIMT_WMMA_MAP", "natural", 1);
  simt::reset_wmma_map();
  EXPECT_EQ(simt::wmma_map(), simt::WmmaMap::Natural);
  setenv("SIMT_WMMA_MAP", "scrambled:42", 1);
  simt::reset_wmma_map();
  EXPECT_EQ(simt::wmma_map(), simt::WmmaMap::Scrambled);
  EXPECT_EQ(simt::wmma_map_seed(), 42u);
  unsetenv("SIMT_WMMA_MAP");
  simt::reset_wmma_map();
  EXPECT_EQ(simt::wmma_map(), simt::WmmaMap::Scrambled);  // the default
  setenv("SIMT_WMMA_MAP", "diagonal", 1);
  EXPECT_DEATH(simt::reset_wmma_map(), "SIMT_WMMA_MAP=diagonal: expected natural or scrambled");
  if (old) setenv("SIMT_WMMA_MAP", saved.c_str(), 1);
  else unsetenv("SIMT_WMMA_MAP");
  simt::reset_wmma_map();
}

// ---------------------------------------------------------------------------------------------
// Misuse aborts naming the kernel.
__global__ void lane_pointer_kernel(const float* C, float* out) {
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
  // Lanes 16..31 pass another (well aligned) pointer.
  wmma::load_matrix_sync(c, C + (threadIdx.x >= 16 ? 256 : 0), 16, wmma::mem_row_major);
  wmma::store_matrix_sync(out, c, 16, wmma::mem_row_major);
}
__global__ void lane_ldm_kernel(const float* C, float* out) {
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
  wmma::load_matrix_sync(c, C, threadIdx.x == 7 ? 24 : 16, wmma::mem_row_major);
}
__global__ void half_warp_kernel(const float* C, float* out) {
  if (threadIdx.x >= 16) return;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
  wmma::load_matrix_sync(c, C, 16, wmma::mem_row_major);
}
__global__ void misaligned_kernel(const float* C, float* out) {
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
  wmma::load_matrix_sync(c, C + 4, 16, wmma::mem_row_major);  // 16 bytes off a 32-byte boundary
}
__global__ void bad_ldm_kernel(const __half* A, float* out) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
  wmma::load_matrix_sync(a, A, 20);  // not a multiple of 8 halves
}
__global__ void mixed_ops_kernel(const float* C, float* out) {
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
  wmma::fill_fragment(c, 1.0f);
  if (threadIdx.x < 16) wmma::load_matrix_sync(c, C, 16, wmma::mem_row_major);
  else wmma::store_matrix_sync(out, c, 16, wmma::mem_row_major);
}
// Half the warp meets the other half at a plain __syncwarp instead of the load.
__global__ void syncwarp_instead_kernel(const float* C, float* out) {
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
  if (threadIdx.x < 16) wmma::load_matrix_sync(c, C, 16, wmma::mem_row_major);
  else __syncwarp();
}
// Writes one copy of a replicated half A element only: the copies disagree at mma_sync.
__global__ void one_copy_kernel(const __half* A, float* out) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> d;
  wmma::load_matrix_sync(a, A, 16);
  wmma::load_matrix_sync(b, A, 16);
  if (threadIdx.x == 0) a.x[0] = __float2half(100.0f);
  wmma::fill_fragment(d, 0.0f);
  wmma::mma_sync(d, a, b, d);
  wmma::store_matrix_sync(out, d, 16, wmma::mem_row_major);
}
// An accumulator that nobody filled: NaN out.
__global__ void unfilled_kernel(const __half* A, float* out) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> d;
  wmma::load_matrix_sync(a, A, 16);
  wmma::load_matrix_sync(b, A, 16);
  wmma::mma_sync(d, a, b, d);
  wmma::store_matrix_sync(out, d, 16, wmma::mem_row_major);
}

TEST(SimtWmmaDeathTest, WarpCollectiveMisuseAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  std::vector<float> C = quarter_values(512, 1000);
  std::vector<__half> A(512);
  for (int i = 0; i < 512; ++i) A[i] = __float2half(C[i]);
  DeviceBuffer<float> dC(C), out(512);
  DeviceBuffer<__half> dA(A);
  vit_test::for_each_thread_order([&](const char*) {
    EXPECT_DEATH(LAUNCH_SYNC(lane_pointer_kernel, 1, 32, 0, 0, dC.ptr, out.ptr),
                 "simt: wmma::load_matrix_sync at .*test_simt_wmma.cu:[0-9]+ in kernel lane_pointer_kernel "
                 ".*warp 0: lane (1[6-9]|2[0-9]|3[01]|[0-9]) passes \\(pointer .*, ldm 16, mem_row_major\\) "
                 "while lane 0 passes .*All 32 lanes of the warp must pass the same arguments");
    EXPECT_DEATH(LAUNCH_SYNC(lane_ldm_kernel, 1, 32, 0, 0, dC.ptr, out.ptr),
                 "lane_ldm_kernel.*ldm (24|16).*All 32 lanes");
    EXPECT_DEATH(LAUNCH_SYNC(half_warp_kernel, 1, 32, 0, 0, dC.ptr, out.ptr),
                 "simt: .*half_warp_kernel.*only 16 of the warp's 32 lanes called it");
    EXPECT_DEATH(LAUNCH_SYNC(mixed_ops_kernel, 1, 32, 0, 0, dC.ptr, out.ptr),
                 "mixed_ops_kernel.*calls wmma::(load|store)_matrix_sync while lane 0 calls "
                 "wmma::(load|store)_matrix_sync.*same WMMA operation");
    EXPECT_DEATH(LAUNCH_SYNC(syncwarp_instead_kernel, 1, 32, 0, 0, dC.ptr, out.ptr),
                 "wmma::load_matrix_sync at .* in kernel syncwarp_instead_kernel .*: lane [0-9]+ met "
                 "other lanes of its warp at a __syncwarp that is not this WMMA operation");
  });
  // A block of 48 threads: its second warp has 16 lanes.
  EXPECT_DEATH(LAUNCH_SYNC(elementwise_kernel, 1, 48, 0, 0, dC.ptr, out.ptr, out.ptr + 256),
               "elementwise_kernel.*warp 1.*only 16 of the warp's 32 lanes called it");
  EXPECT_DEATH(LAUNCH_SYNC(misaligned_kernel, 1, 32, 0, 0, dC.ptr, out.ptr),
               "wmma::load_matrix_sync at .*test_simt_wmma.cu:[0-9]+ in kernel misaligned_kernel.*"
               "is not 256-bit \\(32-byte\\) aligned");
  EXPECT_DEATH(LAUNCH_SYNC(bad_ldm_kernel, 1, 32, 0, 0, dA.ptr, out.ptr),
               "bad_ldm_kernel.*ldm 20 is not a multiple of 8 elements \\(16 bytes of __half\\)");
  EXPECT_DEATH(LAUNCH_SYNC(one_copy_kernel, 1, 32, 0, 0, dA.ptr, out.ptr),
               "wmma::mma_sync at .* in kernel one_copy_kernel.*operand a "
               "\\(fragment<matrix_a, 16, 16, 16, __half, row_major>\\) holds tile element .* twice.*copies differ");
  LAUNCH(unfilled_kernel, 1, 32, 0, 0, dA.ptr, out.ptr);
  for (float v : out.download()) EXPECT_TRUE(std::isnan(v));
}
#endif  // VIT_SIMT

// ---------------------------------------------------------------------------------------------
// Pipeline async copies.

// Each of 64 threads copies in[t*4 .. t*4+4) (16 bytes) into shared memory with size_and_align
// bytes per copy (zfill = zfill bytes zeroed at the end of every copy), waits, and writes back.
__global__ void async_copy_kernel(const float* in, float* out, int size, int zfill) {
  __shared__ __align__(16) float s[256];
  const int t = threadIdx.x;
  const int per = size / 4;  // floats per copy
  for (int j = 0; j < 4; j += per) __pipeline_memcpy_async(&s[t * 4 + j], &in[t * 4 + j], size, zfill);
  __pipeline_commit();
  __pipeline_wait_prior(0);
  __syncthreads();
  // Another thread's copies: visible after its wait and the barrier.
  const int o = (t + 17) % 64;
  for (int j = 0; j < 4; ++j) out[o * 4 + j] = s[o * 4 + j];
}

// Three batches in flight: records what shared memory holds after wait_prior(2), (1), (0).
// out[k*4 + b] = s[b] after the k-th wait; s[3]'s copy is committed only before the last.
__global__ void batches_kernel(const float* in, float* out) {
  __shared__ __align__(16) float s[4];
  for (int b = 0; b < 3; ++b) {
    __pipeline_memcpy_async(&s[b], &in[b], 4);
    __pipeline_commit();
  }
  __pipeline_memcpy_async(&s[3], &in[3], 4);  // never committed
  __pipeline_wait_prior(2);
  for (int b = 0; b < 4; ++b) out[0 * 4 + b] = s[b];
  __pipeline_wait_prior(1);
  for (int b = 0; b < 4; ++b) out[1 * 4 + b] = s[b];
  __pipeline_wait_prior(0);
  for (int b = 0; b < 4; ++b) out[2 * 4 + b] = s[b];
  __pipeline_commit();
  __pipeline_wait_prior(0);
  for (int b = 0; b < 4; ++b) out[3 * 4 + b] = s[b];
}

// A missing wait, and a read before the wait.
__global__ void no_wait_kernel(const float* in, float* out) {
  __shared__ __align__(16) float s[64];
  __pipeline_memcpy_async(&s[threadIdx.x], &in[threadIdx.x], 4);
  __pipeline_commit();
  __syncthreads();
  out[threadIdx.x] = s[(threadIdx.x + 1) % 64];  // no wait at all
}
__global__ void read_early_kernel(const float* in, float* out) {
  __shared__ __align__(16) float s[64];
  s[threadIdx.x] = 5.0f;
  __pipeline_memcpy_async(&s[threadIdx.x], &in[threadIdx.x], 4);
  __pipeline_commit();
  out[threadIdx.x] = s[threadIdx.x];  // before the wait: undefined (old 5, new, or in between)
  __pipeline_wait_prior(0);
  out[64 + threadIdx.x] = s[threadIdx.x];
}

// A double-buffered pipeline: 64 threads sum tiles of 256 floats, prefetching tile i+1 while
// tile i is summed. out[t] = sum over tiles of tile[(t * 4) .. (t * 4 + 4)) weighted by tile #.
__global__ void double_buffer_kernel(const float* in, int tiles, float* out) {
  __shared__ __align__(16) float buf[2][256];
  const int t = threadIdx.x;
  float acc = 0.0f;
  __pipeline_memcpy_async(&buf[0][t * 4], &in[t * 4], 16);
  __pipeline_commit();
  for (int i = 0; i < tiles; ++i) {
    if (i + 1 < tiles) __pipeline_memcpy_async(&buf[(i + 1) & 1][t * 4], &in[(size_t)(i + 1) * 256 + t * 4], 16);
    __pipeline_commit();
    __pipeline_wait_prior(1);  // tile i has landed (tile i + 1 may still be in flight)
    __syncthreads();
    const float* b = buf[i & 1];
    const int o = (t * 4 + 100) % 256;  // read what another thread copied
    for (int j = 0; j < 4; ++j) acc += (float)(i + 1) * b[(o + j) % 256];
    __syncthreads();  // everyone is done with buf[i & 1] before it is refilled
  }
  out[t] = acc;
}

// The same double-buffered sum through libcu++'s thread-scope cuda::pipeline: consumer_wait
// waits for the oldest stage only (tile i), while tile i + 1 stays in flight.
__global__ void cuda_pipeline_kernel(const float* in, int tiles, float* out) {
  __shared__ __align__(16) float buf[2][256];
  auto pipe = cuda::make_pipeline();
  const int t = threadIdx.x;
  float acc = 0.0f;
  pipe.producer_acquire();
  cuda::memcpy_async(&buf[0][t * 4], &in[t * 4], cuda::aligned_size_t<16>(16), pipe);
  pipe.producer_commit();
  for (int i = 0; i < tiles; ++i) {
    if (i + 1 < tiles) {
      pipe.producer_acquire();
      cuda::memcpy_async(&buf[(i + 1) & 1][t * 4], &in[(size_t)(i + 1) * 256 + t * 4],
                         cuda::aligned_size_t<16>(16), pipe);
      pipe.producer_commit();
    }
    pipe.consumer_wait();
    __syncthreads();
    const float* b = buf[i & 1];
    const int o = (t * 4 + 100) % 256;
    for (int j = 0; j < 4; ++j) acc += (float)(i + 1) * b[(o + j) % 256];
    __syncthreads();
    pipe.consumer_release();
  }
  out[t] = acc;
}

// Two stages of cuda::memcpy_async of 12 bytes (no alignment promise), then
// pipeline_consumer_wait_prior<1> (stage 0 only), then consumer_wait (stage 1).
// out[0..3): after wait_prior<1>, out[3..6): s[3..6) after it, out[6..12): everything at the end.
__global__ void cuda_pipeline_stages_kernel(const float* in, float* out) {
  __shared__ __align__(16) float s[6];
  auto pipe = cuda::make_pipeline();
  pipe.producer_acquire();
  cuda::memcpy_async(&s[0], &in[0], 12, pipe);
  pipe.producer_commit();
  pipe.producer_acquire();
  cuda::memcpy_async(&s[3], &in[3], 12, pipe);
  pipe.producer_commit();
  cuda::pipeline_consumer_wait_prior<1>(pipe);
  for (int i = 0; i < 6; ++i) out[i] = s[i];
  pipe.consumer_release();
  pipe.consumer_wait();
  for (int i = 0; i < 6; ++i) out[6 + i] = s[i];
  pipe.consumer_release();
}

TEST(SimtPipeline, CopiesLandAtTheWaitWithZeroFill) {
  VIT_REQUIRE_GPU();
  std::vector<float> in = quarter_values(256, 2000);
  for (float& v : in) v += 10.0f;  // no zeros, so a zero fill is visible
  DeviceBuffer<float> din(in), dout(256);
  vit_test::for_each_thread_order([&](const char* order) {
    for (int size : {4, 8, 16})
      for (int zfill : {0, 4}) {
        if (zfill >= size) continue;
        LAUNCH(async_copy_kernel, 1, 64, 0, 0, din.ptr, dout.ptr, size, zfill);
        std::vector<float> want = in;
        if (zfill)  // the last float of every copy is zero-filled
          for (int i = 0; i < 256; i += size / 4) want[i + size / 4 - 1] = 0.0f;
        EXPECT_TRUE(vit_test::allclose(dout.download(), want, 0, 0))
            << order << " size " << size << " zfill " << zfill;
      }
  });
}

TEST(SimtPipeline, WaitPriorLandsAllButTheNewestBatches) {
  VIT_REQUIRE_GPU();
  std::vector<float> in = {1.0f, 2.0f, 3.0f, 4.0f};
  DeviceBuffer<float> din(in), dout(16);
  LAUNCH(batches_kernel, 1, 1, 0, 0, din.ptr, dout.ptr);
  std::vector<float> got = dout.download();
  // What must have landed, on any GPU: batch 0 after wait_prior(2), batches 0-1 after (1), 0-2
  // after (0); everything once the last copy is committed and waited for.
  EXPECT_EQ(got[0], 1.0f);
  EXPECT_EQ(got[4], 1.0f);
  EXPECT_EQ(got[5], 2.0f);
  EXPECT_EQ(got[8], 1.0f);
  EXPECT_EQ(got[9], 2.0f);
  EXPECT_EQ(got[10], 3.0f);
  EXPECT_EQ(std::vector<float>(got.begin() + 12, got.end()), in);
#if defined(VIT_SIMT)
  // Under simt nothing lands early: whatever no wait covered yet is still NaN, including the
  // uncommitted copy after wait_prior(0).
  for (int i : {1, 2, 3, 6, 7, 11}) EXPECT_TRUE(std::isnan(got[i])) << "out[" << i << "] = " << got[i];
#endif
}

TEST(SimtPipeline, DoubleBufferedPipelineMatchesPlainLoop) {
  VIT_REQUIRE_GPU();
  const int tiles = 5;
  std::vector<float> in = quarter_values(256 * tiles, 2100);
  std::vector<float> want(64, 0.0f);
  for (int t = 0; t < 64; ++t)
    for (int i = 0; i < tiles; ++i)
      for (int j = 0; j < 4; ++j) want[t] += (float)(i + 1) * in[i * 256 + ((t * 4 + 100) % 256 + j) % 256];
  DeviceBuffer<float> din(in), dout(64);
  vit_test::for_each_thread_order([&](const char* order) {
    LAUNCH(double_buffer_kernel, 1, 64, 0, 0, din.ptr, tiles, dout.ptr);
    EXPECT_TRUE(vit_test::allclose(dout.download(), want, 0, 0)) << order;
  });
}

TEST(SimtPipeline, CudaPipelineThreadScopeMatchesPlainLoop) {
  VIT_REQUIRE_GPU();
  const int tiles = 4;
  std::vector<float> in = quarter_values(256 * tiles, 2400);
  std::vector<float> want(64, 0.0f);
  for (int t = 0; t < 64; ++t)
    for (int i = 0; i < tiles; ++i)
      for (int j = 0; j < 4; ++j) want[t] += (float)(i + 1) * in[i * 256 + ((t * 4 + 100) % 256 + j) % 256];
  DeviceBuffer<float> din(in), dout(64);
  vit_test::for_each_thread_order([&](const char* order) {
    LAUNCH(cuda_pipeline_kernel, 1, 64, 0, 0, din.ptr, tiles, dout.ptr);
    EXPECT_TRUE(vit_test::allclose(dout.download(), want, 0, 0)) << order;
  });
  std::vector<float> in6 = {1, 2, 3, 4, 5, 6};
  DeviceBuffer<float> d6(in6), dstages(12);
  LAUNCH(cuda_pipeline_stages_kernel, 1, 1, 0, 0, d6.ptr, dstages.ptr);
  std::vector<float> got = dstages.download();
  EXPECT_EQ(std::vector<float>(got.begin(), got.begin() + 3), std::vector<float>(in6.begin(), in6.begin() + 3));
  EXPECT_EQ(std::vector<float>(got.begin() + 6, got.end()), in6);
#if defined(VIT_SIMT)
  for (int i = 3; i < 6; ++i) EXPECT_TRUE(std::isnan(got[i])) << i;  // stage 1 not waited for yet
#endif
}

#if defined(VIT_SIMT)
TEST(SimtPipeline, MissingOrEarlyWaitIsLoud) {
  std::vector<float> in = quarter_values(64, 2200);
  DeviceBuffer<float> din(in), dout(128);
  LAUNCH(no_wait_kernel, 1, 64, 0, 0, din.ptr, dout.ptr);
  std::vector<float> got = dout.download();
  for (int i = 0; i < 64; ++i) EXPECT_TRUE(std::isnan(got[i])) << i;
  LAUNCH(read_early_kernel, 1, 64, 0, 0, din.ptr, dout.ptr);
  got = dout.download();
  for (int i = 0; i < 64; ++i) {
    EXPECT_TRUE(std::isnan(got[i])) << i;  // neither the old 5 nor the new value
    EXPECT_EQ(got[64 + i], in[i]);
  }
}

__global__ void modified_source_kernel(float* in, float* out) {
  __shared__ __align__(16) float s[32];
  __pipeline_memcpy_async(&s[threadIdx.x], &in[threadIdx.x], 4);
  __pipeline_commit();
  in[threadIdx.x] = 0.0f;  // the copy may not have read it yet
  __pipeline_wait_prior(0);
  out[threadIdx.x] = s[threadIdx.x];
}
__global__ void written_destination_kernel(float* in, float* out) {
  __shared__ __align__(16) float s[32];
  __pipeline_memcpy_async(&s[threadIdx.x], &in[threadIdx.x], 4);
  __pipeline_commit();
  s[threadIdx.x] = 1.0f;  // races with the copy's write
  __pipeline_wait_prior(0);
  out[threadIdx.x] = s[threadIdx.x];
}
__global__ void copy_args_kernel(float* in, float* out, int which) {
  __shared__ __align__(16) float s[32];
  if (which == 0) __pipeline_memcpy_async(&s[0], &in[0], 12);
  if (which == 1) __pipeline_memcpy_async(&s[1], &in[1], 8);  // 4-byte aligned only
  if (which == 2) __pipeline_memcpy_async(out, in, 16);        // destination in global memory
  if (which == 3) __pipeline_memcpy_async(&s[0], &in[0], 8, 12);
  if (which == 4) {
    auto pipe = cuda::make_pipeline();
    cuda::memcpy_async(&s[0], &in[0], cuda::aligned_size_t<16>(12), pipe);  // 12: not a multiple
  }
}

TEST(SimtPipelineDeathTest, StrictAsyncCopyRulesAbort) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  std::vector<float> in = quarter_values(64, 2300);
  DeviceBuffer<float> din(in), dout(64);
  EXPECT_DEATH(LAUNCH_SYNC(modified_source_kernel, 1, 32, 0, 0, din.ptr, dout.ptr),
               "simt: __pipeline_memcpy_async at .*test_simt_wmma.cu:[0-9]+ in kernel "
               "modified_source_kernel .*thread \\([0-9]+,0,0\\): its source .* was modified before the "
               "copy was waited for \\(at .*test_simt_wmma.cu:[0-9]+\\)");
  EXPECT_DEATH(LAUNCH_SYNC(written_destination_kernel, 1, 32, 0, 0, din.ptr, dout.ptr),
               "written_destination_kernel.*its destination .* was written before the copy was waited for");
  EXPECT_DEATH(LAUNCH_SYNC(copy_args_kernel, 1, 1, 0, 0, din.ptr, dout.ptr, 0),
               "copy_args_kernel.*size_and_align 12 must be 4, 8 or 16");
  EXPECT_DEATH(LAUNCH_SYNC(copy_args_kernel, 1, 1, 0, 0, din.ptr, dout.ptr, 1),
               "copy_args_kernel.*must both be aligned to size_and_align \\(8 bytes\\)");
  EXPECT_DEATH(LAUNCH_SYNC(copy_args_kernel, 1, 1, 0, 0, din.ptr, dout.ptr, 2),
               "copy_args_kernel.*dst_shared .* is device \\(global\\) memory");
  EXPECT_DEATH(LAUNCH_SYNC(copy_args_kernel, 1, 1, 0, 0, din.ptr, dout.ptr, 3),
               "copy_args_kernel.*zfill 12 exceeds size_and_align 8");
  EXPECT_DEATH(LAUNCH_SYNC(copy_args_kernel, 1, 1, 0, 0, din.ptr, dout.ptr, 4),
               "cuda::memcpy_async at .* in kernel copy_args_kernel.*cuda::aligned_size_t<16> promises "
               "that destination .*, source .* and size 12 are multiples of 16");
}
#endif  // VIT_SIMT

#if defined(SIMT_RACE)
// ---------------------------------------------------------------------------------------------
// Race mode (make test-race): races through WMMA and async copies are reported, and the same code
// correctly synchronised is not (simt's own per-warp and per-block bookkeeping behind them must
// not look like a race either). CUDA's rules: store_matrix_sync writes the tile from the lanes of
// its warp and load_matrix_sync reads it into them; between warps they order nothing, only a
// barrier does. An async copy writes its destination for the issuing thread, complete when its
// wait returns: another thread may read it only after a barrier that follows the wait, and a new
// copy into it may be issued only once every reader is past a barrier.

// Two warps share one 16x16 float tile in shared memory. mode 0: both store into it; mode 1:
// warp 0 stores, warp 1 loads it back without a barrier; mode 2: the same with __syncthreads
// (then warp 1 writes warp 0's 1s to out, a tile per block).
__global__ void shared_tile_kernel(float* out, int mode) {
  __shared__ __align__(32) float tile[256];
  const int warp = threadIdx.x / 32;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
  wmma::fill_fragment(c, (float)(warp + 1));
  if (mode == 0 || warp == 0) wmma::store_matrix_sync(tile, c, 16, wmma::mem_row_major);
  if (mode == 2) __syncthreads();
  if (warp == 1) {
    if (mode != 0) wmma::load_matrix_sync(c, tile, 16, wmma::mem_row_major);
    wmma::store_matrix_sync(out + blockIdx.x * 256, c, 16, wmma::mem_row_major);
  }
}
// 64 threads: each copies in[t] to s[t] asynchronously and waits for it, then reads s[63 - t],
// which the other warp's copy wrote: ordered only by the __syncthreads after the waits.
__global__ void async_copy_exchange_kernel(const float* in, float* out, int barrier) {
  __shared__ __align__(16) float s[64];
  const int t = threadIdx.x, base = blockIdx.x * 64;
  __pipeline_memcpy_async(&s[t], &in[base + t], 4);
  __pipeline_commit();
  __pipeline_wait_prior(0);
  if (barrier) __syncthreads();
  out[base + t] = s[63 - t];
}
// Two rounds of the exchange through one buffer: the second round's copy into s[t] overwrites
// what thread 63 - t may still be reading from the first, unless a barrier separates them.
__global__ void async_copy_reuse_kernel(const float* in, float* out, int barrier) {
  __shared__ __align__(16) float s[64];
  const int t = threadIdx.x;
  for (int round = 0; round < 2; ++round) {
    __pipeline_memcpy_async(&s[t], &in[round * 64 + t], 4);
    __pipeline_commit();
    __pipeline_wait_prior(0);
    __syncthreads();
    out[round * 64 + t] = s[63 - t];
    if (barrier) __syncthreads();
  }
}

TEST(SimtRaceDeathTest, RacesThroughWmmaAndAsyncCopiesAreReported) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::vector<float> in = quarter_values(128, 2400);
  DeviceBuffer<float> din(in), dout(512);
  EXPECT_RACE(LAUNCH(shared_tile_kernel, 1, 64, 0, 0, dout.ptr, 0));
  EXPECT_RACE(LAUNCH(shared_tile_kernel, 1, 64, 0, 0, dout.ptr, 1));
  // Two blocks, so that each warp's WMMA staging is reused by the next block.
  EXPECT_NO_RACE({
    LAUNCH(shared_tile_kernel, 2, 64, 0, 0, dout.ptr, 2);
    for (float v : dout.download()) if (v != 1.0f) exit(3);
  });
  EXPECT_RACE(LAUNCH(async_copy_exchange_kernel, 1, 64, 0, 0, din.ptr, dout.ptr, 0));
  EXPECT_NO_RACE({
    LAUNCH(async_copy_exchange_kernel, 2, 64, 0, 0, din.ptr, dout.ptr, 1);
    const std::vector<float> got = dout.download();
    for (int i = 0; i < 128; ++i) if (got[i] != in[i / 64 * 64 + 63 - i % 64]) exit(3);
  });
  EXPECT_RACE(LAUNCH(async_copy_reuse_kernel, 1, 64, 0, 0, din.ptr, dout.ptr, 0));
  EXPECT_NO_RACE({
    LAUNCH(async_copy_reuse_kernel, 1, 64, 0, 0, din.ptr, dout.ptr, 1);
    const std::vector<float> got = dout.download();
    for (int i = 0; i < 128; ++i) if (got[i] != in[i / 64 * 64 + 63 - i % 64]) exit(3);
  });
}
#endif  // SIMT_RACE

}  // namespace
