// simt/scheduler.cpp — runs a kernel launch on the CPU: blocks one after another on the calling
// host thread, one Boost.Context fiber per CUDA thread, barriers and warp operations as real
// synchronisation among the fibers.
//
// Scheduling: warps progress independently between block barriers, as on a GPU, where a warp op
// synchronises only the lanes of its mask. The scheduler repeatedly picks a warp that has ready
// lanes (forward order: the lowest such warp, reverse: the highest, shuffle: a random one drawn
// afresh at every step) and runs one step of it: each ready lane, in the chosen lane order, until
// it blocks at a __syncthreads, at a warp operation, at __activemask() or exits. So in forward
// order warp 0 runs through all its warp ops up to the next __syncthreads before warp 1 starts,
// and reverse order does the opposite: a cross-warp shared-memory read that lacks its barrier
// reads stale data under one of them. The lane that completes a barrier or warp op (the last to
// arrive) computes everyone's result and marks the participants ready, itself included. Threads
// that exited no longer count for barriers or warp ops (sm_70+). A step that finds nobody ready
// while some threads have not exited is a deadlock (divergent barrier, a lane that never reaches
// a warp op...): simt aborts with a one-line description naming the kernel and block.
//
// Fiber stacks come from a pool (mmap'd once, with a PROT_NONE guard region below each) and are
// reused by every block, so a context switch costs a few nanoseconds and no allocation. Builds
// with AddressSanitizer announce every switch to it; race mode (SIMT_RACE, with ThreadSanitizer)
// makes each CUDA thread a TSan fiber and annotates the CUDA memory model's edges.
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <boost/context/fiber.hpp>
#include <atomic>
#include <cstdarg>
#include <deque>
#include <cstdlib>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(SIMT_RACE)
#include <sanitizer/tsan_interface.h>
#endif

#include "common/philox.h"
#include "simt/internal.h"

// The sanitizer runtime's hook (weak: absent when simt is linked without -fsanitize).
extern "C" void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

namespace simt {

namespace detail {
uint3 g_thread_idx;
uint3 g_block_idx;
dim3 g_block_dim;
dim3 g_grid_dim;
unsigned char* g_dynamic_smem;
}  // namespace detail

namespace {

namespace ctx = boost::context;
using detail::BarrierKind;
using detail::WarpOp;

// ---------------------------------------------------------------------------------------------
// Thread order.
struct OrderState {
  bool initialised = false;
  Order order = Order::Forward;
  uint64_t seed = 0;
  uint64_t draws = 0;  // Philox counter: each shuffle draws fresh numbers
};
OrderState g_order;

void init_order_from_env() {
  if (g_order.initialised) return;
  g_order.initialised = true;
  const char* env = getenv("SIMT_ORDER");
  if (!env || !*env) return;
  std::string s(env), name = s.substr(0, s.find(':'));
  uint64_t seed = 0;
  if (s.find(':') != std::string::npos) seed = strtoull(s.c_str() + s.find(':') + 1, nullptr, 0);
  if (name == "forward") g_order.order = Order::Forward;
  else if (name == "reverse") g_order.order = Order::Reverse;
  else if (name == "shuffle") g_order.order = Order::Shuffle;
  else fail("SIMT_ORDER=%s: expected forward, reverse or shuffle[:SEED]", env);
  g_order.seed = seed;
}

// A uniformly random index in [0, n) (n small) from Philox, keyed by the shuffle seed.
uint32_t random_below(uint32_t n) {
  // Scheduling randomness, not model randomness: site 0x53494D54 ("SIMT") keeps it apart.
  uint32_t r = vit::philox_u32(g_order.seed, 0x53494D54u, 0, g_order.draws++);
  return (uint32_t)(((uint64_t)r * n) >> 32);
}
template <class V>
void shuffle(V& v) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[random_below((uint32_t)i)]);
}

// ---------------------------------------------------------------------------------------------
// Fiber stacks.
constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kStackGuardBytes = 64 * 1024;  // PROT_NONE below each stack: overflows fault
struct StackPool {
  std::vector<char*> stacks;  // each: [kStackGuardBytes guard][kStackBytes of stack]
  ctx::stack_context get(size_t i) {
    while (stacks.size() <= i) {
      size_t total = kStackBytes + kStackGuardBytes;
      void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) fail("cannot map %zu bytes for a fiber stack", total);
      mprotect(p, kStackGuardBytes, PROT_NONE);  // a stack overflow faults instead of corrupting
      stacks.push_back(static_cast<char*>(p));
    }
    ctx::stack_context sc;
    sc.size = kStackBytes;
    sc.sp = stacks[i] + kStackGuardBytes + kStackBytes;
    return sc;
  }
};
// Hands a pooled stack to a fiber; giving it back is a no-op (the pool keeps it).
struct PooledStack {
  ctx::stack_context sc;
  ctx::stack_context allocate() { return sc; }
  void deallocate(ctx::stack_context&) noexcept {}
};

// ---------------------------------------------------------------------------------------------
// Sanitizer hooks. Boost.Context switches stacks behind the sanitizers' backs, so every switch is
// announced: to AddressSanitizer (which must know the current stack's bounds, or it reports
// false stack errors and ignores __asan_handle_no_return), and in race mode to ThreadSanitizer
// (each CUDA thread is a TSan fiber; switches carry no synchronisation, so that only the edges
// the CUDA memory model gives, annotated below, order the CUDA threads).
#if defined(__SANITIZE_ADDRESS__)
#define SIMT_ASAN 1
#endif
#if defined(SIMT_ASAN)
const void* g_sched_stack_bottom = nullptr;  // the scheduler's stack, learnt at a fiber's first run
size_t g_sched_stack_size = 0;
void* g_sched_fake_stack = nullptr;
#endif
#if defined(SIMT_RACE)
void* g_sched_tsan_fiber = nullptr;  // the TSan fiber of the host thread that runs the block
char g_launch_end;                   // every CUDA thread releases it at exit; the host acquires it
// TSan fibers are costly to create (TSan maps and clears about a megabyte for each), so they are
// pooled, but a fiber carries its vector clock with it: reused within one launch, it would order
// one block's threads before another's. So a fiber serves one block per launch and returns to the
// pool when the launch ends (the kernel boundary orders everything anyway). This TSan (v2) also
// reuses a destroyed thread's id, which would merge two blocks' threads into one; pooled fibers
// are never destroyed. At most kRaceFibers exist; a launch that needs more (a grid of more than
// kRaceFibers threads) reuses its own oldest, and races between blocks that far apart may be missed.
constexpr size_t kRaceFibers = 1024;  // >= the largest block
std::vector<void*> g_fiber_pool;      // free: used by no block of the current launch
std::deque<void*> g_fiber_used;       // used by this launch's blocks, oldest first
void* take_race_fiber() {
  void* f;
  if (!g_fiber_pool.empty()) {
    f = g_fiber_pool.back();
    g_fiber_pool.pop_back();
  } else if (g_fiber_used.size() < kRaceFibers) {
    f = __tsan_create_fiber(0);
  } else {
    f = g_fiber_used.front();
    g_fiber_used.pop_front();
  }
  g_fiber_used.push_back(f);
  return f;
}
void race_launch_done() {
  g_fiber_pool.insert(g_fiber_pool.end(), g_fiber_used.begin(), g_fiber_used.end());
  g_fiber_used.clear();
}
#endif

// ---------------------------------------------------------------------------------------------
// Threads and blocks.
enum class St : uint8_t { Ready, Running, Barrier, Warp, Active, Exited };

struct Thread {
  ctx::fiber fiber;  // the suspended CUDA thread (empty while it runs and after it exits)
  ctx::fiber sink;   // the scheduler, while this thread runs
  uint3 idx;
  unsigned linear;
  St state;
  // at a barrier
  BarrierKind bar_kind;
  int pred;
  int bar_result;
  unsigned bar_gen;  // race mode: the barrier generation it arrived at
  // at a barrier, warp op or __activemask: where
  const char* file;
  int line;
  // at a warp op
  WarpOp op;
  unsigned mask;
  int arg, width;
  uint64_t value, result;
  // race mode: parity of this lane's arrival sync object; after a warp op, the slot of its
  // warp's ring of completion objects to acquire
  unsigned par, acq_slot;
  // the fiber's stack, for AddressSanitizer
  const void* stack_bottom;
  size_t stack_size;
  void* asan_fake_stack;
  void* tsan_fiber;
};

constexpr unsigned kDoneRing = 8;
// Race mode: the sync objects of one block (fresh memory per block, so that no happens-before
// edge leaks from one block to the next through a reused object).
struct RaceSync {
  char start;   // released by the block's host thread after setup, acquired by every thread
  char bar[2];  // block barrier, by generation parity
  char arrive[detail::kMaxThreadsPerBlock][2];  // per thread: warp-op arrival, by parity
  char done[detail::kMaxThreadsPerBlock / 32][kDoneRing];  // per warp: completed ops, a ring
};

struct Block {
  const detail::KernelLaunch* launch = nullptr;
  std::vector<Thread> threads;  // linear thread index = x + y*Dx + z*Dx*Dy
  unsigned n = 0;
  unsigned live = 0;        // threads that have not exited
  unsigned at_barrier = 0;  // of them, waiting at __syncthreads
  unsigned bar_gen = 0;     // completed barriers
  Thread* cur = nullptr;
  RaceSync* sync = nullptr;
  std::vector<unsigned> lanes;  // scratch: the lanes of one warp step
  // Per warp, one bit per lane: lanes that have exited (or do not exist: past a partial last
  // warp), wait at a warp op, are ready to run, wait at __activemask().
  std::vector<unsigned> warp_exited, warp_waiting, warp_ready, warp_amask;
  std::vector<unsigned> warp_done;  // race mode: warp ops completed per warp
};
Block g_blk;
StackPool g_stacks;

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::SyncWarp: return "__syncwarp";
    case WarpOp::ShflIdx: return "__shfl_sync";
    case WarpOp::ShflUp: return "__shfl_up_sync";
    case WarpOp::ShflDown: return "__shfl_down_sync";
    case WarpOp::ShflXor: return "__shfl_xor_sync";
    case WarpOp::Ballot: return "__ballot_sync";
    case WarpOp::Any: return "__any_sync";
    case WarpOp::All: return "__all_sync";
    case WarpOp::MatchAny: return "__match_any_sync";
    case WarpOp::MatchAll: return "__match_all_sync";
    case WarpOp::ReduceAdd: return "__reduce_add_sync";
    case WarpOp::ReduceMin: case WarpOp::ReduceMinS: return "__reduce_min_sync";
    case WarpOp::ReduceMax: case WarpOp::ReduceMaxS: return "__reduce_max_sync";
    case WarpOp::ReduceAnd: return "__reduce_and_sync";
    case WarpOp::ReduceOr: return "__reduce_or_sync";
    case WarpOp::ReduceXor: return "__reduce_xor_sync";
  }
  return "?";
}
const char* barrier_name(BarrierKind k) {
  switch (k) {
    case BarrierKind::Plain: return "__syncthreads";
    case BarrierKind::Count: return "__syncthreads_count";
    case BarrierKind::And: return "__syncthreads_and";
    case BarrierKind::Or: return "__syncthreads_or";
  }
  return "?";
}

// "kernel K block (x,y,z)" for messages.
std::string where() {
  char buf[512];
  snprintf(buf, sizeof buf, "kernel %s (launched at %s:%d) block (%u,%u,%u)", g_blk.launch->name,
           g_blk.launch->file, g_blk.launch->line, detail::g_block_idx.x, detail::g_block_idx.y,
           detail::g_block_idx.z);
  return buf;
}
std::string thread_name(const Thread& t) {
  char buf[96];
  snprintf(buf, sizeof buf, "thread (%u,%u,%u) (warp %u lane %u)", t.idx.x, t.idx.y, t.idx.z,
           t.linear / 32, t.linear % 32);
  return buf;
}
std::string state_name(const Thread& t) {
  char buf[512];
  switch (t.state) {
    case St::Exited: return "has exited";
    case St::Barrier:
      snprintf(buf, sizeof buf, "waits at %s() at %s:%d", barrier_name(t.bar_kind), t.file, t.line);
      return buf;
    case St::Warp:
      snprintf(buf, sizeof buf, "waits at %s(mask 0x%08x) at %s:%d", op_name(t.op), t.mask, t.file,
               t.line);
      return buf;
    default: return "is runnable";
  }
}

bool same_site(const char* f1, int l1, const char* f2, int l2) {
  return l1 == l2 && (f1 == f2 || strcmp(f1, f2) == 0);
}

void set_ready(Thread& t) {
  t.state = St::Ready;
  g_blk.warp_ready[t.linear / 32] |= 1u << (t.linear % 32);
}

// Switch from the running CUDA thread back to the scheduler; returns when resumed.
void yield_to_scheduler() {
  Thread* t = g_blk.cur;
#if defined(SIMT_ASAN)
  __sanitizer_start_switch_fiber(&t->asan_fake_stack, g_sched_stack_bottom, g_sched_stack_size);
#endif
#if defined(SIMT_RACE)
  __tsan_switch_to_fiber(g_sched_tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
  t->sink = std::move(t->sink).resume();
#if defined(SIMT_ASAN)
  __sanitizer_finish_switch_fiber(t->asan_fake_stack, &g_sched_stack_bottom, &g_sched_stack_size);
#endif
}

void resume(Thread& t) {
  g_blk.cur = &t;
  detail::g_thread_idx = t.idx;
  t.state = St::Running;
  g_blk.warp_ready[t.linear / 32] &= ~(1u << (t.linear % 32));
#if defined(SIMT_ASAN)
  __sanitizer_start_switch_fiber(&g_sched_fake_stack, t.stack_bottom, t.stack_size);
#endif
#if defined(SIMT_RACE)
  __tsan_switch_to_fiber(t.tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
  t.fiber = std::move(t.fiber).resume();
#if defined(SIMT_ASAN)
  __sanitizer_finish_switch_fiber(g_sched_fake_stack, nullptr, nullptr);
#endif
  g_blk.cur = nullptr;
}

// Nobody is ready but some threads have not exited: describe the first stuck thing and abort.
[[noreturn]] void deadlock() {
  std::vector<Thread>& th = g_blk.threads;
  unsigned exited = 0, at_warp = 0;
  const Thread* first_warp = nullptr;
  const Thread* first_bar = nullptr;
  for (unsigned i = 0; i < g_blk.n; ++i) {
    const Thread& t = th[i];
    if (t.state == St::Exited) ++exited;
    if (t.state == St::Warp) { ++at_warp; if (!first_warp) first_warp = &t; }
    if (t.state == St::Barrier && !first_bar) first_bar = &t;
  }
  if (first_bar) {
    std::string others;
    if (at_warp) others += "; " + std::to_string(at_warp) + " wait at warp ops (first: " + thread_name(*first_warp) + " " + state_name(*first_warp) + ")";
    if (exited) others += "; " + std::to_string(exited) + " exited";
    fail("deadlock in %s: %s() at %s:%d reached by %u of the %u threads that have not exited%s. "
         "Every thread of a block that has not exited must reach the same __syncthreads "
         "(divergent barrier?)",
         where().c_str(), barrier_name(first_bar->bar_kind), first_bar->file, first_bar->line,
         g_blk.at_barrier, g_blk.live, others.c_str());
  }
  if (first_warp) {
    const Thread& t = *first_warp;
    const unsigned wbase = t.linear & ~31u;
    for (unsigned m = t.mask & ~g_blk.warp_exited[t.linear / 32]; m; m &= m - 1) {
      unsigned l = (unsigned)__builtin_ctz(m);
      const Thread& o = th[wbase + l];
      if (o.state == St::Warp && o.op == t.op && o.mask == t.mask) continue;
      fail("deadlock in %s: %s %s(mask 0x%08x) at %s:%d, but lane %u (%s) %s",
           where().c_str(), thread_name(t).c_str(), op_name(t.op), t.mask, t.file, t.line, l,
           thread_name(o).c_str(), state_name(o).c_str());
    }
  }
  fail("deadlock in %s: no thread can run (internal error)", where().c_str());
}

// Every thread that has not exited waits at a barrier: check it is the same one as `ref`'s,
// compute the result, release everyone.
void complete_barrier(const Thread& ref) {
  Block& b = g_blk;
  int count = 0;
  for (unsigned i = 0; i < b.n; ++i) {
    Thread& o = b.threads[i];
    if (o.state == St::Exited) continue;
    if (o.bar_kind != ref.bar_kind || !same_site(o.file, o.line, ref.file, ref.line))
      fail("divergent barrier in %s: %s %s() at %s:%d while %s %s() at %s:%d. Every thread of a "
           "block must reach the same __syncthreads",
           where().c_str(), thread_name(ref).c_str(), barrier_name(ref.bar_kind), ref.file,
           ref.line, thread_name(o).c_str(), barrier_name(o.bar_kind), o.file, o.line);
    count += o.pred;
  }
  int result = 0;
  switch (ref.bar_kind) {
    case BarrierKind::Plain: result = 0; break;
    case BarrierKind::Count: result = count; break;
    case BarrierKind::And: result = count == (int)b.live; break;
    case BarrierKind::Or: result = count > 0; break;
  }
  for (unsigned i = 0; i < b.n; ++i) {
    Thread& o = b.threads[i];
    if (o.state == St::Exited) continue;
    o.bar_result = result;
    set_ready(o);
  }
  b.at_barrier = 0;
  ++b.bar_gen;
}

constexpr uint64_t kGarbage = ~0ull;  // what a shuffle from a lane outside the mask reads

// The last lane has arrived: compute every participating lane's result. mask: as the lanes
// passed it; eff: its lanes that take part (not exited, existing). A shuffle from a lane outside
// eff reads garbage: undefined on a GPU ("threads may only read data from another thread which
// is actively participating"), loud here.
void complete_warp_op(unsigned wbase, unsigned mask, unsigned eff, WarpOp op) {
  std::vector<Thread>& th = g_blk.threads;
  auto lanes = [&](auto&& f) {
    for (unsigned m = eff; m; m &= m - 1) f(th[wbase + (unsigned)__builtin_ctz(m)], (unsigned)__builtin_ctz(m));
  };
  switch (op) {
    case WarpOp::SyncWarp: break;
    case WarpOp::ShflIdx: case WarpOp::ShflUp: case WarpOp::ShflDown: case WarpOp::ShflXor:
      // PTX shfl.sync semantics: lanes form segments of `width`; a source outside the caller's
      // segment (up/down/xor) yields the caller's own value.
      lanes([&](Thread& d, unsigned lane) {
        const int w = d.width;
        const int min_lane = (int)lane & ~(w - 1), max_lane = min_lane + w - 1;
        long long j;
        bool in_range = true;
        switch (op) {
          case WarpOp::ShflIdx: j = min_lane | (d.arg & (w - 1)); break;
          case WarpOp::ShflUp: j = (long long)lane - (unsigned)d.arg; in_range = j >= min_lane; break;
          case WarpOp::ShflDown: j = (long long)lane + (unsigned)d.arg; in_range = j <= max_lane; break;
          default: j = (long long)(lane ^ (unsigned)d.arg); in_range = j <= max_lane; break;
        }
        if (!in_range) d.result = d.value;
        else if (!(eff >> j & 1)) d.result = kGarbage;
        else d.result = th[wbase + (unsigned)j].value;
      });
      break;
    case WarpOp::Ballot: case WarpOp::Any: case WarpOp::All: {
      // "for all non-exited threads in mask" (CUDA programming guide, warp vote functions)
      unsigned bits = 0;
      lanes([&](Thread& d, unsigned lane) { if (d.value) bits |= 1u << lane; });
      uint64_t r = op == WarpOp::Ballot ? bits : op == WarpOp::Any ? bits != 0 : bits == eff;
      lanes([&](Thread& d, unsigned) { d.result = r; });
      break;
    }
    case WarpOp::MatchAny:
      lanes([&](Thread& d, unsigned) {
        unsigned same = 0;
        lanes([&](Thread& o, unsigned l) { if (o.value == d.value) same |= 1u << l; });
        d.result = same;
      });
      break;
    case WarpOp::MatchAll: {
      bool all = true;
      const uint64_t v0 = th[wbase + (unsigned)__builtin_ctz(eff)].value;
      lanes([&](Thread& d, unsigned) { all = all && d.value == v0; });
      lanes([&](Thread& d, unsigned) { d.result = all ? mask : 0; });
      break;
    }
    default: {
      uint32_t r = 0;
      bool first = true;
      lanes([&](Thread& d, unsigned) {
        uint32_t v = (uint32_t)d.value;
        if (first) { r = v; first = false; return; }
        switch (op) {
          case WarpOp::ReduceAdd: r += v; break;
          case WarpOp::ReduceMin: r = std::min(r, v); break;
          case WarpOp::ReduceMax: r = std::max(r, v); break;
          case WarpOp::ReduceMinS: r = (uint32_t)std::min((int32_t)r, (int32_t)v); break;
          case WarpOp::ReduceMaxS: r = (uint32_t)std::max((int32_t)r, (int32_t)v); break;
          case WarpOp::ReduceAnd: r &= v; break;
          case WarpOp::ReduceOr: r |= v; break;
          case WarpOp::ReduceXor: r ^= v; break;
          default: break;
        }
      });
      lanes([&](Thread& d, unsigned) { d.result = r; });
      break;
    }
  }
}

// Complete every warp op of warp w whose lanes (those named in its mask that have not exited)
// have all arrived at it with the same op and mask.
void try_complete_warp(unsigned w) {
  Block& b = g_blk;
  const unsigned wbase = w * 32;
  unsigned pending = b.warp_waiting[w];
  while (pending) {
    const unsigned l = (unsigned)__builtin_ctz(pending);
    const Thread& a = b.threads[wbase + l];
    const unsigned eff = a.mask & ~b.warp_exited[w];
    unsigned group = 0;
    for (unsigned m = eff & b.warp_waiting[w]; m; m &= m - 1) {
      const unsigned k = (unsigned)__builtin_ctz(m);
      const Thread& o = b.threads[wbase + k];
      if (o.op == a.op && o.mask == a.mask) group |= 1u << k;
    }
    pending &= ~(group | (1u << l));
    if (group != eff) continue;
    complete_warp_op(wbase, a.mask, eff, a.op);
#if defined(SIMT_RACE)
    // The completing fiber gathers every participant's arrival and publishes the union in one
    // completion object, which each participant acquires when it resumes: 2 annotations per lane
    // instead of one per pair of lanes. (When an exiting thread completes the op, it is the one
    // that gathers: an extra edge from it, which can only hide a race, never invent one.)
    for (unsigned m = eff; m; m &= m - 1) {
      const unsigned k = (unsigned)__builtin_ctz(m);
      __tsan_acquire(&b.sync->arrive[wbase + k][b.threads[wbase + k].par & 1u]);
    }
    const unsigned slot = b.warp_done[w]++ % kDoneRing;
    __tsan_release(&b.sync->done[w][slot]);
#else
    const unsigned slot = 0;
#endif
    b.warp_waiting[w] &= ~eff;
    for (unsigned m = eff; m; m &= m - 1) {
      Thread& o = b.threads[wbase + (unsigned)__builtin_ctz(m)];
      o.acq_slot = slot;
      set_ready(o);
    }
  }
}

// A thread returned from the kernel: it no longer counts for barriers and warp ops (sm_70+), so
// its exit may complete either.
void thread_exited(Thread& t) {
  Block& b = g_blk;
  t.state = St::Exited;
  --b.live;
  const unsigned w = t.linear / 32;
  b.warp_exited[w] |= 1u << (t.linear % 32);
  if (b.live > 0 && b.at_barrier == b.live) {
    for (unsigned i = 0; i < b.n; ++i)
      if (b.threads[i].state == St::Barrier) { complete_barrier(b.threads[i]); break; }
  }
  try_complete_warp(w);
}

// __activemask(): the lanes waiting at it, grouped by call site, learn who else is there.
void resolve_activemask(unsigned w) {
  Block& b = g_blk;
  const unsigned wbase = w * 32;
  while (unsigned pending = b.warp_amask[w]) {
    const Thread& a = b.threads[wbase + (unsigned)__builtin_ctz(pending)];
    unsigned group = 0;
    for (unsigned m = pending; m; m &= m - 1) {
      const unsigned k = (unsigned)__builtin_ctz(m);
      const Thread& o = b.threads[wbase + k];
      if (same_site(o.file, o.line, a.file, a.line)) group |= 1u << k;
    }
    b.warp_amask[w] &= ~group;
    for (unsigned m = group; m; m &= m - 1) {
      Thread& o = b.threads[wbase + (unsigned)__builtin_ctz(m)];
      o.result = group;
      set_ready(o);
    }
  }
}

// The next warp to run: one that has ready lanes or lanes at __activemask(). Forward takes the
// lowest such warp, Reverse the highest, Shuffle a random one (a fresh draw at every step, so
// warps interleave at every warp-op completion). -1: none (deadlock, or all exited).
int pick_warp() {
  Block& b = g_blk;
  const int nw = (int)b.warp_ready.size();
  const Order order = g_order.order;
  if (order == Order::Forward) {
    for (int w = 0; w < nw; ++w)
      if (b.warp_ready[w] | b.warp_amask[w]) return w;
    return -1;
  }
  if (order == Order::Reverse) {
    for (int w = nw; w-- > 0;)
      if (b.warp_ready[w] | b.warp_amask[w]) return w;
    return -1;
  }
  unsigned cand[detail::kMaxThreadsPerBlock / 32], nc = 0;
  for (int w = 0; w < nw; ++w)
    if (b.warp_ready[w] | b.warp_amask[w]) cand[nc++] = (unsigned)w;
  return nc ? (int)cand[random_below(nc)] : -1;
}

// One step of warp w: resume each of its ready lanes (in the chosen order) until it blocks; a
// lane that a warp op completed by a later lane makes ready in this step also runs in it.
void run_warp_step(unsigned w) {
  Block& b = g_blk;
  const unsigned ready = b.warp_ready[w];
  if (!ready) {  // everyone left is blocked: those at __activemask() learn who is with them
    resolve_activemask(w);
    return;
  }
  b.lanes.clear();
  for (unsigned m = ready; m; m &= m - 1) b.lanes.push_back((unsigned)__builtin_ctz(m));
  if (g_order.order == Order::Reverse) std::reverse(b.lanes.begin(), b.lanes.end());
  else if (g_order.order == Order::Shuffle) shuffle(b.lanes);
  for (unsigned l : b.lanes) {
    Thread& t = b.threads[w * 32 + l];
    if (t.state == St::Ready) resume(t);
  }
}

#if defined(SIMT_RACE)
constexpr size_t kRaceStackBytes = 128 * 1024;
constexpr size_t kRaceGuardBytes = 4096;
char* g_race_stacks = nullptr;  // race mode: [guard][stack] per thread of the running block
#endif

void run_block() {
  Block& b = g_blk;
  b.live = b.n;
  b.at_barrier = 0;
  b.bar_gen = 0;
  const unsigned nwarps = (b.n + 31) / 32;
  b.warp_exited.assign(nwarps, 0);
  if (b.n % 32) b.warp_exited[nwarps - 1] = ~((1u << (b.n % 32)) - 1);  // lanes that do not exist
  b.warp_waiting.assign(nwarps, 0);
  b.warp_ready.assign(nwarps, 0);
  b.warp_amask.assign(nwarps, 0);
  b.warp_done.assign(nwarps, 0);
  const detail::KernelLaunch* L = b.launch;
  const dim3 bd = L->block;
  for (unsigned i = 0; i < b.n; ++i) {
    Thread& t = b.threads[i];
    t.idx = make_uint3(i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y));
    t.linear = i;
    t.par = 0;
    t.asan_fake_stack = nullptr;
    set_ready(t);
#if defined(SIMT_RACE)
    ctx::stack_context sc;
    sc.size = kRaceStackBytes;
    sc.sp = g_race_stacks + i * (kRaceGuardBytes + kRaceStackBytes) + kRaceGuardBytes + kRaceStackBytes;
#else
    ctx::stack_context sc = g_stacks.get(i);
#endif
    t.stack_bottom = static_cast<char*>(sc.sp) - sc.size;
    t.stack_size = sc.size;
#if defined(SIMT_RACE)
    t.tsan_fiber = take_race_fiber();
#endif
    t.fiber = ctx::fiber(std::allocator_arg, PooledStack{sc}, [&t, L](ctx::fiber&& sink) {
#if defined(SIMT_ASAN)
      __sanitizer_finish_switch_fiber(nullptr, &g_sched_stack_bottom, &g_sched_stack_size);
#endif
      t.sink = std::move(sink);
#if defined(SIMT_RACE)
      __tsan_acquire(&g_blk.sync->start);  // the launch happens-before every thread
#endif
      L->body(L->closure);
      thread_exited(t);
#if defined(SIMT_RACE)
      __tsan_release(&g_launch_end);  // the thread happens-before whatever follows the kernel
      __tsan_switch_to_fiber(g_sched_tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
#if defined(SIMT_ASAN)
      __sanitizer_start_switch_fiber(nullptr, g_sched_stack_bottom, g_sched_stack_size);
#endif
      return std::move(t.sink);
    });
  }
  while (b.live > 0) {
    const int w = pick_warp();
    if (w < 0) deadlock();
    run_warp_step((unsigned)w);
  }
}

// ---------------------------------------------------------------------------------------------
// Shared memory: every `__shared__` (= static thread_local) variable of the program lives in the
// executable's TLS block of the launching host thread. Saved before a launch, filled with 0xFF
// before every block, restored after the launch (so the host's own thread_locals survive).
struct TlsBlock {
  unsigned char* data = nullptr;
  size_t size = 0;
};
TlsBlock exe_tls() {
  TlsBlock r;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) -> int {
        if (info->dlpi_tls_modid != 1) return 0;  // module 1 = the executable
        for (int i = 0; i < info->dlpi_phnum; ++i)
          if (info->dlpi_phdr[i].p_type == PT_TLS) {
            auto* r = static_cast<TlsBlock*>(out);
            r->data = static_cast<unsigned char*>(info->dlpi_tls_data);
            r->size = info->dlpi_phdr[i].p_memsz;
          }
        return 1;
      },
      &r);
  return r;
}

// Dynamic shared memory: [smem_bytes][kSmemGuard guard bytes], refilled at every block start.
constexpr size_t kSmemGuard = 256;
constexpr unsigned char kSmemGuardByte = 0xA5;
std::vector<unsigned char, std::allocator<unsigned char>> g_dyn_buf;

void check_dynamic_smem_guard(size_t smem) {
  const unsigned char* g = detail::g_dynamic_smem + smem;
  for (size_t i = 0; i < kSmemGuard; ++i)
    if (g[i] != kSmemGuardByte)
      fail("dynamic shared memory overrun in %s: byte %zu past the end of the launch's %zu bytes "
           "of dynamic shared memory was written",
           where().c_str(), i, smem);
}

std::map<const void*, int> g_max_dynamic_smem;  // cudaFuncAttributeMaxDynamicSharedMemorySize

// ---------------------------------------------------------------------------------------------
// A crash inside a kernel (wild pointer, fiber stack overflow, integer division by zero) names
// the kernel, block and thread. The handler runs on an alternate signal stack, since a fiber
// stack overflow leaves no stack to run it on. Outside kernels the previous handler applies.
struct sigaction g_old_action[NSIG];
bool g_handlers_installed = false;
thread_local bool t_altstack_installed = false;

void crash_handler(int sig, siginfo_t* si, void* uctx) {
  const Block& b = g_blk;
  if (b.launch && b.cur) {
    const Thread& t = *b.cur;
    const char* what = sig == SIGSEGV ? "segmentation fault" : sig == SIGBUS ? "bus error"
                       : sig == SIGFPE ? "arithmetic exception (integer division by zero? a GPU returns garbage)"
                                       : "fatal signal";
    const char* extra = "";
    const size_t idx = (size_t)(&t - b.threads.data());
    if ((sig == SIGSEGV || sig == SIGBUS) && idx < g_stacks.stacks.size()) {
      const char* guard = g_stacks.stacks[idx];
      const char* addr = static_cast<const char*>(si->si_addr);
      if (addr >= guard && addr < guard + kStackGuardBytes)
        extra = " (fiber stack overflow: a kernel's locals must fit in simt's 256 KiB stack)";
    }
    char buf[1024];
    int n = snprintf(buf, sizeof buf,
                     "simt: %s%s in kernel %s (launched at %s:%d) block (%u,%u,%u) thread "
                     "(%u,%u,%u), address %p\n",
                     what, extra, b.launch->name, b.launch->file, b.launch->line,
                     detail::g_block_idx.x, detail::g_block_idx.y, detail::g_block_idx.z, t.idx.x,
                     t.idx.y, t.idx.z, si->si_addr);
    if (n > 0) (void)!write(2, buf, std::min((size_t)n, sizeof buf - 1));
    signal(SIGABRT, SIG_DFL);
    abort();
  }
  // Not ours: hand the signal to whoever had it before (re-raised when this handler returns).
  sigaction(sig, &g_old_action[sig], nullptr);
  (void)uctx;
}

// Misaligned accesses: x86 loads and stores do not fault on them, a GPU does
// (cudaErrorMisalignedAddress). The simt build compiles CUDA sources with
// -fsanitize=alignment -fno-sanitize-recover=alignment (Makefile: SIMTFLAGS), so UBSan checks every
// access through a typed pointer — float4, float2, int4, __half2, ..., but also float and int —
// against its type's alignment and prints "runtime error: load of misaligned address ... for
// type 'const float4', which requires 16 byte alignment" with the source line. Its death
// callback then names the kernel, block and thread, as the crash handler does. In race mode
// ThreadSanitizer's halt_on_error ends the run through the same callback, so there the line
// does not presume which sanitizer spoke (the thread is the one that made the second access).
void ubsan_death_callback() {
  const Block& b = g_blk;
  if (!b.launch || !b.cur) return;
  const Thread& t = *b.cur;
  char buf[1024];
  int n = snprintf(buf, sizeof buf,
#if defined(SIMT_RACE)
                   "simt: the sanitizer report above (a data race, or a misaligned access, which "
                   "a GPU faults on) was raised in kernel %s (launched at %s:%d) block (%u,%u,%u) "
                   "thread (%u,%u,%u)\n",
#else
                   "simt: misaligned access (the runtime error above) in kernel %s (launched at "
                   "%s:%d) block (%u,%u,%u) thread (%u,%u,%u): a GPU faults with "
                   "cudaErrorMisalignedAddress\n",
#endif
                   b.launch->name, b.launch->file, b.launch->line, detail::g_block_idx.x,
                   detail::g_block_idx.y, detail::g_block_idx.z, t.idx.x, t.idx.y, t.idx.z);
  if (n > 0) (void)!write(2, buf, std::min((size_t)n, sizeof buf - 1));
}

void install_crash_handlers() {
  if (__sanitizer_set_death_callback) {
    static bool set = false;
    if (!set) {
      set = true;
      __sanitizer_set_death_callback(ubsan_death_callback);
    }
  }
  if (!t_altstack_installed) {
    t_altstack_installed = true;
    // Keep an alternate stack that is already there (AddressSanitizer installs one per thread
    // and unmaps it at thread exit: replacing it makes that unmap fail).
    stack_t cur;
    if (sigaltstack(nullptr, &cur) != 0 || (cur.ss_flags & SS_DISABLE)) {
      stack_t ss;
      ss.ss_size = 64 * 1024;
      ss.ss_sp = malloc(ss.ss_size);  // lives as long as the thread (never freed: tiny)
      ss.ss_flags = 0;
      if (ss.ss_sp) sigaltstack(&ss, nullptr);
    }
  }
  if (g_handlers_installed) return;
  g_handlers_installed = true;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = crash_handler;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE}) sigaction(sig, &sa, &g_old_action[sig]);
}

#if defined(SIMT_RACE)
// Race mode: each block runs on a fresh host thread, with fresh memory for its fiber stacks, its
// dynamic shared memory and its sync objects. On a GPU a block's shared memory and stacks are its
// own; here they are reused addresses, and ThreadSanitizer would see the next block's accesses
// race with the previous block's (blocks have no happens-before edge between them, on purpose, so
// that two blocks writing one word is reported). A new thread gets its static TLS (the __shared__
// variables) and stack shadow reset by TSan, and fresh mappings start clean. The host thread
// joins each block thread: that orders the block's scheduler, not its CUDA threads (fiber switches
// carry no synchronisation), so no edge runs from one block's threads to the next's.
size_t g_race_smem = 0;
// The host thread of the running block, for on_race_block_thread().
std::atomic<bool> g_race_block_running{false};
std::atomic<pthread_t> g_race_block_tid{};

size_t round_page(size_t x) { return (x + 4095) & ~size_t(4095); }

void* race_block_main(void*) {
  Block& b = g_blk;
  g_race_block_tid.store(pthread_self());
  g_race_block_running.store(true);
  g_sched_tsan_fiber = __tsan_get_current_fiber();
  const size_t smem = g_race_smem;
  const size_t sync_bytes = round_page(sizeof(RaceSync));
  const size_t smem_bytes = round_page(smem + kSmemGuard);
  const size_t per = kRaceGuardBytes + kRaceStackBytes;
  const size_t total = sync_bytes + smem_bytes + b.n * per;
  char* p = static_cast<char*>(mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  if (p == MAP_FAILED) fail("cannot map %zu bytes for a block in race mode", total);
  g_race_stacks = p + sync_bytes + smem_bytes;
  for (unsigned i = 0; i < b.n; ++i) mprotect(g_race_stacks + i * per, kRaceGuardBytes, PROT_NONE);
  b.sync = reinterpret_cast<RaceSync*>(p);
  detail::g_dynamic_smem = reinterpret_cast<unsigned char*>(p + sync_bytes);
  TlsBlock tls = exe_tls();  // this thread's __shared__ variables
  if (tls.size) memset(tls.data, 0xFF, tls.size);
  memset(detail::g_dynamic_smem, 0xFF, smem);
  memset(detail::g_dynamic_smem + smem, kSmemGuardByte, kSmemGuard);
  __tsan_release(&b.sync->start);  // what the launch and this setup did, for every thread
  run_block();
  check_dynamic_smem_guard(smem);
  munmap(p, total);
  b.sync = nullptr;
  g_race_stacks = nullptr;
  detail::g_dynamic_smem = nullptr;
  g_race_block_running.store(false);
  return nullptr;
}

void run_block_on_own_thread(size_t smem) {
  g_race_smem = smem;
  pthread_t th;
  if (int e = pthread_create(&th, nullptr, race_block_main, nullptr))
    fail("race mode: cannot create a thread for a block (%s)", strerror(e));
  pthread_join(th, nullptr);
}
#endif

}  // namespace

// ---------------------------------------------------------------------------------------------
void fail(const char* fmt, ...) {
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fprintf(stderr, "simt: %s\n", buf);
  fflush(stderr);
  abort();
}

void set_thread_order(Order order, uint64_t seed) {
  std::lock_guard<std::recursive_mutex> lock(detail::device_mutex());
  g_order.initialised = true;
  g_order.order = order;
  g_order.seed = seed;
  g_order.draws = 0;
}
Order thread_order() {
  std::lock_guard<std::recursive_mutex> lock(detail::device_mutex());
  init_order_from_env();
  return g_order.order;
}
void reset_thread_order() {
  std::lock_guard<std::recursive_mutex> lock(detail::device_mutex());
  g_order = OrderState();
  init_order_from_env();
}
uint64_t thread_order_seed() {
  std::lock_guard<std::recursive_mutex> lock(detail::device_mutex());
  init_order_from_env();
  return g_order.seed;
}

namespace detail {

int set_max_dynamic_smem(const void* func, int bytes) {
  std::lock_guard<std::recursive_mutex> lock(device_mutex());
  g_max_dynamic_smem[func] = bytes;
  return 0;
}
int max_dynamic_smem(const void* func) {
  std::lock_guard<std::recursive_mutex> lock(device_mutex());
  auto it = g_max_dynamic_smem.find(func);
  // CUDA's default: what the static __shared__ variables leave of the 48 KiB.
  if (it == g_max_dynamic_smem.end())
    return kSharedMemPerBlock - (int)std::min(static_smem_bytes(func), (size_t)kSharedMemPerBlock);
  return it->second;
}

void run_launch(const KernelLaunch& L);  // executes every block, now

void launch(const KernelLaunch& L) {
  // Configuration checks, with the errors CUDA reports (non-sticky, through cudaGetLastError).
  const dim3 g = L.grid, bl = L.block;
  const unsigned long long nthreads = (unsigned long long)bl.x * bl.y * bl.z;
  if (g.x == 0 || g.y == 0 || g.z == 0 || bl.x == 0 || bl.y == 0 || bl.z == 0 ||
      nthreads > (unsigned)kMaxThreadsPerBlock || bl.x > 1024 || bl.y > 1024 || bl.z > 64 ||
      g.x > 2147483647u || g.y > 65535 || g.z > 65535) {
    set_last_error(cudaErrorInvalidConfiguration);
    return;
  }
  // __launch_bounds__(N): a launch with more than N threads per block fails; CUDA reports it as
  // "too many resources requested for launch" (the bound caps the kernel's registers, and
  // driver_types.h documents cudaErrorLaunchOutOfResources for "too many threads for the
  // kernel's register count").
  const int bound = launch_bound(L.func);
  if (bound > 0 && nthreads > (unsigned long long)bound) {
    set_last_error(cudaErrorLaunchOutOfResources);
    return;
  }
  // Shared memory: the kernel's static __shared__ bytes plus the launch's dynamic bytes. More
  // than 48 KiB of static shared memory does not even compile for a GPU (ptxas: "uses too much
  // shared data"), so that aborts. The dynamic part may not exceed the kernel's
  // cudaFuncAttributeMaxDynamicSharedMemorySize (default: 48 KiB minus the static bytes; it may
  // also be set lower), nor the total the opt-in limit.
  const size_t static_smem = static_smem_bytes(L.func);
  if (static_smem > (size_t)kSharedMemPerBlock)
    fail("kernel %s (launched at %s:%d) declares %zu bytes of static __shared__ memory, more than "
         "the %d a GPU allows (ptxas rejects it): use dynamic shared memory and "
         "cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize) for more",
         L.name, L.file, L.line, static_smem, kSharedMemPerBlock);
  if (static_smem + L.smem_bytes > (size_t)kSharedMemPerBlockOptin ||
      L.smem_bytes > (size_t)max_dynamic_smem(L.func)) {
    set_last_error(cudaErrorInvalidValue);
    return;
  }
  if (!valid_stream(L.stream)) {
    set_last_error(cudaErrorInvalidResourceHandle);
    return;
  }
  // Queued (or captured) on the stream; the copy of L keeps the argument closure alive.
  cudaError_t e = enqueue(L.stream, L.name, WorkKind::Kernel, L.func, [L] { run_launch(L); });
  if (e != cudaSuccess) set_last_error(e);
}

void run_launch(const KernelLaunch& L) {
  const dim3 g = L.grid, bl = L.block;
  const unsigned long long nthreads = (unsigned long long)bl.x * bl.y * bl.z;
  std::lock_guard<std::recursive_mutex> lock(device_mutex());
  init_order_from_env();
  install_crash_handlers();  // before the TLS block is borrowed: it reads a thread_local
  Block& b = g_blk;
  if (b.launch) fail("kernel %s launched from inside kernel %s", L.name, b.launch->name);
  b.launch = &L;
  b.n = (unsigned)nthreads;
  if (b.threads.size() < b.n) b.threads.resize(b.n);
  g_grid_dim = g;
  g_block_dim = bl;

  // Dynamic shared memory, 256-byte aligned like the start of a GPU's shared memory window.
  const size_t smem = L.smem_bytes;
  const size_t need = smem + kSmemGuard + 256;
  if (g_dyn_buf.size() < need) g_dyn_buf.resize(need);
  g_dynamic_smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(g_dyn_buf.data()) + 255) & ~uintptr_t(255));

  TlsBlock tls = exe_tls();
  std::vector<unsigned char> tls_saved(tls.data, tls.data + tls.size);

  // Block order: forward, reverse, or shuffled like the threads.
  const unsigned long long nblocks = (unsigned long long)g.x * g.y * g.z;
  std::vector<unsigned long long> perm;
  if (g_order.order == Order::Shuffle && nblocks <= (1ull << 24)) {
    perm.resize(nblocks);
    for (unsigned long long i = 0; i < nblocks; ++i) perm[i] = i;
    shuffle(perm);
  }
  for (unsigned long long k = 0; k < nblocks; ++k) {
    unsigned long long i = k;
    if (!perm.empty()) i = perm[k];
    else if (g_order.order == Order::Reverse) i = nblocks - 1 - k;
    g_block_idx = make_uint3((unsigned)(i % g.x), (unsigned)((i / g.x) % g.y), (unsigned)(i / ((unsigned long long)g.x * g.y)));
#if defined(SIMT_RACE)
    run_block_on_own_thread(smem);
#else
    if (tls.size) memset(tls.data, 0xFF, tls.size);
    memset(g_dynamic_smem, 0xFF, smem);
    memset(g_dynamic_smem + smem, kSmemGuardByte, kSmemGuard);
    run_block();
    check_dynamic_smem_guard(smem);
#endif
  }
#if defined(SIMT_RACE)
  __tsan_acquire(&g_launch_end);  // every CUDA thread happens-before what follows the kernel
  race_launch_done();
#endif

  if (tls.size) memcpy(tls.data, tls_saved.data(), tls.size);
  b.launch = nullptr;
  g_dynamic_smem = nullptr;
  check_all_guards(L.name);
}

int block_barrier(BarrierKind kind, int predicate, const char* file, int line) {
  Block& b = g_blk;
  Thread* t = b.cur;
  if (!t) fail("%s() called outside a kernel (%s:%d)", barrier_name(kind), file, line);
  t->state = St::Barrier;
  t->bar_kind = kind;
  t->pred = predicate != 0;
  t->file = file;
  t->line = line;
#if defined(SIMT_RACE)
  // Everything before the barrier in every thread happens-before everything after it. One sync
  // object per generation parity: a thread already past this barrier arrives at the next one
  // through the other object, so a thread not yet resumed does not acquire what it did since.
  t->bar_gen = b.bar_gen;
  __tsan_release(&b.sync->bar[t->bar_gen & 1]);
#endif
  // Threads that exited no longer count (valid since sm_70): the last of the others completes it.
  if (++b.at_barrier == b.live) complete_barrier(*t);
  // Even the last to arrive does not run on: everyone continues in the chosen order.
  yield_to_scheduler();
#if defined(SIMT_RACE)
  __tsan_acquire(&b.sync->bar[t->bar_gen & 1]);
#endif
  return t->bar_result;
}

// simt has no notion of convergence, so "active" is defined by the schedule: the caller stops
// at the call; once no lane of its warp can run any more (all have stopped at __activemask, a
// warp op, a barrier, or exited), the lanes stopped at this same call site are the active ones.
// Divergent lanes (elsewhere) and exited lanes are not in the result.
unsigned active_mask(const char* file, int line) {
  Block& b = g_blk;
  Thread* t = b.cur;
  if (!t) fail("__activemask() called outside a kernel (%s:%d)", file, line);
  t->state = St::Active;
  t->file = file;
  t->line = line;
  b.warp_amask[t->linear / 32] |= 1u << (t->linear % 32);
  yield_to_scheduler();
  return (unsigned)t->result;
}

uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char* file,
                 int line) {
  Block& b = g_blk;
  Thread* t = b.cur;
  if (!t) fail("%s() called outside a kernel (%s:%d)", op_name(op), file, line);
  const unsigned lane = t->linear & 31u, wbase = t->linear & ~31u, w = t->linear / 32;
  if (!(mask >> lane & 1))
    fail("%s(mask 0x%08x) at %s:%d in %s: the calling %s is not in the mask", op_name(op), mask,
         file, line, where().c_str(), thread_name(*t).c_str());
  if (width < 1 || width > 32 || (width & (width - 1)))
    fail("%s(width %d) at %s:%d in %s: width must be a power of 2 in [1, 32]", op_name(op), width,
         file, line, where().c_str());
  // Lanes of the mask that exited or do not exist (past a partial last warp) do not take part,
  // as on sm_70+. A lane that waits at a different warp op whose mask names us waits for us
  // while we wait for it: a deadlock whatever the other lanes do.
  const unsigned eff = mask & ~b.warp_exited[w];
  for (unsigned m = eff & b.warp_waiting[w]; m; m &= m - 1) {
    const unsigned l = (unsigned)__builtin_ctz(m);
    const Thread& o = b.threads[wbase + l];
    if ((o.op != op || o.mask != mask) && (o.mask >> lane & 1))
      fail("warp divergence deadlock in %s: %s arrives at %s(mask 0x%08x) at %s:%d while lane %u "
           "(%s) %s",
           where().c_str(), thread_name(*t).c_str(), op_name(op), mask, file, line, l,
           thread_name(o).c_str(), state_name(o).c_str());
  }
  t->state = St::Warp;
  t->op = op;
  t->mask = mask;
  t->value = value;
  t->arg = arg;
  t->width = width;
  t->file = file;
  t->line = line;
#if defined(SIMT_RACE)
  // The lanes of the mask synchronise among themselves (only they): each releases its arrival
  // object; the completing lane gathers them all into a completion object that each acquires
  // once resumed (try_complete_warp). Two arrival objects per lane, by parity, and a ring of
  // completion objects per warp, so that a lane already at its next op does not leak what it
  // did since to a lane not yet resumed.
  t->par ^= 1u;
  __tsan_release(&b.sync->arrive[t->linear][t->par]);
#endif
  b.warp_waiting[w] |= 1u << lane;
  try_complete_warp(w);
  // Even the last to arrive does not run on: the participants continue in the chosen order, and
  // other warps keep their own schedule (a warp op synchronises only the lanes of its mask).
  yield_to_scheduler();
#if defined(SIMT_RACE)
  __tsan_acquire(&b.sync->done[w][t->acq_slot]);
#endif
  return t->result;
}

// For simt's add-ons (simt/mma.cpp, simt/pipeline.cpp), which build on the public intrinsics
// and only need this for their messages: "kernel K (launched at f:l) block (x,y,z)".
std::string current_kernel_where() { return g_blk.launch ? where() : std::string("host code"); }

bool on_race_block_thread() {
#if defined(SIMT_RACE)
  return g_race_block_running.load() && pthread_equal(g_race_block_tid.load(), pthread_self());
#else
  return false;
#endif
}

}  // namespace detail
}  // namespace simt
