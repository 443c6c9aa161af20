// vit_bench's CPU section runs here (no GPU) and reports what it measured. Speeds are not
// asserted (no timing in tests); that every row ran and measured something is.
#include <gtest/gtest.h>

#include "bench/cpu_rows.h"
#include "common/params.h"

using namespace vit;

TEST(Bench, CpuRowsRunAndMeasure) {
  std::vector<BenchRow> rows = run_cpu_rows(/*quick=*/true, /*with_pytorch=*/false);
  ASSERT_EQ(rows.size(), 3u);  // loader, tiny, 4-layer hidden-64
  EXPECT_EQ(rows[0].section, "loader");
  for (const BenchRow& r : rows) {
    EXPECT_GT(r.images_per_s, 0) << r.name;
    EXPECT_GT(r.ms, 0) << r.name;
  }
  EXPECT_EQ(rows[1].section, "cpu-train");
  EXPECT_EQ(rows[2].name, "4 layers, hidden 64");
}

TEST(Bench, SmallModelIsFourLayersOfHidden64) {
  Config c = bench_small_model();
  EXPECT_EQ(c.layers, 4);
  EXPECT_EQ(c.hidden, 64);
  EXPECT_EQ(config_problem(c), "");
}

TEST(Bench, LoaderRowWithPinnedStaging) {
  // cudaMallocHost: simt's page-locked memory here, the driver's on a GPU machine.
  EXPECT_GT(bench_loader(500, 64, 1, /*pinned=*/true), 0);
}
