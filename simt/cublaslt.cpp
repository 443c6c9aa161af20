// simt/cublaslt.cpp — cuBLASLt's cublasLtMatmul on the CPU, with the semantics of NVIDIA's
// cuBLASLt documentation (and of the toolkit's cublasLt.h, whose comments are part of it):
//
//   D = epilogue(alpha * op(A) op(B) + beta * C)        for each of the batch_count matrices
//
// * Descriptors: matmul (compute/scale type, pointer mode, TRANSA/TRANSB, epilogue and its
//   pointers), matrix layouts (type, rows x cols of the matrix as stored, ld, CUBLASLT_ORDER_COL
//   or _ROW, batch count and strided batch offset in elements) and preferences (max workspace,
//   reduction-scheme mask, min alignments, waves, implementation mask). Set/GetAttribute check
//   the size of every attribute, as cuBLASLt does. The descriptors live inside the toolkit's
//   semi-opaque structs, so the ...Init() functions work on caller-provided storage too.
// * Types (the non-FP8 rows of cuBLASLt's table): FP32, FP16 or BF16 A/B (A and B the same
//   type) with FP32 compute and FP32 scale; C/D FP32, or the input type for FP16/BF16 inputs
//   (C and D the same type); CUBLAS_COMPUTE_32F_FAST_TF32 / _FAST_16F / _FAST_16BF on FP32 data
//   round the inputs to TF32 / half / bfloat16 first (as simt/cublas.cpp does). Products are
//   accumulated in FP32 (OpenBLAS); a BF16/FP16 D is rounded once, after the epilogue.
//   Anything else: CUBLAS_STATUS_NOT_SUPPORTED.
// * Epilogues, applied in FP32 before D is rounded ("bias is added before applying final
//   postprocessing"): BIAS adds bias[row] (M = rows of D elements, packed, broadcast across the
//   columns; CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE elements apart per batch; type = D's type).
//   RELU max(x, 0); RELU_AUX also writes a bit mask (bit j * ld + i of the aux buffer, ld in bits,
//   a multiple of 128) that DRELU reads. GELU is the tanh approximation
//       gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
//   (cuBLASLt's documentation says only "GELU"; the form it computes is the tanh one, the form
//   PyTorch's _addmm_activation(use_gelu) is tested against — an erf GELU needs its own kernel);
//   GELU_AUX writes the GELU input (after bias) to the aux matrix, column-major, ld in elements
//   (a multiple of 8, >= M), type = D's type. DGELU multiplies the GEMM result by gelu'(aux);
//   DRELU zeroes it where the mask bit is 0. *_BGRAD also write, to the bias pointer, the sum over
//   the columns of the final D values (one per row of D: the bias gradient of that layer).
//   BGRADA writes sum_k op(A)[i, k] (M values), BGRADB sum_k op(B)[k, j] (N values), both over
//   the GEMM's k dimension. Epilogues that need a bias, aux pointer or aux ld without one, or an
//   aux ld / batch stride of the wrong multiple: CUBLAS_STATUS_INVALID_VALUE.
// * Algorithms: cublasLtMatmulAlgoGetHeuristic offers a split-K algorithm (needs workspace for
//   its FP32 partial sums) when k is long and the preference allows that much workspace and the
//   COMPUTE_TYPE reduction scheme, and always a plain one without workspace. Both compute the
//   same numbers here (on a GPU their rounding differs slightly). cublasLtMatmul with a
//   workspace smaller than the algorithm needs (documented), or not 256-byte aligned (documented
//   for cublasSetWorkspace; applied here too), returns CUBLAS_STATUS_INVALID_VALUE. A split-K run
//   overwrites its workspace with 0xFF (NaN) so that data left there, or a workspace shared with
//   live data, is loud. algo == NULL is the implicit heuristic query with default preferences
//   (no workspace).
// * Alignment (simt's model of an algorithm): it uses vector accesses of min(16 bytes, the preference's
//   MIN_ALIGNMENT_x_BYTES (default 256), what ld and the batch stride allow) on A, B, C, D; a
//   pointer less aligned than that at cublasLtMatmul aborts naming it (on a GPU: a misaligned
//   address error, or an algorithm that silently reads the wrong bytes).
// * Pointer modes HOST (scalars read at call time), DEVICE, DEVICE_VECTOR and the two
//   ALPHA_DEVICE_VECTOR modes (read when the work runs); every operand must lie inside one device
//   allocation (checked at call time, naming it); argument errors return their status before
//   anything is enqueued; the device work runs through simt::detail::run_on_stream.
// * Not emulated (NOT_SUPPORTED): FP8/INT8 types and their scale pointers, planar complex,
//   pointer-array batches, COL32-style orders, CUBLAS_COMPUTE_16F/64F, TRANSC, fill modes,
//   CUBLASLT_SEARCH_LIMITED_BY_ALGO_ID (cublasLtMatmulAlgoInit and friends are not defined).
//   Set CUBLASLT_LOG_LEVEL=1 to see why a call was refused (as cuBLASLt's own log prints).
#include <cblas.h>
#include <cublasLt.h>

#include <cmath>
#include <cstdarg>
#include <cstdlib>
#include <set>
#include <vector>

#include "simt/internal.h"

struct cublasLtContext {
  int unused;
};

namespace simt {
namespace {

using Lock = std::lock_guard<std::recursive_mutex>;
std::set<cublasLtHandle_t> g_handles;
std::set<const void*> g_created;  // descriptors from a ...Create() not yet destroyed

constexpr uint32_t kLayoutMagic = 0x4c61796fu, kDescMagic = 0x4d446573u, kPrefMagic = 0x50726566u,
                   kAlgoMagic = 0x416c676fu;

// ---- descriptors (each fits in the toolkit's semi-opaque struct) --------------------------------
struct Layout {
  uint32_t magic;
  uint32_t type;  // cudaDataType
  int32_t order;  // cublasLtOrder_t
  int32_t batch;
  uint64_t rows, cols;
  int64_t ld, stride, plane_offset;
  uint32_t batch_mode;
};
static_assert(sizeof(Layout) <= sizeof(cublasLtMatrixLayoutOpaque_t), "Layout too large");

struct Desc {
  uint32_t magic;
  int32_t compute, scale, pointer_mode, transa, transb, transc, fill;
  uint32_t epilogue;
  int32_t sm_count, aux_type, bias_type;  // types: -1 = D's type
  const void* bias;
  int64_t bias_stride;
  void* aux;
  int64_t aux_ld, aux_stride, alpha_stride;
  const void *a_scale, *b_scale, *c_scale, *d_scale;
  void *amax_d, *aux_scale, *aux_amax, *d_out_scale, *emulation;
  int8_t fast_accum;
  int32_t scale_mode[6];  // A, B, C, D, aux, D out
};
static_assert(sizeof(Desc) <= sizeof(cublasLtMatmulDescOpaque_t), "Desc too large");

struct Pref {
  uint32_t magic, search_mode;
  uint64_t max_workspace;
  uint32_t reduction_mask;
  uint32_t align[4];  // A, B, C, D
  float max_waves;
  uint64_t impl_mask;
};
static_assert(sizeof(Pref) <= sizeof(cublasLtMatmulPreferenceOpaque_t), "Pref too large");

Layout* layout_of(cublasLtMatrixLayout_t p) {
  Layout* l = reinterpret_cast<Layout*>(p);
  return l && l->magic == kLayoutMagic ? l : nullptr;
}
Desc* desc_of(cublasLtMatmulDesc_t p) {
  Desc* d = reinterpret_cast<Desc*>(p);
  return d && d->magic == kDescMagic ? d : nullptr;
}
Pref* pref_of(cublasLtMatmulPreference_t p) {
  Pref* d = reinterpret_cast<Pref*>(p);
  return d && d->magic == kPrefMagic ? d : nullptr;
}

void init_layout(Layout* l, cudaDataType type, uint64_t rows, uint64_t cols, int64_t ld) {
  *l = Layout{kLayoutMagic, (uint32_t)type, CUBLASLT_ORDER_COL, 1, rows, cols, ld, 0, 0, 0};
}
void init_desc(Desc* d, cublasComputeType_t compute, cudaDataType scale) {
  memset(d, 0, sizeof *d);
  d->magic = kDescMagic;
  d->compute = compute;
  d->scale = scale;
  d->pointer_mode = CUBLASLT_POINTER_MODE_HOST;
  d->transa = d->transb = d->transc = CUBLAS_OP_N;
  d->fill = CUBLAS_FILL_MODE_FULL;
  d->epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  d->aux_type = d->bias_type = -1;
}
void init_pref(Pref* p) {
  *p = Pref{kPrefMagic, CUBLASLT_SEARCH_BEST_FIT, 0, CUBLASLT_REDUCTION_SCHEME_MASK,
            {256, 256, 256, 256}, 0.0f, ~0ull};
}

// An attribute: where it is stored and its exact size (cuBLASLt rejects any other size).
struct Field {
  void* p;
  size_t n;
};
template <class T>
Field field(T& x) {
  return Field{&x, sizeof x};
}
cublasStatus_t set_field(Field f, const void* buf, size_t n) {
  if (!f.p || !buf || n != f.n) return CUBLAS_STATUS_INVALID_VALUE;
  memcpy(f.p, buf, n);
  return CUBLAS_STATUS_SUCCESS;
}
// sizeInBytes == 0 asks for the size; otherwise it must be the attribute's size.
cublasStatus_t get_field(Field f, void* buf, size_t n, size_t* written) {
  if (!f.p) return CUBLAS_STATUS_INVALID_VALUE;
  if (n == 0) {
    if (!written) return CUBLAS_STATUS_INVALID_VALUE;
    *written = f.n;
    return CUBLAS_STATUS_SUCCESS;
  }
  if (!buf || n != f.n) return CUBLAS_STATUS_INVALID_VALUE;
  memcpy(buf, f.p, n);
  if (written) *written = n;
  return CUBLAS_STATUS_SUCCESS;
}

Field layout_field(Layout& l, cublasLtMatrixLayoutAttribute_t a) {
  switch (a) {
    case CUBLASLT_MATRIX_LAYOUT_TYPE: return field(l.type);
    case CUBLASLT_MATRIX_LAYOUT_ORDER: return field(l.order);
    case CUBLASLT_MATRIX_LAYOUT_ROWS: return field(l.rows);
    case CUBLASLT_MATRIX_LAYOUT_COLS: return field(l.cols);
    case CUBLASLT_MATRIX_LAYOUT_LD: return field(l.ld);
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: return field(l.batch);
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET: return field(l.stride);
    case CUBLASLT_MATRIX_LAYOUT_PLANE_OFFSET: return field(l.plane_offset);
    case CUBLASLT_MATRIX_LAYOUT_BATCH_MODE: return field(l.batch_mode);
    default: return Field{nullptr, 0};
  }
}
Field desc_field(Desc& d, cublasLtMatmulDescAttributes_t a) {
  switch (a) {
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE: return field(d.compute);
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE: return field(d.scale);
    case CUBLASLT_MATMUL_DESC_POINTER_MODE: return field(d.pointer_mode);
    case CUBLASLT_MATMUL_DESC_TRANSA: return field(d.transa);
    case CUBLASLT_MATMUL_DESC_TRANSB: return field(d.transb);
    case CUBLASLT_MATMUL_DESC_TRANSC: return field(d.transc);
    case CUBLASLT_MATMUL_DESC_FILL_MODE: return field(d.fill);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return field(d.epilogue);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return field(d.bias);
    case CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE: return field(d.bias_stride);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: return field(d.aux);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: return field(d.aux_ld);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE: return field(d.aux_stride);
    case CUBLASLT_MATMUL_DESC_ALPHA_VECTOR_BATCH_STRIDE: return field(d.alpha_stride);
    case CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET: return field(d.sm_count);
    case CUBLASLT_MATMUL_DESC_A_SCALE_POINTER: return field(d.a_scale);
    case CUBLASLT_MATMUL_DESC_B_SCALE_POINTER: return field(d.b_scale);
    case CUBLASLT_MATMUL_DESC_C_SCALE_POINTER: return field(d.c_scale);
    case CUBLASLT_MATMUL_DESC_D_SCALE_POINTER: return field(d.d_scale);
    case CUBLASLT_MATMUL_DESC_AMAX_D_POINTER: return field(d.amax_d);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE: return field(d.aux_type);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_SCALE_POINTER: return field(d.aux_scale);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_AMAX_POINTER: return field(d.aux_amax);
    case CUBLASLT_MATMUL_DESC_FAST_ACCUM: return field(d.fast_accum);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: return field(d.bias_type);
    case CUBLASLT_MATMUL_DESC_A_SCALE_MODE: return field(d.scale_mode[0]);
    case CUBLASLT_MATMUL_DESC_B_SCALE_MODE: return field(d.scale_mode[1]);
    case CUBLASLT_MATMUL_DESC_C_SCALE_MODE: return field(d.scale_mode[2]);
    case CUBLASLT_MATMUL_DESC_D_SCALE_MODE: return field(d.scale_mode[3]);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_SCALE_MODE: return field(d.scale_mode[4]);
    case CUBLASLT_MATMUL_DESC_D_OUT_SCALE_POINTER: return field(d.d_out_scale);
    case CUBLASLT_MATMUL_DESC_D_OUT_SCALE_MODE: return field(d.scale_mode[5]);
    case CUBLASLT_MATMUL_DESC_EMULATION_DESCRIPTOR: return field(d.emulation);
    default: return Field{nullptr, 0};
  }
}
Field pref_field(Pref& p, cublasLtMatmulPreferenceAttributes_t a) {
  switch (a) {
    case CUBLASLT_MATMUL_PREF_SEARCH_MODE: return field(p.search_mode);
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: return field(p.max_workspace);
    case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK: return field(p.reduction_mask);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES: return field(p.align[0]);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES: return field(p.align[1]);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES: return field(p.align[2]);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: return field(p.align[3]);
    case CUBLASLT_MATMUL_PREF_MAX_WAVES_COUNT: return field(p.max_waves);
    case CUBLASLT_MATMUL_PREF_IMPL_MASK: return field(p.impl_mask);
    default: return Field{nullptr, 0};
  }
}

// ---- the problem a (desc, layouts) quadruple describes ----------------------------------------
enum class Round { None, TF32, F16, BF16 };

size_t type_size(cudaDataType t) {
  switch (t) {
    case CUDA_R_32F: return 4;
    case CUDA_R_16F: case CUDA_R_16BF: return 2;
    default: return 0;
  }
}
const char* type_name(int t) {
  switch (t) {
    case CUDA_R_32F: return "CUDA_R_32F";
    case CUDA_R_16F: return "CUDA_R_16F";
    case CUDA_R_16BF: return "CUDA_R_16BF";
    default: return "another type";
  }
}
float load(const void* p, cudaDataType t, size_t i) {
  switch (t) {
    case CUDA_R_32F: return static_cast<const float*>(p)[i];
    case CUDA_R_16F: return __half2float(static_cast<const __half*>(p)[i]);
    case CUDA_R_16BF: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return 0;
  }
}
void store(float v, cudaDataType t, void* p, size_t i) {
  switch (t) {
    case CUDA_R_32F: static_cast<float*>(p)[i] = v; break;
    case CUDA_R_16F: static_cast<__half*>(p)[i] = __float2half(v); break;
    case CUDA_R_16BF: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(v); break;
    default: break;
  }
}
float round_as(float x, Round r) {
  switch (r) {
    case Round::None: return x;
    case Round::TF32: return detail::round_tf32(x);
    case Round::F16: return __half2float(__float2half(x));
    case Round::BF16: return __bfloat162float(__float2bfloat16(x));
  }
  return x;
}

// One matrix as stored: rows x cols of its layout, element (r, c) at off(r, c) elements.
struct Mat {
  cudaDataType type;
  bool row_major;
  int rows, cols;
  int64_t ld, stride;
  size_t off(int r, int c) const {
    return row_major ? (size_t)r * ld + c : (size_t)c * ld + r;
  }
  size_t extent() const {  // elements spanned by one matrix of the batch
    if (rows == 0 || cols == 0) return 0;
    return off(rows - 1, cols - 1) + 1;
  }
  size_t bytes(int batch) const {  // bytes spanned by the whole batch
    const size_t e = extent();
    return e == 0 ? 0 : ((size_t)(batch - 1) * stride + e) * type_size(type);
  }
  // The largest power of two (<= 16) that ld and the batch stride keep every column (row)
  // aligned to, in bytes: what an algorithm's vector accesses may assume.
  uint32_t natural_alignment(int batch) const {
    uint32_t a = 16;
    auto fit = [&](uint64_t bytes) {
      while (a > 1 && bytes % a) a /= 2;
    };
    fit((uint64_t)ld * type_size(type));
    if (batch > 1) fit((uint64_t)stride * type_size(type));
    return a;
  }
};

struct Problem {
  int m, n, k, batch;
  bool ta, tb;
  Mat A, B, C, D;
  Round round;
  uint32_t epilogue;
  bool bias_add, relu, gelu, aux_out, drelu, dgelu, bgrad, bgrada, bgradb;
  bool relu_mask;  // the aux buffer is ReLU's bit mask (else a GELU-input matrix)
  cudaDataType bias_type, aux_type;
  const void* bias;
  int64_t bias_stride;
  void* aux;
  int64_t aux_ld, aux_stride;
  int pointer_mode;
  int64_t alpha_stride;
  uint64_t impl_flags;  // cublasLtNumericalImplFlags_t of the algorithms for it
  int bias_len() const { return bgradb ? n : m; }
};

bool log_enabled() {
  const char* v = getenv("CUBLASLT_LOG_LEVEL");
  return v && atoi(v) >= 1;
}
// Returns st; with CUBLASLT_LOG_LEVEL >= 1 also says why on stderr.
cublasStatus_t refuse(cublasStatus_t st, const char* fn, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
cublasStatus_t refuse(cublasStatus_t st, const char* fn, const char* fmt, ...) {
  if (log_enabled()) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "[cublasLt][simt] %s: %s (%s)\n", fn, msg, cublasGetStatusName(st));
  }
  return st;
}

cublasStatus_t resolve_mat(const char* fn, const char* name, const Layout* l, Mat* m) {
  if (!l) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "%sdesc is NULL or not a layout", name);
  const cudaDataType t = (cudaDataType)l->type;
  if (type_size(t) == 0)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "%s: type %u is not emulated (FP32, FP16, BF16 only)", name, l->type);
  if (l->order != CUBLASLT_ORDER_COL && l->order != CUBLASLT_ORDER_ROW)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "%s: order %d is not emulated (COL and ROW only)", name, l->order);
  if (l->plane_offset != 0 || l->batch_mode != 0)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "%s: planar-complex / pointer-array batches are not emulated", name);
  if (l->rows > 0x7fffffffull || l->cols > 0x7fffffffull)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "%s: more than 2^31-1 rows or columns", name);
  const bool row = l->order == CUBLASLT_ORDER_ROW;
  const int64_t need = (int64_t)std::max<uint64_t>(1, row ? l->cols : l->rows);
  if (l->ld < need)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "%s: ld %lld < %lld (the %s)", name, (long long)l->ld,
                  (long long)need, row ? "columns of a row-major matrix" : "rows of a column-major matrix");
  if (l->batch < 1 || l->stride < 0)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "%s: batch count %d, batch offset %lld", name, l->batch,
                  (long long)l->stride);
  *m = Mat{t, row, (int)l->rows, (int)l->cols, l->ld, l->stride};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t resolve(const char* fn, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                       cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                       Problem* p) {
  const Desc* de = desc_of(desc);
  if (!de) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "computeDesc is NULL or not a matmul descriptor");
  *p = Problem{};
  cublasStatus_t st;
  if ((st = resolve_mat(fn, "A", layout_of(a), &p->A)) || (st = resolve_mat(fn, "B", layout_of(b), &p->B)) ||
      (st = resolve_mat(fn, "C", layout_of(c), &p->C)) || (st = resolve_mat(fn, "D", layout_of(d), &p->D)))
    return st;
  auto op_ok = [](int o) { return o == CUBLAS_OP_N || o == CUBLAS_OP_T || o == CUBLAS_OP_C; };
  if (!op_ok(de->transa) || !op_ok(de->transb))
    return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "TRANSA %d / TRANSB %d", de->transa, de->transb);
  if (de->transc != CUBLAS_OP_N) return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "TRANSC must be CUBLAS_OP_N");
  if (de->fill != CUBLAS_FILL_MODE_FULL) return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "FILL_MODE must be FULL");
  p->ta = de->transa != CUBLAS_OP_N;  // real types: C == T
  p->tb = de->transb != CUBLAS_OP_N;
  p->m = p->D.rows;
  p->n = p->D.cols;
  p->k = p->ta ? p->A.rows : p->A.cols;
  const int a_m = p->ta ? p->A.cols : p->A.rows;
  const int b_k = p->tb ? p->B.cols : p->B.rows, b_n = p->tb ? p->B.rows : p->B.cols;
  if (a_m != p->m || b_k != p->k || b_n != p->n || p->C.rows != p->m || p->C.cols != p->n)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, fn,
                  "shapes do not chain: op(A) %dx%d, op(B) %dx%d, C %dx%d, D %dx%d", a_m, p->k, b_k, b_n,
                  p->C.rows, p->C.cols, p->m, p->n);
  p->batch = layout_of(d)->batch;
  if (layout_of(a)->batch != p->batch || layout_of(b)->batch != p->batch || layout_of(c)->batch != p->batch)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "batch counts differ: A %d, B %d, C %d, D %d",
                  layout_of(a)->batch, layout_of(b)->batch, layout_of(c)->batch, p->batch);

  // Types: the FP32-compute rows of cuBLASLt's table.
  const cudaDataType at = p->A.type, ct = p->D.type;
  if (p->B.type != at || p->C.type != ct)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "A/B types %s/%s and C/D types %s/%s must pair up",
                  type_name(at), type_name(p->B.type), type_name(p->C.type), type_name(ct));
  if (de->scale != CUDA_R_32F)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "scale type %s with an FP32 compute type", type_name(de->scale));
  const bool f32 = at == CUDA_R_32F && ct == CUDA_R_32F;
  p->round = Round::None;
  switch (de->compute) {
    case CUBLAS_COMPUTE_32F:
    case CUBLAS_COMPUTE_32F_PEDANTIC:
      if (!f32 && !(at != CUDA_R_32F && (ct == at || ct == CUDA_R_32F)))
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "A/B %s with C/D %s", type_name(at), type_name(ct));
      break;
    case CUBLAS_COMPUTE_32F_FAST_TF32:
    case CUBLAS_COMPUTE_32F_FAST_16F:
    case CUBLAS_COMPUTE_32F_FAST_16BF:
      if (!f32) return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "the _FAST_ compute types take FP32 A, B, C, D");
      p->round = de->compute == CUBLAS_COMPUTE_32F_FAST_TF32 ? Round::TF32
                 : de->compute == CUBLAS_COMPUTE_32F_FAST_16F ? Round::F16
                                                              : Round::BF16;
      break;
    default:
      return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "compute type %d is not emulated", de->compute);
  }
  const uint64_t input = p->round == Round::TF32 ? CUBLASLT_NUMERICAL_IMPL_FLAGS_INPUT_TF32
                         : p->round == Round::F16 || at == CUDA_R_16F ? CUBLASLT_NUMERICAL_IMPL_FLAGS_INPUT_16F
                         : p->round == Round::BF16 || at == CUDA_R_16BF ? CUBLASLT_NUMERICAL_IMPL_FLAGS_INPUT_16BF
                                                                        : CUBLASLT_NUMERICAL_IMPL_FLAGS_INPUT_32F;
  p->impl_flags = CUBLASLT_NUMERICAL_IMPL_FLAGS_ACCUMULATOR_32F | input |
                  (input == CUBLASLT_NUMERICAL_IMPL_FLAGS_INPUT_32F ? CUBLASLT_NUMERICAL_IMPL_FLAGS_FMA
                                                                    : CUBLASLT_NUMERICAL_IMPL_FLAGS_HMMA);
  if (de->a_scale || de->b_scale || de->c_scale || de->d_scale || de->amax_d || de->aux_scale ||
      de->aux_amax || de->d_out_scale || de->emulation)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "scale / amax / emulation pointers are for FP8 types only");
  for (int s : de->scale_mode)
    if (s != 0) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "scale modes are for FP8 types only");

  // Pointer mode (the vector modes scale row i of D by alpha[i] / beta[i]).
  p->pointer_mode = de->pointer_mode;
  p->alpha_stride = de->alpha_stride;
  if (de->pointer_mode < CUBLASLT_POINTER_MODE_HOST || de->pointer_mode > CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_HOST)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "pointer mode %d", de->pointer_mode);
  if (de->pointer_mode == CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_ZERO && de->alpha_stride != 0)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "ALPHA_VECTOR_BATCH_STRIDE must be 0 with ALPHA_DEVICE_VECTOR_BETA_ZERO");
  if (de->alpha_stride < 0) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "negative ALPHA_VECTOR_BATCH_STRIDE");

  // Epilogue.
  p->epilogue = de->epilogue;
  switch (de->epilogue) {
    case CUBLASLT_EPILOGUE_DEFAULT: break;
    case CUBLASLT_EPILOGUE_RELU: p->relu = true; break;
    case CUBLASLT_EPILOGUE_RELU_AUX: p->relu = p->aux_out = true; break;
    case CUBLASLT_EPILOGUE_BIAS: p->bias_add = true; break;
    case CUBLASLT_EPILOGUE_RELU_BIAS: p->relu = p->bias_add = true; break;
    case CUBLASLT_EPILOGUE_RELU_AUX_BIAS: p->relu = p->aux_out = p->bias_add = true; break;
    case CUBLASLT_EPILOGUE_DRELU: p->drelu = true; break;
    case CUBLASLT_EPILOGUE_DRELU_BGRAD: p->drelu = p->bgrad = true; break;
    case CUBLASLT_EPILOGUE_GELU: p->gelu = true; break;
    case CUBLASLT_EPILOGUE_GELU_AUX: p->gelu = p->aux_out = true; break;
    case CUBLASLT_EPILOGUE_GELU_BIAS: p->gelu = p->bias_add = true; break;
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS: p->gelu = p->aux_out = p->bias_add = true; break;
    case CUBLASLT_EPILOGUE_DGELU: p->dgelu = true; break;
    case CUBLASLT_EPILOGUE_DGELU_BGRAD: p->dgelu = p->bgrad = true; break;
    case CUBLASLT_EPILOGUE_BGRADA: p->bgrada = true; break;
    case CUBLASLT_EPILOGUE_BGRADB: p->bgradb = true; break;
    default: return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "epilogue %u is not a cublasLtEpilogue_t", de->epilogue);
  }
  const bool uses_bias = p->bias_add || p->bgrad || p->bgrada || p->bgradb;
  const bool uses_aux = p->aux_out || p->drelu || p->dgelu;
  p->relu_mask = p->relu || p->drelu;
  if (uses_bias) {
    if (!de->bias) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "the epilogue needs CUBLASLT_MATMUL_DESC_BIAS_POINTER");
    p->bias = de->bias;
    p->bias_stride = de->bias_stride;
    p->bias_type = de->bias_type == -1 ? ct : (cudaDataType)de->bias_type;
    if (p->bias_type != ct)  // bias (and bias-gradient) elements have D's type
      return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "bias type %s with D of type %s", type_name(p->bias_type), type_name(ct));
    if (p->bias_stride < 0) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "negative BIAS_BATCH_STRIDE");
  }
  if (uses_aux) {
    // GELU input: elements of D's type, ld a multiple of 8; ReLU mask: bits, ld a multiple of 128.
    const int64_t mult = p->relu_mask ? 128 : 8;
    if (!de->aux) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "the epilogue needs CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER");
    if (de->aux_ld < std::max(1, p->m) || de->aux_ld % mult)
      return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "EPILOGUE_AUX_LD %lld: must be >= %d (rows of D) and a multiple of %lld",
                    (long long)de->aux_ld, p->m, (long long)mult);
    if (de->aux_stride < 0 || de->aux_stride % mult)
      return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "EPILOGUE_AUX_BATCH_STRIDE %lld: must be a multiple of %lld",
                    (long long)de->aux_stride, (long long)mult);
    p->aux_type = de->aux_type == -1 ? ct : (cudaDataType)de->aux_type;
    if (!p->relu_mask && p->aux_type != ct)
      return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "EPILOGUE_AUX_DATA_TYPE %s with D of type %s",
                    type_name(p->aux_type), type_name(ct));
    p->aux = de->aux;
    p->aux_ld = de->aux_ld;
    p->aux_stride = de->aux_stride;
  }
  return CUBLAS_STATUS_SUCCESS;
}

// ---- algorithms ------------------------------------------------------------------------------
enum AlgoId : uint64_t { kPlain = 0, kSplitK = 1 };
struct Algo {
  uint64_t id;
  size_t workspace;
  uint32_t align[4];  // bytes the vector accesses to A, B, C, D assume
};
cublasLtMatmulAlgo_t encode(const Algo& a) {
  cublasLtMatmulAlgo_t out;
  memset(&out, 0, sizeof out);
  out.data[0] = (uint64_t)kAlgoMagic << 32 | a.id;
  out.data[1] = a.workspace;
  out.data[2] = (uint64_t)a.align[0] | (uint64_t)a.align[1] << 16 | (uint64_t)a.align[2] << 32 |
                (uint64_t)a.align[3] << 48;
  return out;
}
bool decode(const cublasLtMatmulAlgo_t& in, Algo* a) {
  if (in.data[0] >> 32 != kAlgoMagic || (in.data[0] & 0xffffffffu) > kSplitK) return false;
  a->id = in.data[0] & 0xffffffffu;
  a->workspace = in.data[1];
  for (int i = 0; i < 4; ++i) a->align[i] = (uint32_t)(in.data[2] >> (16 * i)) & 0xffffu;
  return true;
}
uint32_t pow2_floor(uint32_t x) {
  uint32_t a = 1;
  while (a * 2 <= x && a < 256) a *= 2;
  return a;
}
// The alignments an algorithm chosen under these preferences relies on.
void algo_alignment(const Problem& p, const Pref& pref, Algo* a) {
  const Mat* m[4] = {&p.A, &p.B, &p.C, &p.D};
  for (int i = 0; i < 4; ++i) a->align[i] = std::min(pow2_floor(std::max(1u, pref.align[i])), m[i]->natural_alignment(p.batch));
}
size_t split_k_workspace(const Problem& p) {  // two partial sums per element of D, in FP32
  const size_t bytes = 2 * (size_t)p.m * p.n * p.batch * sizeof(float);
  return (bytes + 255) / 256 * 256;
}
float waves(const Problem& p, int splits) {
  const double tiles = std::ceil(p.m / 128.0) * std::ceil(p.n / 128.0) * p.batch * splits;
  return (float)(tiles / detail::kMultiProcessors);
}

// ---- the computation ---------------------------------------------------------------------------
constexpr float kSqrt2OverPi = 0.7978845608028654f, kGeluCoef = 0.044715f;
float gelu_tanh(float x) {
  const float t = std::tanh(kSqrt2OverPi * (x + kGeluCoef * x * x * x));
  return 0.5f * x * (1.0f + t);
}
float gelu_tanh_grad(float x) {
  const float x2 = x * x, t = std::tanh(kSqrt2OverPi * x * (1.0f + kGeluCoef * x2));
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * kGeluCoef * x2);
}

struct Operands {
  const void *A, *B, *C;
  void* D;
  const void *alpha, *beta;
  float host_alpha, host_beta;  // read at call time in host pointer mode
};

// Runs as the device work of one cublasLtMatmul (everything by value).
void compute(const Problem& p, const Operands& o, void* workspace, size_t workspace_bytes) {
  if (workspace && workspace_bytes) memset(workspace, 0xff, workspace_bytes);  // split-K partials
  const int M = p.m, N = p.n, K = p.k;
  std::vector<float> a((size_t)M * K), b((size_t)K * N), prod((size_t)M * N), out((size_t)M * N);
  std::vector<float> alpha(M), beta(M), bsum;
  for (int bi = 0; bi < p.batch; ++bi) {
    const char* A = static_cast<const char*>(o.A) + (size_t)bi * p.A.stride * type_size(p.A.type);
    const char* B = static_cast<const char*>(o.B) + (size_t)bi * p.B.stride * type_size(p.B.type);
    const char* C = o.C ? static_cast<const char*>(o.C) + (size_t)bi * p.C.stride * type_size(p.C.type) : nullptr;
    char* D = static_cast<char*>(o.D) + (size_t)bi * p.D.stride * type_size(p.D.type);
    // Scalars of this batch.
    for (int i = 0; i < M; ++i) {
      switch (p.pointer_mode) {
        case CUBLASLT_POINTER_MODE_HOST: alpha[i] = o.host_alpha; beta[i] = o.host_beta; break;
        case CUBLASLT_POINTER_MODE_DEVICE:
          alpha[i] = *static_cast<const float*>(o.alpha);
          beta[i] = *static_cast<const float*>(o.beta);
          break;
        default:
          alpha[i] = static_cast<const float*>(o.alpha)[(size_t)bi * p.alpha_stride + i];
          beta[i] = p.pointer_mode == CUBLASLT_POINTER_MODE_DEVICE_VECTOR ? static_cast<const float*>(o.beta)[i]
                    : p.pointer_mode == CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_HOST ? o.host_beta
                                                                                             : 0.0f;
      }
    }
    // op(A) (M x K) and op(B) (K x N), dense column-major, in the compute precision.
    for (int kk = 0; kk < K; ++kk)
      for (int i = 0; i < M; ++i)
        a[(size_t)kk * M + i] = round_as(load(A, p.A.type, p.ta ? p.A.off(kk, i) : p.A.off(i, kk)), p.round);
    for (int j = 0; j < N; ++j)
      for (int kk = 0; kk < K; ++kk)
        b[(size_t)j * K + kk] = round_as(load(B, p.B.type, p.tb ? p.B.off(j, kk) : p.B.off(kk, j)), p.round);
    if (K > 0)
      cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a.data(), M, b.data(), K, 0.0f,
                  prod.data(), M);
    else
      std::fill(prod.begin(), prod.end(), 0.0f);

    const char* bias = p.bias ? static_cast<const char*>(p.bias) + (size_t)bi * p.bias_stride * type_size(p.bias_type) : nullptr;
    char* aux_base = static_cast<char*>(p.aux);
    const int64_t aux_off = (int64_t)bi * p.aux_stride;  // elements (bits for the ReLU mask)
    for (int j = 0; j < N; ++j)
      for (int i = 0; i < M; ++i) {
        // beta == 0: C is not read (NaN garbage included), as in cuBLAS.
        float v = alpha[i] * prod[(size_t)j * M + i];
        if (beta[i] != 0.0f) v += beta[i] * load(C, p.C.type, p.C.off(i, j));
        if (p.bias_add) v += load(bias, p.bias_type, i);
        const int64_t ai = aux_off + (int64_t)j * p.aux_ld + i;
        if (p.aux_out && p.relu_mask) {
          unsigned char& byte = reinterpret_cast<unsigned char*>(aux_base)[ai >> 3];
          byte = v > 0.0f ? (unsigned char)(byte | 1u << (ai & 7)) : (unsigned char)(byte & ~(1u << (ai & 7)));
        } else if (p.aux_out) {
          store(v, p.aux_type, aux_base, ai);  // the GELU input, rounded to the aux type
        }
        if (p.relu) v = v > 0.0f ? v : 0.0f;
        if (p.gelu) v = gelu_tanh(v);
        if (p.drelu && !(reinterpret_cast<const unsigned char*>(aux_base)[ai >> 3] >> (ai & 7) & 1u)) v = 0.0f;
        if (p.dgelu) v *= gelu_tanh_grad(load(aux_base, p.aux_type, ai));
        out[(size_t)j * M + i] = v;
      }
    // Bias gradients, summed in FP32 in a fixed order (a GPU's order differs).
    if (p.bgrad || p.bgrada || p.bgradb) {
      char* g = const_cast<char*>(bias);
      if (p.bgrad) {
        for (int i = 0; i < M; ++i) {
          float s = 0.0f;
          for (int j = 0; j < N; ++j) s += out[(size_t)j * M + i];
          store(s, p.bias_type, g, i);
        }
      } else if (p.bgrada) {  // over k of op(A), unrounded
        for (int i = 0; i < M; ++i) {
          float s = 0.0f;
          for (int kk = 0; kk < K; ++kk) s += load(A, p.A.type, p.ta ? p.A.off(kk, i) : p.A.off(i, kk));
          store(s, p.bias_type, g, i);
        }
      } else {
        for (int j = 0; j < N; ++j) {
          float s = 0.0f;
          for (int kk = 0; kk < K; ++kk) s += load(B, p.B.type, p.tb ? p.B.off(j, kk) : p.B.off(kk, j));
          store(s, p.bias_type, g, j);
        }
      }
    }
    // D last: C (or aux) may be the same memory.
    for (int j = 0; j < N; ++j)
      for (int i = 0; i < M; ++i) store(out[(size_t)j * M + i], p.D.type, D, p.D.off(i, j));
  }
}

}  // namespace
}  // namespace simt

using simt::Lock;
using simt::detail::device_mutex;

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  Lock lock(device_mutex());
  *handle = new cublasLtContext{0};
  simt::g_handles.insert(*handle);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  Lock lock(device_mutex());
  if (!simt::g_handles.erase(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
size_t cublasLtGetVersion(void) { return CUBLAS_VERSION; }
size_t cublasLtGetCudartVersion(void) { return CUDART_VERSION; }
const char* cublasLtGetStatusName(cublasStatus_t s) { return cublasGetStatusName(s); }
const char* cublasLtGetStatusString(cublasStatus_t s) { return cublasGetStatusString(s); }

// ---- matrix layouts ----
cublasStatus_t cublasLtMatrixLayoutInit_internal(cublasLtMatrixLayout_t l, size_t size, cudaDataType type,
                                                 uint64_t rows, uint64_t cols, int64_t ld) {
  if (!l || size < sizeof(simt::Layout)) return CUBLAS_STATUS_ALLOC_FAILED;
  simt::init_layout(reinterpret_cast<simt::Layout*>(l), type, rows, cols, ld);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (!l) return CUBLAS_STATUS_INVALID_VALUE;
  Lock lock(device_mutex());
  *l = new cublasLtMatrixLayoutOpaque_t();
  simt::init_layout(reinterpret_cast<simt::Layout*>(*l), type, rows, cols, ld);
  simt::g_created.insert(*l);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
  if (!l) return CUBLAS_STATUS_SUCCESS;
  Lock lock(device_mutex());
  if (!simt::g_created.erase(l))
    simt::fail("cublasLtMatrixLayoutDestroy(%p): not from cublasLtMatrixLayoutCreate, or destroyed twice", (void*)l);
  reinterpret_cast<simt::Layout*>(l)->magic = 0;
  delete l;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t attr,
                                                const void* buf, size_t size) {
  simt::Layout* la = simt::layout_of(l);
  if (!la) return CUBLAS_STATUS_INVALID_VALUE;
  return simt::set_field(simt::layout_field(*la, attr), buf, size);
}
cublasStatus_t cublasLtMatrixLayoutGetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t attr,
                                                void* buf, size_t size, size_t* written) {
  simt::Layout* la = simt::layout_of(l);
  if (!la) return CUBLAS_STATUS_INVALID_VALUE;
  return simt::get_field(simt::layout_field(*la, attr), buf, size, written);
}

// ---- matmul descriptors ----
cublasStatus_t cublasLtMatmulDescInit_internal(cublasLtMatmulDesc_t d, size_t size, cublasComputeType_t compute,
                                               cudaDataType_t scale) {
  if (!d || size < sizeof(simt::Desc)) return CUBLAS_STATUS_ALLOC_FAILED;
  simt::init_desc(reinterpret_cast<simt::Desc*>(d), compute, scale);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t compute, cudaDataType_t scale) {
  if (!d) return CUBLAS_STATUS_INVALID_VALUE;
  Lock lock(device_mutex());
  *d = new cublasLtMatmulDescOpaque_t();
  simt::init_desc(reinterpret_cast<simt::Desc*>(*d), compute, scale);
  simt::g_created.insert(*d);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
  if (!d) return CUBLAS_STATUS_SUCCESS;
  Lock lock(device_mutex());
  if (!simt::g_created.erase(d))
    simt::fail("cublasLtMatmulDescDestroy(%p): not from cublasLtMatmulDescCreate, or destroyed twice", (void*)d);
  reinterpret_cast<simt::Desc*>(d)->magic = 0;
  delete d;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t size) {
  simt::Desc* de = simt::desc_of(d);
  if (!de) return CUBLAS_STATUS_INVALID_VALUE;
  return simt::set_field(simt::desc_field(*de, attr), buf, size);
}
cublasStatus_t cublasLtMatmulDescGetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              void* buf, size_t size, size_t* written) {
  simt::Desc* de = simt::desc_of(d);
  if (!de) return CUBLAS_STATUS_INVALID_VALUE;
  return simt::get_field(simt::desc_field(*de, attr), buf, size, written);
}

// ---- preferences ----
cublasStatus_t cublasLtMatmulPreferenceInit_internal(cublasLtMatmulPreference_t p, size_t size) {
  if (!p || size < sizeof(simt::Pref)) return CUBLAS_STATUS_ALLOC_FAILED;
  simt::init_pref(reinterpret_cast<simt::Pref*>(p));
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) {
  if (!p) return CUBLAS_STATUS_INVALID_VALUE;
  Lock lock(device_mutex());
  *p = new cublasLtMatmulPreferenceOpaque_t();
  simt::init_pref(reinterpret_cast<simt::Pref*>(*p));
  simt::g_created.insert(*p);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
  if (!p) return CUBLAS_STATUS_SUCCESS;
  Lock lock(device_mutex());
  if (!simt::g_created.erase(p))
    simt::fail("cublasLtMatmulPreferenceDestroy(%p): not from cublasLtMatmulPreferenceCreate, or destroyed twice", (void*)p);
  reinterpret_cast<simt::Pref*>(p)->magic = 0;
  delete p;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
                                                    size_t size) {
  simt::Pref* pr = simt::pref_of(p);
  if (!pr) return CUBLAS_STATUS_INVALID_VALUE;
  return simt::set_field(simt::pref_field(*pr, attr), buf, size);
}
cublasStatus_t cublasLtMatmulPreferenceGetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr, void* buf,
                                                    size_t size, size_t* written) {
  simt::Pref* pr = simt::pref_of(p);
  if (!pr) return CUBLAS_STATUS_INVALID_VALUE;
  return simt::get_field(simt::pref_field(*pr, attr), buf, size, written);
}

// ---- heuristics ----
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t Adesc, cublasLtMatrixLayout_t Bdesc,
                                              cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
                                              cublasLtMatmulPreference_t preference, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int* returned) {
  const char* fn = "cublasLtMatmulAlgoGetHeuristic";
  Lock lock(device_mutex());
  if (!simt::g_handles.count(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  const simt::Pref* pref = simt::pref_of(preference);
  if (!pref || requested <= 0 || !results || !returned)
    return simt::refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "preference %p, requestedAlgoCount %d, results %p, returnAlgoCount %p",
                        (void*)preference, requested, (void*)results, (void*)returned);
  *returned = 0;
  simt::Problem p;
  if (cublasStatus_t st = simt::resolve(fn, desc, Adesc, Bdesc, Cdesc, Ddesc, &p)) return st;
  if (pref->search_mode != CUBLASLT_SEARCH_BEST_FIT)
    return simt::refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "only CUBLASLT_SEARCH_BEST_FIT is emulated");
  if ((p.impl_flags & pref->impl_mask) != p.impl_flags)
    return simt::refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "CUBLASLT_MATMUL_PREF_IMPL_MASK excludes every algorithm");

  // Candidates, fastest first: split-K for long k (when its workspace and reduction scheme are
  // allowed), then the plain algorithm.
  std::vector<std::pair<simt::Algo, float>> found;
  simt::Algo a{};
  simt::algo_alignment(p, *pref, &a);
  const size_t ws = simt::split_k_workspace(p);
  if (p.k >= 128 && ws <= pref->max_workspace && (pref->reduction_mask & CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE)) {
    a.id = simt::kSplitK;
    a.workspace = ws;
    found.push_back({a, simt::waves(p, 2)});
  }
  a.id = simt::kPlain;
  a.workspace = 0;
  found.push_back({a, simt::waves(p, 1)});
  for (const auto& f : found) {
    if (*returned == requested) break;
    if (pref->max_waves > 0.0f && f.second > pref->max_waves) continue;
    cublasLtMatmulHeuristicResult_t& r = results[*returned];
    memset(&r, 0, sizeof r);
    r.algo = simt::encode(f.first);
    r.workspaceSize = f.first.workspace;
    r.state = CUBLAS_STATUS_SUCCESS;
    r.wavesCount = f.second;
    ++*returned;
  }
  if (*returned == 0)
    return simt::refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "no algorithm within CUBLASLT_MATMUL_PREF_MAX_WAVES_COUNT");
  return CUBLAS_STATUS_SUCCESS;
}

// ---- the matmul ----
cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t Adesc, const void* B, cublasLtMatrixLayout_t Bdesc,
                              const void* beta, const void* C, cublasLtMatrixLayout_t Cdesc, void* D,
                              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t* algo, void* workspace,
                              size_t workspace_bytes, cudaStream_t stream) {
  const char* fn = "cublasLtMatmul";
  using simt::refuse;
  Lock lock(device_mutex());
  if (!simt::g_handles.count(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  simt::Problem p;
  if (cublasStatus_t st = simt::resolve(fn, desc, Adesc, Bdesc, Cdesc, Ddesc, &p)) return st;
  if (!simt::detail::valid_stream(stream)) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "not a live stream");

  // The algorithm: given, or the implicit heuristic query with default preferences.
  simt::Algo al{};
  if (algo) {
    if (!simt::decode(*algo, &al)) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "algo is not from cublasLtMatmulAlgoGetHeuristic");
  } else {
    simt::Pref def;
    simt::init_pref(&def);
    simt::algo_alignment(p, def, &al);
  }
  if (workspace_bytes < al.workspace)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "workspaceSizeInBytes %zu < %zu that the algorithm needs",
                  workspace_bytes, al.workspace);
  if (workspace_bytes && !workspace) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "workspace NULL with a size");
  if ((uintptr_t)workspace % 256)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "workspace %p is not 256-byte aligned", workspace);

  // Pointers and scalars.
  const bool host_beta = p.pointer_mode == CUBLASLT_POINTER_MODE_HOST ||
                         p.pointer_mode == CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_HOST;
  const bool needs_beta = p.pointer_mode != CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_ZERO;
  if (!alpha || (needs_beta && !beta)) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "alpha or beta is NULL");
  if (!D) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "D is NULL");
  if ((!A && p.k > 0) || (!B && p.k > 0)) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "A or B is NULL");
  const float h_alpha = p.pointer_mode == CUBLASLT_POINTER_MODE_HOST ? *static_cast<const float*>(alpha) : 0.0f;
  const float h_beta = host_beta ? *static_cast<const float*>(beta) : 0.0f;
  const bool beta_may_be_nonzero = needs_beta && (!host_beta || h_beta != 0.0f);
  if (!C && beta_may_be_nonzero) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "C is NULL but beta is not 0");
  if (C == D) {
    const simt::Layout *lc = simt::layout_of(Cdesc), *ld = simt::layout_of(Ddesc);
    if (lc->ld != ld->ld || lc->order != ld->order || lc->stride != ld->stride)
      return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "in place (C == D) with different C and D layouts");
  }
  char what[200];
  auto scalar = [&](const void* s, const char* name, bool device, size_t count) {
    if (device) {
      snprintf(what, sizeof what, "%s: %s (pointer mode %d)", fn, name, p.pointer_mode);
      simt::detail::check_device_range(s, count * sizeof(float), what);
    } else if (simt::detail::is_device_pointer(s)) {
      simt::fail("%s: %s %p is device memory but the pointer mode is CUBLASLT_POINTER_MODE_HOST", fn, name, s);
    }
  };
  const bool vec = p.pointer_mode >= CUBLASLT_POINTER_MODE_DEVICE_VECTOR;
  const size_t alpha_count = vec ? (size_t)(p.batch - 1) * p.alpha_stride + p.m : 1;
  scalar(alpha, "alpha", p.pointer_mode != CUBLASLT_POINTER_MODE_HOST, alpha_count);
  if (needs_beta) scalar(beta, "beta", !host_beta, p.pointer_mode == CUBLASLT_POINTER_MODE_DEVICE_VECTOR ? p.m : 1);
  if (p.m == 0 || p.n == 0) return CUBLAS_STATUS_SUCCESS;

  // Every operand inside its allocation, and as aligned as the algorithm's accesses assume.
  const char* names[4] = {"A", "B", "C", "D"};
  const void* ptrs[4] = {A, B, C, D};
  const simt::Mat* mats[4] = {&p.A, &p.B, &p.C, &p.D};
  for (int i = 0; i < 4; ++i) {
    if (i < 2 && p.k == 0) continue;
    if (i == 2 && !C) continue;
    const simt::Mat& m = *mats[i];
    snprintf(what, sizeof what, "%s: matrix %s (%dx%d %s, ld %lld, batch %d, batch offset %lld)", fn, names[i],
             m.rows, m.cols, m.row_major ? "row-major" : "column-major", (long long)m.ld, p.batch, (long long)m.stride);
    simt::detail::check_device_range(ptrs[i], m.bytes(p.batch), what);
    for (int bi = 0; bi < p.batch; ++bi) {
      const uintptr_t addr = (uintptr_t)ptrs[i] + (uintptr_t)bi * m.stride * simt::type_size(m.type);
      if (addr % al.align[i])
        simt::fail("%s: matrix %s of batch %d at %p is not %u-byte aligned, which the algorithm's vector "
                   "accesses assume (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_%s_BYTES, default 256): a misaligned "
                   "address on a GPU; lower the preference to the pointer's alignment",
                   fn, names[i], bi, (void*)addr, al.align[i], names[i]);
    }
  }
  if (p.bias) {
    const size_t n = (size_t)(p.batch - 1) * p.bias_stride + p.bias_len();
    snprintf(what, sizeof what, "%s: the bias%s vector (%zu elements)", fn,
             p.bias_add ? "" : " gradient", n);
    simt::detail::check_device_range(p.bias, n * simt::type_size(p.bias_type), what);
  }
  if (p.aux) {
    const size_t last = (size_t)(p.batch - 1) * p.aux_stride + (size_t)(p.n - 1) * p.aux_ld + p.m;
    const size_t bytes = p.relu_mask ? (last + 7) / 8 : last * simt::type_size(p.aux_type);
    snprintf(what, sizeof what, "%s: the epilogue aux %s (ld %lld)", fn, p.relu_mask ? "ReLU bit mask" : "GELU-input matrix",
             (long long)p.aux_ld);
    simt::detail::check_device_range(p.aux, bytes, what);
  }
  if (al.workspace) simt::detail::check_device_range(workspace, al.workspace, "cublasLtMatmul: workspace");

  const simt::Operands o{A, B, C, D, alpha, beta, h_alpha, h_beta};
  const size_t ws = al.workspace;
  simt::detail::run_on_stream(stream, fn, [p, o, workspace, ws]() { simt::compute(p, o, workspace, ws); });
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
