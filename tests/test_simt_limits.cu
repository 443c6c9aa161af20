// tests/test_simt_limits.cu — simt enforces the limits a GPU enforces and computes the intrinsics
// the way a GPU documents them (issue 10, divergences 3-6 and the missing APIs of 7):
//   * __launch_bounds__: a launch above the bound fails, cudaFuncGetAttributes reports it;
//   * static __shared__ bytes count against the 48 KiB / opt-in limits and are reported; a
//     cudaFuncAttributeMaxDynamicSharedMemorySize below a launch's request makes it fail;
//   * a misaligned vector access aborts naming the kernel (a GPU faults);
//   * float -> integer conversions saturate and map NaN to 0 (PTX cvt), __hfma rounds once,
//     __fdividef and __expf follow their documented construction;
//   * cudaLaunchKernel, cudaMallocPitch (+ cudaMemcpy2D), cudaOccupancyMaxPotentialBlockSize,
//     __byte_perm and the half-type shuffles exist and behave as documented.
// Every expected value comes from the CUDA Runtime / Math API / PTX ISA documentation, so the
// nvcc build (build/test_gpu) runs the same checks on a GPU; simt-only aborts are under VIT_SIMT.
#include <gtest/gtest.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/attention.cuh"
#include "kernels/common.cuh"
#include "kernels/layernorm.cuh"
#include "kernels/reduce.cuh"
#include "tests/test_util.h"

namespace {

// A launch without LAUNCH's error check, so a test can look at cudaGetLastError itself.
#if defined(VIT_SIMT)
#define RAW_LAUNCH(kernel, grid, block, smem, ...) \
  simt::launch_kernel(#kernel, __FILE__, __LINE__, kernel, dim3(grid), dim3(block), smem, 0, __VA_ARGS__)
#else
#define RAW_LAUNCH(kernel, grid, block, smem, ...) kernel<<<grid, block, smem>>>(__VA_ARGS__)
#endif

template <class T>
struct Dev {
  T* p = nullptr;
  size_t n;
  explicit Dev(size_t count) : n(count) { CUDA_CHECK(cudaMalloc(&p, n * sizeof(T))); }
  ~Dev() { CUDA_CHECK(cudaFree(p)); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  void fill(T v) {
    std::vector<T> h(n, v);
    CUDA_CHECK(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> get() const {
    std::vector<T> h(n);
    CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

// ---------------------------------------------------------------------------------------------
// __launch_bounds__ (Programming Guide, "Launch Bounds": a launch with more threads per block
// than maxThreadsPerBlock fails). The bound may be any constant expression, template parameters
// included.
__global__ void __launch_bounds__(64) bounded64_kernel(int* out) {
  out[threadIdx.x] = (int)threadIdx.x + 1;
}
template <int N>
__global__ void __launch_bounds__(N * 2, 1) bounded_template_kernel(int* out) {
  out[threadIdx.x] = N;
}
__global__ void unbounded_kernel(int* out) { out[threadIdx.x] = 7; }

TEST(SimtLimits, LaunchBoundsAreReportedByFuncGetAttributes) {
  VIT_REQUIRE_GPU();
  cudaFuncAttributes a;
  CUDA_CHECK(cudaFuncGetAttributes(&a, bounded64_kernel));
  EXPECT_EQ(a.maxThreadsPerBlock, 64);
  CUDA_CHECK(cudaFuncGetAttributes(&a, bounded_template_kernel<48>));
  EXPECT_EQ(a.maxThreadsPerBlock, 96);
  CUDA_CHECK(cudaFuncGetAttributes(&a, bounded_template_kernel<5>));
  EXPECT_EQ(a.maxThreadsPerBlock, 10);
  CUDA_CHECK(cudaFuncGetAttributes(&a, unbounded_kernel));
  EXPECT_EQ(a.maxThreadsPerBlock, 1024);
}

TEST(SimtLimits, LaunchAboveTheBoundFailsWithLaunchOutOfResources) {
  VIT_REQUIRE_GPU();
  Dev<int> out(256);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  out.fill(0);
  RAW_LAUNCH(bounded64_kernel, 1, 64, 0, out.p);  // at the bound: fine
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<int> h = out.get();
  EXPECT_EQ(h[0], 1);
  EXPECT_EQ(h[63], 64);
  EXPECT_EQ(h[64], 0);
  out.fill(0);
  RAW_LAUNCH(bounded64_kernel, 1, 65, 0, out.p);  // one above: the launch must not happen
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchOutOfResources);
  CUDA_CHECK(cudaDeviceSynchronize());
  h = out.get();
  EXPECT_EQ(h[0], 0) << "the kernel ran although its launch failed";
  RAW_LAUNCH(bounded64_kernel, 1, dim3(8, 9), 0, out.p);  // 72 threads as a 2-D block
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchOutOfResources);
  RAW_LAUNCH((bounded_template_kernel<48>), 1, 96, 0, out.p);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  RAW_LAUNCH((bounded_template_kernel<48>), 1, 128, 0, out.p);
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchOutOfResources);
  RAW_LAUNCH(unbounded_kernel, 1, 256, 0, out.p);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  CUDA_CHECK(cudaDeviceSynchronize());
}

// ---------------------------------------------------------------------------------------------
// Static shared memory: sharedSizeBytes reports it; static + dynamic bytes must fit the limit
// (48 KiB without opting in; cudaFuncAttributeMaxDynamicSharedMemorySize + static <= the opt-in
// maximum); a launch asking more dynamic bytes than that attribute fails.
__global__ void static_smem_kernel(float* out) {
  __shared__ float a[1000];  // 4000 bytes
  __shared__ int b[24];      //   96 bytes
  a[threadIdx.x] = (float)threadIdx.x;
  b[threadIdx.x % 24] = (int)threadIdx.x;
  __syncthreads();
  if (threadIdx.x == 0) out[0] = a[999] + (float)b[23];
}
template <int N>
__global__ void static_smem_template_kernel(float* out) {
  __shared__ double s[N];
  s[threadIdx.x] = 1.0;
  __syncthreads();
  if (threadIdx.x == 0) out[0] = (float)s[N - 1];
}
constexpr int kBigStatic = 40 * 1024;
__global__ void big_static_smem_kernel(float* out) {
  __shared__ unsigned char s[kBigStatic];
  VIT_DYNAMIC_SMEM(unsigned char, dyn);
  s[threadIdx.x] = 1;
  s[kBigStatic - 1 - threadIdx.x] = 1;
  dyn[0] = 2;
  __syncthreads();
  if (threadIdx.x == 0) out[0] = (float)(s[kBigStatic - 1] + s[0] + dyn[0]);
}

TEST(SimtLimits, StaticSharedBytesAreReported) {
  VIT_REQUIRE_GPU();
  cudaFuncAttributes a;
  CUDA_CHECK(cudaFuncGetAttributes(&a, static_smem_kernel));
  EXPECT_EQ(a.sharedSizeBytes, 4096u);
  CUDA_CHECK(cudaFuncGetAttributes(&a, static_smem_template_kernel<100>));
  EXPECT_EQ(a.sharedSizeBytes, 800u);
  CUDA_CHECK(cudaFuncGetAttributes(&a, static_smem_template_kernel<3>));
  EXPECT_EQ(a.sharedSizeBytes, 24u);
  CUDA_CHECK(cudaFuncGetAttributes(&a, big_static_smem_kernel));
  EXPECT_EQ(a.sharedSizeBytes, (size_t)kBigStatic);
  EXPECT_LE(a.maxDynamicSharedSizeBytes, 48 * 1024 - kBigStatic);
  CUDA_CHECK(cudaFuncGetAttributes(&a, unbounded_kernel));
  EXPECT_EQ(a.sharedSizeBytes, 0u);
}

TEST(SimtLimits, StaticPlusDynamicSharedMemoryMustFit) {
  VIT_REQUIRE_GPU();
  Dev<float> out(1);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const int rest = 48 * 1024 - kBigStatic;  // 8 KiB: what the static part leaves
  RAW_LAUNCH(big_static_smem_kernel, 1, 32, rest, out.p);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  CUDA_CHECK(cudaDeviceSynchronize());
  // 40 KiB static + 8 KiB + 4 bytes dynamic > 48 KiB: fails without opting in.
  RAW_LAUNCH(big_static_smem_kernel, 1, 32, rest + 4, out.p);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  // Opting in to 16 KiB of dynamic memory (56 KiB in all) makes it launch.
  CUDA_CHECK(cudaFuncSetAttribute(big_static_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  16 * 1024));
  RAW_LAUNCH(big_static_smem_kernel, 1, 32, 16 * 1024, out.p);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(out.get()[0], 4.0f);
  // The attribute plus the static bytes may not exceed the opt-in maximum.
  int optin = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
  EXPECT_EQ(cudaFuncSetAttribute(big_static_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 optin - kBigStatic + 1),
            cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  // Lowered below what a launch asks, the attribute makes that launch fail, even though the
  // total would fit in 48 KiB.
  CUDA_CHECK(cudaFuncSetAttribute(big_static_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 1024));
  RAW_LAUNCH(big_static_smem_kernel, 1, 32, 2048, out.p);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  RAW_LAUNCH(big_static_smem_kernel, 1, 32, 1024, out.p);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  CUDA_CHECK(cudaDeviceSynchronize());
  cudaFuncAttributes a;
  CUDA_CHECK(cudaFuncGetAttributes(&a, big_static_smem_kernel));
  EXPECT_EQ(a.maxDynamicSharedSizeBytes, 1024);
}

// The project's kernels, as declared in kernels/: static kernels of headers that several
// translation units include (each has its own copy) and template instantiations.
TEST(SimtLimits, ProjectKernelsReportTheirBoundsAndStaticSharedMemory) {
  VIT_REQUIRE_GPU();
  cudaFuncAttributes a;
  CUDA_CHECK(cudaFuncGetAttributes(&a, vit::layernorm_forward_kernel<true, float>));
  EXPECT_EQ(a.maxThreadsPerBlock, vit::LN_WARPS * 32);
  EXPECT_EQ(a.sharedSizeBytes, 0u);
  CUDA_CHECK(cudaFuncGetAttributes(&a, vit::layernorm_backward_dwdb_partial_kernel));
  EXPECT_EQ(a.maxThreadsPerBlock, 256);
  EXPECT_EQ(a.sharedSizeBytes, 2u * 8 * 33 * sizeof(float));  // acc_w, acc_b
  CUDA_CHECK(cudaFuncGetAttributes(&a, vit::colsum_partial_kernel));
  EXPECT_EQ(a.sharedSizeBytes, 8u * 33 * sizeof(float));
  CUDA_CHECK(cudaFuncGetAttributes(&a, vit::attn_detail::attention_forward_kernel<64, float>));
  EXPECT_EQ(a.maxThreadsPerBlock, vit::attn_detail::kRows * (64 / vit::attn_detail::kFeat));
  CUDA_CHECK(cudaFuncGetAttributes(&a, vit::attn_detail::attention_backward_dq_kernel<16, float>));
  EXPECT_EQ(a.maxThreadsPerBlock, vit::attn_detail::kRows * (16 / vit::attn_detail::kFeat));
}

// ---------------------------------------------------------------------------------------------
// Conversion intrinsics (PTX cvt.{rni,rzi,rpi,rmi}.{s32,u32,s64,u64}.f32/f64: "saturates to the
// destination range; NaN converts to 0").
__global__ void conversions_kernel(const float* x, int n, int* i32, unsigned* u32, long long* i64,
                                   unsigned long long* u64, const double* d, int* di32,
                                   unsigned* du32) {
  for (int k = 0; k < n; ++k) {
    const float v = x[k];
    i32[4 * k + 0] = __float2int_rn(v);
    i32[4 * k + 1] = __float2int_rz(v);
    i32[4 * k + 2] = __float2int_ru(v);
    i32[4 * k + 3] = __float2int_rd(v);
    u32[4 * k + 0] = __float2uint_rn(v);
    u32[4 * k + 1] = __float2uint_rz(v);
    u32[4 * k + 2] = __float2uint_ru(v);
    u32[4 * k + 3] = __float2uint_rd(v);
    i64[4 * k + 0] = __float2ll_rn(v);
    i64[4 * k + 1] = __float2ll_rz(v);
    i64[4 * k + 2] = __float2ll_ru(v);
    i64[4 * k + 3] = __float2ll_rd(v);
    u64[4 * k + 0] = __float2ull_rn(v);
    u64[4 * k + 1] = __float2ull_rz(v);
    u64[4 * k + 2] = __float2ull_ru(v);
    u64[4 * k + 3] = __float2ull_rd(v);
    di32[2 * k + 0] = __double2int_rn(d[k]);
    du32[2 * k + 0] = __double2uint_rz(d[k]);
    di32[2 * k + 1] = __double2int_rd(d[k]);
    du32[2 * k + 1] = __double2uint_ru(d[k]);
  }
}

TEST(SimtLimits, FloatToIntegerConversionsSaturateAndMapNaNToZero) {
  VIT_REQUIRE_GPU();
  const float inf = INFINITY, nan = NAN;
  const std::vector<float> x = {2.5f, -2.5f, 3.5f, -0.5f, 0.75f, nan, inf, -inf, 3e9f, -3e9f,
                                5e9f, 1e19f, 2e19f, -1e19f, -1.0f};
  const std::vector<double> d = {2.5, -1.5, 3e9, -3e9, (double)NAN, 4294967295.5, -0.25,
                                 1e300, 2147483646.5, -2147483648.5, 7.0, -7.25, 0.0, 5e9, 1.0};
  const int n = (int)x.size();
  const long long LL_MAX = LLONG_MAX, LL_MIN = LLONG_MIN;
  const unsigned long long ULL_MAX = ULLONG_MAX;
  // Hand-derived: round (rn = to nearest even, rz = toward 0, ru = up, rd = down), then clamp.
  const int ei[][4] = {{2, 2, 3, 2},       {-2, -2, -2, -3},  {4, 3, 4, 3},    {0, 0, 0, -1},
                       {1, 0, 1, 0},       {0, 0, 0, 0},      {INT_MAX, INT_MAX, INT_MAX, INT_MAX},
                       {INT_MIN, INT_MIN, INT_MIN, INT_MIN},  {INT_MAX, INT_MAX, INT_MAX, INT_MAX},
                       {INT_MIN, INT_MIN, INT_MIN, INT_MIN},  {INT_MAX, INT_MAX, INT_MAX, INT_MAX},
                       {INT_MAX, INT_MAX, INT_MAX, INT_MAX},  {INT_MAX, INT_MAX, INT_MAX, INT_MAX},
                       {INT_MIN, INT_MIN, INT_MIN, INT_MIN},  {-1, -1, -1, -1}};
  const unsigned U = UINT_MAX;
  const unsigned eu[][4] = {{2, 2, 3, 2}, {0, 0, 0, 0}, {4, 3, 4, 3}, {0, 0, 0, 0}, {1, 0, 1, 0},
                            {0, 0, 0, 0}, {U, U, U, U}, {0, 0, 0, 0}, {3000000000u, 3000000000u, 3000000000u, 3000000000u},
                            {0, 0, 0, 0}, {U, U, U, U}, {U, U, U, U}, {U, U, U, U}, {0, 0, 0, 0},
                            {0, 0, 0, 0}};
  const long long e9 = 3000000000LL, f9 = 5000000000LL;  // 3e9f and 5e9f are exact in float
  const long long el[][4] = {{2, 2, 3, 2},         {-2, -2, -2, -3},     {4, 3, 4, 3},      {0, 0, 0, -1},
                             {1, 0, 1, 0},         {0, 0, 0, 0},         {LL_MAX, LL_MAX, LL_MAX, LL_MAX},
                             {LL_MIN, LL_MIN, LL_MIN, LL_MIN},           {e9, e9, e9, e9},
                             {-e9, -e9, -e9, -e9}, {f9, f9, f9, f9},     {LL_MAX, LL_MAX, LL_MAX, LL_MAX},
                             {LL_MAX, LL_MAX, LL_MAX, LL_MAX},           {LL_MIN, LL_MIN, LL_MIN, LL_MIN},
                             {-1, -1, -1, -1}};
  const unsigned long long u19 = 9999999980506447872ULL;  // 1e19f exactly: above LLONG_MAX, below 2^64
  const unsigned long long eul[][4] = {{2, 2, 3, 2}, {0, 0, 0, 0}, {4, 3, 4, 3}, {0, 0, 0, 0},
                                       {1, 0, 1, 0}, {0, 0, 0, 0}, {ULL_MAX, ULL_MAX, ULL_MAX, ULL_MAX},
                                       {0, 0, 0, 0}, {3000000000ULL, 3000000000ULL, 3000000000ULL, 3000000000ULL},
                                       {0, 0, 0, 0}, {5000000000ULL, 5000000000ULL, 5000000000ULL, 5000000000ULL},
                                       {u19, u19, u19, u19}, {ULL_MAX, ULL_MAX, ULL_MAX, ULL_MAX},
                                       {0, 0, 0, 0}, {0, 0, 0, 0}};
  // double: {__double2int_rn, __double2int_rd} and {__double2uint_rz, __double2uint_ru}.
  const int edi[][2] = {{2, 2},          {-2, -2},         {INT_MAX, INT_MAX}, {INT_MIN, INT_MIN},
                        {0, 0},          {INT_MAX, INT_MAX}, {0, -1},          {INT_MAX, INT_MAX},
                        {2147483646, 2147483646}, {INT_MIN, INT_MIN}, {7, 7}, {-7, -8}, {0, 0},
                        {INT_MAX, INT_MAX}, {1, 1}};
  const unsigned edu[][2] = {{2, 3}, {0, 0}, {3000000000u, 3000000000u}, {0, 0}, {0, 0},
                             {4294967295u, U}, {0, 0}, {U, U}, {2147483646u, 2147483647u}, {0, 0},
                             {7, 7}, {0, 0}, {0, 0}, {U, U}, {1, 1}};
  Dev<float> dx(n);
  CUDA_CHECK(cudaMemcpy(dx.p, x.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  Dev<double> dd(n);
  CUDA_CHECK(cudaMemcpy(dd.p, d.data(), n * sizeof(double), cudaMemcpyHostToDevice));
  Dev<int> i32(4 * n), di32(2 * n);
  Dev<unsigned> u32(4 * n), du32(2 * n);
  Dev<long long> i64(4 * n);
  Dev<unsigned long long> u64(4 * n);
  LAUNCH(conversions_kernel, 1, 1, 0, 0, dx.p, n, i32.p, u32.p, i64.p, u64.p, dd.p, di32.p, du32.p);
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto hi = i32.get();
  const auto hu = u32.get();
  const auto hl = i64.get();
  const auto hul = u64.get();
  const auto hdi = di32.get();
  const auto hdu = du32.get();
  const char* mode[] = {"rn", "rz", "ru", "rd"};
  for (int k = 0; k < n; ++k) {
    for (int m = 0; m < 4; ++m) {
      EXPECT_EQ(hi[4 * k + m], ei[k][m]) << "__float2int_" << mode[m] << "(" << x[k] << ")";
      EXPECT_EQ(hu[4 * k + m], eu[k][m]) << "__float2uint_" << mode[m] << "(" << x[k] << ")";
      EXPECT_EQ(hl[4 * k + m], el[k][m]) << "__float2ll_" << mode[m] << "(" << x[k] << ")";
      EXPECT_EQ(hul[4 * k + m], eul[k][m]) << "__float2ull_" << mode[m] << "(" << x[k] << ")";
    }
    EXPECT_EQ(hdi[2 * k], edi[k][0]) << "__double2int_rn(" << d[k] << ")";
    EXPECT_EQ(hdi[2 * k + 1], edi[k][1]) << "__double2int_rd(" << d[k] << ")";
    EXPECT_EQ(hdu[2 * k], edu[k][0]) << "__double2uint_rz(" << d[k] << ")";
    EXPECT_EQ(hdu[2 * k + 1], edu[k][1]) << "__double2uint_ru(" << d[k] << ")";
  }
}

// ---------------------------------------------------------------------------------------------
// __hfma rounds once (fma.rn.f16 / fma.rn.bf16). Each case has an exact a*b + c just off a tie of
// the 16-bit format, closer to it than half a float ulp: rounding to float first lands exactly on
// the tie, and the second rounding (to even) goes the wrong way.
//   half: a = 1070/1024, b = 1960 * 2^-22, c = 1: a*b = (2^21 + 48) * 2^-32, so a*b + c =
//         1 + 2^-11 + 48 * 2^-32, just above the tie between 1 and 1 + 2^-10: 1 + 2^-10.
//   bf16: a = 129/128, b = 1.5, c = -2^-30: a*b = 387/256 is the tie between 193/128 and 194/128,
//         and c pulls the exact value just below it: 193/128.
__global__ void hfma_kernel(float* out) {
  const __half h = __hfma(__float2half(1070.0f / 1024.0f), __float2half(1960.0f * 0x1p-22f),
                          __float2half(1.0f));
  const __nv_bfloat16 b = __hfma(__float2bfloat16(129.0f / 128.0f), __float2bfloat16(1.5f),
                                 __float2bfloat16(-0x1p-30f));
  const __half2 h2 = __hfma2(__floats2half2_rn(1070.0f / 1024.0f, 1.0f),
                             __floats2half2_rn(1960.0f * 0x1p-22f, 2.0f), __floats2half2_rn(1.0f, 0.5f));
  out[0] = __half2float(h);
  out[1] = __bfloat162float(b);
  out[2] = __low2float(h2);
  out[3] = __high2float(h2);
}

TEST(SimtLimits, HalfFmaRoundsOnce) {
  VIT_REQUIRE_GPU();
  // The inputs are exact in their formats (the derivation above depends on it).
  ASSERT_EQ(__half2float(__float2half(1960.0f * 0x1p-22f)), 1960.0f * 0x1p-22f);
  ASSERT_EQ(__half2float(__float2half(1070.0f / 1024.0f)), 1070.0f / 1024.0f);
  ASSERT_EQ(__bfloat162float(__float2bfloat16(129.0f / 128.0f)), 129.0f / 128.0f);
  Dev<float> out(4);
  LAUNCH(hfma_kernel, 1, 1, 0, 0, out.p);
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto h = out.get();
  EXPECT_EQ(h[0], 1.0f + 0x1p-10f);
  EXPECT_EQ(h[1], 193.0f / 128.0f);
  EXPECT_EQ(h[2], 1.0f + 0x1p-10f);
  EXPECT_EQ(h[3], 2.5f);
}

// ---------------------------------------------------------------------------------------------
// __fdividef (CUDA Math API: "for 2^126 < |y| < 2^128, __fdividef(x, y) delivers a result of zero,
// ... if x is infinity, __fdividef delivers NaN"; max 2 ulp for 2^-126 <= |y| <= 2^126) and
// __expf (computed as ex2.approx(x * log2(e)): the product is rounded to float, so the result is
// within ex2.approx's 2 ulp of 2^fl(x * log2 e), not of e^x).
__global__ void fast_math_kernel(const float* x, const float* y, int n, float* q, const float* ex,
                                 int m, float* e) {
  for (int i = 0; i < n; ++i) q[i] = __fdividef(x[i], y[i]);
  for (int i = 0; i < m; ++i) e[i] = __expf(ex[i]);
}

double ulp_of(double v) { return std::ldexp(1.0, std::ilogb(v) - 23); }

TEST(SimtLimits, FastDivideAndExpFollowTheDocumentedConstruction) {
  VIT_REQUIRE_GPU();
  const float big = 0x1p127f;
  const std::vector<float> x = {1.0f, INFINITY, -3.0f, 1e30f, 1.0f, INFINITY, 7.0f, 1.0f};
  const std::vector<float> y = {big, big, -big, 0x1p126f, 3.0f, 2.0f, INFINITY, -0x1.fffffep127f};
  const int n = (int)x.size();
  // exp arguments where rounding x * log2(e) to float moves e^x by many ulps.
  const std::vector<float> ex = {60.0f, 87.0f, 50.0f, -1.0f};
  const int m = (int)ex.size();
  Dev<float> dx(n), dy(n), dq(n), dex(m), de(m);
  CUDA_CHECK(cudaMemcpy(dx.p, x.data(), n * 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dy.p, y.data(), n * 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dex.p, ex.data(), m * 4, cudaMemcpyHostToDevice));
  LAUNCH(fast_math_kernel, 1, 1, 0, 0, dx.p, dy.p, n, dq.p, dex.p, m, de.p);
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto q = dq.get();
  EXPECT_EQ(q[0], 0.0f);  // 1 / 2^127: 2^-127 as an IEEE division, 0 here
  EXPECT_TRUE(std::isnan(q[1])) << q[1];  // inf / 2^127: NaN instead of inf
  EXPECT_EQ(q[2], 0.0f);
  EXPECT_FALSE(std::signbit(q[2]));  // -3 / -2^127: +0
  EXPECT_NEAR(q[3], 1e30 / std::ldexp(1.0, 126), 2 * ulp_of(1e30 / std::ldexp(1.0, 126)));  // |y| = 2^126: still a division
  EXPECT_NEAR(q[4], 1.0 / 3.0, 2 * ulp_of(1.0 / 3.0));
  EXPECT_EQ(q[5], INFINITY);
  EXPECT_EQ(q[6], 0.0f);
  EXPECT_EQ(q[7], 0.0f);
  EXPECT_TRUE(std::signbit(q[7]));
  const auto e = de.get();
  const float log2e = 1.44269504088896341f;  // 0x3FB8AA3B, the constant the GPU multiplies by
  for (int i = 0; i < m; ++i) {
    const float p = ex[i] * log2e;  // rounded to float, as on the GPU
    const double ref = std::exp2((double)p);
    if (i < 3) {  // the premise: e^x itself is far from 2^fl(x log2 e) for these arguments
      ASSERT_GT(std::fabs(std::exp((double)ex[i]) - ref), 8 * ulp_of(ref)) << ex[i];
    }
    EXPECT_LE(std::fabs((double)e[i] - ref), 2 * ulp_of(ref)) << "__expf(" << ex[i] << ")";
  }
}

// ---------------------------------------------------------------------------------------------
// __byte_perm (CUDA Math API: result byte n is byte (s >> 4n) & 7 of {y, x}, x the low bytes).
__global__ void byte_perm_kernel(unsigned* out) {
  const unsigned x = 0x33221100u, y = 0x77665544u;
  out[0] = __byte_perm(x, y, 0x3210);  // x
  out[1] = __byte_perm(x, y, 0x7654);  // y
  out[2] = __byte_perm(x, y, 0x0123);  // x byte-reversed
  out[3] = __byte_perm(x, y, 0x5410);  // low halves interleaved
  out[4] = __byte_perm(x, y, 0x8888);  // only the low 3 bits of each selector count: byte 0
}

TEST(SimtLimits, BytePerm) {
  VIT_REQUIRE_GPU();
  Dev<unsigned> out(5);
  LAUNCH(byte_perm_kernel, 1, 1, 0, 0, out.p);
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto h = out.get();
  EXPECT_EQ(h[0], 0x33221100u);
  EXPECT_EQ(h[1], 0x77665544u);
  EXPECT_EQ(h[2], 0x00112233u);
  EXPECT_EQ(h[3], 0x55441100u);
  EXPECT_EQ(h[4], 0x00000000u);
}

// ---------------------------------------------------------------------------------------------
// Shuffles of __half, __half2, __nv_bfloat16 and __nv_bfloat162 (cuda_fp16.h / cuda_bf16.h
// declare __shfl*_sync overloads for all four).
__global__ void half_shuffle_kernel(float* out) {
  const unsigned lane = threadIdx.x;
  const __half2 h2 = __floats2half2_rn((float)lane, (float)lane + 0.5f);
  const __nv_bfloat162 b2 = __floats2bfloat162_rn((float)lane * 2.0f, -(float)lane);
  const __half h = __float2half((float)lane * 4.0f);
  const __nv_bfloat16 b = __float2bfloat16((float)lane + 100.0f);
  const __half2 rh2 = __shfl_xor_sync(0xffffffffu, h2, 1);
  const __nv_bfloat162 rb2 = __shfl_down_sync(0xffffffffu, b2, 2);
  const __half rh = __shfl_sync(0xffffffffu, h, 5);
  const __nv_bfloat16 rb = __shfl_up_sync(0xffffffffu, b, 3);
  out[6 * lane + 0] = __low2float(rh2);
  out[6 * lane + 1] = __high2float(rh2);
  out[6 * lane + 2] = __low2float(rb2);
  out[6 * lane + 3] = __high2float(rb2);
  out[6 * lane + 4] = __half2float(rh);
  out[6 * lane + 5] = __bfloat162float(rb);
}

TEST(SimtLimits, ShufflesOfHalfTypes) {
  VIT_REQUIRE_GPU();
  Dev<float> out(6 * 32);
  LAUNCH(half_shuffle_kernel, 1, 32, 0, 0, out.p);
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto h = out.get();
  for (int l = 0; l < 32; ++l) {
    const int x = l ^ 1, d = l + 2 < 32 ? l + 2 : l, u = l >= 3 ? l - 3 : l;
    EXPECT_EQ(h[6 * l + 0], (float)x) << l;
    EXPECT_EQ(h[6 * l + 1], (float)x + 0.5f) << l;
    EXPECT_EQ(h[6 * l + 2], (float)d * 2.0f) << l;
    EXPECT_EQ(h[6 * l + 3], -(float)d) << l;
    EXPECT_EQ(h[6 * l + 4], 20.0f) << l;
    EXPECT_EQ(h[6 * l + 5], (float)u + 100.0f) << l;
  }
}

// ---------------------------------------------------------------------------------------------
// cudaLaunchKernel: args[i] points to the i-th argument; configuration errors are returned.
__global__ void axpb_kernel(float* y, const float* x, float a, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + 1.0f;
}

TEST(SimtLimits, LaunchKernelUnpacksArguments) {
  VIT_REQUIRE_GPU();
  const int n = 100;
  Dev<float> x(n), y(n);
  x.fill(2.0f);
  float* yp = y.p;
  const float* xp = x.p;
  float a = 3.0f;
  int nn = n;
  void* args[] = {&yp, &xp, &a, &nn};
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaLaunchKernel(axpb_kernel, dim3(4), dim3(32), args, 0, 0), cudaSuccess);
  CUDA_CHECK(cudaDeviceSynchronize());
  for (float v : y.get()) ASSERT_EQ(v, 7.0f);
  // Through the C entry point, with the kernel as a const void*.
  a = -1.0f;
  EXPECT_EQ(cudaLaunchKernel((const void*)axpb_kernel, dim3(1), dim3(128), args, 0, 0), cudaSuccess);
  CUDA_CHECK(cudaDeviceSynchronize());
  for (float v : y.get()) ASSERT_EQ(v, -1.0f);
  // A bad configuration is the return value (and the last error), and nothing runs.
  a = 5.0f;
  EXPECT_EQ(cudaLaunchKernel(axpb_kernel, dim3(1), dim3(2000), args, 0, 0),
            cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaLaunchKernel(bounded64_kernel, dim3(1), dim3(128), args, 0, 0),
            cudaErrorLaunchOutOfResources);
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchOutOfResources);
  CUDA_CHECK(cudaDeviceSynchronize());
  for (float v : y.get()) ASSERT_EQ(v, -1.0f);
}

// ---------------------------------------------------------------------------------------------
// cudaMallocPitch + cudaMemcpy2D: rows of `width` bytes at a pitch >= width.
__global__ void pitched_kernel(float* m, size_t pitch, int w, int h) {
  const int c = threadIdx.x, r = blockIdx.x;
  if (c < w && r < h) {
    float* row = reinterpret_cast<float*>(reinterpret_cast<char*>(m) + r * pitch);
    row[c] += 1000.0f * r;
  }
}

TEST(SimtLimits, MallocPitchAndMemcpy2D) {
  VIT_REQUIRE_GPU();
  const int w = 25, h = 7;  // 100-byte rows
  float* d = nullptr;
  size_t pitch = 0;
  CUDA_CHECK(cudaMallocPitch((void**)&d, &pitch, w * sizeof(float), h));
  EXPECT_GE(pitch, w * sizeof(float));
  EXPECT_EQ(pitch % sizeof(float), 0u);
  std::vector<float> host(w * h);
  for (int i = 0; i < w * h; ++i) host[i] = (float)i;
  CUDA_CHECK(cudaMemcpy2D(d, pitch, host.data(), w * sizeof(float), w * sizeof(float), h,
                          cudaMemcpyHostToDevice));
  LAUNCH(pitched_kernel, h, 32, 0, 0, d, pitch, w, h);
  // Back into a host buffer with a wider pitch (30 floats), leaving its padding alone.
  std::vector<float> back(30 * h, -5.0f);
  CUDA_CHECK(cudaMemcpy2D(back.data(), 30 * sizeof(float), d, pitch, w * sizeof(float), h,
                          cudaMemcpyDeviceToHost));
  for (int r = 0; r < h; ++r)
    for (int c = 0; c < 30; ++c)
      ASSERT_EQ(back[r * 30 + c], c < w ? (float)(r * w + c) + 1000.0f * r : -5.0f) << r << "," << c;
  // A width wider than either pitch is cudaErrorInvalidPitchValue.
  EXPECT_EQ(cudaMemcpy2D(back.data(), 30 * sizeof(float), d, pitch, pitch + 1, 1,
                         cudaMemcpyDeviceToHost),
            cudaErrorInvalidPitchValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidPitchValue);
  CUDA_CHECK(cudaFree(d));
}

// ---------------------------------------------------------------------------------------------
// cudaOccupancyMaxPotentialBlockSize (the cuda_runtime.h template) respects the launch bound.
TEST(SimtLimits, OccupancyMaxPotentialBlockSize) {
  VIT_REQUIRE_GPU();
  int min_grid = 0, block = 0;
  CUDA_CHECK(cudaOccupancyMaxPotentialBlockSize(&min_grid, &block, bounded64_kernel, 0, 0));
  EXPECT_EQ(block, 64);
  EXPECT_GT(min_grid, 0);
  CUDA_CHECK(cudaOccupancyMaxPotentialBlockSize(&min_grid, &block, axpb_kernel, 0, 0));
  EXPECT_GT(block, 0);
  EXPECT_LE(block, 1024);
  EXPECT_EQ(block % 32, 0);
  EXPECT_GT(min_grid, 0);
  CUDA_CHECK(cudaOccupancyMaxPotentialBlockSize(&min_grid, &block, axpb_kernel, 0, 100));
  EXPECT_LE(block, 100);
  int blocks = -1;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, bounded64_kernel, 128, 0));
  EXPECT_EQ(blocks, 0);  // 128 threads cannot launch at all
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, bounded64_kernel, 64, 0));
  EXPECT_GT(blocks, 0);
}

// ---------------------------------------------------------------------------------------------
#if defined(VIT_SIMT)
// A float4 read through a pointer 4 bytes past a 16-byte boundary: cudaErrorMisalignedAddress on
// a GPU (the realistic bug: reinterpret_cast<const float4*>(p + off) with off % 4 != 0).
__global__ void misaligned_float4_kernel(const float* x, float* y, int off) {
  const float4 v = *reinterpret_cast<const float4*>(x + off);
  y[threadIdx.x] = v.x + v.y + v.z + v.w;
}
__global__ void misaligned_half2_store_kernel(__half* x) {
  *reinterpret_cast<__half2*>(x + 1) = __floats2half2_rn(1.0f, 2.0f);
}
void misaligned_float4(int off) {
  float *x, *y;
  CUDA_CHECK(cudaMalloc(&x, 64 * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&y, 64 * sizeof(float)));
  LAUNCH(misaligned_float4_kernel, 1, 4, 0, 0, x, y, off);
  CUDA_CHECK(cudaFree(x));
  CUDA_CHECK(cudaFree(y));
}
void misaligned_half2() {
  __half* x;
  CUDA_CHECK(cudaMalloc(&x, 64 * sizeof(__half)));
  LAUNCH(misaligned_half2_store_kernel, 1, 1, 0, 0, x);
  CUDA_CHECK(cudaDeviceSynchronize());  // the kernel runs (and faults) when the stream is synchronised
}

// More than 48 KiB of static shared memory does not compile for a GPU: simt aborts at launch.
__global__ void too_much_static_smem_kernel(float* out) {
  __shared__ float s[12 * 1024 + 1];
  s[threadIdx.x] = 1.0f;
  out[0] = s[0];
}
void too_much_static_smem() {
  float* x;
  CUDA_CHECK(cudaMalloc(&x, 4));
  LAUNCH(too_much_static_smem_kernel, 1, 1, 0, 0, x);
}

TEST(SimtLimitsDeathTest, MisalignedVectorAccessesAbortNamingTheKernel) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  misaligned_float4(0);  // aligned: fine
  misaligned_float4(4);
#if defined(__SANITIZE_ADDRESS__)
  // make test-sanitize: the full UBSan of that build reports the access itself and stops (simt's
  // kernel line is the alignment-only mode's).
  EXPECT_DEATH(misaligned_float4(1), "misaligned address.*float4");
  EXPECT_DEATH(misaligned_half2(), "misaligned address.*__half2");
#else
  EXPECT_DEATH(misaligned_float4(1),
               "misaligned address.*float4.*\n.*simt: misaligned access.*kernel misaligned_float4_kernel.*"
               "block \\(0,0,0\\) thread \\(0,0,0\\)");
  EXPECT_DEATH(misaligned_half2(), "misaligned address.*__half2.*\n.*simt: misaligned access.*kernel "
                                   "misaligned_half2_store_kernel");
#endif
}

TEST(SimtLimitsDeathTest, StaticSharedMemoryAbove48KiBAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(too_much_static_smem(), "kernel too_much_static_smem_kernel .*declares 49156 bytes "
                                       "of static __shared__ memory");
}

// The C entry point cannot launch a kernel whose parameter types it never saw.
__global__ void never_launched_kernel(float* x) { x[0] = 1.0f; }
TEST(SimtLimitsDeathTest, LaunchKernelOfUnknownKernelAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  float* x = nullptr;
  void* args[] = {&x};
  EXPECT_DEATH(cudaLaunchKernel((const void*)never_launched_kernel, dim3(1), dim3(1), args, 0, 0),
               "cudaLaunchKernel.*does not know this kernel's parameter types.*never_launched_kernel");
}
#endif  // VIT_SIMT

}  // namespace
