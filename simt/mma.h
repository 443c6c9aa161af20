// simt/mma.h — nvcuda::wmma (tensor-core warp matrix operations) for kernels run by simt.
// Kernels write `#include <mma.h>` as under nvcc; in the simt build simt/include/mma.h (first on
// the include path) brings this header instead of NVIDIA's, which compiles to nothing outside nvcc.
//
// What is emulated (see docs/simt.md):
//   * the fragment types of CUDA's <mma.h> for half, __nv_bfloat16 and precision::tf32 inputs
//     with float (and, for half, half) accumulators, shapes m16n16k16, m32n8k16, m8n32k16 and
//     m16n16k8 (tf32), with NVIDIA's num_elements per lane (half A/B fragments hold every matrix
//     element more than once, as on the GPU: 16 elements per lane for a 16x16 tile);
//   * load_matrix_sync / store_matrix_sync / mma_sync as warp-collective operations: all 32 lanes
//     of the warp must call them (a partial warp, an exited lane or a divergent lane aborts through
//     __syncwarp's checks) with the same pointer, ldm and layout (checked: a mismatch aborts naming
//     both call sites); the pointer must be 256-bit aligned and ldm a multiple of 16 bytes;
//   * mma_sync computes D = A*B + C in FP32 (exact products, summed from C in k order) and, for
//     tf32, uses only the 19 bits a tensor core reads: inputs not rounded with __float_to_tf32
//     are truncated, as on the GPU;
//   * the element-to-lane mapping of a fragment, which CUDA leaves unspecified, is selectable:
//     SIMT_WMMA_MAP=natural|scrambled[:SEED] (scrambled by default) or simt::set_wmma_map(). Under
//     scrambled, every fragment type gets its own seeded permutation, so code that reads x[i] as a
//     particular (row, col), or moves elements between fragments of different types, gives wrong
//     results, while position-independent work (fill, scaling, conversion, elementwise operations
//     between fragments of one type) is unaffected. Copies of one matrix element held by several
//     lanes must agree when mma_sync reads them (a mapping-dependent write makes them differ).
//   * fragments start out as 0xFF bytes (NaN): an mma_sync on an accumulator never filled or
//     loaded gives NaN.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "simt/simt.h"

namespace simt {

// Element-to-lane mapping of WMMA fragments. Natural: lane l holds elements l*E/32 ... of the
// row-major tile (each element once per copy). Scrambled: a per-fragment-type permutation drawn
// from Philox with the seed. SIMT_WMMA_MAP sets the initial choice (scrambled:0 when unset); this
// call overrides it. Fragments must not live across a change (set it between launches).
enum class WmmaMap { Natural, Scrambled };
void set_wmma_map(WmmaMap map, uint64_t seed = 0);
WmmaMap wmma_map();
uint64_t wmma_map_seed();
// Back to what SIMT_WMMA_MAP says, re-reading the environment.
void reset_wmma_map();

namespace detail {
// Defined in simt/scheduler.cpp: "kernel K (launched at f:l) block (x,y,z)" for messages.
std::string current_kernel_where();
}  // namespace detail

namespace wmma_detail {

enum class Use : uint8_t { A, B, Acc };
enum class Elem : uint8_t { Half, Bf16, Tf32, Float };

// Everything the runtime needs to know about one fragment type.
struct FragDesc {
  Use use;
  Elem elem;
  int8_t layout;  // 0 row_major, 1 col_major, -1 none (accumulators)
  uint8_t m, n, k;
  uint8_t ne;          // elements per lane (num_elements)
  uint8_t rows, cols;  // the tile: A is m x k, B is k x n, accumulators m x n
};

// The warp-collective operations (simt/mma.cpp). x: the calling lane's fragment elements
// (desc.ne of them, 2 or 4 bytes each). mem_layout: 0 row-major, 1 column-major.
void load(const FragDesc& d, void* x, const void* p, unsigned ldm, int mem_layout,
          const char* file, int line);
void store(const FragDesc& d, const void* x, void* p, unsigned ldm, int mem_layout,
           const char* file, int line);
void mma(const FragDesc& dd, void* dx, const FragDesc& da, const void* ax, const FragDesc& db,
         const void* bx, const FragDesc& dc, const void* cx, const char* file, int line);
// The (row, col) of the tile that element i of the calling lane's fragment holds, under the
// current mapping. For simt's own tests of the mapping, not for kernels.
void element_position(const FragDesc& d, int lane, int i, int* row, int* col);

}  // namespace wmma_detail
}  // namespace simt

namespace nvcuda {
namespace wmma {

// cvt.rna.tf32.f32: round to the nearest value with a 10-bit mantissa, ties away from zero; the
// result is a float whose 13 low mantissa bits are zero. NaN stays NaN, infinities stay.
inline float __float_to_tf32(float in) {
  uint32_t u;
  std::memcpy(&u, &in, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) {
    if (u & 0x007fffffu) u = 0x7fffffffu;  // NaN: the canonical NaN cvt produces
  } else {
    u = (u + 0x1000u) & 0xffffe000u;  // add half an ulp of tf32 to the magnitude, truncate
  }
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

struct row_major;
struct col_major;
struct matrix_a;
struct matrix_b;
struct accumulator;
namespace precision {
struct tf32;
}
enum layout_t { mem_row_major, mem_col_major };

template <typename T>
struct helper_traits {
  typedef T element_type;
  typedef T storage_element_type;
  typedef T fill_argument_type;
};
template <>
struct helper_traits<precision::tf32> {
  typedef precision::tf32 element_type;
  typedef float storage_element_type;
  typedef float fill_argument_type;
};

template <typename T, int size>
struct __frag_base {
  enum { num_elements = size };
  enum { num_storage_elements = size };
  typedef T element_type;
  typedef typename helper_traits<T>::storage_element_type storage_element_type;
  storage_element_type x[num_storage_elements];
  // Uninitialised on a GPU; NaN here, so that using a fragment nobody filled is loud.
  __frag_base() { std::memset(static_cast<void*>(x), 0xFF, sizeof x); }
};

template <typename FragEleType, int size>
inline void fill_fragment(__frag_base<FragEleType, size>& f,
                          const typename helper_traits<FragEleType>::fill_argument_type& in) {
  typedef typename helper_traits<FragEleType>::storage_element_type storage_type;
  const storage_type v = in;
  for (int i = 0; i < f.num_storage_elements; i++) f.x[i] = v;
}

namespace simt_traits {
using simt::wmma_detail::Elem;
using simt::wmma_detail::FragDesc;
using simt::wmma_detail::Use;

template <class U> constexpr Use use_of() {
  return std::is_same<U, matrix_a>::value ? Use::A : std::is_same<U, matrix_b>::value ? Use::B : Use::Acc;
}
template <class T> constexpr Elem elem_of() {
  return std::is_same<T, __half>::value ? Elem::Half
         : std::is_same<T, __nv_bfloat16>::value ? Elem::Bf16
         : std::is_same<T, precision::tf32>::value ? Elem::Tf32 : Elem::Float;
}
template <class L> constexpr int layout_of() {
  return std::is_same<L, row_major>::value ? 0 : std::is_same<L, col_major>::value ? 1 : -1;
}
// Elements per lane of each fragment CUDA defines (crt/mma.h), 0 for the ones it does not.
template <class U, int M, int N, int K, class T, class L>
constexpr int elements() {
  constexpr Use u = use_of<U>();
  constexpr Elem e = elem_of<T>();
  constexpr bool known_type = std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value ||
                              std::is_same<T, precision::tf32>::value || std::is_same<T, float>::value;
  if (!known_type) return 0;
  if (u == Use::Acc) {
    if (!std::is_same<L, void>::value) return 0;
    if (e == Elem::Float) return (M == 16 && N == 16 && (K == 16 || K == 8)) || (M == 32 && N == 8 && K == 16) ||
                                 (M == 8 && N == 32 && K == 16) ? 8 : 0;
    if (e == Elem::Half) return (M == 16 && N == 16 && K == 16) || (M == 32 && N == 8 && K == 16) ||
                                (M == 8 && N == 32 && K == 16) ? 8 : 0;
    return 0;
  }
  if (!std::is_same<L, row_major>::value && !std::is_same<L, col_major>::value) return 0;
  if (e == Elem::Half) return ((M == 16 && N == 16) || (M == 32 && N == 8) || (M == 8 && N == 32)) && K == 16 ? 16 : 0;
  if (e == Elem::Bf16) {
    if (M == 16 && N == 16 && K == 16) return 8;
    if (M == 32 && N == 8 && K == 16) return u == Use::A ? 16 : 4;
    if (M == 8 && N == 32 && K == 16) return u == Use::A ? 4 : 16;
    return 0;
  }
  if (e == Elem::Tf32) return M == 16 && N == 16 && K == 8 ? 4 : 0;
  return 0;
}
template <class U, int M, int N, int K, class T, class L>
struct checked_elements {
  static constexpr int value = elements<U, M, N, K, T, L>();
  static_assert(value > 0,
                "wmma::fragment: not a fragment type CUDA defines (simt emulates half, "
                "__nv_bfloat16 and precision::tf32 inputs with float/half accumulators in shapes "
                "m16n16k16, m32n8k16, m8n32k16 and m16n16k8 for tf32; accumulators take no layout)");
};
}  // namespace simt_traits

template <typename Use, int m, int n, int k, typename T, typename Layout = void>
class fragment : public __frag_base<T, simt_traits::checked_elements<Use, m, n, k, T, Layout>::value> {};

namespace simt_traits {
template <class U, int M, int N, int K, class T, class L>
struct desc_holder {
  static constexpr Use u = use_of<U>();
  static constexpr FragDesc value = {
      u, elem_of<T>(), (int8_t)layout_of<L>(), (uint8_t)M, (uint8_t)N, (uint8_t)K,
      (uint8_t)elements<U, M, N, K, T, L>(),
      (uint8_t)(u == Use::B ? K : M), (uint8_t)(u == Use::A ? K : N)};
};
template <class U, int M, int N, int K, class T, class L>
constexpr FragDesc desc_holder<U, M, N, K, T, L>::value;
template <class U, int M, int N, int K, class T, class L>
inline const FragDesc& desc(const fragment<U, M, N, K, T, L>&) {
  return desc_holder<U, M, N, K, T, L>::value;
}
}  // namespace simt_traits

// Loads of matrix_a / matrix_b fragments: the layout is the fragment's.
template <class Use, int M, int N, int K, class T, class L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& a,
                             const typename helper_traits<T>::storage_element_type* p, unsigned ldm,
                             const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  static_assert(!std::is_same<Use, accumulator>::value,
                "load_matrix_sync of an accumulator takes a layout_t (mem_row_major or mem_col_major)");
  simt::wmma_detail::load(simt_traits::desc(a), a.x, p, ldm, simt_traits::layout_of<L>(), file, line);
}
// Loads and stores of accumulators: the memory layout is an argument.
template <int M, int N, int K, class T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T>& a, const T* p, unsigned ldm,
                             layout_t layout, const char* file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
  simt::wmma_detail::load(simt_traits::desc(a), a.x, p, ldm, (int)layout, file, line);
}
template <int M, int N, int K, class T>
inline void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& a, unsigned ldm,
                              layout_t layout, const char* file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  simt::wmma_detail::store(simt_traits::desc(a), a.x, p, ldm, (int)layout, file, line);
}

// D = A * B + C. Half inputs take half or float C and D; bf16 and tf32 inputs only float.
template <int M, int N, int K, class TA, class LA, class LB, class TC, class TD>
inline void mma_sync(fragment<accumulator, M, N, K, TD>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TA, LB>& b,
                     const fragment<accumulator, M, N, K, TC>& c,
                     const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  static_assert(std::is_same<TA, __half>::value
                    ? ((std::is_same<TC, float>::value || std::is_same<TC, __half>::value) &&
                       (std::is_same<TD, float>::value || std::is_same<TD, __half>::value))
                    : (std::is_same<TC, float>::value && std::is_same<TD, float>::value),
                "wmma::mma_sync: __nv_bfloat16 and tf32 inputs take float accumulators only");
  simt::wmma_detail::mma(simt_traits::desc(d), d.x, simt_traits::desc(a), a.x, simt_traits::desc(b),
                         b.x, simt_traits::desc(c), c.x, file, line);
}

}  // namespace wmma
}  // namespace nvcuda
