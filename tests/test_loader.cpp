// tests/test_loader.cpp — the prefetching loader: each epoch hands out every record exactly
// once, in the Philox order of (seed, epoch), in batches whose last one is partial; resuming at
// a batch number gives the tail of the same epoch; abandoning an epoch midway is safe.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "common/error.h"
#include "host/loader.h"
#include "tests/toy_cifar.h"

using vit_test::TempDir;

namespace {

// Every batch of one epoch as the list of source record numbers, found by matching pixels
// against the split (toy images differ by their noise, so a record is identified by its bytes).
std::vector<std::vector<int64_t>> drain(vit::Loader& L, const std::vector<uint8_t>& all) {
  std::vector<std::vector<int64_t>> out;
  for (vit::Batch b = L.next(); b.count > 0; b = L.next()) {
    EXPECT_EQ(b.index, (int64_t)out.size());
    std::vector<int64_t> ids;
    for (int i = 0; i < b.count; ++i) {
      int64_t found = -1;
      for (size_t r = 0; r < all.size() / 3072; ++r)
        if (!memcmp(all.data() + r * 3072, b.images + (size_t)i * 3072, 3072)) { found = r; break; }
      EXPECT_GE(found, 0);
      ids.push_back(found);
    }
    out.push_back(ids);
  }
  return out;
}

}  // namespace

TEST(Loader, EpochOrderIsASeededPermutation) {
  std::vector<int64_t> a = vit::epoch_order(1000, 7, 3);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_EQ(a, vit::epoch_order(1000, 7, 3));  // a pure function of (seed, epoch)
  EXPECT_NE(a, vit::epoch_order(1000, 7, 4));  // another epoch, another order
  EXPECT_NE(a, vit::epoch_order(1000, 8, 3));  // another seed, another order
  int fixed = 0;
  for (int64_t i = 0; i < 1000; ++i) fixed += a[i] == i;
  EXPECT_LT(fixed, 20);  // a shuffle, not (nearly) the identity: about 1 fixed point expected
}

TEST(Loader, SequentialBatchesCoverTheSplitInOrder) {
  TempDir d;
  vit_test::make_toy_cifar(d.path, 10, 23);
  vit::SplitData ref = vit::load_split(d.path, vit::Split::Test, 10);
  vit::Loader L(d.path, vit::Split::Test, 10, 8, 0, /*pinned=*/false);
  ASSERT_EQ(L.size(), 23);
  EXPECT_EQ(L.batches(5), 5);
  L.start_epoch(0, 5, /*shuffle=*/false);
  int64_t seen = 0;
  std::vector<int> counts;
  for (vit::Batch b = L.next(); b.count > 0; b = L.next()) {
    EXPECT_EQ(b.index, (int64_t)counts.size());
    counts.push_back(b.count);
    for (int i = 0; i < b.count; ++i, ++seen) {
      ASSERT_EQ(b.labels[i], ref.labels[seen]);
      ASSERT_EQ(0, memcmp(b.images + i * 3072, ref.images.data() + seen * 3072, 3072));
    }
  }
  EXPECT_EQ(counts, (std::vector<int>{5, 5, 5, 5, 3}));
  EXPECT_EQ(L.next().count, 0);  // stays at the end
}

TEST(Loader, ShuffledEpochFollowsEpochOrder) {
  TempDir d;
  vit_test::make_toy_cifar(d.path, 37, 5);
  vit::SplitData ref = vit::load_split(d.path, vit::Split::Train, 10);
  for (bool pinned : {false, true}) {  // pinned: cudaMallocHost (plain memory under simt)
    vit::Loader L(d.path, vit::Split::Train, 10, 8, 42, pinned);
    for (int64_t epoch : {0, 1}) {
      L.start_epoch(epoch, 8, true);
      std::vector<std::vector<int64_t>> got = drain(L, ref.images);
      ASSERT_EQ(got.size(), 5u);
      EXPECT_EQ(got.back().size(), 5u);  // 37 = 4 * 8 + 5
      std::vector<int64_t> flat;
      for (auto& v : got) flat.insert(flat.end(), v.begin(), v.end());
      EXPECT_EQ(flat, vit::epoch_order(37, 42, epoch)) << "epoch " << epoch;
    }
  }
}

TEST(Loader, ResumeMidEpochGivesTheSameTail) {
  TempDir d;
  vit_test::make_toy_cifar(d.path, 30, 5);
  vit::SplitData ref = vit::load_split(d.path, vit::Split::Train, 10);
  vit::Loader L(d.path, vit::Split::Train, 10, 4, 5, false);
  L.start_epoch(2, 4, true);
  std::vector<std::vector<int64_t>> full = drain(L, ref.images);
  ASSERT_EQ(full.size(), 8u);
  // Abandon an epoch after two batches (the prefetch thread is mid-way), then resume at 3.
  L.start_epoch(1, 4, true);
  L.next();
  L.next();
  L.start_epoch(2, 4, true, 3);
  vit::Batch b = L.next();
  EXPECT_EQ(b.index, 3);
  std::vector<std::vector<int64_t>> tail;
  for (; b.count > 0; b = L.next()) {
    std::vector<int64_t> ids;
    for (int i = 0; i < b.count; ++i)
      for (int64_t r = 0; r < 30; ++r)
        if (!memcmp(ref.images.data() + r * 3072, b.images + i * 3072, 3072)) ids.push_back(r);
    tail.push_back(ids);
  }
  EXPECT_EQ(tail, std::vector<std::vector<int64_t>>(full.begin() + 3, full.end()));
}

TEST(Loader, BadBatchAndBadData) {
  TempDir d;
  vit_test::make_toy_cifar(d.path, 10, 5);
  vit::Loader L(d.path, vit::Split::Test, 10, 4, 0, false);
  EXPECT_THROW(L.start_epoch(0, 5, false), vit::Error);  // above max_batch
  EXPECT_THROW(L.start_epoch(0, 0, false), vit::Error);
  EXPECT_THROW(vit::Loader(d / "missing", vit::Split::Test, 10, 4, 0, false), vit::Error);
  EXPECT_THROW(vit::Loader(d.path, vit::Split::Test, 3, 4, 0, false), vit::Error);  // labels >= 3
}
