// simt's NCCL (simt/nccl.cpp) between real processes: every test forks one child per rank;
// children report through their exit status (gtest assertions do not cross fork). Semantics from
// NCCL's documentation: all-reduce/broadcast/reduce results, in-place buffers, datatype and op
// checks, group calls; and what simt adds for failure tests: a dead peer or a missing rank is an
// error, not a hang.
//
// simt only: on a GPU the same calls go to the real NCCL, which cannot be used from children
// forked by a process that has initialised CUDA; the multi-GPU path is exercised there by
// `make gpu-check` running vit_train --gpus N.
#if defined(VIT_SIMT)
#include <gtest/gtest.h>
#include <nccl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "simt/simt.h"

namespace {

// Forks n ranks running body(rank, id); returns their exit statuses (or 100 + signal).
std::vector<int> run_ranks(int n, const std::function<int(int, const ncclUniqueId&)>& body) {
  ncclUniqueId id;
  EXPECT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  fflush(stdout);
  fflush(stderr);
  std::vector<pid_t> pids;
  for (int r = 0; r < n; ++r) {
    pid_t p = fork();
    if (p == 0) {
      int rc = body(r, id);
      fflush(stdout);
      fflush(stderr);
      _exit(rc);
    }
    pids.push_back(p);
  }
  std::vector<int> st;
  for (pid_t p : pids) {
    int s = 0;
    waitpid(p, &s, 0);
    st.push_back(WIFEXITED(s) ? WEXITSTATUS(s) : 100 + WTERMSIG(s));
  }
  return st;
}

// Rank r's value of element i: chosen so that float addition order matters (values of very
// different magnitudes), so "rank order" is a checkable claim.
float value(int r, size_t i) {
  float big = (i % 3 == 0) ? 1e8f : 1.0f;
  return (r == 0 ? big : r == 1 ? -big : 0.0f) + 0.25f * (float)((i * 7 + r * 13) % 11) + 1e-3f * r;
}

int comm_of(ncclComm_t* c, int n, int r, const ncclUniqueId& id) {
  ncclResult_t e = ncclCommInitRank(c, n, id, r);
  if (e != ncclSuccess) {
    fprintf(stderr, "rank %d: init: %s: %s\n", r, ncclGetErrorString(e), ncclGetLastError(nullptr));
    return 1;
  }
  return 0;
}

}  // namespace

TEST(SimtNccl, AllReduceSumsInRankOrderOnEveryRankAcrossChunks) {
  // 300,000 floats: more than one 1 MiB staging chunk. Out of place.
  const int n = 3;
  const size_t count = 300000;
  std::vector<int> st = run_ranks(n, [&](int r, const ncclUniqueId& id) {
    ncclComm_t c;
    if (comm_of(&c, n, r, id)) return 1;
    std::vector<float> h(count);
    for (size_t i = 0; i < count; ++i) h[i] = value(r, i);
    float *send, *recv;
    cudaMalloc(&send, count * 4);
    cudaMalloc(&recv, count * 4);
    cudaMemcpy(send, h.data(), count * 4, cudaMemcpyHostToDevice);
    if (ncclAllReduce(send, recv, count, ncclFloat, ncclSum, c, 0) != ncclSuccess) return 2;
    cudaMemcpy(h.data(), recv, count * 4, cudaMemcpyDeviceToHost);
    for (size_t i = 0; i < count; ++i) {
      float expect = (value(0, i) + value(1, i)) + value(2, i);  // rank order, float arithmetic
      if (memcmp(&h[i], &expect, 4) != 0) {
        fprintf(stderr, "rank %d: [%zu] %.9g, expected %.9g\n", r, i, h[i], expect);
        return 3;
      }
    }
    int count_out = 0, rank_out = -1;
    ncclCommCount(c, &count_out);
    ncclCommUserRank(c, &rank_out);
    if (count_out != n || rank_out != r) return 4;
    ncclCommDestroy(c);
    return 0;
  });
  EXPECT_EQ(st, std::vector<int>(n, 0));
}

TEST(SimtNccl, InPlaceTypesAndOps) {
  const int n = 2;
  std::vector<int> st = run_ranks(n, [&](int r, const ncclUniqueId& id) {
    ncclComm_t c;
    if (comm_of(&c, n, r, id)) return 1;
    // double, in place, sum
    double hd[4] = {1.5 * (r + 1), -2.0, 1e300, (double)r};
    double* d;
    cudaMalloc(&d, sizeof hd);
    cudaMemcpy(d, hd, sizeof hd, cudaMemcpyHostToDevice);
    if (ncclAllReduce(d, d, 4, ncclDouble, ncclSum, c, 0) != ncclSuccess) return 2;
    cudaMemcpy(hd, d, sizeof hd, cudaMemcpyDeviceToHost);
    if (hd[0] != 4.5 || hd[1] != -4.0 || hd[2] != 2e300 || hd[3] != 1.0) return 3;
    // int64 max / min
    int64_t hi[2] = {r == 0 ? 5 : -7, r == 0 ? 5 : -7};
    int64_t* di;
    cudaMalloc(&di, sizeof hi);
    cudaMemcpy(di, hi, sizeof hi, cudaMemcpyHostToDevice);
    if (ncclAllReduce(di, di, 1, ncclInt64, ncclMax, c, 0) != ncclSuccess) return 4;
    if (ncclAllReduce(di + 1, di + 1, 1, ncclInt64, ncclMin, c, 0) != ncclSuccess) return 4;
    cudaMemcpy(hi, di, sizeof hi, cudaMemcpyDeviceToHost);
    if (hi[0] != 5 || hi[1] != -7) return 5;
    // float average
    float hf = r == 0 ? 1.0f : 2.0f;
    float* df;
    cudaMalloc(&df, 4);
    cudaMemcpy(df, &hf, 4, cudaMemcpyHostToDevice);
    if (ncclAllReduce(df, df, 1, ncclFloat, ncclAvg, c, 0) != ncclSuccess) return 6;
    cudaMemcpy(&hf, df, 4, cudaMemcpyDeviceToHost);
    if (hf != 1.5f) return 7;
    // bf16 sum: 1 + 2^-8 is not representable in bf16 (8-bit mantissa): rounds to 1 (even).
    __nv_bfloat16 hb = __float2bfloat16_rn(r == 0 ? 1.0f : 0.00390625f);
    __nv_bfloat16* db;
    cudaMalloc(&db, 2);
    cudaMemcpy(db, &hb, 2, cudaMemcpyHostToDevice);
    if (ncclAllReduce(db, db, 1, ncclBfloat16, ncclSum, c, 0) != ncclSuccess) return 8;
    cudaMemcpy(&hb, db, 2, cudaMemcpyDeviceToHost);
    if (__bfloat162float(hb) != 1.0f) return 9;
    ncclCommDestroy(c);
    return 0;
  });
  EXPECT_EQ(st, std::vector<int>(n, 0));
}

TEST(SimtNccl, BroadcastReduceAndGroupCalls) {
  const int n = 3;
  std::vector<int> st = run_ranks(n, [&](int r, const ncclUniqueId& id) {
    ncclComm_t c;
    if (comm_of(&c, n, r, id)) return 1;
    int32_t h[3] = {10 * r + 1, 10 * r + 2, 10 * r + 3};
    int32_t *buf, *red;
    cudaMalloc(&buf, sizeof h);
    cudaMalloc(&red, sizeof h);
    cudaMemcpy(buf, h, sizeof h, cudaMemcpyHostToDevice);
    cudaMemset(red, 0, sizeof h);
    // In a group: broadcast rank 1's buffer, then reduce the broadcast values to rank 2.
    // The buffers were uploaded with pageable cudaMemcpy: synchronise before queued work reads them.
    cudaDeviceSynchronize();
    ncclGroupStart();
    if (ncclBroadcast(buf, buf, 3, ncclInt32, 1, c, 0) != ncclSuccess) return 2;
    if (ncclReduce(buf, red, 3, ncclInt32, ncclSum, 2, c, 0) != ncclSuccess) return 2;
    if (ncclGroupEnd() != ncclSuccess) return 3;
    cudaMemcpy(h, buf, sizeof h, cudaMemcpyDeviceToHost);
    if (h[0] != 11 || h[1] != 12 || h[2] != 13) return 4;
    cudaMemcpy(h, red, sizeof h, cudaMemcpyDeviceToHost);
    const int32_t expect0 = r == 2 ? 33 : 0;  // only the root's recvbuff is written
    if (h[0] != expect0) return 5;
    ncclCommDestroy(c);
    return 0;
  });
  EXPECT_EQ(st, std::vector<int>(n, 0));
}

TEST(SimtNccl, MismatchedCollectivesAreAnErrorOnEveryRank) {
  const int n = 2;
  std::vector<int> st = run_ranks(n, [&](int r, const ncclUniqueId& id) {
    ncclComm_t c;
    if (comm_of(&c, n, r, id)) return 1;
    float* d;
    cudaMalloc(&d, 64);
    cudaMemset(d, 0, 64);
    if (ncclAllReduce(d, d, r == 0 ? 16 : 8, ncclFloat, ncclSum, c, 0) != ncclSuccess) return 2;
    cudaStreamSynchronize(0);  // the collective runs (and fails) here: an asynchronous error
    ncclResult_t e = ncclSuccess;
    ncclCommGetAsyncError(c, &e);
    if (e != ncclInvalidUsage && e != ncclRemoteError) return 2;
    if (!strstr(ncclGetLastError(c), "does not match") && !strstr(ncclGetLastError(c), "aborted"))
      return 3;
    return 0;
  });
  EXPECT_EQ(st, std::vector<int>(n, 0));
}

TEST(SimtNccl, DeadPeerIsReportedNotAHang) {
  const int n = 2;
  std::vector<int> st = run_ranks(n, [&](int r, const ncclUniqueId& id) {
    ncclComm_t c;
    if (comm_of(&c, n, r, id)) return 1;
    if (r == 1) _exit(0);  // dies without ever joining the collective
    float* d;
    cudaMalloc(&d, 4);
    cudaMemset(d, 0, 4);
    if (ncclAllReduce(d, d, 1, ncclFloat, ncclSum, c, 0) != ncclSuccess) return 2;
    cudaStreamSynchronize(0);
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(c, &async);
    if (async != ncclRemoteError) return 4;
    if (!strstr(ncclGetLastError(c), "rank 1")) return 3;
    // The communicator stays failed.
    if (ncclAllReduce(d, d, 1, ncclFloat, ncclSum, c, 0) != ncclRemoteError) return 5;
    ncclCommAbort(c);
    return 0;
  });
  EXPECT_EQ(st[0], 0);
}

TEST(SimtNccl, MissingRankTimesOutNamingIt) {
  setenv("SIMT_NCCL_TIMEOUT", "0.5", 1);
  std::vector<int> st = run_ranks(1, [&](int r, const ncclUniqueId& id) {
    ncclComm_t c;
    ncclResult_t e = ncclCommInitRank(&c, 2, id, 0);  // rank 1 never comes
    if (e != ncclSystemError) return 2;
    if (!strstr(ncclGetLastError(nullptr), "ranks not joined: 1")) {
      fprintf(stderr, "%s\n", ncclGetLastError(nullptr));
      return 3;
    }
    return 0;
  });
  unsetenv("SIMT_NCCL_TIMEOUT");
  EXPECT_EQ(st[0], 0);
}

TEST(SimtNccl, ArgumentErrors) {
  // A one-rank communicator in this process: collectives are copies, arguments still checked.
  ncclUniqueId id;
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  ncclComm_t c;
  ASSERT_EQ(ncclCommInitRank(&c, 1, id, 0), ncclSuccess);
  float* d;
  ASSERT_EQ(cudaMalloc(&d, 16), cudaSuccess);
  float host[4] = {1, 2, 3, 4};
  cudaMemcpy(d, host, 16, cudaMemcpyHostToDevice);
  EXPECT_EQ(ncclAllReduce(d, d, 4, (ncclDataType_t)99, ncclSum, c, 0), ncclInvalidArgument);
  EXPECT_EQ(ncclAllReduce(d, d, 4, ncclFloat, (ncclRedOp_t)77, c, 0), ncclInvalidArgument);
  EXPECT_EQ(ncclAllReduce(host, d, 4, ncclFloat, ncclSum, c, 0), ncclInvalidArgument);
  EXPECT_NE(std::string(ncclGetLastError(c)).find("not device memory"), std::string::npos);
  EXPECT_EQ(ncclBroadcast(d, d, 4, ncclFloat, 1, c, 0), ncclInvalidArgument);
  EXPECT_EQ(ncclGroupEnd(), ncclInvalidUsage);
  EXPECT_EQ(ncclAllReduce(d, d, 4, ncclFloat, ncclSum, nullptr, 0), ncclInvalidArgument);
  ASSERT_EQ(ncclAllReduce(d, d, 4, ncclFloat, ncclSum, c, 0), ncclSuccess);
  cudaMemcpy(host, d, 16, cudaMemcpyDeviceToHost);
  EXPECT_EQ(host[3], 4.0f);  // one rank: the sum is the value
  EXPECT_STREQ(ncclGetErrorString(ncclRemoteError),
               "remote process exited or there was a network error");
  EXPECT_EQ(ncclCommDestroy(c), ncclSuccess);
  cudaFree(d);
}
#endif  // VIT_SIMT
