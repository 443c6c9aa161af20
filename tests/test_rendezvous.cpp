// The rank rendezvous (common/rendezvous.cpp) over loopback TCP and through a file, with the
// ranks as threads of this process: the id reaches every rank; a missing rank, a wrong world
// size or an unreachable rank 0 is one clear error within the timeout, never a hang.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/rendezvous.h"
#include "tests/toy_cifar.h"

using namespace vit;

namespace {
RendezvousId id_of(char c) {
  RendezvousId id;
  id.fill(c);
  return id;
}
RendezvousConfig cfg(int rank, int world, int port, double timeout = 10) {
  RendezvousConfig c;
  c.rank = rank;
  c.world = world;
  c.port = port;
  c.timeout_s = timeout;
  return c;
}
// Runs one rank; returns its id's first byte, or the error message.
std::string run_rank(const RendezvousConfig& c, char mine) {
  try {
    return std::string(1, rendezvous(c, id_of(mine))[0]);
  } catch (const Error& e) {
    return e.what();
  }
}
}  // namespace

TEST(Rendezvous, TcpHandsRankZerosIdToEveryRank) {
  const int port = free_local_port();
  std::vector<std::future<std::string>> f;
  // The other ranks start first: they retry until rank 0 listens.
  for (int r = 3; r >= 0; --r)
    f.push_back(std::async(std::launch::async, run_rank, cfg(r, 4, port), (char)('a' + r)));
  for (auto& x : f) EXPECT_EQ(x.get(), "a");
}

TEST(Rendezvous, MissingRankIsNamedAtTheTimeout) {
  const int port = free_local_port();
  auto r0 = std::async(std::launch::async, run_rank, cfg(0, 3, port, 1.0), 'a');
  auto r2 = std::async(std::launch::async, run_rank, cfg(2, 3, port, 1.0), 'c');
  auto t0 = std::chrono::steady_clock::now();
  std::string e0 = r0.get(), e2 = r2.get();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(e0.find("rank 1 of 3 did not join within 1 s"), std::string::npos) << e0;
  EXPECT_NE(e2.find("rank 2"), std::string::npos) << e2;  // never got an answer
  EXPECT_LT(s, 8.0);
}

TEST(Rendezvous, UnreachableRankZeroAndWorldMismatch) {
  const int port = free_local_port();
  std::string e = run_rank(cfg(1, 2, port, 0.3), 'b');
  EXPECT_NE(e.find("could not reach rank 0 at 127.0.0.1:" + std::to_string(port)), std::string::npos) << e;
  auto r0 = std::async(std::launch::async, run_rank, cfg(0, 2, port, 3), 'a');
  std::string e1 = run_rank(cfg(1, 3, port, 3), 'b');
  std::string e0 = r0.get();
  EXPECT_NE(e0.find("says WORLD_SIZE=3, rank 0 has 2"), std::string::npos) << e0;
  EXPECT_NE(run_rank(cfg(2, 2, port), 'x').find("RANK 2 is not in 0..1"), std::string::npos);
}

TEST(Rendezvous, ThroughASharedFile) {
  vit_test::TempDir d;
  std::vector<std::future<std::string>> f;
  for (int r = 2; r >= 0; --r) {
    RendezvousConfig c = cfg(r, 3, 0, 5);
    c.file = d / "rdzv";
    f.push_back(std::async(std::launch::async, run_rank, c, (char)('a' + r)));
  }
  for (auto& x : f) EXPECT_EQ(x.get(), "a");
  RendezvousConfig c = cfg(1, 4, 0, 1);  // the file says world 3
  c.file = d / "rdzv";
  EXPECT_NE(run_rank(c, 'b').find("is for WORLD_SIZE=3"), std::string::npos);
  c.file = d / "none";
  c.timeout_s = 0.2;
  EXPECT_NE(run_rank(c, 'b').find("found no"), std::string::npos);
}
