// common/rendezvous.h — how the ranks of a data-parallel run find each other before NCCL can:
// rank 0 makes NCCL's 128-byte unique id and hands it to every other rank, over TCP at
// MASTER_ADDR:MASTER_PORT (torchrun's convention) or through a shared file. Plain sockets and
// files, no CUDA: the same code runs in every build and in the CPU tests.
//
// Nothing waits forever: rank 0 waits `timeout_s` for all others to connect and then fails
// naming the ranks that never came; the others retry connecting until the same deadline and fail
// naming the address. Every rank checks the world size the others announce.
#pragma once
#include <array>
#include <string>

namespace vit {

using RendezvousId = std::array<char, 128>;  // = ncclUniqueId's bytes

struct RendezvousConfig {
  int rank = 0, world = 1;
  std::string addr = "127.0.0.1";  // rank 0's address (MASTER_ADDR)
  int port = 29500;                // MASTER_PORT
  std::string file;                // when set: exchange through this file instead of TCP
  double timeout_s = 300;
};

// Rank 0 passes its id and gets it back; every other rank gets rank 0's. Throws vit::Error
// with one line on a timeout, a refused/garbled connection or a world-size mismatch.
RendezvousId rendezvous(const RendezvousConfig& c, const RendezvousId& mine);

// A TCP port on 127.0.0.1 that was free a moment ago (for vit_train --gpus N on one machine).
int free_local_port();

}  // namespace vit
