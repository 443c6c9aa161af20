// host/dist.cu — see host/dist.h.
#include "host/dist.h"

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "common/error.h"
#include "common/rendezvous.h"
#include "kernels/common.cuh"

// NCCL: always under simt (simt/nccl.cpp); with nvcc when the Makefile found nccl.h.
#if defined(VIT_SIMT) || defined(VIT_HAVE_NCCL)
#include <nccl.h>
#define VIT_NCCL 1
#endif

extern char** environ;

namespace vit {

namespace {

// An integer environment variable, or `dflt` when unset; a set but malformed value is an error.
long env_int(const char* name, long dflt, bool* set = nullptr) {
  const char* v = getenv(name);
  if (set) *set = v && *v;
  if (!v || !*v) return dflt;
  char* end = nullptr;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || *end || end == v)
    throw Error(std::string(name) + "='" + v + "' is not an integer");
  return x;
}

}  // namespace

DistConfig dist_from_environment() {
  DistConfig c;
  bool has_rank = false, has_world = false, has_ompi = false;
  long world = env_int("WORLD_SIZE", 1, &has_world);
  long rank = env_int("RANK", 0, &has_rank);
  long local = env_int("LOCAL_RANK", -1);
  if (!has_world) {
    bool ompi_size = false;
    world = env_int("OMPI_COMM_WORLD_SIZE", 1, &ompi_size);
    if (ompi_size) {
      has_ompi = true;
      rank = env_int("OMPI_COMM_WORLD_RANK", 0);
      local = env_int("OMPI_COMM_WORLD_LOCAL_RANK", -1);
    }
  }
  if (has_rank && !has_world) throw Error("RANK is set but WORLD_SIZE is not (torchrun sets both)");
  if (world < 1 || world > 4096) throw Error("WORLD_SIZE=" + std::to_string(world) + ": expected 1..4096");
  if (rank < 0 || rank >= world)
    throw Error("RANK=" + std::to_string(rank) + " is not in 0.." + std::to_string(world - 1) +
                " (WORLD_SIZE=" + std::to_string(world) + ")");
  c.world = (int)world;
  c.rank = (int)rank;
  c.local_rank = local >= 0 ? (int)local : c.rank;
  c.launcher = has_world ? "torchrun" : has_ompi ? "mpirun" : "none";
  if (const char* a = getenv("MASTER_ADDR"); a && *a) c.master_addr = a;
  long port = env_int("MASTER_PORT", 29500);
  if (port < 1 || port > 65535) throw Error("MASTER_PORT=" + std::to_string(port) + ": expected 1..65535");
  c.master_port = (int)port;
  // Under torchrun its own store already listens on MASTER_PORT (on the master node): ours
  // takes the next port.
  if (const char* t = getenv("TORCHELASTIC_RUN_ID"); t && *t && c.master_port < 65535) ++c.master_port;
  return c;
}

bool have_nccl() {
#if defined(VIT_NCCL)
  return true;
#else
  return false;
#endif
}

#if defined(VIT_NCCL)

void Communicator::check(int result, const char* what) {
  auto r = (ncclResult_t)result;
  if (r == ncclSuccess) return;
  std::string detail = ncclGetLastError(static_cast<ncclComm_t>(comm_));
  throw Error(std::string("NCCL: ") + what + " failed on rank " + std::to_string(rank_) + ": " +
              ncclGetErrorString(r) + (detail.empty() ? "" : " (" + detail + ")") +
              (r == ncclRemoteError || r == ncclSystemError
                   ? "; another rank has probably stopped: see its output"
                   : ""));
}

Communicator::Communicator(const DistConfig& c) : rank_(c.rank), world_(c.world) {
#if !defined(VIT_SIMT)
  // One GPU per process: LOCAL_RANK picks it. (Under simt every process is its own device 0.)
  int n = 0;
  CUDA_CHECK(cudaGetDeviceCount(&n));
  if (c.local_rank >= n)
    throw Error("LOCAL_RANK=" + std::to_string(c.local_rank) + " but this machine has " +
                std::to_string(n) + " GPU(s) visible: start at most one rank per GPU");
  CUDA_CHECK(cudaSetDevice(c.local_rank));
#endif
  ncclUniqueId id;
  if (c.rank == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  RendezvousConfig rc;
  rc.rank = c.rank;
  rc.world = c.world;
  rc.addr = c.master_addr;
  rc.port = c.master_port;
  rc.file = c.rendezvous_file;
  rc.timeout_s = c.timeout_s;
  RendezvousId mine{};
  static_assert(sizeof id.internal == sizeof(RendezvousId), "ncclUniqueId is 128 bytes");
  if (c.rank == 0) memcpy(mine.data(), id.internal, sizeof id.internal);
  RendezvousId got = rendezvous(rc, mine);
  memcpy(id.internal, got.data(), sizeof id.internal);
  ncclComm_t comm = nullptr;
  check(ncclCommInitRank(&comm, c.world, id, c.rank), "ncclCommInitRank");
  comm_ = comm;
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  stream_ = s;
  CUDA_CHECK(cudaMalloc(&dbuf_, 64 * sizeof(double)));
}

Communicator::~Communicator() {
  if (comm_) ncclCommDestroy(static_cast<ncclComm_t>(comm_));
  if (dbuf_) cudaFree(dbuf_);
  if (stream_) cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
}

void Communicator::sum_floats(float* device, size_t n, void* stream) {
  ++library_call_counter();  // a library call of the step (vit_bench --launches)
  check(ncclAllReduce(device, device, n, ncclFloat32, ncclSum, static_cast<ncclComm_t>(comm_),
                      static_cast<cudaStream_t>(stream)),
        "ncclAllReduce (gradients)");
}

void Communicator::reduce_host(void* v, size_t bytes, int count, int dtype, int op) {
  if (bytes > 64 * sizeof(double)) throw Error("internal: host reduction too large");
  auto s = static_cast<cudaStream_t>(stream_);
  // Everything queued before (the gradient all-reduce on the model's stream among it) first:
  // the collectives of one communicator must run in the same order on every rank.
  CUDA_CHECK(cudaDeviceSynchronize());
  check_async("ncclAllReduce (gradients)");
  CUDA_CHECK(cudaMemcpyAsync(dbuf_, v, bytes, cudaMemcpyHostToDevice, s));
  check(ncclAllReduce(dbuf_, dbuf_, count, (ncclDataType_t)dtype, (ncclRedOp_t)op,
                      static_cast<ncclComm_t>(comm_), s),
        "ncclAllReduce (metrics)");
  CUDA_CHECK(cudaMemcpyAsync(v, dbuf_, bytes, cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  check_async("ncclAllReduce (metrics)");
}

// NCCL reports a failure inside a queued collective (a peer that died) asynchronously.
void Communicator::check_async(const char* what) {
  ncclResult_t r = ncclSuccess;
  check(ncclCommGetAsyncError(static_cast<ncclComm_t>(comm_), &r), "ncclCommGetAsyncError");
  check(r, what);
}
void Communicator::sum(double* v, int n) { reduce_host(v, n * sizeof(double), n, ncclFloat64, ncclSum); }
void Communicator::sum(int64_t* v, int n) { reduce_host(v, n * sizeof(int64_t), n, ncclInt64, ncclSum); }
int64_t Communicator::min(int64_t v) {
  reduce_host(&v, sizeof v, 1, ncclInt64, ncclMin);
  return v;
}
int64_t Communicator::max(int64_t v) {
  reduce_host(&v, sizeof v, 1, ncclInt64, ncclMax);
  return v;
}

#else  // no NCCL in this build

void Communicator::check(int, const char*) {}
void Communicator::check_async(const char*) {}
Communicator::Communicator(const DistConfig& c) : rank_(c.rank), world_(c.world) {
  throw Error("this vit_train was built without NCCL, so it runs one rank only (WORLD_SIZE=" +
              std::to_string(c.world) + " asked): install NCCL (libnccl-dev) and rebuild");
}
Communicator::~Communicator() {}
void Communicator::sum_floats(float*, size_t, void*) {}
void Communicator::reduce_host(void*, size_t, int, int, int) {}
void Communicator::sum(double*, int) {}
void Communicator::sum(int64_t*, int) {}
int64_t Communicator::min(int64_t v) { return v; }
int64_t Communicator::max(int64_t v) { return v; }

#endif

// ---- the local launcher ---------------------------------------------------------------------

namespace {
volatile sig_atomic_t g_forward_signal = 0;
void remember_signal(int sig) { g_forward_signal = sig; }

std::string describe_status(int st) {
  if (WIFEXITED(st)) return "exited with status " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return std::string("was killed by signal ") + strsignal(WTERMSIG(st));
  return "stopped";
}
int exit_code_of(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return 1;
}
}  // namespace

int launch_local_ranks(int n, const std::vector<std::string>& args,
                       const std::function<RankCommand(const std::vector<std::string>&)>& rank_command) {
  if (n < 1) throw Error("--gpus must be at least 1");
  if (n > 1 && !have_nccl())
    throw Error("this vit_train was built without NCCL: --gpus " + std::to_string(n) +
                " needs it (install libnccl-dev and rebuild)");
  RankCommand base;
  if (rank_command) {
    base = rank_command(args);
  } else {
    base.argv = args;
    base.argv[0] = "/proc/self/exe";
  }
  const int port = free_local_port();
  std::vector<pid_t> pids(n, -1);
  // Ranks inherit our stdout/stderr; only rank 0 prints progress.
  struct sigaction sa {}, old_int {}, old_term {};
  sa.sa_handler = remember_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  for (int r = 0; r < n; ++r) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
      const char* k = *e;
      bool ours = false;
      for (const char* name : {"RANK=", "LOCAL_RANK=", "WORLD_SIZE=", "MASTER_ADDR=", "MASTER_PORT=",
                               "LOCAL_WORLD_SIZE="})
        if (!strncmp(k, name, strlen(name))) ours = true;
      if (!ours) env.push_back(k);
    }
    env.push_back("RANK=" + std::to_string(r));
    env.push_back("LOCAL_RANK=" + std::to_string(r));
    env.push_back("WORLD_SIZE=" + std::to_string(n));
    env.push_back("LOCAL_WORLD_SIZE=" + std::to_string(n));
    env.push_back("MASTER_ADDR=127.0.0.1");
    env.push_back("MASTER_PORT=" + std::to_string(port));
    for (const std::string& e : base.env) env.push_back(e);
    std::vector<char*> argv, envp;
    std::vector<std::string> a = base.argv, e = env;
    for (std::string& s : a) argv.push_back(&s[0]);
    argv.push_back(nullptr);
    for (std::string& s : e) envp.push_back(&s[0]);
    envp.push_back(nullptr);
    int err = posix_spawn(&pids[r], argv[0], nullptr, nullptr, argv.data(), envp.data());
    if (err != 0) {
      for (int k = 0; k < r; ++k) kill(pids[k], SIGTERM);
      for (int k = 0; k < r; ++k) waitpid(pids[k], nullptr, 0);
      sigaction(SIGINT, &old_int, nullptr);
      sigaction(SIGTERM, &old_term, nullptr);
      throw Error("cannot start rank " + std::to_string(r) + " (" + base.argv[0] + "): " + strerror(err));
    }
  }
  int live = n, result = 0;
  bool stopping = false;
  auto t_stop = std::chrono::steady_clock::now();
  int forwarded = 0;
  while (live > 0) {
    if (g_forward_signal && g_forward_signal != forwarded) {
      forwarded = g_forward_signal;
      for (pid_t p : pids) if (p > 0) kill(p, forwarded);  // each rank stops at a log line
    }
    int st = 0;
    pid_t p = waitpid(-1, &st, WNOHANG);
    if (p > 0) {
      int r = 0;
      while (r < n && pids[r] != p) ++r;
      if (r == n) continue;  // not ours
      pids[r] = -1;
      --live;
      const int code = exit_code_of(st);
      if (code != 0 && !stopping && !(forwarded && (code == 130 || code == 143))) {
        fprintf(stderr, "vit_train: rank %d %s: stopping the other %d rank(s)\n", r,
                describe_status(st).c_str(), live);
        fflush(stderr);
        stopping = true;
        t_stop = std::chrono::steady_clock::now();
        for (pid_t q : pids) if (q > 0) kill(q, SIGTERM);
      }
      if (result == 0) result = code;
      continue;
    }
    if (stopping && std::chrono::steady_clock::now() - t_stop > std::chrono::seconds(10))
      for (pid_t q : pids) if (q > 0) kill(q, SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  return result;
}

}  // namespace vit
