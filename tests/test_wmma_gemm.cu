// tests/test_wmma_gemm.cu — the WMMA BF16 GEMM (kernels/wmma_gemm.cuh) against the CPU
// reference GEMM (cpu/blas.h) on the same bf16-rounded inputs in FP32, at the basic preset's
// qkv shape, odd shapes with edge tiles, and K not a multiple of 8 (the synchronous-load path).
// Under simt: in forward and reverse thread order and under two WMMA element-to-lane mappings.
#include <gtest/gtest.h>

#include <vector>

#include "common/error.h"
#include "common/philox.h"
#include "cpu/blas.h"
#include "kernels/wmma_gemm.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_util.h"

namespace {

using vit_test::DeviceBuffer;

// Uniform in [-1, 1), rounded to bf16: the values the GEMM really multiplies.
std::vector<__nv_bfloat16> bf16_values(size_t n, uint64_t seed, std::vector<float>* as_float) {
  std::vector<__nv_bfloat16> v(n);
  as_float->resize(n);
  for (size_t i = 0; i < n; ++i) {
    v[i] = __float2bfloat16(2.0f * vit::philox_uniform(seed, 0x6E33, 0, i) - 1.0f);
    (*as_float)[i] = __bfloat162float(v[i]);
  }
  return v;
}

void check_gemm(int M, int N, int K, bool with_bias, uint64_t seed) {
  std::vector<float> af, bf, bias(N);
  std::vector<__nv_bfloat16> a = bf16_values((size_t)M * K, seed, &af);
  std::vector<__nv_bfloat16> b = bf16_values((size_t)N * K, seed + 1, &bf);
  for (int j = 0; j < N; ++j) bias[j] = 0.25f * (float)(j % 7) - 0.5f;
  // Reference: C = A B^T (+ bias) in FP32.
  std::vector<float> want((size_t)M * N, 0.0f);
  vit::ref::gemm(false, true, M, N, K, 1.0f, af.data(), K, bf.data(), K, 0.0f, want.data(), N);
  if (with_bias)
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) want[(size_t)i * N + j] += bias[j];
  DeviceBuffer<__nv_bfloat16> da(a), db(b);
  DeviceBuffer<float> dbias(bias), dc((size_t)M * N);
  vit_test::for_each_thread_order([&](const char* order) {
    CUDA_CHECK(cudaMemset(dc.ptr, 0xFF, (size_t)M * N * sizeof(float)));  // NaN: every output written
    vit::gemm_nt_bf16_wmma(da.ptr, db.ptr, with_bias ? dbias.ptr : nullptr, dc.ptr, M, N, K, 0);
    // FP32 sums of K products in another order: a few ulps of the sum's magnitude (<= sqrt(K)).
    EXPECT_TRUE(vit_test::allclose(dc.download(), want, 1e-5, 2e-5))
        << order << " M " << M << " N " << N << " K " << K;
  });
}

void check_shapes() {
  check_gemm(130, 576, 192, true, 1);  // basic preset's qkv projection: 2 images x 65 tokens
  check_gemm(17, 24, 40, false, 2);    // one partial tile in every direction
  check_gemm(70, 65, 96, true, 3);     // partial second tiles of M and N, 3 K tiles
  check_gemm(33, 70, 13, true, 4);     // K % 8 != 0: synchronous loads, partial K tile
  check_gemm(1, 1, 1, false, 5);
}

TEST(WmmaGemm, Bf16MatchesReferenceGemm) {
  VIT_REQUIRE_GPU();
#if defined(VIT_SIMT)
  const simt::WmmaMap map = simt::wmma_map();
  const uint64_t seed = simt::wmma_map_seed();
  simt::set_wmma_map(simt::WmmaMap::Scrambled, 3);
  check_shapes();
  simt::set_wmma_map(simt::WmmaMap::Natural);
  check_gemm(70, 65, 96, true, 6);
  simt::set_wmma_map(map, seed);
#else
  check_shapes();
#endif
}

TEST(WmmaGemm, BadSizesThrow) {
  float* c = nullptr;
  EXPECT_THROW(vit::gemm_nt_bf16_wmma(nullptr, nullptr, nullptr, c, 0, 4, 4, 0), vit::Error);
  EXPECT_THROW(vit::gemm_nt_bf16_wmma(nullptr, nullptr, nullptr, c, 4, 4, -1, 0), vit::Error);
}

}  // namespace
