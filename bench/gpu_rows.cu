// bench/gpu_rows.cu — the GPU section of vit_bench: every kernel forward and backward at the
// shapes of the basic preset (batch 64) and vit-b16 (batch 32), the cuBLAS/cuDNN baselines on the
// same shapes, and the whole training step.
//
// Each timing is the median of repeated runs after warm-up, with the L2 cache flushed (a
// memset over twice its size) before every run, timed by cudaEvents on the stream. Every kernel
// declares its FLOPs and the bytes it must move from its shape; achieved GB/s and TFLOP/s are
// compared with the device's peak: bandwidth from the memory clock and bus width, FLOP/s from
// SM count x clock x the architecture's per-SM throughput (table below).
#include <algorithm>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench/gpu_rows.h"
#include "common/cost.h"
#include "common/model.h"
#include "common/params.h"
#include "host/cuda_model.h"
#include "kernels/adam.cuh"
#include "kernels/attention.cuh"
#include "kernels/attention_tc.cuh"
#include "kernels/common.cuh"
#include "kernels/dropout.cuh"
#include "kernels/gelu.cuh"
#include "kernels/gemm_ln.cuh"
#include "kernels/head.cuh"
#include "kernels/input.cuh"
#include "kernels/layernorm.cuh"
#include "kernels/loss.cuh"
#include "kernels/matmul.cuh"
#include "kernels/matmul_lt.cuh"
#include "kernels/precision.cuh"
#include "kernels/patch_embed.cuh"
#if defined(VIT_HAVE_CUDNN)
#include <cudnn.h>
#endif

namespace vit {
namespace {

// FLOP per clock per SM: FP32 on CUDA cores and dense TF32 on tensor cores.
struct ArchPeak { int cc; double fp32, tf32; };
const ArchPeak ARCH_PEAKS[] = {
    {80, 128, 1024},   // A100
    {86, 256, 256},    // RTX 30xx, A40
    {89, 256, 256},    // RTX 40xx, L40
    {90, 256, 2048},   // H100, H200
    {100, 256, 4096},  // B200
    {120, 256, 256},   // RTX 50xx
};

struct Device {
  std::string name;
  int cc = 0, sms = 0, l2 = 0;
  double clock_hz = 0, bw = 0, fp32 = 0, tf32 = 0;
  double bf16 = 0;  // dense BF16 tensor-core FLOP/s: twice TF32's on every part in the table
};

Device query_device() {
  Device d;
  cudaDeviceProp p;
  CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
  d.name = p.name;
  d.cc = p.major * 10 + p.minor;
  d.sms = p.multiProcessorCount;
  int clk_khz = 0, mem_khz = 0, bus = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&clk_khz, cudaDevAttrClockRate, 0));
  CUDA_CHECK(cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, 0));
  CUDA_CHECK(cudaDeviceGetAttribute(&bus, cudaDevAttrGlobalMemoryBusWidth, 0));
  CUDA_CHECK(cudaDeviceGetAttribute(&d.l2, cudaDevAttrL2CacheSize, 0));
  d.clock_hz = clk_khz * 1e3;
  d.bw = 2.0 * mem_khz * 1e3 * bus / 8;  // double data rate
  const ArchPeak* best = &ARCH_PEAKS[0];
  for (const ArchPeak& a : ARCH_PEAKS)
    if (a.cc <= d.cc) best = &a;  // the nearest architecture at or below
  d.fp32 = d.sms * d.clock_hz * best->fp32;
  d.tf32 = d.sms * d.clock_hz * best->tf32;
  d.bf16 = 2 * d.tf32;
  return d;
}

// Median milliseconds of f() over `reps` runs after `warm` runs, flushing L2 before each run.
struct Timer {
  cudaStream_t st;
  void* flush = nullptr;
  size_t flush_bytes = 0;
  cudaEvent_t a, b;
  Timer(cudaStream_t s, int l2) : st(s) {
    flush_bytes = std::max(2 * (size_t)l2, (size_t)8 << 20);
    CUDA_CHECK(cudaMalloc(&flush, flush_bytes));
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
  }
  ~Timer() { cudaFree(flush); cudaEventDestroy(a); cudaEventDestroy(b); }
  double ms(const std::function<void()>& f, int reps, int warm = 2) {
    for (int i = 0; i < warm; ++i) f();
    std::vector<float> t;
    for (int i = 0; i < reps; ++i) {
      CUDA_CHECK(cudaMemsetAsync(flush, i & 0xff, flush_bytes, st));
      CUDA_CHECK(cudaEventRecord(a, st));
      f();
      CUDA_CHECK(cudaEventRecord(b, st));
      CUDA_CHECK(cudaEventSynchronize(b));
      float x = 0;
      CUDA_CHECK(cudaEventElapsedTime(&x, a, b));
      t.push_back(x);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

// A device buffer of n floats filled with small values (random-ish, deterministic).
__global__ void __launch_bounds__(256) fill_kernel(float* p, size_t n, float scale) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i < n) p[i] = scale * (float)((int)((i * 2654435761u) % 2001u) - 1000) / 1000.0f;
}
__global__ void __launch_bounds__(256) fill_bf16_kernel(__nv_bfloat16* p, size_t n, float scale) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i < n) p[i] = __float2bfloat16(scale * (float)((int)((i * 2654435761u) % 2001u) - 1000) / 1000.0f);
}
struct BufH {  // the same, in bf16
  __nv_bfloat16* p = nullptr;
  BufH(size_t n, cudaStream_t st, float scale = 0.1f) {
    CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(__nv_bfloat16)));
    LAUNCH(fill_bf16_kernel, ceil_div(std::max<size_t>(n, 1), 256), 256, 0, st, p, n, scale);
  }
  ~BufH() { cudaFree(p); }
};
struct Buf {
  float* p = nullptr;
  Buf(size_t n, cudaStream_t st, float scale = 0.1f) {
    CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(float)));
    LAUNCH(fill_kernel, ceil_div(std::max<size_t>(n, 1), 256), 256, 0, st, p, n, scale);
  }
  ~Buf() { cudaFree(p); }
};
// The same in BF16 (--precision bf16 operands): filled, then rounded on the device.
struct Buf16 {
  bf16* p = nullptr;
  Buf16(size_t n, cudaStream_t st, float scale = 0.1f) {
    Buf f(n, st, scale);
    CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(bf16)));
    to_bf16(st, f.p, p, std::max<size_t>(n, 1));
    CUDA_CHECK(cudaStreamSynchronize(st));  // f is freed on return
  }
  ~Buf16() { cudaFree(p); }
};

struct Ctx {
  Device dev;
  cudaStream_t st;
  cublasHandle_t h;
  cublasLtHandle_t lt;
  Timer* timer;
  int reps;
  std::vector<BenchRow>* rows;
  // One row: `flops` and `bytes` declared from the shape; compute-bound rows are judged
  // against the TF32 (tensor) or FP32 peak, memory-bound ones against bandwidth.
  void row(const std::string& name, const std::string& shape, double flops, double bytes,
           bool tensor, const std::function<void()>& f, const std::string& note = "") {
    BenchRow r;
    r.section = "kernel";
    r.name = name;
    r.shape = shape;
    r.ms = timer->ms(f, reps);
    double s = r.ms * 1e-3;
    r.gbps = bytes / s / 1e9;
    r.tflops = flops / s / 1e12;
    double pf = flops / s / (tensor ? dev.tf32 : dev.fp32), pb = bytes / s / dev.bw;
    r.pct_peak = 100 * std::max(pf, pb);
    r.note = note.empty() ? (pf > pb ? (tensor ? "of TF32 peak" : "of FP32 peak") : "of DRAM peak")
                          : note;
    rows->push_back(r);
  }
  // A BF16 tensor-core row: compute judged against the dense BF16 peak.
  void row_bf16(const std::string& name, const std::string& shape, double flops, double bytes,
                const std::function<void()>& f, const std::string& note = "") {
    row(name, shape, flops, bytes, true, f, note);
    BenchRow& r = rows->back();
    const double s = r.ms * 1e-3, pf = flops / s / dev.bf16, pb = bytes / s / dev.bw;
    r.pct_peak = 100 * std::max(pf, pb);
    if (note.empty()) r.note = pf > pb ? "of BF16 peak" : "of DRAM peak";
  }
};

// Row-major y (N,out) = x (N,in) W^T with cuBLAS alone: the baseline of our matmul layer.
void cublas_linear(cublasHandle_t h, const float* x, const float* w, float* y, int N, int in,
                   int out) {
  const float one = 1, zero = 0;
  CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, out, N, in, &one, w, in, x, in, &zero, y,
                           out));
}

void bench_preset(Ctx& cx, const std::string& pname, int B) {
  Config c = preset(pname);
  const int T = c.tokens(), C = c.hidden, M = c.mlp, NH = c.heads, K = c.classes;
  const int R = c.image_size, P = c.patch_dim(), Np = c.patches();
  const size_t N = (size_t)B * T;
  cudaStream_t st = cx.st;
  auto shp = [&](const std::string& s) { return pname + " " + s; };
  char sb[128];

  // input: uint8 (B,3,32,32) -> float (B,3,R,R)
  {
    uint8_t* img;
    CUDA_CHECK(cudaMalloc(&img, (size_t)B * 3 * 32 * 32));
    CUDA_CHECK(cudaMemsetAsync(img, 7, (size_t)B * 3 * 32 * 32, st));
    Buf out((size_t)B * 3 * R * R, st);
    InputSpec in;
    in.augment = Augment::CropFlip;
    snprintf(sb, sizeof sb, "B=%d 32->%d", B, R);
    cx.row("input (crop-flip, resize)", shp(sb), 0, B * 3 * 32 * 32 + 4.0 * B * 3 * R * R, false,
           [&] { input_forward(st, img, B, in, c, true, 1, 1, out.p); });
    CUDA_CHECK(cudaFree(img));
  }
  // patch embedding
  {
    Buf x((size_t)B * 3 * R * R, st), w((size_t)C * P, st), b(C, st), cls(C, st), pos((size_t)T * C, st);
    Buf cols((size_t)B * Np * P, st), out(N * C, st), dw((size_t)C * P, st), db(C, st),
        dcls(C, st), dpos((size_t)T * C, st);
    Buf scratch(patch_embed_scratch_floats(B, 3, R, c.patch_size, C), st);
    double fl = 2.0 * B * Np * P * C;
    snprintf(sb, sizeof sb, "B=%d N=%d P=%d C=%d", B, Np, P, C);
    cx.row("patch_embed fwd", shp(sb), fl, 4.0 * (B * 3.0 * R * R + 2.0 * B * Np * P + N * C), true,
           [&] { patch_embed_forward(cx.h, st, x.p, w.p, b.p, cls.p, pos.p, cols.p, out.p, B, 3, R,
                                     c.patch_size, C); });
    cx.row("patch_embed bwd", shp(sb), fl, 4.0 * (B * Np * P + N * C), true,
           [&] { patch_embed_backward(cx.h, st, out.p, cols.p, dw.p, db.p, dcls.p, dpos.p,
                                      scratch.p, B, 3, R, c.patch_size, C); });
    {
      // what the model runs: the epilogue, the embedding dropout and layer 0's LN1 in one kernel
      Buf lnw(C, st), lnb(C, st), y(N * C, st), mean(N, st), rstd(N, st);
      Buf16 y16(N * C, st);
      cx.row("patch_embed fwd + dropout + ln1", shp(sb), fl,
             4.0 * (B * 3.0 * R * R + 2.0 * B * Np * P + 3.0 * N * C), true, [&] {
               patch_embed_forward_ln(cx.h, st, x.p, w.p, b.p, cls.p, pos.p, cols.p, out.p, B, 3,
                                      R, c.patch_size, C, 0.1f, 1, SITE_EMBED_DROPOUT, 1, lnw.p,
                                      lnb.p, c.ln_eps, y.p, mean.p, rstd.p);
             });
      cx.row("patch_embed fwd + dropout + ln1 (bf16 out)", shp(sb), fl,
             4.0 * (B * 3.0 * R * R + 2.0 * B * Np * P + 2.5 * N * C), true, [&] {
               patch_embed_forward_ln(cx.h, st, x.p, w.p, b.p, cls.p, pos.p, cols.p, out.p, B, 3,
                                      R, c.patch_size, C, 0.1f, 1, SITE_EMBED_DROPOUT, 1, lnw.p,
                                      lnb.p, c.ln_eps, y16.p, mean.p, rstd.p);
             });
      cx.row("patch_embed bwd (bf16 dout)", shp(sb), fl, 4.0 * (B * Np * P + N * C), true, [&] {
        patch_embed_backward_t(cx.h, st, y16.p, C, cols.p, dw.p, (float*)nullptr, dcls.p, dpos.p,
                               scratch.p, B, 3, R, c.patch_size, C);
      });
      cx.row("dropout bwd rows (bf16 out)", shp(sb), 0, 6.0 * N * C, false, [&] {
        dropout_backward_rows(st, out.p, y16.p, N, C, C, 0.1f, 1, 3, 1);
      });
      cx.row("dropout bwd rows", shp(sb), 0, 8.0 * N * C, false, [&] {
        dropout_backward_rows(st, out.p, y.p, N, C, C, 0.1f, 1, 3, 1);
      });
    }
    cx.row("cuBLAS patch GEMM", shp(sb), fl, 4.0 * (B * Np * P + C * P + B * Np * C), true,
           [&] { cublas_linear(cx.h, cols.p, w.p, out.p, B * Np, P, C); }, "baseline");
#if defined(VIT_HAVE_CUDNN)
    {
      cudnnHandle_t dn;
      cudnnCreate(&dn);
      cudnnSetStream(dn, st);
      cudnnTensorDescriptor_t xd, yd;
      cudnnFilterDescriptor_t wd;
      cudnnConvolutionDescriptor_t cd;
      cudnnCreateTensorDescriptor(&xd);
      cudnnCreateTensorDescriptor(&yd);
      cudnnCreateFilterDescriptor(&wd);
      cudnnCreateConvolutionDescriptor(&cd);
      cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, B, 3, R, R);
      cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, C, 3, c.patch_size,
                                 c.patch_size);
      cudnnSetConvolution2dDescriptor(cd, 0, 0, c.patch_size, c.patch_size, 1, 1,
                                      CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT);
      cudnnSetConvolutionMathType(cd, CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION);
      int g = c.grid();
      cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, B, C, g, g);
      cudnnConvolutionFwdAlgoPerf_t perf[8];
      int found = 0;
      cudnnFindConvolutionForwardAlgorithm(dn, xd, wd, cd, yd, 8, &found, perf);
      size_t ws = 0;
      if (found > 0)
        cudnnGetConvolutionForwardWorkspaceSize(dn, xd, wd, cd, yd, perf[0].algo, &ws);
      void* wsp = nullptr;
      if (ws) CUDA_CHECK(cudaMalloc(&wsp, ws));
      const float one = 1, zero = 0;
      if (found > 0)
        cx.row("cuDNN conv (patch embed)", shp(sb), fl, 4.0 * (B * 3.0 * R * R + C * P + N * C),
               true, [&] {
                 cudnnConvolutionForward(dn, &one, xd, x.p, wd, w.p, cd, perf[0].algo, wsp, ws,
                                         &zero, yd, out.p);
               }, "baseline");
      cudaFree(wsp);
      cudnnDestroyTensorDescriptor(xd);
      cudnnDestroyTensorDescriptor(yd);
      cudnnDestroyFilterDescriptor(wd);
      cudnnDestroyConvolutionDescriptor(cd);
      cudnnDestroy(dn);
    }
#endif
  }
  // LayerNorm
  {
    Buf x(N * C, st), w(C, st), b(C, st), y(N * C, st), mean(N, st), rstd(N, st), dx(N * C, st),
        dw(C, st), db(C, st), scratch(layernorm_scratch_floats((int)N, C), st);
    snprintf(sb, sizeof sb, "N=%zu C=%d", N, C);
    cx.row("layernorm fwd", shp(sb), 0, 4.0 * 2 * N * C, false,
           [&] { layernorm_forward(st, x.p, w.p, b.p, y.p, mean.p, rstd.p, (int)N, C, c.ln_eps); });
    Buf16 y16(N * C, st);
    cx.row("layernorm fwd (bf16 out)", shp(sb), 0, 4.0 * N * C + 2.0 * N * C, false,
           [&] { layernorm_forward(st, x.p, w.p, b.p, y16.p, mean.p, rstd.p, (int)N, C, c.ln_eps); });
    cx.row("to_bf16", shp(sb), 0, 6.0 * N * C, false, [&] { to_bf16(st, x.p, y16.p, N * C); });
    cx.row("layernorm bwd", shp(sb), 0, 4.0 * 4 * N * C, false,
           [&] { layernorm_backward(st, y.p, x.p, w.p, mean.p, rstd.p, dx.p, dw.p, db.p,
                                    scratch.p, (int)N, C); });
  }
  // The linear layers: ours (GEMM + fused epilogue) against cuBLAS's GEMM alone.
  struct Lin { const char* name; int in, out; bool gelu; };
  const Lin lins[] = {{"qkv", C, 3 * C, false}, {"proj", C, C, false}, {"fc1+gelu", C, M, true},
                      {"fc2", M, C, false}};
  for (const Lin& l : lins) {
    Buf x(N * l.in, st), w((size_t)l.out * l.in, st), b(l.out, st), y(N * l.out, st),
        pre(l.gelu ? N * l.out : 1, st), dpre(l.gelu ? N * l.out : 1, st), dx(N * l.in, st),
        dw((size_t)l.out * l.in, st),
        db(l.out, st), scratch(matmul_scratch_floats((int)N, l.out), st);
    double fl = 2.0 * N * l.in * l.out;
    snprintf(sb, sizeof sb, "N=%zu %dx%d", N, l.in, l.out);
    double io = 4.0 * (N * l.in + (double)l.in * l.out + N * l.out * (l.gelu ? 2 : 1));
    cx.row(std::string("matmul ") + l.name + " fwd", shp(sb), fl, io, true, [&] {
      matmul_forward(cx.h, st, x.p, l.in, w.p, b.p, y.p, (int)N, l.in, l.out,
                     l.gelu ? pre.p : nullptr, c.gelu);
    });
    cx.row(std::string("cuBLAS ") + l.name + " GEMM", shp(sb), fl, io, true,
           [&] { cublas_linear(cx.h, x.p, w.p, y.p, (int)N, l.in, l.out); }, "baseline");
    cx.row(std::string("matmul ") + l.name + " bwd", shp(sb), 2 * fl,
           4.0 * (2.0 * N * l.in + 2.0 * l.in * l.out + N * l.out), true, [&] {
             matmul_backward(cx.h, st, y.p, x.p, l.in, w.p, dx.p, l.in, dw.p, db.p, scratch.p,
                             (int)N, l.in, l.out);
           });
    if (l.gelu)
      cx.row("gelu bwd", shp(sb), 0, 4.0 * 3 * N * l.out, false,
             // d(pre-activation) is (N, out), like y: dx (N, in) is too small for fc1.
             [&] { gelu_backward(st, y.p, pre.p, dpre.p, N * l.out, c.gelu); });
    // --precision bf16: cuBLASLt on BF16 operands, FP32 outputs (% is of the TF32 peak; the
    // BF16 tensor-core peak is 2x).
    Buf16 x16(N * l.in, st), w16((size_t)l.out * l.in, st), dy16(N * l.out, st);
    const double io16 = 2.0 * (N * l.in + (double)l.in * l.out) + 4.0 * N * l.out;
    cx.row(std::string("matmul ") + l.name + " fwd bf16", shp(sb), fl, io16, true, [&] {
      matmul_forward_bf16(cx.lt, st, x16.p, l.in, w16.p, b.p, l.gelu ? pre.p : y.p, (int)N, l.in,
                          l.out);
    }, "bf16 GEMM; % of the TF32 peak");
    if (l.gelu) {
      Buf16 pre16(N * l.out, st);
      cx.row("gelu fwd (bf16 out + bf16 pre-act)", shp(sb), 0, 8.0 * N * l.out, false,
             [&] { gelu_forward(st, pre.p, dy16.p, N * l.out, c.gelu, pre16.p); });
      cx.row("gelu bwd (bf16 pre-act)", shp(sb), 0, 10.0 * N * l.out, false,
             [&] { gelu_backward(st, y.p, (const bf16*)pre16.p, dpre.p, N * l.out, c.gelu); });
      cx.row("gelu bwd (bf16 pre-act, bf16 out)", shp(sb), 0, 8.0 * N * l.out, false,
             [&] { gelu_backward(st, y.p, (const bf16*)pre16.p, dy16.p, N * l.out, c.gelu); });
    }
    cx.row(std::string("matmul ") + l.name + " bwd bf16", shp(sb), 2 * fl,
           2.0 * (2.0 * N * l.out + N * l.in + l.in * l.out) + 4.0 * (N * l.in + 2.0 * l.in * l.out),
           true, [&] {
             matmul_backward_bf16(cx.lt, st, dy16.p, y.p, x16.p, l.in, w16.p, dx.p, l.in, dw.p,
                                  db.p, scratch.p, (int)N, l.in, l.out);
           }, "bf16 GEMMs; % of the TF32 peak");
  }
  // The fused GEMM + dropout/residual + LayerNorm kernels (kernels/gemm_ln.cuh): forward at the
  // proj (K = C) and FC2 (K = MLP) sites, out = res + dropout(x W^T + b), then the next
  // LayerNorm's y, mean, rstd; backward at FC1's dx (K = MLP, into LN2) and QKV's dx (K = 3C,
  // into LN1): dres += LN backward of dy W, mask = dropout(dres), the ln_w / ln_b partials. One
  // launch each, in every precision (FP32 FMAs, TF32 and BF16 tensor cores).
  if (gemm_ln_supports(C)) {
    const int Kmax = std::max(M, 3 * C), nblk = gemm_ln_row_blocks((int)N, C);
    Buf xa(N * Kmax, st), w((size_t)C * Kmax, st), b(C, st), res(N * C, st), out(N * C, st),
        lw(C, st), lb(C, st), y(N * C, st), mean(N, st), rstd(N, st), lnx(N * C, st),
        dres(N * C, st), mask(N * C, st), part(2 * (size_t)nblk * C, st);
    Buf16 xa16(N * Kmax, st), w16((size_t)C * Kmax, st), y16(N * C, st), mask16(N * C, st);
    struct Site { const char* name; int K; bool fwd; };
    const Site sites[] = {{"proj", C, true}, {"fc2", M, true}, {"fc1 dx", M, false}, {"qkv dx", 3 * C, false}};
    for (const Site& s : sites) {
      const double fl = 2.0 * N * s.K * C;
      snprintf(sb, sizeof sb, "N=%zu K=%d C=%d", N, s.K, C);
      const std::string what = s.fwd ? std::string("gemm+res+ln fwd ") + s.name
                                     : std::string("gemm+ln bwd ") + s.name;
      // Bytes: the operands, then FP32 res/out (+ y) forward, FP32 x, dres (read and written)
      // and the mask backward.
      auto io = [&](double sz) {
        return sz * (N * (double)s.K + (double)C * s.K) +
               (s.fwd ? 4.0 * 2 * N * C + sz * N * C : 4.0 * 3 * N * C + sz * N * C);
      };
      for (Precision prec : {Precision::Fp32, Precision::Tf32}) {
        const std::string name = what + (prec == Precision::Fp32 ? " fp32" : " tf32");
        cx.row(name, shp(sb), fl, io(4), prec == Precision::Tf32, [&] {
          if (s.fwd)
            gemm_residual_ln_forward(st, prec, xa.p, s.K, w.p, b.p, res.p, out.p, (int)N, s.K, C,
                                     c.dropout, 1, 2, 3, lw.p, lb.p, c.ln_eps, y.p, mean.p,
                                     rstd.p);
          else
            gemm_ln_backward(st, prec, xa.p, s.K, w.p, (int)N, s.K, C, lnx.p, mean.p, rstd.p, lw.p,
                             dres.p, mask.p, C, c.dropout, 1, 2, 3, part.p);
        });
      }
      cx.row_bf16(what + " bf16", shp(sb), fl, io(2), [&] {
        if (s.fwd)
          gemm_residual_ln_forward(st, Precision::Bf16, xa16.p, s.K, w16.p, b.p, res.p, out.p,
                                   (int)N, s.K, C, c.dropout, 1, 2, 3, lw.p, lb.p, c.ln_eps,
                                   y16.p, mean.p, rstd.p);
        else
          gemm_ln_backward(st, Precision::Bf16, xa16.p, s.K, w16.p, (int)N, s.K, C, lnx.p, mean.p,
                           rstd.p, lw.p, dres.p, mask16.p, C, c.dropout, 1, 2, 3, part.p);
      });
    }
  }
  // Attention
  {
    Buf qkv(N * 3 * C, st), out(N * C, st), lse((size_t)B * NH * T, st), dout(N * C, st),
        dqkv(N * 3 * C, st), scratch(attention_scratch_floats(B, T, C, NH), st);
    double fl = 4.0 * B * T * T * C;  // q k^T and p v
    snprintf(sb, sizeof sb, "B=%d T=%d NH=%d hd=%d", B, T, NH, c.head_dim());
    cx.row("attention fwd", shp(sb), fl, 4.0 * (N * 3 * C + N * C), false, [&] {
      attention_forward(st, qkv.p, out.p, lse.p, B, T, C, NH, c.attn_dropout, 1, 16, 1);
    });
    cx.row("attention bwd", shp(sb), 2.5 * fl, 4.0 * (N * 3 * C + 3.0 * N * C), false, [&] {
      attention_backward(st, dout.p, qkv.p, out.p, lse.p, dqkv.p, scratch.p, B, T, C, NH,
                         c.attn_dropout, 1, 16, 1);
    });
    // --precision bf16: qkv and out stored in BF16 (FP32 math).
    Buf16 qkv16(N * 3 * C, st), out16(N * C, st);
    cx.row("attention fwd (bf16 qkv/out)", shp(sb), fl, 2.0 * (N * 3 * C + N * C), false, [&] {
      attention_forward(st, (const bf16*)qkv16.p, out16.p, lse.p, B, T, C, NH, c.attn_dropout, 1,
                        16, 1);
    });
    cx.row("attention bwd (bf16 qkv/out)", shp(sb), 2.5 * fl,
           2.0 * (N * 3 * C + N * C) + 4.0 * (N * 3 * C + 2.0 * N * C), false, [&] {
             attention_backward(st, dout.p, (const bf16*)qkv16.p, (const bf16*)out16.p, lse.p,
                                dqkv.p, scratch.p, B, T, C, NH, c.attn_dropout, 1, 16, 1);
           });
    // Baseline: the unfused computation with cuBLAS strided-batched GEMMs (scores and
    // probs @ v, (T,T) scores materialised), softmax excluded: a floor for any unfused version.
    Buf q(N * C, st), s((size_t)B * NH * T * T, st);
    const int hd = c.head_dim();
    const float scale = 1.0f / sqrtf((float)hd), zero = 0, one = 1;
    cx.row("cuBLAS attention GEMMs", shp(sb), fl, 4.0 * (3.0 * N * C + 2.0 * B * NH * T * T), true, [&] {
      // per (b, h): S (T,T) = Q K^T, O = S V; heads as batches with stride hd over (B*NH)
      CUBLAS_CHECK(cublasSgemmStridedBatched(cx.h, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hd, &scale,
                                             qkv.p + C, 3 * C, (long long)hd, qkv.p, 3 * C,
                                             (long long)hd, &zero, s.p, T, (long long)T * T,
                                             B * NH));
      CUBLAS_CHECK(cublasSgemmStridedBatched(cx.h, CUBLAS_OP_N, CUBLAS_OP_N, hd, T, T, &one,
                                             qkv.p + 2 * C, 3 * C, (long long)hd, s.p, T,
                                             (long long)T * T, &zero, q.p, C, (long long)hd,
                                             B * NH));
    }, "baseline (approx. head strides)");
    // Tensor-core kernels (kernels/attention_tc.cuh): bf16 qkv, bf16 out / dout / dqkv, FP32 lse
    // and D. The backward recomputes S and dP' in both of its kernels (7 products of 2*T*T*hd
    // per head instead of 5); the row counts the 5 useful ones, as the FP32 row does.
    if (attention_tc_supports_head_dim(c.head_dim())) {
      BufH qkvh(N * 3 * C, st), outh(N * C, st), douth(N * C, st), dqkvh(N * 3 * C, st), sh((size_t)B * NH * T * T, st);
      Buf tc_scratch(attention_tc_scratch_floats(B, T, C, NH), st);
      cx.row_bf16("attention fwd (tensor cores)", shp(sb), fl, 2.0 * (N * 3 * C + N * C) + 4.0 * B * NH * T, [&] {
        attention_forward_tc<__nv_bfloat16>(st, qkvh.p, outh.p, lse.p, B, T, C, NH, c.attn_dropout, 1, 16, 1);
      });
      cx.row_bf16("attention bwd (tensor cores)", shp(sb), 2.5 * fl,
                  2.0 * (N * 3 * C + 3.0 * N * C) + 12.0 * B * NH * T, [&] {
        attention_backward_tc<__nv_bfloat16>(st, douth.p, qkvh.p, outh.p, lse.p, dqkvh.p, tc_scratch.p,
                                             B, T, C, NH, c.attn_dropout, 1, 16, 1);
      });
      // Baseline: the same two unfused products in BF16 on tensor cores (FP32 accumulation,
      // bf16 scores materialised), softmax excluded.
      const float bscale = scale;
      cx.row_bf16("cuBLAS attention GEMMs (bf16)", shp(sb), fl, 2.0 * (3.0 * N * C + 2.0 * B * NH * T * T), [&] {
        CUBLAS_CHECK(cublasGemmStridedBatchedEx(cx.h, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hd, &bscale,
                                                qkvh.p + C, CUDA_R_16BF, 3 * C, (long long)hd, qkvh.p,
                                                CUDA_R_16BF, 3 * C, (long long)hd, &zero, sh.p,
                                                CUDA_R_16BF, T, (long long)T * T, B * NH,
                                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        CUBLAS_CHECK(cublasGemmStridedBatchedEx(cx.h, CUBLAS_OP_N, CUBLAS_OP_N, hd, T, T, &one,
                                                qkvh.p + 2 * C, CUDA_R_16BF, 3 * C, (long long)hd,
                                                sh.p, CUDA_R_16BF, T, (long long)T * T, &zero,
                                                outh.p, CUDA_R_16BF, C, (long long)hd, B * NH,
                                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      }, "baseline (approx. head strides)");
    }
  }
  // loss and optimizer
  {
    Buf logits((size_t)B * K, st), losses(B, st), dlogits((size_t)B * K, st);
    double* metrics;
    CUDA_CHECK(cudaMalloc(&metrics, 2 * sizeof(double)));
    CUDA_CHECK(cudaMemsetAsync(metrics, 0, 2 * sizeof(double), st));
    int32_t* labels;
    CUDA_CHECK(cudaMalloc(&labels, B * sizeof(int32_t)));
    CUDA_CHECK(cudaMemsetAsync(labels, 0, B * sizeof(int32_t), st));
    snprintf(sb, sizeof sb, "B=%d K=%d", B, K);
    cx.row("xent fwd+bwd", shp(sb), 0, 4.0 * 2 * B * K, false, [&] {
      xent_forward_backward(st, logits.p, labels, losses.p, dlogits.p, metrics, B, K, 0.1f,
                            1.0f / B);
    });
    {
      // the head's backward (no final LN) and the one launch of column sums
      Buf hw((size_t)K * C, st), x(N * C, st), dres(N * C, st), outf(N * C, st),
          dw((size_t)K * C, st), db(C, st);
      Buf16 out16(N * C, st);
      snprintf(sb, sizeof sb, "B=%d T=%d C=%d K=%d", B, T, C, K);
      cx.row("head bwd (dres, fc2 dy, head dw)", shp(sb), 4.0 * B * C * K, 4.0 * 2 * N * C, false,
             [&] {
               head_backward(st, dlogits.p, hw.p, x.p, dres.p, outf.p, (size_t)C, dw.p, B, T, C,
                             K, 0.1f, 1, 3, 1);
             });
      cx.row("head bwd (bf16 fc2 dy)", shp(sb), 4.0 * B * C * K, 6.0 * N * C, false, [&] {
        head_backward(st, dlogits.p, hw.p, x.p, dres.p, out16.p, (size_t)2 * C, dw.p, B, T, C, K,
                      0.1f, 1, 3, 1);
      });
      const ColSumJob jobs[2] = {{x.p, db.p, C, C, T, 1, 0, 0, 0},
                                 {out16.p, db.p, C, C, T, 1, 0, 0, 1}};
      ColSumJob* dj;
      CUDA_CHECK(cudaMalloc(&dj, sizeof jobs));
      CUDA_CHECK(cudaMemcpy(dj, jobs, sizeof jobs, cudaMemcpyHostToDevice));
      cx.row("column sums (fp32 + bf16 job)", shp(sb), 0, 6.0 * N * C, false,
             [&] { column_sums_many(st, dj, 1, C, B); column_sums_many(st, dj + 1, 1, C, B); });
      CUDA_CHECK(cudaFree(dj));
    }
    CUDA_CHECK(cudaFree(labels));
    CUDA_CHECK(cudaFree(metrics));
    ParamLayout lay(c);
    size_t n = lay.total;
    Buf p(n, st), g(n, st), m(n, st, 0), v(n, st, 0), nc(2, st), sc(grad_norm_scratch_floats(n), st);
    std::vector<TensorSpan> spans;
    for (const ParamTensor& t : lay.tensors) spans.push_back({t.offset, t.numel, t.decay ? 1 : 0});
    TensorSpan* dspans;
    CUDA_CHECK(cudaMalloc(&dspans, spans.size() * sizeof(TensorSpan)));
    CUDA_CHECK(cudaMemcpy(dspans, spans.data(), spans.size() * sizeof(TensorSpan),
                          cudaMemcpyHostToDevice));
    OptimConfig o;
    o.kind = OptimConfig::AdamW;
    o.weight_decay = 0.05f;
    o.clip_grad = 1.0f;
    snprintf(sb, sizeof sb, "%zu params", n);
    cx.row("grad norm + clip", shp(sb), 0, 4.0 * n, false,
           [&] { grad_norm_clip(st, g.p, n, 1.0f, 1.0f, nc.p, sc.p); });
    cx.row("adamw", shp(sb), 0, 4.0 * 7 * n, false, [&] {
      adam_update(st, p.p, g.p, m.p, v.p, n, dspans, (int)spans.size(), o, 1e-4f, 10, 1.0f, nc.p);
    });
    Buf16 p16(n, st);
    cx.row("adamw + bf16 copy", shp(sb), 0, 4.0 * 7 * n + 2.0 * n, false, [&] {
      adam_update(st, p.p, g.p, m.p, v.p, n, dspans, (int)spans.size(), o, 1e-4f, 10, 1.0f, nc.p,
                  p16.p);
    });
    CUDA_CHECK(cudaFree(dspans));
  }
}

// The whole training step of the CUDA model, random weights, one fixed batch, in one precision:
// replayed as one CUDA graph (vit_train's default) or launched eagerly (--no-graph).
void bench_step(Ctx& cx, const std::string& pname, int B, bool quick, Precision prec, bool graph) {
  Config c = preset(pname);
  ModelOptions o;
  o.max_batch = B;
  o.precision = prec;
  o.cuda_graph = graph;
  size_t free0 = 0, total = 0;
  CUDA_CHECK(cudaMemGetInfo(&free0, &total));
  std::unique_ptr<Model> m = make_cuda_model(c, o);
  std::vector<float> p(m->layout().total);
  init_params(c, m->layout(), 1, p.data());
  m->set_params(p.data());
  uint8_t* img;
  int32_t* lab;
  CUDA_CHECK(cudaMallocHost(&img, (size_t)B * 3 * 32 * 32));
  CUDA_CHECK(cudaMallocHost(&lab, B * sizeof(int32_t)));
  for (size_t i = 0; i < (size_t)B * 3 * 32 * 32; ++i) img[i] = (uint8_t)(i * 37);
  for (int i = 0; i < B; ++i) lab[i] = i % c.classes;
  OptimConfig opt;
  opt.kind = OptimConfig::AdamW;
  int64_t t = 0;
  auto step = [&] {
    Model::MicroBatch mb = {img, lab, B, (uint64_t)t};
    m->train_step(&mb, 1, opt, 1e-4f, ++t, 1.0f);
  };
  step();
  step();  // a graph step captures a shape's two graphs (parities) in its first two steps
  CUDA_CHECK(cudaDeviceSynchronize());
  size_t free1 = 0;
  CUDA_CHECK(cudaMemGetInfo(&free1, &total));
  const LaunchCounts launches0 = launch_counts();
  step();
  CUDA_CHECK(cudaDeviceSynchronize());
  const uint64_t launches = (launch_counts() - launches0).total();
  // The model issues its work on its own (non-blocking) streams, which the timer's events on
  // cx.st do not order with: bracket the step with device synchronizes so the events measure it
  // (the first also keeps the timer's L2 flush, on cx.st, from overlapping the step).
  double ms = cx.timer->ms(
      [&] {
        CUDA_CHECK(cudaDeviceSynchronize());
        step();
        CUDA_CHECK(cudaDeviceSynchronize());
      },
      quick ? 3 : 20, 1);
  BenchRow r;
  r.section = "step";
  r.name = std::string("train step (") + precision_name(prec) + (graph ? ", graph)" : ", eager)");
  r.shape = pname + " B=" + std::to_string(B);
  r.ms = ms;
  r.images_per_s = B * 1e3 / ms;
  StepCost sc = step_cost(c, B);
  r.tflops = sc.train.total() / (ms * 1e-3) / 1e12;
  // Against the GEMMs' tensor-core peak: TF32, or BF16 = 2x TF32.
  r.pct_peak = 100 * sc.train.total() / (ms * 1e-3) /
               (prec == Precision::Bf16 ? 2 * cx.dev.tf32 : cx.dev.tf32);
  double epoch_s = 50000.0 / r.images_per_s;
  char note[256];
  snprintf(note, sizeof note,
           "epoch %.1f s, 50 epochs %.1f min; %llu launches (kernels + cuBLAS + memsets/copies, "
           "or graphs); %.0f MiB device memory",
           epoch_s, 50 * epoch_s / 60, (unsigned long long)launches,
           (free0 - free1) / 1048576.0);
  r.note = note;
  cx.rows->push_back(r);
  CUDA_CHECK(cudaFreeHost(img));
  CUDA_CHECK(cudaFreeHost(lab));
}

}  // namespace

std::vector<BenchRow> run_gpu_rows(bool quick) {
  std::vector<BenchRow> rows;
  Ctx cx;
  cx.dev = query_device();
  printf("GPU: %s (sm_%d, %d SMs, %.2f GHz): peak %.0f GB/s, FP32 %.1f TFLOP/s, TF32 %.1f "
         "TFLOP/s\n",
         cx.dev.name.c_str(), cx.dev.cc, cx.dev.sms, cx.dev.clock_hz / 1e9, cx.dev.bw / 1e9,
         cx.dev.fp32 / 1e12, cx.dev.tf32 / 1e12);
  CUDA_CHECK(cudaStreamCreate(&cx.st));
  CUBLAS_CHECK(cublasCreate(&cx.h));
  CUBLAS_CHECK(cublasSetStream(cx.h, cx.st));
  CUBLAS_CHECK(cublasSetMathMode(cx.h, CUBLAS_TF32_TENSOR_OP_MATH));
  CUBLAS_CHECK(cublasLtCreate(&cx.lt));
  Timer timer(cx.st, cx.dev.l2);
  cx.timer = &timer;
  cx.reps = quick ? 3 : 20;
  cx.rows = &rows;
  bench_preset(cx, "basic", 64);
  bench_preset(cx, "vit-b16", 32);
  for (Precision p : {Precision::Tf32, Precision::Bf16})
    for (bool graph : {true, false}) {
      bench_step(cx, "basic", 64, quick, p, graph);
      bench_step(cx, "vit-b16", 32, quick, p, graph);
    }
  cublasLtDestroy(cx.lt);
  cublasDestroy(cx.h);
  cudaStreamDestroy(cx.st);
  return rows;
}

}  // namespace vit
