// host/dist.h — data-parallel training over NCCL: one process per GPU.
//
//   * Where a rank is: torchrun's RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT, or
//     mpirun's OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK (MASTER_ADDR/PORT or --rendezvous FILE
//     then say where rank 0 is). `vit_train --gpus N` starts N such processes itself.
//     Under torchrun (TORCHELASTIC_RUN_ID set), whose own store listens on MASTER_PORT, rank 0's
//     rendezvous uses MASTER_PORT + 1.
//   * Rank 0 makes the ncclUniqueId and hands it out (common/rendezvous.h); then
//     ncclCommInitRank. The gradient sum (GradientReducer) is one in-place ncclAllReduce of the
//     flat FP32 gradient buffer on the model's stream; host values (metrics, the stop decision)
//     are reduced with blocking all-reduces at log lines, where the trainer syncs anyway.
//   * Builds without NCCL (nvcc and no nccl.h found) still run with one rank; asking for more
//     is one line saying so. Under simt NCCL is simt/nccl.cpp (processes on one machine).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/model.h"

namespace vit {

struct DistConfig {
  int rank = 0, world = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string rendezvous_file;  // --rendezvous FILE: exchange the id through a shared file
  double timeout_s = 300;       // --dist-timeout: rendezvous and NCCL initialisation
  std::string launcher = "none";  // "torchrun" (RANK/...), "mpirun" (OMPI_...), or "none"
};

// Reads the environment (see above); world 1 when nothing is set. Throws vit::Error (one line)
// on values that cannot work: RANK outside [0, WORLD_SIZE), non-numbers, a bad MASTER_PORT.
DistConfig dist_from_environment();

// Whether this build can run more than one rank (NCCL available).
bool have_nccl();

// An NCCL communicator over the ranks of `c` plus the buffers for host-value reductions.
class Communicator final : public GradientReducer {
 public:
  // Selects the GPU LOCAL_RANK, rendezvous, ncclCommInitRank. Throws vit::Error.
  explicit Communicator(const DistConfig& c);
  ~Communicator() override;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int world() const override { return world_; }
  void sum_floats(float* device, size_t n, void* stream) override;
  // Blocking reductions of host values over all ranks (each rank gets the result).
  void sum(double* v, int n);
  void sum(int64_t* v, int n);
  int64_t min(int64_t v);
  int64_t max(int64_t v);

 private:
  void reduce_host(void* v, size_t bytes, int count, int dtype, int op);
  void check(int result, const char* what);
  void check_async(const char* what);
  int rank_ = 0, world_ = 1;
  void* comm_ = nullptr;    // ncclComm_t
  void* stream_ = nullptr;  // cudaStream_t for host-value reductions
  void* dbuf_ = nullptr;    // device scratch for them
};

// `vit_train --gpus N` on one machine: start N ranks — the command from `rank_command` (default:
// this executable with the same arguments) with RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1
// and a free MASTER_PORT in the environment — and wait for them. When one fails, the others are
// stopped (SIGTERM, then SIGKILL after a grace period) and its status is returned; SIGINT/SIGTERM
// to this process are forwarded. Returns the ranks' common exit status.
struct RankCommand {
  std::vector<std::string> argv;  // program and arguments
  std::vector<std::string> env;   // extra NAME=value entries
};
int launch_local_ranks(int n, const std::vector<std::string>& args,
                       const std::function<RankCommand(const std::vector<std::string>& args)>& rank_command);

}  // namespace vit
