// simt/scheduler.cpp — runs a kernel launch on the CPU: blocks one after another on the calling
// host thread, one Boost.Context fiber per CUDA thread, barriers and warp operations as real
// synchronisation among the fibers.
//
// Scheduling: a block runs in rounds. Each round takes the threads that are ready (in the chosen
// order: forward, reverse or a fresh shuffle) and resumes each until it blocks: at a
// __syncthreads, at a warp operation whose other lanes have not all arrived, or at its exit.
// The thread that completes a barrier or warp operation (the last to arrive) computes everyone's
// result and marks all participants ready, itself included; they all continue in the next round,
// so the order after every synchronisation point is the chosen one. A round that finds nobody
// ready while some threads have not exited is a deadlock (divergent barrier, a lane that never
// reaches a warp op...): simt aborts with a one-line description naming the kernel and block.
//
// Fiber stacks come from a pool (mmap'd once, with a PROT_NONE guard region below each) and are
// reused by every block, so a context switch costs a few nanoseconds and no allocation.
#include <link.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <boost/context/fiber.hpp>
#include <cstdarg>
#include <cstdlib>

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
// Threads and blocks.
enum class St : uint8_t { Ready, Running, Barrier, Warp, Exited };

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
  // at a barrier or warp op: where
  const char* file;
  int line;
  // at a warp op
  WarpOp op;
  unsigned mask;
  int arg, width;
  uint64_t value, result;
};

struct Block {
  const detail::KernelLaunch* launch = nullptr;
  std::vector<Thread> threads;  // linear thread index = x + y*Dx + z*Dx*Dy
  unsigned n = 0;
  unsigned live = 0;
  unsigned at_barrier = 0;
  std::vector<unsigned> round;
  Thread* cur = nullptr;
  // Per warp, one bit per lane: lanes that exist (the last warp may be partial), have exited,
  // wait at a warp op.
  std::vector<unsigned> warp_exists, warp_exited, warp_waiting;
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

// Switch from the running CUDA thread back to the scheduler; returns when resumed.
void yield_to_scheduler() {
  Thread* t = g_blk.cur;
  t->sink = std::move(t->sink).resume();
}

void resume(Thread& t) {
  g_blk.cur = &t;
  detail::g_thread_idx = t.idx;
  t.state = St::Running;
  t.fiber = std::move(t.fiber).resume();
  g_blk.cur = nullptr;
}

// Nobody is ready but some threads have not exited: describe the first stuck thing and abort.
[[noreturn]] void deadlock() {
  std::vector<Thread>& th = g_blk.threads;
  unsigned exited = 0, at_warp = 0;
  const Thread* first_exited = nullptr;
  const Thread* first_warp = nullptr;
  const Thread* first_bar = nullptr;
  for (const Thread& t : th) {
    if (t.state == St::Exited) { ++exited; if (!first_exited) first_exited = &t; }
    if (t.state == St::Warp) { ++at_warp; if (!first_warp) first_warp = &t; }
    if (t.state == St::Barrier && !first_bar) first_bar = &t;
  }
  if (first_bar) {
    std::string others;
    if (exited) others += "; " + std::to_string(exited) + " exited (first: " + thread_name(*first_exited) + ")";
    if (at_warp) others += "; " + std::to_string(at_warp) + " wait at warp ops (first: " + thread_name(*first_warp) + " " + state_name(*first_warp) + ")";
    fail("deadlock in %s: %s() at %s:%d reached by %u of %u threads%s. Every thread of a block must "
         "reach the same __syncthreads (divergent barrier?)",
         where().c_str(), barrier_name(first_bar->bar_kind), first_bar->file, first_bar->line,
         g_blk.at_barrier, g_blk.n, others.c_str());
  }
  if (first_warp) {
    const Thread& t = *first_warp;
    unsigned wbase = t.linear & ~31u;
    for (unsigned m = t.mask; m; m &= m - 1) {
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

void run_block() {
  Block& b = g_blk;
  b.live = b.n;
  b.at_barrier = 0;
  const unsigned nwarps = (b.n + 31) / 32;
  b.warp_exists.assign(nwarps, 0xffffffffu);
  if (b.n % 32) b.warp_exists[nwarps - 1] = (1u << (b.n % 32)) - 1;
  b.warp_exited.assign(nwarps, 0);
  b.warp_waiting.assign(nwarps, 0);
  const detail::KernelLaunch* L = b.launch;
  const dim3 bd = L->block;
  for (unsigned i = 0; i < b.n; ++i) {
    Thread& t = b.threads[i];
    t.idx = make_uint3(i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y));
    t.linear = i;
    t.state = St::Ready;
    t.fiber = ctx::fiber(std::allocator_arg, PooledStack{g_stacks.get(i)}, [&t, L](ctx::fiber&& sink) {
      t.sink = std::move(sink);
      L->body(L->closure);
      t.state = St::Exited;
      --g_blk.live;
      g_blk.warp_exited[t.linear / 32] |= 1u << (t.linear % 32);
      return std::move(t.sink);
    });
  }
  while (b.live > 0) {
    b.round.clear();
    const Order order = g_order.order;
    if (order == Order::Reverse) {
      for (unsigned i = b.n; i-- > 0;)
        if (b.threads[i].state == St::Ready) b.round.push_back(i);
    } else {
      for (unsigned i = 0; i < b.n; ++i)
        if (b.threads[i].state == St::Ready) b.round.push_back(i);
      if (order == Order::Shuffle) shuffle(b.round);
    }
    if (b.round.empty()) deadlock();
    for (unsigned i : b.round)
      if (b.threads[i].state == St::Ready) resume(b.threads[i]);
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
// callback then names the kernel, block and thread, as the crash handler does.
void ubsan_death_callback() {
  const Block& b = g_blk;
  if (!b.launch || !b.cur) return;
  const Thread& t = *b.cur;
  char buf[1024];
  int n = snprintf(buf, sizeof buf,
                   "simt: misaligned access (the runtime error above) in kernel %s (launched at "
                   "%s:%d) block (%u,%u,%u) thread (%u,%u,%u): a GPU faults with "
                   "cudaErrorMisalignedAddress\n",
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
    stack_t ss;
    ss.ss_size = 64 * 1024;
    ss.ss_sp = malloc(ss.ss_size);  // lives as long as the thread (never freed: tiny)
    ss.ss_flags = 0;
    if (ss.ss_sp) sigaltstack(&ss, nullptr);
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
    if (tls.size) memset(tls.data, 0xFF, tls.size);
    memset(g_dynamic_smem, 0xFF, smem);
    memset(g_dynamic_smem + smem, kSmemGuardByte, kSmemGuard);
    run_block();
    check_dynamic_smem_guard(smem);
  }

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
  if (++b.at_barrier < b.n) {
    yield_to_scheduler();
    return t->bar_result;
  }
  // Last to arrive: everyone must be at this very barrier.
  int count = 0;
  for (Thread& o : b.threads) {
    if (&o - b.threads.data() >= (ptrdiff_t)b.n) break;
    if (o.bar_kind != kind || !same_site(o.file, o.line, file, line))
      fail("divergent barrier in %s: %s %s() at %s:%d while %s %s() at %s:%d. Every thread of a "
           "block must reach the same __syncthreads",
           where().c_str(), thread_name(*t).c_str(), barrier_name(kind), file, line,
           thread_name(o).c_str(), barrier_name(o.bar_kind), o.file, o.line);
    count += o.pred;
  }
  int result = 0;
  switch (kind) {
    case BarrierKind::Plain: result = 0; break;
    case BarrierKind::Count: result = count; break;
    case BarrierKind::And: result = count == (int)b.n; break;
    case BarrierKind::Or: result = count > 0; break;
  }
  for (unsigned i = 0; i < b.n; ++i) {
    b.threads[i].bar_result = result;
    b.threads[i].state = St::Ready;
  }
  b.at_barrier = 0;
  // The last to arrive does not run on: everyone continues in the next round, in the chosen order.
  yield_to_scheduler();
  return result;
}

unsigned active_mask() {
  Block& b = g_blk;
  Thread* t = b.cur;
  if (!t) fail("__activemask() called outside a kernel");
  unsigned wbase = t->linear & ~31u, m = 0;
  for (unsigned l = 0; l < 32 && wbase + l < b.n; ++l)
    if (b.threads[wbase + l].state != St::Exited) m |= 1u << l;
  return m;
}

namespace {
constexpr uint64_t kGarbage = ~0ull;  // what a shuffle from a lane outside the mask reads

// The last lane has arrived: compute every participating lane's result.
void complete_warp_op(unsigned wbase, unsigned mask, WarpOp op) {
  std::vector<Thread>& th = g_blk.threads;
  auto lanes = [&](auto&& f) {
    for (unsigned m = mask; m; m &= m - 1) f(th[wbase + (unsigned)__builtin_ctz(m)], (unsigned)__builtin_ctz(m));
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
        else if (!(mask >> j & 1)) d.result = kGarbage;
        else d.result = th[wbase + (unsigned)j].value;
      });
      break;
    case WarpOp::Ballot: case WarpOp::Any: case WarpOp::All: {
      unsigned bits = 0;
      lanes([&](Thread& d, unsigned lane) { if (d.value) bits |= 1u << lane; });
      uint64_t r = op == WarpOp::Ballot ? bits : op == WarpOp::Any ? bits != 0 : bits == mask;
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
      const uint64_t v0 = th[wbase + (unsigned)__builtin_ctz(mask)].value;
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
}  // namespace

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
  if (unsigned missing = mask & ~b.warp_exists[w]) {
    unsigned l = (unsigned)__builtin_ctz(missing);
    fail("%s(mask 0x%08x) at %s:%d in %s: lane %u named in the mask does not exist (the block "
         "has %u threads, so warp %u has only %u lanes)",
         op_name(op), mask, file, line, where().c_str(), l, b.n, w, b.n - wbase);
  }
  if (unsigned gone = mask & b.warp_exited[w]) {
    unsigned l = (unsigned)__builtin_ctz(gone);
    fail("%s(mask 0x%08x) at %s:%d in %s: lane %u (%s) named in the mask has exited, so it "
         "never arrives (deadlock on a GPU)",
         op_name(op), mask, file, line, where().c_str(), l, thread_name(b.threads[wbase + l]).c_str());
  }
  t->state = St::Warp;
  t->op = op;
  t->mask = mask;
  t->value = value;
  t->arg = arg;
  t->width = width;
  t->file = file;
  t->line = line;
  b.warp_waiting[w] |= 1u << lane;
  for (;;) {
    if ((b.warp_waiting[w] & mask) != mask) {  // not everyone is here yet
      yield_to_scheduler();
      return t->result;
    }
    // Everyone in the mask waits at a warp op: the same one (op and mask) as ours?
    bool same = true;
    for (unsigned m = mask & ~(1u << lane); m; m &= m - 1) {
      unsigned l = (unsigned)__builtin_ctz(m);
      Thread& o = b.threads[wbase + l];
      if (o.op == op && o.mask == mask) continue;
      if (o.mask >> lane & 1)  // each waits for the other: can never complete
        fail("warp divergence deadlock in %s: %s arrives at %s(mask 0x%08x) at %s:%d while lane %u "
             "(%s) %s",
             where().c_str(), thread_name(*t).c_str(), op_name(op), mask, file, line, l,
             thread_name(o).c_str(), state_name(o).c_str());
      same = false;  // o may still leave its op once other lanes arrive there
      break;
    }
    if (!same) {
      yield_to_scheduler();
      return t->result;
    }
    break;
  }
  complete_warp_op(wbase, mask, op);
  b.warp_waiting[w] &= ~mask;
  for (unsigned m = mask; m; m &= m - 1) b.threads[wbase + (unsigned)__builtin_ctz(m)].state = St::Ready;
  // As for barriers: all participants continue in the next round, in the chosen order.
  yield_to_scheduler();
  return t->result;
}

// For simt's add-ons (simt/mma.cpp, simt/pipeline.cpp), which build on the public intrinsics
// and only need this for their messages: "kernel K (launched at f:l) block (x,y,z)".
std::string current_kernel_where() { return g_blk.launch ? where() : std::string("host code"); }

}  // namespace detail
}  // namespace simt
