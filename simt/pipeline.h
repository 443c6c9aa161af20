// simt/pipeline.h — CUDA's pipeline primitives (asynchronous global -> shared copies, sm_80's
// cp.async) for kernels run by simt. Kernels write `#include <cuda_pipeline.h>` or
// `#include <cuda_pipeline_primitives.h>` as under nvcc; in the simt build the headers of the same
// name in simt/include/ bring this one.
//
// Semantics, per CUDA thread, taken strictly (see docs/simt.md):
//   * __pipeline_memcpy_async(dst_shared, src_global, size_and_align, zfill = 0) queues a copy of
//     size_and_align - zfill bytes followed by zfill zero bytes. size_and_align must be 4, 8 or
//     16, zfill <= size_and_align, both pointers aligned to size_and_align, src in device memory
//     and dst not (shared memory). The destination is overwritten with 0xFF bytes (NaN) at once:
//     until the copy lands its contents are undefined, so reading it early is loud.
//   * __pipeline_commit() closes the copies queued since the last commit into a batch (possibly
//     empty, as cp.async.commit_group).
//   * __pipeline_wait_prior(N) lands every batch but the N most recent (N above 8 counts as 8,
//     as in NVIDIA's header). Copies not yet committed are NOT waited for.
//   * A copy reads its source when it lands. The source must not change between the issue and the
//     wait, nor may anyone write the destination meanwhile: either aborts when the copy lands.
//   * Copies still pending when their thread exits never land.
#pragma once

#include <cstddef>

#include "simt/simt.h"

namespace simt {
namespace pipeline_detail {
void memcpy_async(void* dst, const void* src, size_t size_and_align, size_t zfill, const char* file,
                  int line);
void commit(const char* file, int line);
void wait_prior(size_t prior, const char* file, int line);
// cuda::memcpy_async (simt/include/cuda/pipeline): any size, any memory; align: the
// cuda::aligned_size_t promise (1 for none), checked.
void memcpy_async_bytes(void* dst, const void* src, size_t size, size_t align, const char* file,
                        int line);
}  // namespace pipeline_detail
}  // namespace simt

inline void __pipeline_memcpy_async(void* __restrict__ dst_shared, const void* __restrict__ src_global,
                                    size_t size_and_align, size_t zfill = 0,
                                    const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  simt::pipeline_detail::memcpy_async(dst_shared, src_global, size_and_align, zfill, file, line);
}
inline void __pipeline_commit(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  simt::pipeline_detail::commit(file, line);
}
inline void __pipeline_wait_prior(size_t prior, const char* file = __builtin_FILE(),
                                  int line = __builtin_LINE()) {
  simt::pipeline_detail::wait_prior(prior, file, line);
}
