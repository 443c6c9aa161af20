// simt/nccl.cpp — the NCCL calls vit.cu makes, between processes on one machine, so the
// multi-rank training path (host/dist.cu) runs under simt exactly as it would over NCCL.
//
// One communicator = one POSIX shared-memory segment, named in the ncclUniqueId that
// ncclGetUniqueId makes (rank 0 hands it to the others, as with NCCL). The segment holds a
// header (ranks, their pids, per-rank progress counters, the descriptor of the collective each
// rank is in) and one staging slot of kSlotBytes per rank. A collective moves its buffers in
// slot-sized chunks; each chunk is two phases: every rank copies its chunk into its slot and
// arrives; then every rank reads what it needs (all slots for an all-reduce, the root's for a
// broadcast), reduces IN RANK ORDER 0..n-1 — so every rank computes bitwise the same result —
// and arrives again (so no slot is overwritten before everyone has read it).
//
// Semantics kept from NCCL (docs.nvidia.com/deeplearning/nccl, "Collective Operations",
// "Data types", "Group calls"): buffers are device memory (checked); in place
// (sendbuff == recvbuff) is allowed; datatypes and reduction ops are checked
// (ncclInvalidArgument); every rank must call the same collectives in the same order with the
// same count/datatype/op/root — a mismatch is reported as ncclInvalidUsage on every rank instead
// of silently corrupting (NCCL would hang or produce garbage); calls between ncclGroupStart and
// ncclGroupEnd are queued at ncclGroupEnd, in order. Stream order: a collective is queued on its
// stream like a kernel and runs when simt runs that stream's work (at a synchronize); errors
// found then are asynchronous: ncclCommGetAsyncError and every later call on the comm report them.
//
// What NCCL does not do but we need for tests of failure handling: a rank that waits for a peer
// checks that the peer's process is alive (a killed rank is reported as ncclRemoteError naming
// it, within ~0.1 s) and gives up after SIMT_NCCL_TIMEOUT seconds (default 600) with
// ncclSystemError. ncclGetLastError(comm) says which.
#include <errno.h>
#include <fcntl.h>
#include <nccl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "simt/internal.h"

namespace {

constexpr int kMaxRanks = 64;
constexpr size_t kSlotBytes = 1 << 20;  // staging per rank and chunk
constexpr char kIdMagic[] = "simt-nccl:";
constexpr uint32_t kReady = 0x52454459;  // header initialised

enum class Coll : uint32_t { AllReduce = 1, Broadcast = 2, Reduce = 3 };

struct Desc {  // what a rank is doing in its current collective (checked across ranks)
  uint32_t coll, dtype, op, root;
  uint64_t count, seq;
};

struct Header {
  std::atomic<uint32_t> state;   // 0 fresh, 1 being initialised, kReady
  uint32_t nranks;
  std::atomic<uint32_t> joined;  // ranks attached
  std::atomic<uint32_t> aborted; // a rank called ncclCommAbort or failed: 1 + its rank
  std::atomic<int32_t> pid[kMaxRanks];
  std::atomic<uint64_t> phase[kMaxRanks];  // phases each rank has completed
  Desc desc[kMaxRanks];
};

size_t segment_bytes(int nranks) {
  size_t h = (sizeof(Header) + 4095) & ~size_t(4095);
  return h + (size_t)nranks * kSlotBytes;
}

thread_local std::string t_last_error;

ncclResult_t fail(ncclComm_t comm, ncclResult_t r, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));

}  // namespace

struct ncclComm {
  int rank = 0, nranks = 0;
  std::string name;  // shm name
  Header* h = nullptr;
  unsigned char* slots = nullptr;
  size_t bytes = 0;
  uint64_t phase = 0;  // phases this rank has completed
  uint64_t seq = 0;    // collectives this rank has started
  ncclResult_t async_error = ncclSuccess;
  std::string last_error;
};

namespace {

ncclResult_t fail(ncclComm_t comm, ncclResult_t r, const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  t_last_error = buf;
  if (comm) {
    comm->last_error = buf;
    if (r == ncclRemoteError || r == ncclSystemError) comm->async_error = r;
  }
  return r;
}

double timeout_seconds() {
  const char* e = getenv("SIMT_NCCL_TIMEOUT");
  double t = e && *e ? atof(e) : 600.0;
  return t > 0 ? t : 600.0;
}

double now_seconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// A process that has exited (or is a zombie nobody reaped yet) will never arrive.
bool process_alive(pid_t pid) {
  if (pid <= 0) return true;  // not attached yet: the timeout covers it
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;
  char path[64], buf[256];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE* f = fopen(path, "r");
  if (!f) return true;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  const char* close_paren = strrchr(buf, ')');  // "pid (comm) S ..."
  return !(close_paren && close_paren[1] == ' ' && (close_paren[2] == 'Z' || close_paren[2] == 'X'));
}

// Wait until `ready()`; meanwhile check peers are alive, nobody aborted, and the deadline.
ncclResult_t wait_for(ncclComm_t c, const char* what, const std::function<bool()>& ready) {
  const double deadline = now_seconds() + timeout_seconds();
  double next_check = 0;
  for (unsigned spin = 0;; ++spin) {
    if (ready()) return ncclSuccess;
    if (uint32_t a = c->h->aborted.load())
      return fail(c, ncclRemoteError, "%s: rank %u aborted the communicator", what, a - 1);
    const double t = now_seconds();
    if (t >= next_check) {
      next_check = t + 0.05;
      for (int r = 0; r < c->nranks; ++r)
        if (r != c->rank && !process_alive(c->h->pid[r].load())) {
          // A peer may arrive and then exit between the ready() above and this check (its
          // last collective done, its run over): that is success, not a lost rank.
          if (ready()) return ncclSuccess;
          return fail(c, ncclRemoteError, "%s: rank %d (pid %d) has exited", what, r,
                      (int)c->h->pid[r].load());
        }
      if (t >= deadline)
        return fail(c, ncclSystemError, "%s: timed out after %.0f s waiting for the other ranks "
                    "(SIMT_NCCL_TIMEOUT)", what, timeout_seconds());
    }
    if (spin > 64) {
      timespec ts{0, 200000};  // 0.2 ms
      nanosleep(&ts, nullptr);
    }
  }
}

// Everyone has completed phase `c->phase + 1`.
ncclResult_t arrive_and_wait(ncclComm_t c, const char* what) {
  const uint64_t target = ++c->phase;
  c->h->phase[c->rank].store(target);
  return wait_for(c, what, [c, target] {
    for (int r = 0; r < c->nranks; ++r)
      if (c->h->phase[r].load() < target) return false;
    return true;
  });
}

size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: case ncclFloat8e4m3: case ncclFloat8e5m2: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
    default: return 0;
  }
}
const char* type_name(uint32_t t) {
  static const char* names[] = {"int8", "uint8", "int32", "uint32", "int64", "uint64", "float16",
                                "float32", "float64", "bfloat16", "float8e4m3", "float8e5m2"};
  return t < sizeof names / sizeof *names ? names[t] : "?";
}

template <class T>
T combine(T a, T b, ncclRedOp_t op) {
  switch (op) {
    case ncclProd: return a * b;
    case ncclMax: return a > b ? a : b;
    case ncclMin: return a < b ? a : b;
    default: return a + b;  // ncclSum, ncclAvg (divided at the end)
  }
}

// out[i] = op over ranks 0..n-1 (in that order) of slot_r[i], for `count` elements of type t.
template <class T>
void reduce_typed(const std::vector<const unsigned char*>& in, unsigned char* out, size_t count,
                  ncclRedOp_t op, int nranks, bool last_chunk_avg) {
  for (size_t i = 0; i < count; ++i) {
    T acc;
    memcpy(&acc, in[0] + i * sizeof(T), sizeof(T));
    for (size_t r = 1; r < in.size(); ++r) {
      T v;
      memcpy(&v, in[r] + i * sizeof(T), sizeof(T));
      acc = combine(acc, v, op);
    }
    if (last_chunk_avg) acc = (T)(acc / (T)nranks);
    memcpy(out + i * sizeof(T), &acc, sizeof(T));
  }
}
// 16-bit floats: combined in float and rounded after every step, as a ring of half adds would.
template <class H, float (*ToF)(H), H (*FromF)(float)>
void reduce_half(const std::vector<const unsigned char*>& in, unsigned char* out, size_t count,
                 ncclRedOp_t op, int nranks, bool avg) {
  for (size_t i = 0; i < count; ++i) {
    H acc;
    memcpy(&acc, in[0] + i * 2, 2);
    for (size_t r = 1; r < in.size(); ++r) {
      H v;
      memcpy(&v, in[r] + i * 2, 2);
      acc = FromF(combine(ToF(acc), ToF(v), op));
    }
    if (avg) acc = FromF(ToF(acc) / (float)nranks);
    memcpy(out + i * 2, &acc, 2);
  }
}
float h2f(__half h) { return __half2float(h); }
__half f2h(float f) { return __float2half_rn(f); }
float b2f(__nv_bfloat16 h) { return __bfloat162float(h); }
__nv_bfloat16 f2b(float f) { return __float2bfloat16_rn(f); }

void reduce_chunk(ncclDataType_t t, const std::vector<const unsigned char*>& in,
                  unsigned char* out, size_t count, ncclRedOp_t op, int nranks) {
  const bool avg = op == ncclAvg;
  switch (t) {
    case ncclInt8: reduce_typed<int8_t>(in, out, count, op, nranks, avg); break;
    case ncclUint8: reduce_typed<uint8_t>(in, out, count, op, nranks, avg); break;
    case ncclInt32: reduce_typed<int32_t>(in, out, count, op, nranks, avg); break;
    case ncclUint32: reduce_typed<uint32_t>(in, out, count, op, nranks, avg); break;
    case ncclInt64: reduce_typed<int64_t>(in, out, count, op, nranks, avg); break;
    case ncclUint64: reduce_typed<uint64_t>(in, out, count, op, nranks, avg); break;
    case ncclFloat32: reduce_typed<float>(in, out, count, op, nranks, avg); break;
    case ncclFloat64: reduce_typed<double>(in, out, count, op, nranks, avg); break;
    case ncclFloat16: reduce_half<__half, h2f, f2h>(in, out, count, op, nranks, avg); break;
    default: reduce_half<__nv_bfloat16, b2f, f2b>(in, out, count, op, nranks, avg); break;
  }
}

ncclResult_t check_comm(ncclComm_t c, const char* call) {
  if (!c || !c->h) return fail(c, ncclInvalidArgument, "%s: communicator is null or destroyed", call);
  if (c->async_error != ncclSuccess)
    return fail(c, c->async_error, "%s: the communicator has failed before: %s", call,
                c->last_error.c_str());
  return ncclSuccess;
}

// One collective, executed now (after the stream's earlier work: simt runs it in issue order).
ncclResult_t run_collective(Coll kind, const void* send, void* recv, size_t count,
                            ncclDataType_t dt, ncclRedOp_t op, int root, ncclComm_t c) {
  const char* what = kind == Coll::AllReduce ? "ncclAllReduce"
                     : kind == Coll::Broadcast ? "ncclBroadcast"
                                               : "ncclReduce";
  const size_t es = type_size(dt);
  // Every rank publishes what it is about to do; after the first phase all check all.
  Desc mine{(uint32_t)kind, (uint32_t)dt, (uint32_t)op, (uint32_t)root, (uint64_t)count, ++c->seq};
  c->h->desc[c->rank] = mine;
  const size_t per_chunk = kSlotBytes / es;
  const size_t nchunks = count == 0 ? 1 : (count + per_chunk - 1) / per_chunk;
  std::vector<unsigned char> result;
  for (size_t k = 0; k < nchunks; ++k) {
    const size_t first = k * per_chunk, n = std::min(per_chunk, count - std::min(count, first));
    unsigned char* slot = c->slots + (size_t)c->rank * kSlotBytes;
    const bool contributes = kind != Coll::Broadcast || c->rank == root;
    if (contributes && n) memcpy(slot, static_cast<const unsigned char*>(send) + first * es, n * es);
    if (ncclResult_t r = arrive_and_wait(c, what)) return r;
    if (k == 0)
      for (int r = 0; r < c->nranks; ++r) {
        const Desc& o = c->h->desc[r];
        if (o.seq != mine.seq || o.coll != mine.coll || o.count != mine.count ||
            o.dtype != mine.dtype || o.op != mine.op || o.root != mine.root) {
          c->h->aborted.store(1 + c->rank);
          return fail(c, ncclInvalidUsage,
                      "%s #%llu on rank %d (count %llu, %s, op %u, root %u) does not match rank "
                      "%d's collective #%llu (kind %u, count %llu, %s, op %u, root %u): every rank "
                      "must call the same collectives in the same order",
                      what, (unsigned long long)mine.seq, c->rank, (unsigned long long)count,
                      type_name(dt), (unsigned)op, (unsigned)root, r,
                      (unsigned long long)o.seq, o.coll, (unsigned long long)o.count,
                      type_name(o.dtype), o.op, o.root);
        }
      }
    unsigned char* dst = static_cast<unsigned char*>(recv) + first * es;
    if (kind == Coll::Broadcast) {
      if (n) memcpy(dst, c->slots + (size_t)root * kSlotBytes, n * es);
    } else if (kind == Coll::AllReduce || c->rank == root) {
      std::vector<const unsigned char*> in(c->nranks);
      for (int r = 0; r < c->nranks; ++r) in[r] = c->slots + (size_t)r * kSlotBytes;
      if (n) reduce_chunk(dt, in, dst, n, op, c->nranks);
    }
    if (ncclResult_t r = arrive_and_wait(c, what)) return r;
  }
  return ncclSuccess;
}

ncclResult_t check_args(const char* call, const void* send, void* recv, size_t count,
                        ncclDataType_t dt, ncclRedOp_t op, bool has_op, int root, bool has_root,
                        ncclComm_t c) {
  if (ncclResult_t r = check_comm(c, call)) return r;
  if ((unsigned)dt >= (unsigned)ncclNumTypes || type_size(dt) == 0)
    return fail(c, ncclInvalidArgument, "%s: invalid datatype %d", call, (int)dt);
  if (dt == ncclFloat8e4m3 || dt == ncclFloat8e5m2)
    return fail(c, ncclInvalidArgument, "%s: fp8 reductions are not supported by simt", call);
  if (has_op && ((int)op < 0 || (int)op >= (int)ncclNumOps))
    return fail(c, ncclInvalidArgument, "%s: invalid reduction op %d", call, (int)op);
  if (has_root && (root < 0 || root >= c->nranks))
    return fail(c, ncclInvalidArgument, "%s: root %d is not a rank of this %d-rank communicator",
                call, root, c->nranks);
  if (count == 0) return ncclSuccess;
  const size_t bytes = count * type_size(dt);
  // Broadcast reads only the root's sendbuff; Reduce writes only the root's recvbuff.
  const bool broadcast = !has_op, reduce = has_op && has_root;
  if (!broadcast || c->rank == root) {
    if (!send) return fail(c, ncclInvalidArgument, "%s: sendbuff is null", call);
    if (!simt::detail::is_device_pointer(send))
      return fail(c, ncclInvalidArgument, "%s: sendbuff %p is not device memory", call, send);
    simt::detail::check_device_range(send, bytes, (std::string(call) + " sendbuff").c_str());
  }
  if (!reduce || c->rank == root) {
    if (!recv) return fail(c, ncclInvalidArgument, "%s: recvbuff is null", call);
    if (!simt::detail::is_device_pointer(recv))
      return fail(c, ncclInvalidArgument, "%s: recvbuff %p is not device memory", call, recv);
    simt::detail::check_device_range(recv, bytes, (std::string(call) + " recvbuff").c_str());
  }
  return ncclSuccess;
}

// Group calls: collectives issued inside ncclGroupStart/End are deferred to the End.
struct GroupOp {
  cudaStream_t stream;
  const char* call;
  std::function<ncclResult_t()> op;
  ncclComm_t comm;
};
thread_local int t_group_depth = 0;
thread_local std::vector<GroupOp> t_group_ops;

// A collective is stream-ordered work: queued on `stream` like a kernel (simt::detail::
// run_on_stream), it runs after the work before it and reads/writes the buffers then. Its
// failure (a dead peer, a mismatch) is asynchronous, as with NCCL: recorded in the communicator
// and returned by ncclCommGetAsyncError and by every later call on it.
void enqueue(cudaStream_t stream, const char* call, std::function<ncclResult_t()> op, ncclComm_t c) {
  simt::detail::run_on_stream(stream, call, [op, c] {
    if (c->async_error != ncclSuccess) return;  // failed before: do nothing more
    ncclResult_t r = op();
    if (r != ncclSuccess) c->async_error = r;
  });
}

ncclResult_t submit(cudaStream_t stream, std::function<ncclResult_t()> op, ncclComm_t c,
                    const char* call) {
  if (!simt::detail::valid_stream(stream))
    return fail(c, ncclInvalidArgument, "%s: invalid stream", call);
  if (t_group_depth > 0) {
    t_group_ops.push_back({stream, call, std::move(op), c});
    return ncclSuccess;
  }
  enqueue(stream, call, std::move(op), c);
  return ncclSuccess;
}

}  // namespace

extern "C" {

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t comm) {
  return comm && !comm->last_error.empty() ? comm->last_error.c_str() : t_last_error.c_str();
}

ncclResult_t ncclGetVersion(int* version) {
  if (!version) return ncclInvalidArgument;
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (!id) return fail(nullptr, ncclInvalidArgument, "ncclGetUniqueId: null id");
  static std::atomic<unsigned> counter{0};
  memset(id->internal, 0, sizeof id->internal);
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  snprintf(id->internal, sizeof id->internal, "%s/simt-nccl-%d-%u-%lld%09ld", kIdMagic,
           (int)getpid(), counter++, (long long)ts.tv_sec, ts.tv_nsec);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* out, int nranks, ncclUniqueId id, int rank) {
  if (!out) return fail(nullptr, ncclInvalidArgument, "ncclCommInitRank: null comm");
  *out = nullptr;
  if (nranks < 1 || nranks > kMaxRanks)
    return fail(nullptr, ncclInvalidArgument, "ncclCommInitRank: nranks %d outside 1..%d", nranks, kMaxRanks);
  if (rank < 0 || rank >= nranks)
    return fail(nullptr, ncclInvalidArgument, "ncclCommInitRank: rank %d outside 0..%d", rank, nranks - 1);
  if (strncmp(id.internal, kIdMagic, strlen(kIdMagic)) != 0)
    return fail(nullptr, ncclInvalidArgument, "ncclCommInitRank: the unique id was not made by ncclGetUniqueId");
  std::string name(id.internal + strlen(kIdMagic), strnlen(id.internal + strlen(kIdMagic), 100));
  const size_t bytes = segment_bytes(nranks);
  int fd = shm_open(name.c_str(), O_RDWR | O_CREAT, 0600);
  if (fd < 0) return fail(nullptr, ncclSystemError, "ncclCommInitRank: shm_open(%s): %s", name.c_str(), strerror(errno));
  if (ftruncate(fd, (off_t)bytes) != 0) {
    close(fd);
    return fail(nullptr, ncclSystemError, "ncclCommInitRank: ftruncate: %s", strerror(errno));
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return fail(nullptr, ncclSystemError, "ncclCommInitRank: mmap: %s", strerror(errno));
  auto* c = new ncclComm;
  c->rank = rank;
  c->nranks = nranks;
  c->name = name;
  c->h = static_cast<Header*>(p);
  c->slots = static_cast<unsigned char*>(p) + ((sizeof(Header) + 4095) & ~size_t(4095));
  c->bytes = bytes;
  uint32_t fresh = 0;
  if (c->h->state.compare_exchange_strong(fresh, 1)) {
    c->h->nranks = (uint32_t)nranks;
    c->h->state.store(kReady);
  } else {
    while (c->h->state.load() != kReady) sched_yield();
  }
  if ((int)c->h->nranks != nranks) {
    int theirs = (int)c->h->nranks;
    munmap(p, bytes);
    delete c;
    return fail(nullptr, ncclInvalidUsage, "ncclCommInitRank: rank %d says %d ranks, another rank said %d",
                rank, nranks, theirs);
  }
  int32_t none = 0;
  if (!c->h->pid[rank].compare_exchange_strong(none, (int32_t)getpid())) {
    int other = c->h->pid[rank].load();
    munmap(p, bytes);
    delete c;
    return fail(nullptr, ncclInvalidUsage, "ncclCommInitRank: rank %d joined twice (pid %d first)", rank, other);
  }
  c->h->joined.fetch_add(1);
  // Like NCCL's bootstrap: returns once every rank has joined.
  ncclResult_t r = wait_for(c, "ncclCommInitRank", [c] { return (int)c->h->joined.load() == c->nranks; });
  if (r != ncclSuccess) {
    std::string missing;
    for (int i = 0; i < nranks; ++i)
      if (c->h->pid[i].load() == 0) missing += (missing.empty() ? "" : ", ") + std::to_string(i);
    std::string msg = c->last_error + (missing.empty() ? "" : " (ranks not joined: " + missing + ")");
    t_last_error = msg;
    munmap(p, bytes);
    delete c;
    return r;
  }
  // Everyone has mapped the segment: the name can go (the mapping lives on).
  if (rank == 0) shm_unlink(name.c_str());
  *out = c;
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank,
                                    ncclConfig_t*) {
  return ncclCommInitRank(comm, nranks, id, rank);
}

static void release(ncclComm_t c) {
  if (c->h) munmap(c->h, c->bytes);
  c->h = nullptr;
  delete c;
}

ncclResult_t ncclCommDestroy(ncclComm_t c) {
  if (!c) return fail(nullptr, ncclInvalidArgument, "ncclCommDestroy: null communicator");
  release(c);
  return ncclSuccess;
}
ncclResult_t ncclCommFinalize(ncclComm_t c) { return c ? ncclSuccess : ncclInvalidArgument; }

ncclResult_t ncclCommAbort(ncclComm_t c) {
  if (!c) return ncclSuccess;
  if (c->h) c->h->aborted.store(1 + c->rank);  // peers waiting on us give up at once
  release(c);
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t c, ncclResult_t* err) {
  if (!c || !err) return ncclInvalidArgument;
  *err = c->async_error;
  return ncclSuccess;
}
ncclResult_t ncclCommCount(const ncclComm_t c, int* count) {
  if (!c || !count) return ncclInvalidArgument;
  *count = c->nranks;
  return ncclSuccess;
}
ncclResult_t ncclCommUserRank(const ncclComm_t c, int* rank) {
  if (!c || !rank) return ncclInvalidArgument;
  *rank = c->rank;
  return ncclSuccess;
}
ncclResult_t ncclCommCuDevice(const ncclComm_t c, int* device) {
  if (!c || !device) return ncclInvalidArgument;
  *device = 0;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t dt,
                           ncclRedOp_t op, ncclComm_t c, cudaStream_t stream) {
  if (ncclResult_t r = check_args("ncclAllReduce", send, recv, count, dt, op, true, 0, false, c)) return r;
  return submit(stream, [=] { return run_collective(Coll::AllReduce, send, recv, count, dt, op, 0, c); },
                c, "ncclAllReduce");
}

ncclResult_t ncclReduce(const void* send, void* recv, size_t count, ncclDataType_t dt,
                        ncclRedOp_t op, int root, ncclComm_t c, cudaStream_t stream) {
  if (ncclResult_t r = check_args("ncclReduce", send, recv, count, dt, op, true, root, true, c)) return r;
  return submit(stream, [=] { return run_collective(Coll::Reduce, send, recv, count, dt, op, root, c); },
                c, "ncclReduce");
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t dt, int root,
                           ncclComm_t c, cudaStream_t stream) {
  if (ncclResult_t r = check_args("ncclBroadcast", send, recv, count, dt, ncclSum, false, root, true, c)) return r;
  return submit(stream, [=] { return run_collective(Coll::Broadcast, send, recv, count, dt, ncclSum, root, c); },
                c, "ncclBroadcast");
}

ncclResult_t ncclBcast(void* buff, size_t count, ncclDataType_t dt, int root, ncclComm_t c,
                       cudaStream_t stream) {
  return ncclBroadcast(buff, buff, count, dt, root, c, stream);
}

ncclResult_t ncclGroupStart() {
  ++t_group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (t_group_depth == 0)
    return fail(nullptr, ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
  if (--t_group_depth > 0) return ncclSuccess;
  std::vector<GroupOp> ops;
  ops.swap(t_group_ops);
  for (GroupOp& g : ops) enqueue(g.stream, g.call, std::move(g.op), g.comm);
  return ncclSuccess;
}

}  // extern "C"
