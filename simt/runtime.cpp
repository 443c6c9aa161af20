// simt/runtime.cpp — the CUDA runtime API on the CPU: device memory with guard bytes, copies
// with range checks, streams and events, errors, and a fake device's properties.
//
// Copies and sets are queued on their stream like every asynchronous call (simt/streams.cpp
// holds the queues, events and graphs); cudaFree/cudaFreeHost synchronise the device first.
//
// Device allocations are host memory laid out as [256 guard bytes][size bytes][>= 256 guard
// bytes]. The user bytes start 0xFF-filled (NaN for float and half), the guards hold a NaN
// pattern (0x7FA5A5A5 per aligned 32-bit word) that an out-of-bounds write overwrites: guards
// are checked on cudaFree, on every synchronize and after every kernel launch, and a broken one
// aborts naming the allocation. Pinned host allocations carry the same guards.
#include <chrono>
#include <cstdlib>
#include <map>
#include <set>
#include <string>

#include "simt/internal.h"

namespace simt {
namespace {

using detail::device_mutex;
using Lock = std::lock_guard<std::recursive_mutex>;

thread_local cudaError_t t_last_error = cudaSuccess;

cudaError_t ret(cudaError_t e) {
  if (e != cudaSuccess) t_last_error = e;
  return e;
}

// ---------------------------------------------------------------------------------------------
// Allocations.
enum class Kind { Device, Managed, Pinned, Registered, Symbol };
constexpr size_t kGuard = 256;

struct Alloc {
  char* raw;        // what malloc returned (null for registered ranges and symbols)
  char* ptr;        // what the user got
  size_t size;      // what the user asked for
  size_t raw_size;  // kGuard + size + tail guard
  Kind kind;
  unsigned long long serial;  // n-th allocation of the program
  std::string name;
};
std::map<uintptr_t, Alloc> g_allocs;  // by user pointer
size_t g_device_bytes = 0;
unsigned long long g_serial = 0;

inline unsigned char guard_byte(uintptr_t addr) { return (addr & 3) == 3 ? 0x7F : 0xA5; }
// Guard pattern laid out from a 4-aligned address; compare against pattern() + (addr & 3).
const unsigned char* pattern() {
  static unsigned char p[2048];
  static bool init = false;
  if (!init) {
    for (size_t i = 0; i < sizeof p; ++i) p[i] = guard_byte(i);
    init = true;
  }
  return p;
}
void fill_guard(char* p, size_t n) { memcpy(p, pattern() + ((uintptr_t)p & 3), n); }

bool is_device_kind(Kind k) { return k == Kind::Device || k == Kind::Managed || k == Kind::Symbol; }
bool has_guards(const Alloc& a) { return a.raw != nullptr; }

std::string describe(const Alloc& a) {
  char buf[512];
  const char* kind = a.kind == Kind::Pinned ? "pinned host allocation" : "device allocation";
  if (a.name.empty())
    snprintf(buf, sizeof buf, "%s #%llu (unnamed: simt::name_allocation names it; %zu bytes at %p)",
             kind, a.serial, a.size, (void*)a.ptr);
  else
    snprintf(buf, sizeof buf, "%s '%s' (#%llu, %zu bytes at %p)", kind, a.name.c_str(), a.serial,
             a.size, (void*)a.ptr);
  return buf;
}

// Aborts if a guard of `a` was overwritten; `context` says when the damage was found.
void check_alloc(const Alloc& a, const std::string& context) {
  if (!has_guards(a)) return;
  const size_t tail = a.raw_size - kGuard - a.size;
  char* tail_p = a.ptr + a.size;
  if (memcmp(a.raw, pattern(), kGuard) != 0) {
    size_t first = 0;
    while (first < kGuard && (unsigned char)a.raw[first] == guard_byte((uintptr_t)(a.raw + first))) ++first;
    size_t last = kGuard - 1;
    while ((unsigned char)a.raw[last] == guard_byte((uintptr_t)(a.raw + last))) --last;
    fail("out-of-bounds write %s: the guard bytes before %s were overwritten, from %zu to %zu bytes "
         "before its start",
         context.c_str(), describe(a).c_str(), kGuard - first, kGuard - last);
  }
  if (memcmp(tail_p, pattern() + ((uintptr_t)tail_p & 3), tail) != 0) {
    size_t first = 0;
    while ((unsigned char)tail_p[first] == guard_byte((uintptr_t)(tail_p + first))) ++first;
    size_t last = tail - 1;
    while ((unsigned char)tail_p[last] == guard_byte((uintptr_t)(tail_p + last))) --last;
    fail("out-of-bounds write %s: the guard bytes after %s were overwritten at byte offsets "
         "[%zu, %zu] (%zu to %zu bytes past its end)",
         context.c_str(), describe(a).c_str(), a.size + first, a.size + last, first, last);
  }
}

// The allocation containing p in [ptr, ptr + size) (or p == ptr for size 0), or null.
Alloc* find_alloc(const void* p) {
  uintptr_t a = (uintptr_t)p;
  auto it = g_allocs.upper_bound(a);
  if (it == g_allocs.begin()) return nullptr;
  --it;
  Alloc& al = it->second;
  if (a >= (uintptr_t)al.ptr && (a < (uintptr_t)al.ptr + al.size || a == (uintptr_t)al.ptr)) return &al;
  return nullptr;
}
// The allocation whose guard bytes contain p, or null.
Alloc* find_guard_hit(const void* p, bool* before) {
  uintptr_t a = (uintptr_t)p;
  auto it = g_allocs.upper_bound(a);
  if (it != g_allocs.end() && it->second.raw && a >= (uintptr_t)it->second.raw) {
    *before = true;
    return &it->second;
  }
  if (it != g_allocs.begin()) {
    --it;
    Alloc& al = it->second;
    if (al.raw && a >= (uintptr_t)al.ptr + al.size && a < (uintptr_t)al.raw + al.raw_size) {
      *before = false;
      return &al;
    }
  }
  return nullptr;
}

cudaError_t allocate(void** out, size_t size, Kind kind, bool unsafe_in_capture = true) {
  if (!out) return ret(cudaErrorInvalidValue);
  Lock lock(device_mutex());
  if (unsafe_in_capture)
    if (cudaError_t e = detail::check_capture_unsafe_call()) return ret(e);
  if (size == 0) {
    *out = nullptr;
    return cudaSuccess;
  }
  if (kind != Kind::Pinned && g_device_bytes + size > detail::kTotalGlobalMem) {
    *out = nullptr;
    return ret(cudaErrorMemoryAllocation);
  }
  const size_t raw_size = (kGuard + size + kGuard + 255) & ~size_t(255);
  char* raw = static_cast<char*>(aligned_alloc(256, raw_size));
  if (!raw) {
    *out = nullptr;
    return ret(cudaErrorMemoryAllocation);
  }
  Alloc a{raw, raw + kGuard, size, raw_size, kind, ++g_serial, std::string()};
  fill_guard(a.raw, kGuard);
  memset(a.ptr, 0xFF, size);  // fresh memory is NaN garbage, never zero
  fill_guard(a.ptr + size, raw_size - kGuard - size);
  g_allocs.emplace((uintptr_t)a.ptr, a);
  if (kind != Kind::Pinned) g_device_bytes += size;
  *out = a.ptr;
  return cudaSuccess;
}

cudaError_t release(void* p, bool pinned, const char* call, bool synchronous = true) {
  if (!p) return cudaSuccess;
  Lock lock(device_mutex());
  if (synchronous) {
    if (cudaError_t e = detail::check_capture_unsafe_call()) return ret(e);
    // Freeing synchronises with the device (queued work may still use the memory).
    detail::synchronize_device(call);
  }
  auto it = g_allocs.find((uintptr_t)p);
  bool ok = it != g_allocs.end() && (pinned ? it->second.kind == Kind::Pinned
                                            : (it->second.kind == Kind::Device || it->second.kind == Kind::Managed));
  if (!ok)
    fail("%s(%p): not a live %s (freed twice, or not returned by %s)", call, p,
         pinned ? "pinned host allocation" : "device allocation",
         pinned ? "cudaMallocHost/cudaHostAlloc" : "cudaMalloc");
  check_alloc(it->second, std::string("found at ") + call);
  if (!pinned) g_device_bytes -= it->second.size;
  free(it->second.raw);
  g_allocs.erase(it);
  return cudaSuccess;
}

bool is_pinned(const void* p) {
  Alloc* a = find_alloc(p);
  return a && (a->kind == Kind::Pinned || a->kind == Kind::Registered);
}

// Range check for the host side of a copy: only pinned allocations are known.
void check_host_range(const void* p, size_t n, const char* what) {
  Alloc* a = find_alloc(p);
  if (a && is_device_kind(a->kind))
    fail("%s %p is device memory (%s), but the copy kind says host", what, p, describe(*a).c_str());
  if (a && (uintptr_t)p + n > (uintptr_t)a->ptr + a->size)
    fail("%s overruns %s: %zu bytes from offset %zu", what, describe(*a).c_str(), n,
         (size_t)((uintptr_t)p - (uintptr_t)a->ptr));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
namespace detail {

std::recursive_mutex& device_mutex() {
  static std::recursive_mutex m;
  return m;
}
void set_last_error(cudaError_t e) { ret(e); }

void check_all_guards(const char* kernel, const char* when) {
  Lock lock(device_mutex());
  std::string context = kernel ? std::string("by kernel ") + kernel
                               : std::string("found at ") + (when ? when : "a guard check");
  for (auto& kv : g_allocs) check_alloc(kv.second, context);
}

// These two are also called from kernels (async copies): DeviceLock, see simt/internal.h.
void check_device_range(const void* p, size_t n, const char* what) {
  if (n == 0) return;
  DeviceLock lock;
  Alloc* a = find_alloc(p);
  if (a && is_device_kind(a->kind)) {
    if (a->kind == Kind::Symbol || (uintptr_t)p + n <= (uintptr_t)a->ptr + a->size) return;
    size_t off = (uintptr_t)p - (uintptr_t)a->ptr;
    fail("%s overruns %s: %zu bytes at offset %zu reach %zu bytes past its end", what,
         describe(*a).c_str(), n, off, off + n - a->size);
  }
  bool before = false;
  if (Alloc* g = find_guard_hit(p, &before)) {
    size_t d = before ? (uintptr_t)g->ptr - (uintptr_t)p : (uintptr_t)p - (uintptr_t)g->ptr - g->size;
    fail("%s %p lies %zu bytes %s %s", what, p, d, before ? "before the start of" : "past the end of",
         describe(*g).c_str());
  }
  if (a) fail("%s %p is %s, not device memory", what, p, describe(*a).c_str());
  fail("%s %p is not device memory (not from cudaMalloc, or already freed)", what, p);
}

bool is_device_pointer(const void* p) {
  DeviceLock lock;
  Alloc* a = find_alloc(p);
  return a && is_device_kind(a->kind);
}

void check_pointer_arg(const char* kernel, int index, const void* p) {
  if (!p) return;
  Lock lock(device_mutex());
  uintptr_t u = (uintptr_t)p;
  auto it = g_allocs.upper_bound(u);
  if (it != g_allocs.begin()) {
    --it;
    const Alloc& a = it->second;
    if (u >= (uintptr_t)a.ptr && u <= (uintptr_t)a.ptr + a.size) return;  // one past the end is fine
  }
  fail("kernel %s: argument %d is the pointer %p, which is not device memory (not from cudaMalloc "
       "or cudaMallocHost, or already freed): a GPU would fault on it",
       kernel, index, p);
}

void register_symbol(const void* symbol, size_t size) {
  Lock lock(device_mutex());
  if (find_alloc(symbol)) return;
  Alloc a{nullptr, (char*)symbol, size, size, Kind::Symbol, ++g_serial, std::string("symbol")};
  g_allocs.emplace((uintptr_t)symbol, a);
}

}  // namespace detail

void name_allocation(const void* p, const char* name) {
  Lock lock(device_mutex());
  auto it = g_allocs.find((uintptr_t)p);
  if (it == g_allocs.end())
    fail("simt::name_allocation(%p, \"%s\"): not the start of a live allocation", p, name);
  it->second.name = name;
}

void check_guards() { detail::check_all_guards(nullptr, "simt::check_guards()"); }

}  // namespace simt

// =============================================================================================
// The runtime API (declarations from cuda_runtime_api.h).
using simt::detail::device_mutex;
using simt::Lock;
using simt::ret;

extern "C" {

cudaError_t cudaMalloc(void** devPtr, size_t size) {
  return simt::allocate(devPtr, size, simt::Kind::Device);
}
cudaError_t cudaMallocManaged(void** devPtr, size_t size, unsigned int) {
  return simt::allocate(devPtr, size, simt::Kind::Managed);
}
cudaError_t cudaMallocAsync(void** devPtr, size_t size, cudaStream_t stream) {
  if (!simt::detail::valid_stream(stream)) return ret(cudaErrorInvalidResourceHandle);
  // Stream-ordered allocation is legal during capture; simt allocates at call time.
  return simt::allocate(devPtr, size, simt::Kind::Device, false);
}
cudaError_t cudaFree(void* devPtr) { return simt::release(devPtr, false, "cudaFree"); }
cudaError_t cudaFreeAsync(void* devPtr, cudaStream_t stream) {
  if (!devPtr) return cudaSuccess;
  {
    Lock lock(device_mutex());
    auto it = simt::g_allocs.find((uintptr_t)devPtr);
    if (it == simt::g_allocs.end() || it->second.kind != simt::Kind::Device)
      simt::fail("cudaFreeAsync(%p): not a live device allocation (freed twice, or not returned by "
                 "cudaMalloc)", devPtr);
  }
  // Stream-ordered: the memory is released when the stream reaches the free.
  return ret(simt::detail::enqueue(stream, "cudaFreeAsync", simt::detail::WorkKind::Host, nullptr,
                                   [devPtr] { simt::release(devPtr, false, "cudaFreeAsync", false); }));
}
cudaError_t cudaMallocHost(void** ptr, size_t size) {
  return simt::allocate(ptr, size, simt::Kind::Pinned);
}
cudaError_t cudaHostAlloc(void** pHost, size_t size, unsigned int) {
  return simt::allocate(pHost, size, simt::Kind::Pinned);
}
cudaError_t cudaFreeHost(void* ptr) { return simt::release(ptr, true, "cudaFreeHost"); }
cudaError_t cudaHostRegister(void* ptr, size_t size, unsigned int) {
  if (!ptr || !size) return ret(cudaErrorInvalidValue);
  Lock lock(device_mutex());
  if (simt::find_alloc(ptr)) return ret(cudaErrorHostMemoryAlreadyRegistered);
  simt::Alloc a{nullptr, (char*)ptr, size, size, simt::Kind::Registered, ++simt::g_serial, ""};
  simt::g_allocs.emplace((uintptr_t)ptr, a);
  return cudaSuccess;
}
cudaError_t cudaHostUnregister(void* ptr) {
  Lock lock(device_mutex());
  auto it = simt::g_allocs.find((uintptr_t)ptr);
  if (it == simt::g_allocs.end() || it->second.kind != simt::Kind::Registered)
    return ret(cudaErrorHostMemoryNotRegistered);
  simt::g_allocs.erase(it);
  return cudaSuccess;
}
cudaError_t cudaHostGetDevicePointer(void** pDevice, void* pHost, unsigned int) {
  if (!simt::is_pinned(pHost)) return ret(cudaErrorInvalidValue);
  *pDevice = pHost;  // unified addressing: the same address
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  Lock lock(device_mutex());
  if (free_bytes) *free_bytes = simt::detail::kTotalGlobalMem - simt::g_device_bytes;
  if (total) *total = simt::detail::kTotalGlobalMem;
  return cudaSuccess;
}
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* ptr) {
  if (!attr) return ret(cudaErrorInvalidValue);
  Lock lock(device_mutex());
  simt::Alloc* a = simt::find_alloc(ptr);
  memset(attr, 0, sizeof *attr);
  attr->device = 0;
  if (!a) {
    attr->type = cudaMemoryTypeUnregistered;
    return cudaSuccess;
  }
  attr->type = a->kind == simt::Kind::Pinned || a->kind == simt::Kind::Registered ? cudaMemoryTypeHost
               : a->kind == simt::Kind::Managed ? cudaMemoryTypeManaged
                                                 : cudaMemoryTypeDevice;
  attr->devicePointer = (void*)ptr;
  attr->hostPointer = attr->type == cudaMemoryTypeDevice ? nullptr : (void*)ptr;
  return cudaSuccess;
}

// ---------------------------------------------------------------------------------------------
// Copies and sets. They are queued on their stream (cudaMemcpy/cudaMemset on the legacy default
// stream) and read their source and write their destination when they run, with the host-side
// synchronisation of CUDA's "API synchronization behavior" page:
//   * host -> device from pageable memory: the source is staged (read) at call time; cudaMemcpy
//     first waits for the stream's earlier work, and returns before the copy itself has run;
//   * host -> device from pinned memory: cudaMemcpy waits for the copy; the Async form does not;
//   * device -> host: cudaMemcpy waits for the copy; the Async form does not (even to pageable
//     memory, where CUDA only says it *might* be synchronous);
//   * device -> device: never waits; host -> host: always waits;
//   * cudaMemset (device memory) never waits.
namespace simt {
namespace {

cudaMemcpyKind resolve_kind(void* dst, const void* src, cudaMemcpyKind kind) {
  if (kind != cudaMemcpyDefault) return kind;
  bool dd = detail::is_device_pointer(dst), sd = detail::is_device_pointer(src);
  return dd ? (sd ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
            : (sd ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
}

// Range checks of one row of a copy (abort on a bad range); false for an unknown kind.
bool check_copy_row(void* dst, const void* src, size_t count, cudaMemcpyKind kind, const char* call) {
  char what[128];
  static const char* names[] = {"HostToHost", "HostToDevice", "DeviceToHost", "DeviceToDevice"};
  if ((int)kind < 0 || (int)kind > 3) return false;
  auto check = [&](bool device, const void* p, const char* side) {
    snprintf(what, sizeof what, "%s(%s) %s", call, names[kind], side);
    if (device) detail::check_device_range(p, count, what);
    else check_host_range(p, count, what);
  };
  check(kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice, dst, "destination");
  check(kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice, src, "source");
  return true;
}

// A (2-D) copy of `height` rows of `width` bytes on `stream`; `blocking`: the cudaMemcpy form.
cudaError_t copy(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                 size_t height, cudaMemcpyKind kind, cudaStream_t stream, bool blocking,
                 const char* call) {
  if (width == 0 || height == 0) return cudaSuccess;
  if (!dst || !src) return ret(cudaErrorInvalidValue);
  if (height > 1 && (width > dpitch || width > spitch)) return ret(cudaErrorInvalidPitchValue);
  Lock lock(device_mutex());
  if (!detail::valid_stream(stream)) return ret(cudaErrorInvalidResourceHandle);
  kind = resolve_kind(dst, src, kind);
  for (size_t r = 0; r < height; ++r)
    if (!check_copy_row((char*)dst + r * dpitch, (const char*)src + r * spitch, width, kind, call))
      return ret(cudaErrorInvalidMemcpyDirection);
  const bool staged = kind == cudaMemcpyHostToDevice && !is_pinned(src);
  std::shared_ptr<std::vector<char>> stage;
  if (staged) {
    stage = std::make_shared<std::vector<char>>(width * height);
    for (size_t r = 0; r < height; ++r) memcpy(stage->data() + r * width, (const char*)src + r * spitch, width);
    src = stage->data();
    spitch = width;
  }
  auto work = [dst, dpitch, src, spitch, width, height, stage] {
    for (size_t r = 0; r < height; ++r) memmove((char*)dst + r * dpitch, (const char*)src + r * spitch, width);
  };
  uint64_t ticket = 0;
  cudaError_t e = detail::enqueue(stream, call, detail::WorkKind::Memcpy, nullptr, work, &ticket);
  if (e != cudaSuccess) return ret(e);
  if (kind == cudaMemcpyHostToHost || (blocking && kind != cudaMemcpyDeviceToDevice)) {
    if (staged) detail::wait_for_stream_deps(stream, ticket, call);
    else detail::wait_for(stream, ticket, call);
  }
  return cudaSuccess;
}

cudaError_t set(void* dst, size_t pitch, int value, size_t width, size_t height, cudaStream_t stream,
                const char* call) {
  if (width == 0 || height == 0) return cudaSuccess;
  if (height > 1 && width > pitch) return ret(cudaErrorInvalidPitchValue);
  Lock lock(device_mutex());
  if (!detail::valid_stream(stream)) return ret(cudaErrorInvalidResourceHandle);
  char what[96];
  snprintf(what, sizeof what, "%s destination", call);
  for (size_t r = 0; r < height; ++r) detail::check_device_range((char*)dst + r * pitch, width, what);
  return ret(detail::enqueue(stream, call, detail::WorkKind::Memset, nullptr, [=] {
    for (size_t r = 0; r < height; ++r) memset((char*)dst + r * pitch, value, width);
  }));
}

}  // namespace
}  // namespace simt

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  return simt::copy(dst, count, src, count, count, 1, kind, 0, true, "cudaMemcpy");
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  return simt::copy(dst, count, src, count, count, 1, kind, stream, false, "cudaMemcpyAsync");
}
cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                         size_t height, cudaMemcpyKind kind) {
  if (width && height && (width > dpitch || width > spitch)) return ret(cudaErrorInvalidPitchValue);
  return simt::copy(dst, dpitch, src, spitch, width, height, kind, 0, true, "cudaMemcpy2D");
}
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind kind, cudaStream_t stream) {
  if (width && height && (width > dpitch || width > spitch)) return ret(cudaErrorInvalidPitchValue);
  return simt::copy(dst, dpitch, src, spitch, width, height, kind, stream, false, "cudaMemcpy2DAsync");
}
cudaError_t cudaMemset(void* devPtr, int value, size_t count) {
  return simt::set(devPtr, count, value, count, 1, 0, "cudaMemset");
}
cudaError_t cudaMemsetAsync(void* devPtr, int value, size_t count, cudaStream_t stream) {
  return simt::set(devPtr, count, value, count, 1, stream, "cudaMemsetAsync");
}
cudaError_t cudaMemset2D(void* devPtr, size_t pitch, int value, size_t width, size_t height) {
  if (width && height && width > pitch) return ret(cudaErrorInvalidPitchValue);
  return simt::set(devPtr, pitch, value, width, height, 0, "cudaMemset2D");
}
cudaError_t cudaMemset2DAsync(void* devPtr, size_t pitch, int value, size_t width, size_t height,
                              cudaStream_t stream) {
  if (width && height && width > pitch) return ret(cudaErrorInvalidPitchValue);
  return simt::set(devPtr, pitch, value, width, height, stream, "cudaMemset2DAsync");
}
// Symbols (__constant__ / __device__ variables) are ordinary host globals under simt; copies to
// and from them are ordered on the stream like any other copy.
namespace {
cudaError_t symbol_copy(void* dst, const void* src, size_t count, bool to_symbol, cudaMemcpyKind kind,
                        cudaStream_t stream, bool blocking, const char* call) {
  if (count == 0) return cudaSuccess;
  const bool host_side = to_symbol ? kind != cudaMemcpyDeviceToDevice && !simt::detail::is_device_pointer(src)
                                   : kind != cudaMemcpyDeviceToDevice && !simt::detail::is_device_pointer(dst);
  Lock lock(device_mutex());
  if (!simt::detail::valid_stream(stream)) return ret(cudaErrorInvalidResourceHandle);
  std::shared_ptr<std::vector<char>> stage;
  if (to_symbol && host_side && !simt::is_pinned(src)) {  // pageable source: staged now
    stage = std::make_shared<std::vector<char>>((const char*)src, (const char*)src + count);
    src = stage->data();
  }
  uint64_t ticket = 0;
  cudaError_t e = simt::detail::enqueue(stream, call, simt::detail::WorkKind::Memcpy, nullptr,
                                        [dst, src, count, stage] { memmove(dst, src, count); }, &ticket);
  if (e != cudaSuccess) return ret(e);
  if (blocking && host_side) {
    if (stage) simt::detail::wait_for_stream_deps(stream, ticket, call);
    else simt::detail::wait_for(stream, ticket, call);
  }
  return cudaSuccess;
}
}  // namespace
cudaError_t cudaMemcpyToSymbol(const void* symbol, const void* src, size_t count, size_t offset,
                               cudaMemcpyKind kind) {
  if (kind != cudaMemcpyHostToDevice && kind != cudaMemcpyDeviceToDevice && kind != cudaMemcpyDefault)
    return ret(cudaErrorInvalidMemcpyDirection);
  return symbol_copy((char*)symbol + offset, src, count, true, kind, 0, true, "cudaMemcpyToSymbol");
}
cudaError_t cudaMemcpyToSymbolAsync(const void* symbol, const void* src, size_t count,
                                    size_t offset, cudaMemcpyKind kind, cudaStream_t stream) {
  if (kind != cudaMemcpyHostToDevice && kind != cudaMemcpyDeviceToDevice && kind != cudaMemcpyDefault)
    return ret(cudaErrorInvalidMemcpyDirection);
  return symbol_copy((char*)symbol + offset, src, count, true, kind, stream, false, "cudaMemcpyToSymbolAsync");
}
cudaError_t cudaMemcpyFromSymbol(void* dst, const void* symbol, size_t count, size_t offset,
                                 cudaMemcpyKind kind) {
  if (kind != cudaMemcpyDeviceToHost && kind != cudaMemcpyDeviceToDevice && kind != cudaMemcpyDefault)
    return ret(cudaErrorInvalidMemcpyDirection);
  return symbol_copy(dst, (const char*)symbol + offset, count, false, kind, 0, true, "cudaMemcpyFromSymbol");
}
cudaError_t cudaGetSymbolAddress(void** devPtr, const void* symbol) {
  *devPtr = (void*)symbol;
  return cudaSuccess;
}

// ---------------------------------------------------------------------------------------------
// Errors.
cudaError_t cudaGetLastError(void) {
  cudaError_t e = simt::t_last_error;
  simt::t_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return simt::t_last_error; }

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
#define N(e) case e: return #e;
    N(cudaSuccess) N(cudaErrorInvalidValue) N(cudaErrorMemoryAllocation)
    N(cudaErrorInitializationError) N(cudaErrorInvalidConfiguration) N(cudaErrorInvalidPitchValue)
    N(cudaErrorInvalidSymbol) N(cudaErrorInvalidDevicePointer) N(cudaErrorInvalidMemcpyDirection)
    N(cudaErrorInvalidDevice) N(cudaErrorInvalidResourceHandle) N(cudaErrorNotReady)
    N(cudaErrorNoDevice) N(cudaErrorLaunchOutOfResources) N(cudaErrorInvalidDeviceFunction)
    N(cudaErrorIllegalAddress) N(cudaErrorLaunchFailure) N(cudaErrorNotSupported)
    N(cudaErrorHostMemoryAlreadyRegistered) N(cudaErrorHostMemoryNotRegistered) N(cudaErrorUnknown)
    N(cudaErrorIllegalState) N(cudaErrorStreamCaptureUnsupported) N(cudaErrorStreamCaptureInvalidated)
    N(cudaErrorStreamCaptureMerge) N(cudaErrorStreamCaptureUnmatched) N(cudaErrorStreamCaptureUnjoined)
    N(cudaErrorStreamCaptureIsolation) N(cudaErrorStreamCaptureImplicit) N(cudaErrorCapturedEvent)
    N(cudaErrorStreamCaptureWrongThread) N(cudaErrorGraphExecUpdateFailure)
#undef N
    default: return "cudaErrorUnknown";
  }
}
const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidPitchValue: return "invalid pitch argument";
    case cudaErrorInvalidSymbol: return "invalid device symbol";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorHostMemoryAlreadyRegistered: return "part or all of the requested memory range is already mapped";
    case cudaErrorHostMemoryNotRegistered: return "pointer does not correspond to a registered memory region";
    case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureUnmatched: return "capture was not initiated in this stream";
    case cudaErrorStreamCaptureUnjoined: return "capturing stream has unjoined work";
    case cudaErrorStreamCaptureIsolation: return "dependency created on uncaptured work in another stream";
    case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorCapturedEvent: return "operation not permitted on an event last recorded in a capturing stream";
    case cudaErrorStreamCaptureWrongThread: return "attempt to terminate a thread-local capture sequence from another thread";
    case cudaErrorGraphExecUpdateFailure: return "the graph update was not performed because it included changes which violated constraints specific to instantiated graph update";
    default: return "unknown error";
  }
}

// ---------------------------------------------------------------------------------------------
// The device: one fake sm_90 GPU.
cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return ret(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : ret(cudaErrorInvalidDevice); }
cudaError_t cudaGetDevice(int* device) {
  if (!device) return ret(cudaErrorInvalidValue);
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDeviceFlags(unsigned int) { return cudaSuccess; }
cudaError_t cudaDeviceSetLimit(cudaLimit, size_t) { return cudaSuccess; }
cudaError_t cudaDeviceGetLimit(size_t* pValue, cudaLimit limit) {
  if (!pValue) return ret(cudaErrorInvalidValue);
  *pValue = limit == cudaLimitStackSize ? 1024 : limit == cudaLimitPrintfFifoSize ? (1 << 20) : 0;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) { *v = CUDART_VERSION; return cudaSuccess; }
cudaError_t cudaRuntimeGetVersion(int* v) { *v = CUDART_VERSION; return cudaSuccess; }

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (!p) return ret(cudaErrorInvalidValue);
  if (device != 0) return ret(cudaErrorInvalidDevice);
  using namespace simt::detail;
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "simt (CPU executor)");
  p->totalGlobalMem = kTotalGlobalMem;
  p->sharedMemPerBlock = kSharedMemPerBlock;
  p->regsPerBlock = 65536;
  p->warpSize = 32;
  p->memPitch = 2147483647;
  p->maxThreadsPerBlock = kMaxThreadsPerBlock;
  p->maxThreadsDim[0] = 1024; p->maxThreadsDim[1] = 1024; p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 2147483647; p->maxGridSize[1] = 65535; p->maxGridSize[2] = 65535;
  p->totalConstMem = 65536;
  p->major = 9;
  p->minor = 0;
  p->textureAlignment = 512;
  p->texturePitchAlignment = 32;
  p->multiProcessorCount = kMultiProcessors;
  p->canMapHostMemory = 1;
  p->concurrentKernels = 1;
  p->asyncEngineCount = 2;
  p->unifiedAddressing = 1;
  p->memoryBusWidth = 5120;
  p->l2CacheSize = 50 * 1024 * 1024;
  p->persistingL2CacheMaxSize = 32 * 1024 * 1024;
  p->maxThreadsPerMultiProcessor = 2048;
  p->streamPrioritiesSupported = 1;
  p->globalL1CacheSupported = 1;
  p->localL1CacheSupported = 1;
  p->sharedMemPerMultiprocessor = 228 * 1024;
  p->regsPerMultiprocessor = 65536;
  p->managedMemory = 1;
  p->concurrentManagedAccess = 1;
  p->computePreemptionSupported = 1;
  p->cooperativeLaunch = 1;
  p->sharedMemPerBlockOptin = kSharedMemPerBlockOptin;
  p->maxBlocksPerMultiProcessor = 32;
  p->reservedSharedMemPerBlock = 1024;
  p->hostRegisterSupported = 1;
  p->memoryPoolsSupported = 1;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (!value) return ret(cudaErrorInvalidValue);
  if (device != 0) return ret(cudaErrorInvalidDevice);
  using namespace simt::detail;
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = kMaxThreadsPerBlock; break;
    case cudaDevAttrMaxBlockDimX: *value = 1024; break;
    case cudaDevAttrMaxBlockDimY: *value = 1024; break;
    case cudaDevAttrMaxBlockDimZ: *value = 64; break;
    case cudaDevAttrMaxGridDimX: *value = 2147483647; break;
    case cudaDevAttrMaxGridDimY: *value = 65535; break;
    case cudaDevAttrMaxGridDimZ: *value = 65535; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = kSharedMemPerBlock; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = kSharedMemPerBlockOptin; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = 228 * 1024; break;
    case cudaDevAttrTotalConstantMemory: *value = 65536; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMaxRegistersPerBlock: *value = 65536; break;
    case cudaDevAttrMaxRegistersPerMultiprocessor: *value = 65536; break;
    case cudaDevAttrClockRate: *value = 1980000; break;        // kHz
    case cudaDevAttrMemoryClockRate: *value = 2619000; break;  // kHz
    case cudaDevAttrGlobalMemoryBusWidth: *value = 5120; break;
    case cudaDevAttrL2CacheSize: *value = 50 * 1024 * 1024; break;
    case cudaDevAttrMultiProcessorCount: *value = kMultiProcessors; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = 2048; break;
    case cudaDevAttrMaxBlocksPerMultiprocessor: *value = 32; break;
    case cudaDevAttrConcurrentKernels: *value = 1; break;
    case cudaDevAttrUnifiedAddressing: *value = 1; break;
    case cudaDevAttrAsyncEngineCount: *value = 2; break;
    case cudaDevAttrCanMapHostMemory: *value = 1; break;
    case cudaDevAttrManagedMemory: *value = 1; break;
    case cudaDevAttrCooperativeLaunch: *value = 1; break;
    case cudaDevAttrIntegrated: *value = 0; break;
    case cudaDevAttrEccEnabled: *value = 0; break;
    case cudaDevAttrPciBusId: case cudaDevAttrPciDeviceId: case cudaDevAttrPciDomainId: *value = 0; break;
    case cudaDevAttrMemoryPoolsSupported: *value = 1; break;
    default:
      simt::fail("cudaDeviceGetAttribute(attribute %d) is not implemented by simt: add it to "
                 "simt/runtime.cpp",
                 (int)attr);
  }
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (!func) return ret(cudaErrorInvalidDeviceFunction);
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    // The sum of this value and the kernel's static shared bytes may not exceed the opt-in limit.
    if (value < 0 || (size_t)value + simt::detail::static_smem_bytes(func) >
                         (size_t)simt::detail::kSharedMemPerBlockOptin)
      return ret(cudaErrorInvalidValue);
    simt::detail::set_max_dynamic_smem(func, value);
  }
  return cudaSuccess;
}
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, const void* func) {
  if (!attr) return ret(cudaErrorInvalidValue);
  if (!func) return ret(cudaErrorInvalidDeviceFunction);
  memset(attr, 0, sizeof *attr);
  // The __launch_bounds__ bound when the kernel has one, and its static __shared__ bytes, as read
  // from the executable (simt/kernel_info.cpp).
  const int bound = simt::detail::launch_bound(func);
  attr->maxThreadsPerBlock = bound > 0 ? std::min(bound, simt::detail::kMaxThreadsPerBlock)
                                       : simt::detail::kMaxThreadsPerBlock;
  attr->sharedSizeBytes = simt::detail::static_smem_bytes(func);
  attr->numRegs = 32;
  attr->ptxVersion = 90;
  attr->binaryVersion = 90;
  attr->maxDynamicSharedSizeBytes = simt::detail::max_dynamic_smem(func);
  return cudaSuccess;
}
// Resident blocks per SM, from the limits of the fake sm_90 part: 64 warps (2048 threads), 32
// blocks, 228 KiB of shared memory with 1 KiB reserved per block, and 64 Ki registers at the 32
// registers per thread simt reports. A block size above the kernel's maxThreadsPerBlock cannot
// launch at all: 0.
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int* numBlocks, const void* func,
                                                                   int blockSize,
                                                                   size_t dynamicSMemSize,
                                                                   unsigned int flags) {
  if (!numBlocks || blockSize <= 0 || (flags & ~cudaOccupancyDisableCachingOverride))
    return ret(cudaErrorInvalidValue);
  if (!func) return ret(cudaErrorInvalidDeviceFunction);
  cudaFuncAttributes attr;
  cudaError_t e = cudaFuncGetAttributes(&attr, func);
  if (e != cudaSuccess) return e;
  if (blockSize > attr.maxThreadsPerBlock ||
      dynamicSMemSize > (size_t)simt::detail::max_dynamic_smem(func)) {
    *numBlocks = 0;
    return cudaSuccess;
  }
  const int warps = (blockSize + 31) / 32;
  const int by_threads = 64 / warps;
  const int by_regs = 65536 / (attr.numRegs * warps * 32);
  const size_t smem = attr.sharedSizeBytes + dynamicSMemSize + 1024;
  const int by_smem = (int)((228 * 1024) / smem);
  *numBlocks = std::max(0, std::min({by_threads, by_regs, by_smem, 32}));
  return cudaSuccess;
}
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* numBlocks, const void* func,
                                                          int blockSize, size_t dynamicSMemSize) {
  return cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(numBlocks, func, blockSize,
                                                                dynamicSMemSize,
                                                                cudaOccupancyDefault);
}

// cudaMallocPitch: rows of `width` bytes padded to a pitch that keeps every row 512-byte aligned
// (what current GPUs return; the pitch is only promised to be >= width and suitably aligned).
cudaError_t cudaMallocPitch(void** devPtr, size_t* pitch, size_t width, size_t height) {
  if (!devPtr || !pitch) return ret(cudaErrorInvalidValue);
  const size_t p = (width + 511) & ~size_t(511);
  if (height && p > (size_t)-1 / height) return ret(cudaErrorMemoryAllocation);
  *pitch = p;
  return simt::allocate(devPtr, p * height, simt::Kind::Device);
}

}  // extern "C"
