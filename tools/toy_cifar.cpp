// tools/toy_cifar.cpp — writes the synthetic dataset of tests/toy_cifar.h (CIFAR-10 binary
// layout: data_batch_1..5.bin, test_batch.bin, batches.meta.txt; class k is a colour with a bar
// pattern plus Philox noise, learnable in a few epochs) for runs outside the tests, such as
// the short vit_train of `make gpu-check`. Deterministic: the same arguments, the same bytes.
//
//   build/toy_cifar DIR N_TRAIN N_TEST [CLASSES]
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/error.h"
#include "tests/toy_cifar.h"

int main(int argc, char** argv) {
  if (argc < 4 || argc > 5) {
    fprintf(stderr, "usage: toy_cifar DIR N_TRAIN N_TEST [CLASSES]\n");
    return 2;
  }
  char* end;
  const long tr = strtol(argv[2], &end, 10);
  const bool ok_tr = *end == 0;
  const long te = strtol(argv[3], &end, 10);
  const bool ok_te = *end == 0;
  const long k = argc == 5 ? strtol(argv[4], &end, 10) : 10;
  if (!ok_tr || !ok_te || *end || tr < 5 || te < 1 || tr > 1000000 || te > 1000000 || k < 1 || k > 256) {
    fprintf(stderr, "toy_cifar: error: N_TRAIN in 5..1000000, N_TEST in 1..1000000, CLASSES in 1..256\n");
    return 2;
  }
  try {
    vit_test::make_toy_cifar(argv[1], (int)tr, (int)te, (int)k);
  } catch (const vit::Error& e) {
    fprintf(stderr, "toy_cifar: error: %s\n", e.what());
    return 1;
  }
  printf("toy_cifar: %ld train + %ld test images of %ld classes in %s\n", tr, te, k, argv[1]);
  return 0;
}
