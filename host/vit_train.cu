// host/vit_train.cu — train a ViT on CIFAR-10. The program lives in host/train.cu (train_main),
// so the tests can run it in-process; see that file and README for the flags.
#include "host/train.h"

int main(int argc, char** argv) { return vit::train_main(argc, argv); }
