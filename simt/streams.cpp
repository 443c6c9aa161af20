// simt/streams.cpp — streams, events and CUDA graphs on the CPU.
//
// Every asynchronous call (kernel launch, cudaMemcpyAsync/cudaMemsetAsync, cuBLAS, host
// functions, event records, cudaStreamWaitEvent) becomes an Op in its stream's queue and runs
// only when the program forces it: a stream/event/device synchronize, a blocking copy, a query
// (which runs at most one op, so polling makes progress), or a full queue. What runs then, and in
// which order, is the stream order (SIMT_STREAMS, simt::set_stream_order):
//
//   eager    run each op when it is issued (the old behaviour: every bug between streams hidden);
//   fifo     run queued work of all streams in issue order, as far as the forced wait needs;
//   reverse  run only what the forced wait depends on, always the newest runnable op first (the
//            default: a missing cudaStreamWaitEvent or a host read before the synchronize
//            gives the wrong answer);
//   shuffle[:SEED]  only what the wait needs, a Philox-drawn runnable op each time.
//
// Ordering rules (CUDA's): ops of one stream run in issue order; an op waits for the ops named by
// its cudaStreamWaitEvent; the legacy default stream (0, cudaStreamLegacy) waits for all earlier
// work of every blocking stream and every blocking stream's op waits for earlier legacy work;
// cudaStreamNonBlocking streams take no part in that. cudaStreamPerThread is a blocking stream of
// the calling host thread.
//
// Capture: a capturing stream's ops become nodes of a graph (dependencies from stream order and
// events, so a fork/join through events captures as a DAG); cudaGraphLaunch enqueues one op that
// runs the nodes in an order that the same stream order picks among the ready ones.
//
// Everything here runs under device_mutex(); the op that runs a piece of work is executed by
// whichever host thread forced it (a kernel's __shared__ is that thread's, refilled per block).
#include <algorithm>
#include <chrono>
#include <deque>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>

#include "common/philox.h"
#include "simt/internal.h"

using simt::detail::WorkKind;

struct CUstream_st;
struct CUgraph_st;

namespace simt {
namespace {

using detail::device_mutex;
using Lock = std::lock_guard<std::recursive_mutex>;

struct Op {
  uint64_t id;   // global issue number (fifo/reverse order)
  uint64_t seq;  // position in its stream (1, 2, ...)
  const char* what;
  std::function<void()> work;
  std::vector<std::pair<CUstream_st*, uint64_t>> deps;  // (stream, seq) that must have run first
};

struct Capture {
  unsigned long long id;
  CUgraph_st* graph;
  cudaStreamCaptureMode mode;
  std::thread::id thread;
  CUstream_st* origin;
  bool invalidated = false;
  std::set<CUstream_st*> streams;  // origin and every stream joined through an event wait
};

}  // namespace
}  // namespace simt

// The opaque handle types of driver_types.h, defined here.
struct CUstream_st {
  unsigned flags = 0;
  int priority = 0;
  bool legacy = false;     // the legacy default stream
  bool destroyed = false;  // cudaStreamDestroy'd: its queued work still runs (as CUDA says)
  std::deque<simt::Op> q;
  uint64_t issued = 0, completed = 0;
  std::shared_ptr<simt::Capture> cap;        // set while capturing
  std::vector<CUgraphNode_st*> cap_deps;     // what the next captured node depends on
  bool blocking() const { return !legacy && !(flags & cudaStreamNonBlocking); }
};
struct CUevent_st {
  unsigned flags = 0;
  CUstream_st* stream = nullptr;  // the stream and op of the last record (null: never recorded)
  uint64_t seq = 0;
  std::chrono::steady_clock::time_point when;
  std::shared_ptr<simt::Capture> cap;  // last recorded inside this capture
  std::vector<CUgraphNode_st*> cap_nodes;
};
struct CUgraphNode_st {
  CUgraph_st* graph;
  size_t index;
  WorkKind kind;
  const void* func;  // the kernel of a kernel node
  const char* what;
  std::function<void()> work;
  std::vector<size_t> deps;  // indices of earlier nodes
};
struct CUgraph_st {
  std::vector<std::unique_ptr<CUgraphNode_st>> nodes;  // in capture order: topologically sorted
};
struct ExecNode {
  WorkKind kind;
  const void* func;
  const char* what;
  std::function<void()> work;
  std::vector<size_t> deps;
};
struct CUgraphExec_st {
  // Copy-on-update: a launch already queued keeps the nodes it was launched with.
  std::shared_ptr<const std::vector<ExecNode>> nodes;
};

namespace simt {
namespace {

// ---------------------------------------------------------------------------------------------
// The stream order.
struct StreamOrderState {
  bool initialised = false;
  StreamOrder order = StreamOrder::Reverse;
  uint64_t seed = 0;
  uint64_t draws = 0;
};
StreamOrderState g_sorder;

void init_stream_order_from_env() {
  if (g_sorder.initialised) return;
  g_sorder.initialised = true;
  const char* env = getenv("SIMT_STREAMS");
  if (!env || !*env) return;
  std::string s(env), name = s.substr(0, s.find(':'));
  if (s.find(':') != std::string::npos) g_sorder.seed = strtoull(s.c_str() + s.find(':') + 1, nullptr, 0);
  if (name == "eager") g_sorder.order = StreamOrder::Eager;
  else if (name == "fifo") g_sorder.order = StreamOrder::Fifo;
  else if (name == "reverse") g_sorder.order = StreamOrder::Reverse;
  else if (name == "shuffle") g_sorder.order = StreamOrder::Shuffle;
  else fail("SIMT_STREAMS=%s: expected eager, fifo, reverse or shuffle[:SEED]", env);
}
uint32_t stream_random_below(uint32_t n) {
  // Site 0x5354524D ("STRM") keeps these draws apart from the thread order's.
  uint32_t r = vit::philox_u32(g_sorder.seed, 0x5354524Du, 0, g_sorder.draws++);
  return (uint32_t)(((uint64_t)r * n) >> 32);
}

// ---------------------------------------------------------------------------------------------
// Streams and the queue.
constexpr size_t kMaxPending = 8192;  // a full queue blocks the issuing thread, as on a GPU

CUstream_st g_legacy_stream = [] {
  CUstream_st s;
  s.legacy = true;
  return s;
}();
// Created and not destroyed. Stream objects are never freed (queued ops and events may name a
// destroyed stream): g_dead keeps the destroyed ones reachable, and neither container is ever
// destructed, so LeakSanitizer (make test-sanitize) sees retained memory, not a leak.
std::set<CUstream_st*>& g_streams = *new std::set<CUstream_st*>;
std::vector<CUstream_st*>& g_dead_streams = *new std::vector<CUstream_st*>;
std::set<CUstream_st*> g_busy;     // streams with queued work (destroyed ones included)
std::set<cudaEvent_t> g_events;
std::set<cudaGraph_t> g_graphs;
std::set<cudaGraphExec_t> g_execs;
std::set<std::shared_ptr<Capture>> g_captures;  // in progress (invalidated ones included)
uint64_t g_next_id = 0;
size_t g_pending = 0;
bool g_running = false;  // an op is executing: CUDA calls from it are errors
unsigned long long g_next_capture_id = 0;
thread_local cudaStreamCaptureMode t_capture_mode = cudaStreamCaptureModeGlobal;

CUstream_st* per_thread_stream() {
  // One blocking stream per host thread. Never freed: ops of other streams may name it.
  // (Never destructed either, so the streams stay reachable for LeakSanitizer.)
  static std::unordered_map<std::thread::id, CUstream_st*>& streams =
      *new std::unordered_map<std::thread::id, CUstream_st*>;
  CUstream_st*& s = streams[std::this_thread::get_id()];
  if (!s) s = new CUstream_st();
  return s;
}

// The stream object behind a handle, or null if the handle is not a live stream.
CUstream_st* resolve(cudaStream_t s) {
  if (s == 0 || s == cudaStreamLegacy) return &g_legacy_stream;
  if (s == cudaStreamPerThread) return per_thread_stream();
  return g_streams.count(s) ? s : nullptr;
}

bool done(const std::pair<CUstream_st*, uint64_t>& d) { return d.first->completed >= d.second; }
bool runnable(const Op& op) {
  for (auto& d : op.deps)
    if (!done(d)) return false;
  return true;
}

void run_head(CUstream_st* s) {
  Op op = std::move(s->q.front());
  s->q.pop_front();
  --g_pending;
  g_running = true;
  op.work();
  g_running = false;
  s->completed = op.seq;
  if (s->q.empty()) g_busy.erase(s);
}

// Run queued work until every (stream, seq) of `targets` has run.
void drain(const std::vector<std::pair<CUstream_st*, uint64_t>>& targets, const char* why) {
  if (g_running) fail("%s called from a host function or callback running on a stream", why);
  auto all_done = [&] {
    for (auto& t : targets)
      if (!done(t)) return false;
    return true;
  };
  if (all_done()) return;
  init_stream_order_from_env();
  const bool everything = g_sorder.order == StreamOrder::Fifo || g_sorder.order == StreamOrder::Eager;
  // What the targets depend on, transitively: the most of each stream that must run.
  std::unordered_map<CUstream_st*, uint64_t> need;
  if (!everything) {
    std::vector<std::pair<CUstream_st*, uint64_t>> work(targets.begin(), targets.end());
    std::unordered_map<CUstream_st*, uint64_t> scanned;  // seqs of each stream already walked
    while (!work.empty()) {
      auto [s, upto] = work.back();
      work.pop_back();
      if (upto <= s->completed || upto <= need[s]) continue;
      need[s] = upto;
      uint64_t& from = scanned[s];
      for (const Op& op : s->q) {
        if (op.seq > upto) break;
        if (op.seq <= from) continue;
        for (auto& d : op.deps)
          if (!done(d)) work.push_back(d);
      }
      from = std::max(from, upto);
    }
  }
  std::vector<CUstream_st*> cand;
  while (!all_done()) {
    cand.clear();
    for (CUstream_st* s : g_busy) {
      const Op& head = s->q.front();
      if (!everything && head.seq > need[s]) continue;
      if (runnable(head)) cand.push_back(s);
    }
    if (cand.empty()) fail("simt: stream deadlock while %s (no queued operation can run)", why);
    CUstream_st* pick = cand[0];
    if (g_sorder.order == StreamOrder::Shuffle) {
      // By issue order first (g_busy is ordered by address), so a seed replays the same schedule.
      std::sort(cand.begin(), cand.end(),
                [](CUstream_st* a, CUstream_st* b) { return a->q.front().id < b->q.front().id; });
      pick = cand[stream_random_below((uint32_t)cand.size())];
    } else {
      for (CUstream_st* s : cand) {
        bool newer = s->q.front().id > pick->q.front().id;
        if (g_sorder.order == StreamOrder::Reverse ? newer : !newer) pick = s;
      }
    }
    run_head(pick);
  }
}

void drain_all(const char* why) {
  std::vector<std::pair<CUstream_st*, uint64_t>> t;
  for (CUstream_st* s : g_busy) t.push_back({s, s->issued});
  drain(t, why);
}

// ---------------------------------------------------------------------------------------------
// Capture.
bool capture_prohibits_unsafe_calls(const Capture& c) {
  if (t_capture_mode == cudaStreamCaptureModeRelaxed) return false;
  if (c.thread == std::this_thread::get_id()) return c.mode != cudaStreamCaptureModeRelaxed;
  return t_capture_mode == cudaStreamCaptureModeGlobal && c.mode == cudaStreamCaptureModeGlobal;
}

// Ancestors of `from` (indices), `from` included.
std::vector<bool> ancestors(const CUgraph_st& g, const std::vector<CUgraphNode_st*>& from) {
  std::vector<bool> seen(g.nodes.size(), false);
  std::vector<size_t> work;
  for (auto* n : from) work.push_back(n->index);
  while (!work.empty()) {
    size_t i = work.back();
    work.pop_back();
    if (seen[i]) continue;
    seen[i] = true;
    for (size_t d : g.nodes[i]->deps) work.push_back(d);
  }
  return seen;
}

void end_capture(const std::shared_ptr<Capture>& c) {
  for (CUstream_st* s : c->streams) {
    s->cap.reset();
    s->cap_deps.clear();
  }
  // Events last recorded in the capture name nodes of a graph that now lives on its own: they
  // stand for no work on any stream (as before their first record).
  for (cudaEvent_t e : g_events)
    if (e->cap == c) {
      e->cap.reset();
      e->cap_nodes.clear();
      e->stream = nullptr;
      e->seq = 0;
    }
  g_captures.erase(c);
}

void add_node(CUstream_st* s, const char* what, WorkKind kind, const void* func,
              std::function<void()> work) {
  CUgraph_st* g = s->cap->graph;
  auto n = std::make_unique<CUgraphNode_st>();
  n->graph = g;
  n->index = g->nodes.size();
  n->kind = kind;
  n->func = func;
  n->what = what;
  n->work = std::move(work);
  for (auto* d : s->cap_deps) n->deps.push_back(d->index);
  s->cap_deps = {n.get()};
  g->nodes.push_back(std::move(n));
}

// Run the nodes of a graph in a topological order picked by the stream order.
void run_graph(const std::vector<ExecNode>& nodes) {
  init_stream_order_from_env();
  std::vector<size_t> missing(nodes.size());
  std::vector<std::vector<size_t>> users(nodes.size());
  std::vector<size_t> ready;
  for (size_t i = 0; i < nodes.size(); ++i) {
    missing[i] = nodes[i].deps.size();
    for (size_t d : nodes[i].deps) users[d].push_back(i);
    if (!missing[i]) ready.push_back(i);
  }
  while (!ready.empty()) {
    size_t k = 0;  // fifo/eager: the oldest ready node
    if (g_sorder.order == StreamOrder::Shuffle) k = stream_random_below((uint32_t)ready.size());
    else if (g_sorder.order == StreamOrder::Reverse)
      k = (size_t)(std::max_element(ready.begin(), ready.end()) - ready.begin());
    else k = (size_t)(std::min_element(ready.begin(), ready.end()) - ready.begin());
    size_t i = ready[k];
    ready.erase(ready.begin() + (ptrdiff_t)k);
    nodes[i].work();
    for (size_t u : users[i])
      if (--missing[u] == 0) ready.push_back(u);
  }
}

// Queue `work` on stream handle `stream` after `extra` (and the stream's own order), or record
// it as a graph node when the stream captures. *ticket: its seq in the stream (0 if captured).
cudaError_t enqueue_after(cudaStream_t stream, const char* what, WorkKind kind, const void* func,
                          std::function<void()> work,
                          std::vector<std::pair<CUstream_st*, uint64_t>> extra, uint64_t* ticket) {
  Lock lock(device_mutex());
  if (ticket) *ticket = 0;
  if (g_running) fail("%s issued from a host function or callback running on a stream", what);
  CUstream_st* s = resolve(stream);
  if (!s) return cudaErrorInvalidResourceHandle;
  if (s->cap) {
    if (s->cap->invalidated) return cudaErrorStreamCaptureInvalidated;
    add_node(s, what, kind, func, std::move(work));
    return cudaSuccess;
  }
  if (s->legacy) {
    // Legacy-stream work would wait for a capturing blocking stream: that is
    // cudaErrorStreamCaptureImplicit, and it invalidates the capture.
    bool implicit = false;
    for (auto& c : g_captures)
      for (CUstream_st* cs : c->streams)
        if (cs->blocking()) {
          c->invalidated = true;
          implicit = true;
        }
    if (implicit) return cudaErrorStreamCaptureImplicit;
  }
  Op op{++g_next_id, ++s->issued, what, std::move(work), std::move(extra)};
  // The legacy stream's implicit synchronisation with the blocking streams, both ways.
  auto depend_on = [&](CUstream_st* t) {
    if (t != s && t->completed < t->issued) op.deps.push_back({t, t->issued});
  };
  if (s->legacy) {
    for (CUstream_st* t : g_busy)
      if (t->blocking()) depend_on(t);
  } else if (s->blocking()) {
    depend_on(&g_legacy_stream);
  }
  if (ticket) *ticket = op.seq;
  const uint64_t seq = op.seq;
  s->q.push_back(std::move(op));
  g_busy.insert(s);
  ++g_pending;
  init_stream_order_from_env();
  if (g_sorder.order == StreamOrder::Eager) {
    drain({{s, seq}}, what);
  } else if (g_pending > kMaxPending) {
    // The queue is full: the oldest work runs first, as a GPU drains a full launch queue.
    while (g_pending > kMaxPending / 2) {
      CUstream_st* oldest = nullptr;
      for (CUstream_st* t : g_busy)
        if (runnable(t->q.front()) && (!oldest || t->q.front().id < oldest->q.front().id)) oldest = t;
      run_head(oldest);
    }
  }
  return cudaSuccess;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
namespace detail {

bool valid_stream(cudaStream_t s) {
  Lock lock(device_mutex());
  return resolve(s) != nullptr;
}

cudaError_t enqueue(cudaStream_t stream, const char* what, WorkKind kind, const void* func,
                    std::function<void()> work, uint64_t* ticket) {
  return enqueue_after(stream, what, kind, func, std::move(work), {}, ticket);
}

void run_on_stream(cudaStream_t stream, const char* what, std::function<void()> work) {
  cudaError_t e = enqueue(stream, what, WorkKind::Library, nullptr, std::move(work), nullptr);
  if (e != cudaSuccess) set_last_error(e);
}

void wait_for(cudaStream_t stream, uint64_t ticket, const char* why) {
  if (!ticket) return;
  Lock lock(device_mutex());
  CUstream_st* s = resolve(stream);
  if (!s) return;
  drain({{s, ticket}}, why);
}

void wait_for_stream_deps(cudaStream_t stream, uint64_t ticket, const char* why) {
  if (!ticket) return;
  Lock lock(device_mutex());
  CUstream_st* s = resolve(stream);
  if (!s) return;
  std::vector<std::pair<CUstream_st*, uint64_t>> t;
  for (const Op& op : s->q)
    if (op.seq == ticket) t = op.deps;
  t.push_back({s, ticket - 1});
  drain(t, why);
}

cudaError_t check_capture_unsafe_call() {
  Lock lock(device_mutex());
  cudaError_t e = cudaSuccess;
  for (auto& c : g_captures)
    if (capture_prohibits_unsafe_calls(*c)) {
      c->invalidated = true;
      e = cudaErrorStreamCaptureUnsupported;
    }
  return e;
}

void synchronize_device(const char* why) {
  Lock lock(device_mutex());
  drain_all(why);
}

}  // namespace detail

void set_stream_order(StreamOrder order, uint64_t seed) {
  Lock lock(device_mutex());
  init_stream_order_from_env();
  g_sorder.order = order;
  g_sorder.seed = seed;
  g_sorder.draws = 0;
}
StreamOrder stream_order() {
  Lock lock(device_mutex());
  init_stream_order_from_env();
  return g_sorder.order;
}
void reset_stream_order() {
  Lock lock(device_mutex());
  g_sorder = StreamOrderState();
  init_stream_order_from_env();
}

}  // namespace simt

// =============================================================================================
// The runtime API: streams, events, synchronisation, graphs.
using simt::detail::device_mutex;
using simt::Lock;
using simt::detail::set_last_error;

namespace {
cudaError_t ret(cudaError_t e) {
  if (e != cudaSuccess) set_last_error(e);
  return e;
}
// A synchronize that would wait on a capturing stream: rejected, and the capture invalidated.
cudaError_t sync_conflicts_with_capture(CUstream_st* s) {
  if (s && s->cap) {
    s->cap->invalidated = true;
    return cudaErrorStreamCaptureUnsupported;
  }
  if (s && s->legacy) {
    bool implicit = false;
    for (auto& c : simt::g_captures)
      for (CUstream_st* cs : c->streams)
        if (cs->blocking()) {
          c->invalidated = true;
          implicit = true;
        }
    if (implicit) return cudaErrorStreamCaptureImplicit;
  }
  return cudaSuccess;
}
}  // namespace

extern "C" {

cudaError_t cudaStreamCreateWithPriority(cudaStream_t* pStream, unsigned int flags, int priority) {
  if (!pStream) return ret(cudaErrorInvalidValue);
  Lock lock(device_mutex());
  *pStream = new CUstream_st();
  (*pStream)->flags = flags;
  (*pStream)->priority = priority;
  simt::g_streams.insert(*pStream);
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* pStream) { return cudaStreamCreateWithPriority(pStream, 0, 0); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* pStream, unsigned int flags) {
  return cudaStreamCreateWithPriority(pStream, flags, 0);
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  Lock lock(device_mutex());
  if (!simt::g_streams.count(stream)) return ret(cudaErrorInvalidResourceHandle);
  if (stream->cap) return ret(cudaErrorStreamCaptureUnsupported);
  // "Work still queued completes; resources are released once it has": the object stays (ops
  // and events may name it), only the handle dies.
  simt::g_streams.erase(stream);
  simt::g_dead_streams.push_back(stream);
  stream->destroyed = true;
  return cudaSuccess;
}
cudaError_t cudaStreamGetFlags(cudaStream_t stream, unsigned int* flags) {
  Lock lock(device_mutex());
  CUstream_st* s = simt::resolve(stream);
  if (!s) return ret(cudaErrorInvalidResourceHandle);
  if (!flags) return ret(cudaErrorInvalidValue);
  *flags = s->flags;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetStreamPriorityRange(int* leastPriority, int* greatestPriority) {
  if (leastPriority) *leastPriority = 0;
  if (greatestPriority) *greatestPriority = -5;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  {
    Lock lock(device_mutex());
    CUstream_st* s = simt::resolve(stream);
    if (!s) return ret(cudaErrorInvalidResourceHandle);
    if (cudaError_t e = sync_conflicts_with_capture(s)) return ret(e);
    std::vector<std::pair<CUstream_st*, uint64_t>> t{{s, s->issued}};
    // The legacy stream's synchronize also waits for the blocking streams' work before it.
    if (s->legacy)
      for (CUstream_st* b : simt::g_busy)
        if (b->blocking()) t.push_back({b, b->issued});
    simt::drain(t, "cudaStreamSynchronize");
  }
  simt::detail::check_all_guards(nullptr, "cudaStreamSynchronize");
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t stream) {
  Lock lock(device_mutex());
  CUstream_st* s = simt::resolve(stream);
  if (!s) return ret(cudaErrorInvalidResourceHandle);
  if (s->cap) return ret(cudaErrorStreamCaptureUnsupported);
  if (s->completed == s->issued) return cudaSuccess;
  // A query lets the device make progress (so polling ends): the stream's next op runs, with
  // whatever it waits for.
  simt::drain({{s, s->completed + 1}}, "cudaStreamQuery");
  return s->completed == s->issued ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  Lock lock(device_mutex());
  CUstream_st* s = simt::resolve(stream);
  if (!s) return ret(cudaErrorInvalidResourceHandle);
  if (!simt::g_events.count(event)) return ret(cudaErrorInvalidResourceHandle);
  if (event->cap) {
    // Waiting on an event recorded in a capture: the stream joins that capture (a fork).
    if (s->cap && s->cap != event->cap) return ret(cudaErrorStreamCaptureIsolation);
    if (s->legacy) return ret(cudaErrorStreamCaptureImplicit);
    if (event->cap->invalidated) return ret(cudaErrorStreamCaptureInvalidated);
    if (!s->cap) {
      s->cap = event->cap;
      s->cap_deps.clear();
      event->cap->streams.insert(s);
    }
    for (auto* n : event->cap_nodes)
      if (std::find(s->cap_deps.begin(), s->cap_deps.end(), n) == s->cap_deps.end()) s->cap_deps.push_back(n);
    return cudaSuccess;
  }
  // Before its first record an event stands for no work: waiting on it is a no-op.
  if (!event->stream) return cudaSuccess;
  // A capture may only depend on work captured with it.
  if (s->cap) return ret(cudaErrorStreamCaptureIsolation);
  if (event->stream->completed >= event->seq) return cudaSuccess;
  // The wait is an empty op that depends on the event's last record (as of this call).
  return ret(simt::enqueue_after(stream, "cudaStreamWaitEvent", WorkKind::Host, nullptr, [] {},
                                 {{event->stream, event->seq}}, nullptr));
}
cudaError_t cudaLaunchHostFunc(cudaStream_t stream, cudaHostFn_t fn, void* userData) {
  if (!fn) return ret(cudaErrorInvalidValue);
  return ret(simt::detail::enqueue(stream, "cudaLaunchHostFunc", WorkKind::Host, nullptr,
                                   [fn, userData] { fn(userData); }, nullptr));
}
cudaError_t cudaStreamAddCallback(cudaStream_t stream, cudaStreamCallback_t callback,
                                  void* userData, unsigned int) {
  if (!callback) return ret(cudaErrorInvalidValue);
  {
    Lock lock(device_mutex());
    CUstream_st* s = simt::resolve(stream);
    if (s && s->cap) return ret(cudaErrorStreamCaptureUnsupported);  // not capturable
  }
  return ret(simt::detail::enqueue(stream, "cudaStreamAddCallback", WorkKind::Host, nullptr,
                                   [stream, callback, userData] { callback(stream, cudaSuccess, userData); },
                                   nullptr));
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  if (!event) return ret(cudaErrorInvalidValue);
  Lock lock(device_mutex());
  *event = new CUevent_st();
  (*event)->flags = flags;
  simt::g_events.insert(*event);
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, 0); }
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  Lock lock(device_mutex());
  if (!simt::g_events.erase(event)) return ret(cudaErrorInvalidResourceHandle);
  // A queued record may still write the timestamp: the object outlives the handle.
  if (event->stream && event->stream->completed < event->seq) return cudaSuccess;
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  Lock lock(device_mutex());
  CUstream_st* s = simt::resolve(stream);
  if (!s) return ret(cudaErrorInvalidResourceHandle);
  if (!simt::g_events.count(event)) return ret(cudaErrorInvalidResourceHandle);
  if (s->cap) {
    if (s->cap->invalidated) return ret(cudaErrorStreamCaptureInvalidated);
    event->cap = s->cap;
    event->cap_nodes = s->cap_deps;
    return cudaSuccess;
  }
  // The record is an op that stamps the time when it runs, if it is still the event's last.
  CUstream_st* old_stream = event->stream;
  const uint64_t old_seq = event->seq;
  const uint64_t seq = s->issued + 1;
  event->stream = s;
  event->seq = seq;
  cudaError_t e = simt::detail::enqueue(stream, "cudaEventRecord", WorkKind::Host, nullptr, [event, s, seq] {
    if (event->stream == s && event->seq == seq) event->when = std::chrono::steady_clock::now();
  }, nullptr);
  if (e != cudaSuccess) {
    event->stream = old_stream;
    event->seq = old_seq;
    return ret(e);
  }
  event->cap.reset();
  event->cap_nodes.clear();
  return cudaSuccess;
}
cudaError_t cudaEventRecordWithFlags(cudaEvent_t event, cudaStream_t stream, unsigned int) {
  return cudaEventRecord(event, stream);
}
cudaError_t cudaEventQuery(cudaEvent_t event) {
  Lock lock(device_mutex());
  if (!simt::g_events.count(event)) return ret(cudaErrorInvalidResourceHandle);
  if (event->cap) return ret(cudaErrorCapturedEvent);
  if (!event->stream || event->stream->completed >= event->seq) return cudaSuccess;
  // Progress: one op of what the event waits for.
  simt::drain({{event->stream, event->stream->completed + 1}}, "cudaEventQuery");
  return event->stream->completed >= event->seq ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  {
    Lock lock(device_mutex());
    if (!simt::g_events.count(event)) return ret(cudaErrorInvalidResourceHandle);
    if (event->cap) return ret(cudaErrorCapturedEvent);
    if (event->stream) simt::drain({{event->stream, event->seq}}, "cudaEventSynchronize");
  }
  simt::detail::check_all_guards(nullptr, "cudaEventSynchronize");
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!ms) return ret(cudaErrorInvalidValue);
  Lock lock(device_mutex());
  if (!simt::g_events.count(start) || !simt::g_events.count(end)) return ret(cudaErrorInvalidResourceHandle);
  if ((start->flags | end->flags) & cudaEventDisableTiming) return ret(cudaErrorInvalidResourceHandle);
  if (!start->stream || !end->stream) return ret(cudaErrorInvalidResourceHandle);
  if (start->stream->completed < start->seq || end->stream->completed < end->seq) return ret(cudaErrorNotReady);
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
  {
    Lock lock(device_mutex());
    if (!simt::g_captures.empty()) {
      for (auto& c : simt::g_captures) c->invalidated = true;
      return ret(cudaErrorStreamCaptureUnsupported);
    }
    simt::drain_all("cudaDeviceSynchronize");
  }
  simt::detail::check_all_guards(nullptr, "cudaDeviceSynchronize");
  return cudaSuccess;
}
cudaError_t cudaDeviceReset(void) {
  {
    Lock lock(device_mutex());
    simt::drain_all("cudaDeviceReset");
  }
  simt::detail::check_all_guards(nullptr, "cudaDeviceReset");
  return cudaSuccess;
}

// ---------------------------------------------------------------------------------------------
// Stream capture.
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
  Lock lock(device_mutex());
  CUstream_st* s = simt::resolve(stream);
  if (!s) return ret(cudaErrorInvalidResourceHandle);
  if (s->legacy) return ret(cudaErrorStreamCaptureUnsupported);
  if (s->cap) return ret(cudaErrorIllegalState);
  if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
      mode != cudaStreamCaptureModeRelaxed)
    return ret(cudaErrorInvalidValue);
  auto c = std::make_shared<simt::Capture>();
  c->id = ++simt::g_next_capture_id;
  c->graph = new CUgraph_st();
  simt::g_graphs.insert(c->graph);
  c->mode = mode;
  c->thread = std::this_thread::get_id();
  c->origin = s;
  c->streams.insert(s);
  s->cap = c;
  s->cap_deps.clear();
  simt::g_captures.insert(c);
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* pGraph) {
  Lock lock(device_mutex());
  if (!pGraph) return ret(cudaErrorInvalidValue);
  CUstream_st* s = simt::resolve(stream);
  if (!s) return ret(cudaErrorInvalidResourceHandle);
  if (!s->cap) return ret(cudaErrorIllegalState);
  std::shared_ptr<simt::Capture> c = s->cap;
  if (c->origin != s) return ret(cudaErrorStreamCaptureUnmatched);
  if (c->mode != cudaStreamCaptureModeRelaxed && c->thread != std::this_thread::get_id())
    return ret(cudaErrorStreamCaptureWrongThread);
  *pGraph = nullptr;
  cudaError_t e = cudaSuccess;
  if (c->invalidated) {
    e = cudaErrorStreamCaptureInvalidated;
  } else {
    // Every forked stream must have been joined back into the origin stream.
    std::vector<bool> joined = simt::ancestors(*c->graph, s->cap_deps);
    for (CUstream_st* t : c->streams)
      for (auto* n : t->cap_deps)
        if (!joined[n->index]) e = cudaErrorStreamCaptureUnjoined;
  }
  simt::end_capture(c);
  if (e != cudaSuccess) {
    simt::g_graphs.erase(c->graph);
    delete c->graph;
    return ret(e);
  }
  *pGraph = c->graph;
  return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus* pCaptureStatus) {
  Lock lock(device_mutex());
  CUstream_st* s = simt::resolve(stream);
  if (!s) return ret(cudaErrorInvalidResourceHandle);
  if (!pCaptureStatus) return ret(cudaErrorInvalidValue);
  if (s->legacy) {
    // Asking about the legacy stream while a blocking stream captures is an implicit dependency.
    for (auto& c : simt::g_captures)
      for (CUstream_st* cs : c->streams)
        if (cs->blocking()) return ret(cudaErrorStreamCaptureImplicit);
  }
  *pCaptureStatus = !s->cap ? cudaStreamCaptureStatusNone
                    : s->cap->invalidated ? cudaStreamCaptureStatusInvalidated
                                          : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}
cudaError_t cudaStreamGetCaptureInfo(cudaStream_t stream, enum cudaStreamCaptureStatus* captureStatus_out,
                                     unsigned long long* id_out, cudaGraph_t* graph_out,
                                     const cudaGraphNode_t** dependencies_out,
                                     const cudaGraphEdgeData** edgeData_out, size_t* numDependencies_out) {
  cudaError_t e = cudaStreamIsCapturing(stream, captureStatus_out);
  if (e != cudaSuccess) return e;
  Lock lock(device_mutex());
  CUstream_st* s = simt::resolve(stream);
  const bool active = s->cap != nullptr;
  if (id_out && active) *id_out = s->cap->id;
  if (graph_out) *graph_out = active ? s->cap->graph : nullptr;
  if (dependencies_out) *dependencies_out = active ? s->cap_deps.data() : nullptr;
  if (edgeData_out) *edgeData_out = nullptr;  // every captured edge is a default edge
  if (numDependencies_out) *numDependencies_out = active ? s->cap_deps.size() : 0;
  return cudaSuccess;
}
cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode* mode) {
  if (!mode) return ret(cudaErrorInvalidValue);
  std::swap(*mode, simt::t_capture_mode);
  return cudaSuccess;
}

// ---------------------------------------------------------------------------------------------
// Graphs.
cudaError_t cudaGraphGetNodes(cudaGraph_t graph, cudaGraphNode_t* nodes, size_t* numNodes) {
  Lock lock(device_mutex());
  if (!simt::g_graphs.count(graph)) return ret(cudaErrorInvalidValue);
  if (!numNodes) return ret(cudaErrorInvalidValue);
  if (nodes)
    for (size_t i = 0; i < *numNodes && i < graph->nodes.size(); ++i) nodes[i] = graph->nodes[i].get();
  *numNodes = graph->nodes.size();
  return cudaSuccess;
}
cudaError_t cudaGraphNodeGetType(cudaGraphNode_t node, enum cudaGraphNodeType* pType) {
  if (!node || !pType) return ret(cudaErrorInvalidValue);
  switch (node->kind) {
    case WorkKind::Kernel: case WorkKind::Library: *pType = cudaGraphNodeTypeKernel; break;
    case WorkKind::Memcpy: *pType = cudaGraphNodeTypeMemcpy; break;
    case WorkKind::Memset: *pType = cudaGraphNodeTypeMemset; break;
    case WorkKind::Host: *pType = cudaGraphNodeTypeHost; break;
    case WorkKind::Graph: *pType = cudaGraphNodeTypeGraph; break;
  }
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* pGraphExec, cudaGraph_t graph, unsigned long long flags) {
  if (!pGraphExec) return ret(cudaErrorInvalidValue);
  Lock lock(device_mutex());
  if (!simt::g_graphs.count(graph)) return ret(cudaErrorInvalidValue);
  const unsigned long long known = cudaGraphInstantiateFlagAutoFreeOnLaunch | cudaGraphInstantiateFlagUpload |
                                   cudaGraphInstantiateFlagDeviceLaunch | cudaGraphInstantiateFlagUseNodePriority;
  if (flags & ~known) return ret(cudaErrorInvalidValue);
  auto nodes = std::make_shared<std::vector<ExecNode>>();
  for (auto& n : graph->nodes) nodes->push_back(ExecNode{n->kind, n->func, n->what, n->work, n->deps});
  *pGraphExec = new CUgraphExec_st{nodes};
  simt::g_execs.insert(*pGraphExec);
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t* pGraphExec, cudaGraph_t graph, unsigned long long flags) {
  return cudaGraphInstantiate(pGraphExec, graph, flags);
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t graphExec, cudaStream_t stream) {
  std::shared_ptr<const std::vector<ExecNode>> nodes;
  {
    Lock lock(device_mutex());
    if (!simt::g_execs.count(graphExec)) return ret(cudaErrorInvalidValue);
    nodes = graphExec->nodes;
  }
  return ret(simt::detail::enqueue(stream, "cudaGraphLaunch", WorkKind::Graph, nullptr,
                                   [nodes] { simt::run_graph(*nodes); }, nullptr));
}
cudaError_t cudaGraphExecUpdate(cudaGraphExec_t hGraphExec, cudaGraph_t hGraph,
                                cudaGraphExecUpdateResultInfo* resultInfo) {
  Lock lock(device_mutex());
  if (!simt::g_execs.count(hGraphExec) || !simt::g_graphs.count(hGraph)) return ret(cudaErrorInvalidValue);
  cudaGraphExecUpdateResultInfo info{cudaGraphExecUpdateSuccess, nullptr, nullptr};
  const std::vector<ExecNode>& old = *hGraphExec->nodes;
  // The documented rules we can check: same topology, same node types, same kernel functions.
  if (old.size() != hGraph->nodes.size()) info.result = cudaGraphExecUpdateErrorTopologyChanged;
  for (size_t i = 0; info.result == cudaGraphExecUpdateSuccess && i < old.size(); ++i) {
    CUgraphNode_st* n = hGraph->nodes[i].get();
    if (n->deps != old[i].deps) info.result = cudaGraphExecUpdateErrorTopologyChanged;
    else if (n->kind != old[i].kind) info.result = cudaGraphExecUpdateErrorNodeTypeChanged;
    else if (n->func != old[i].func) info.result = cudaGraphExecUpdateErrorFunctionChanged;
    if (info.result != cudaGraphExecUpdateSuccess) info.errorNode = n;
  }
  if (resultInfo) *resultInfo = info;
  if (info.result != cudaGraphExecUpdateSuccess) return ret(cudaErrorGraphExecUpdateFailure);
  auto nodes = std::make_shared<std::vector<ExecNode>>();
  for (auto& n : hGraph->nodes) nodes->push_back(ExecNode{n->kind, n->func, n->what, n->work, n->deps});
  hGraphExec->nodes = nodes;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t graphExec) {
  Lock lock(device_mutex());
  if (!simt::g_execs.erase(graphExec)) return ret(cudaErrorInvalidValue);
  delete graphExec;  // queued launches hold their own reference to the nodes
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  Lock lock(device_mutex());
  if (!simt::g_graphs.erase(graph)) return ret(cudaErrorInvalidValue);
  delete graph;
  return cudaSuccess;
}

}  // extern "C"
