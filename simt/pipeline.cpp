// simt/pipeline.cpp — per-CUDA-thread queues of asynchronous copies behind simt/pipeline.h.
//
// A copy is recorded at issue (destination poisoned, source bytes snapshotted) and performed only
// when a __pipeline_wait_prior covers its batch, reading the source then: a missing wait leaves
// the NaN poison in shared memory, a source changed before the wait (or a destination written by
// someone else) aborts.
//
// The queues belong to one block. A block is recognised without any scheduler hook: t_block_token
// is a thread_local, i.e. it sits in the TLS block that simt refills with 0xFF at every block start
// (the same storage as __shared__ variables), so ~0 means "first pipeline call of a new block".
//
// Race mode (ThreadSanitizer): the queues are simt's bookkeeping (the first thread of a block to
// make a pipeline call sets them up for all), so every access to them is inside a RaceIgnore
// scope (simt/internal.h); annotating an edge for them instead would order that first thread
// before the others and hide their real races. What a copy does to user memory stays outside
// those scopes and is checked as the thread's own accesses: reading the source (at issue, and
// again when it lands), poisoning the destination at issue, writing it when it lands. So a
// destination read by another thread without a barrier after the wait, or overwritten by a new
// copy while another thread may still read it, is reported.
#include "simt/pipeline.h"

#include <deque>
#include <string>
#include <vector>

#include "simt/internal.h"

namespace simt {

namespace detail {
std::string current_kernel_where();  // simt/scheduler.cpp
}

namespace {

using detail::RaceIgnore;
using detail::race_user_read;
using detail::race_user_write;

struct Copy {
  unsigned char* dst;
  const unsigned char* src;
  size_t size, zfill;                  // size bytes written: size - zfill copied, zfill zeroed
  std::vector<unsigned char> snapshot;  // the source bytes at issue
  const char* what;                     // the API, for messages
  const char* file;
  int line;
};
struct ThreadQueue {
  std::vector<Copy> uncommitted;
  std::deque<std::vector<Copy>> batches;  // oldest first
};
struct BlockQueues {
  uint64_t token = 0;
  uint3 block;
  dim3 block_dim, grid_dim;
  std::vector<ThreadQueue> threads;
};
BlockQueues g_queues;
uint64_t g_next_token = 1;
thread_local uint64_t t_block_token = 0;  // ~0 at every block start (see above)

bool same(const dim3& a, const dim3& b) { return a.x == b.x && a.y == b.y && a.z == b.z; }

// The calling CUDA thread's queue, after starting afresh if this is a new block.
ThreadQueue& my_queue(const char* what, const char* file, int line) {
  BlockQueues& q = g_queues;
  const bool same_block = t_block_token == q.token && q.block.x == blockIdx.x &&
                          q.block.y == blockIdx.y && q.block.z == blockIdx.z &&
                          same(q.block_dim, blockDim) && same(q.grid_dim, gridDim);
  if (!same_block) {
    t_block_token = q.token = g_next_token++;
    q.block = blockIdx;
    q.block_dim = blockDim;
    q.grid_dim = gridDim;
    q.threads.assign((size_t)blockDim.x * blockDim.y * blockDim.z, ThreadQueue());
  }
  const size_t linear = threadIdx.x + (size_t)threadIdx.y * blockDim.x +
                        (size_t)threadIdx.z * blockDim.x * blockDim.y;
  if (linear >= q.threads.size()) fail("%s at %s:%d called outside a kernel", what, file, line);
  return q.threads[linear];
}

std::string thread_where() {
  char buf[64];
  snprintf(buf, sizeof buf, " thread (%u,%u,%u)", threadIdx.x, threadIdx.y, threadIdx.z);
  return detail::current_kernel_where() + buf;
}

// The copy's accesses to user memory are announced to TSan (race mode): memcmp, memcpy and
// memset of a few bytes are expanded inline, unseen by its interceptors.
void land(const Copy& c, const char* file, int line) {
  const size_t n = c.size - c.zfill;
  race_user_read(c.src, n);
  if (n && std::memcmp(c.src, c.snapshot.data(), n) != 0)
    fail("%s at %s:%d in %s: its source %p was modified before the copy was waited for (at "
         "%s:%d). The copy reads its source asynchronously: it must not change until a wait "
         "covers the copy's batch",
         c.what, c.file, c.line, thread_where().c_str(), (const void*)c.src, file, line);
  for (size_t i = 0; i < c.size; ++i)
    if (c.dst[i] != 0xFF)
      fail("%s at %s:%d in %s: its destination %p was written before the copy was waited for (at "
           "%s:%d). The copy writes its destination asynchronously: nobody may touch it until a "
           "wait covers the copy's batch",
           c.what, c.file, c.line, thread_where().c_str(), (void*)c.dst, file, line);
  race_user_write(c.dst, c.size);
  std::memcpy(c.dst, c.src, n);
  std::memset(c.dst + n, 0, c.zfill);
}

// Records the copy in the calling thread's queue: source snapshotted, destination poisoned until
// it lands.
void queue(void* dst, const void* src, size_t size, size_t zfill, const char* what,
           const char* file, int line) {
  Copy c;
  c.dst = static_cast<unsigned char*>(dst);
  c.src = static_cast<const unsigned char*>(src);
  c.size = size;
  c.zfill = zfill;
  c.what = what;
  c.file = file;
  c.line = line;
  {
    RaceIgnore ignore;
    c.snapshot.resize(size - zfill);
  }
  race_user_read(src, size - zfill);
  if (size > zfill) std::memcpy(c.snapshot.data(), src, size - zfill);
  race_user_write(dst, size);
  std::memset(dst, 0xFF, size);  // undefined until the copy lands: make early reads loud
  RaceIgnore ignore;
  my_queue(what, file, line).uncommitted.push_back(std::move(c));
}

}  // namespace

namespace pipeline_detail {

void memcpy_async(void* dst, const void* src, size_t size, size_t zfill, const char* file, int line) {
  const char* what = "__pipeline_memcpy_async";
  {
    RaceIgnore ignore;
    my_queue(what, file, line);  // "called outside a kernel" before anything else
  }
  if (size != 4 && size != 8 && size != 16)
    fail("%s at %s:%d in %s: size_and_align %zu must be 4, 8 or 16", what, file, line,
         thread_where().c_str(), size);
  if (zfill > size)
    fail("%s at %s:%d in %s: zfill %zu exceeds size_and_align %zu", what, file, line,
         thread_where().c_str(), zfill, size);
  if (reinterpret_cast<uintptr_t>(dst) % size || reinterpret_cast<uintptr_t>(src) % size)
    fail("%s at %s:%d in %s: dst_shared %p and src_global %p must both be aligned to "
         "size_and_align (%zu bytes)",
         what, file, line, thread_where().c_str(), dst, src, size);
  if (detail::is_device_pointer(dst))
    fail("%s at %s:%d in %s: dst_shared %p is device (global) memory; it must point to shared "
         "memory",
         what, file, line, thread_where().c_str(), dst);
  if (size > zfill) {
    if (!detail::is_device_pointer(src))
      fail("%s at %s:%d in %s: src_global %p is not device (global) memory", what, file, line,
           thread_where().c_str(), src);
    std::string desc = std::string(what) + " source (" + file + ":" + std::to_string(line) + ")";
    detail::check_device_range(src, size - zfill, desc.c_str());
  }
  queue(dst, src, size, zfill, what, file, line);
}

void memcpy_async_bytes(void* dst, const void* src, size_t size, size_t align, const char* file,
                        int line) {
  const char* what = "cuda::memcpy_async";
  {
    RaceIgnore ignore;
    my_queue(what, file, line);
  }
  if (align > 1 && (reinterpret_cast<uintptr_t>(dst) % align || reinterpret_cast<uintptr_t>(src) % align ||
                    size % align))
    fail("%s at %s:%d in %s: cuda::aligned_size_t<%zu> promises that destination %p, source %p and "
         "size %zu are multiples of %zu",
         what, file, line, thread_where().c_str(), align, dst, src, size, align);
  if (size == 0) return;
  if (detail::is_device_pointer(src)) {
    std::string desc = std::string(what) + " source (" + file + ":" + std::to_string(line) + ")";
    detail::check_device_range(src, size, desc.c_str());
  }
  if (detail::is_device_pointer(dst)) {
    std::string desc = std::string(what) + " destination (" + file + ":" + std::to_string(line) + ")";
    detail::check_device_range(dst, size, desc.c_str());
  }
  queue(dst, src, size, 0, what, file, line);
}

void commit(const char* file, int line) {
  RaceIgnore ignore;
  ThreadQueue& q = my_queue("__pipeline_commit", file, line);
  q.batches.push_back(std::move(q.uncommitted));  // an empty batch is a batch, as in PTX
  q.uncommitted.clear();
}

void wait_prior(size_t prior, const char* file, int line) {
  if (prior > 8) prior = 8;  // NVIDIA's header waits for "all but 8" beyond 8
  for (;;) {
    std::vector<Copy> batch;
    {
      RaceIgnore ignore;
      ThreadQueue& q = my_queue("__pipeline_wait_prior", file, line);
      if (q.batches.size() <= prior) return;
      batch = std::move(q.batches.front());
      q.batches.pop_front();
    }
    for (const Copy& c : batch) land(c, file, line);  // the user's memory: checked
    RaceIgnore ignore;
    std::vector<Copy>().swap(batch);  // frees the bookkeeping inside the scope
  }
}

}  // namespace pipeline_detail
}  // namespace simt
