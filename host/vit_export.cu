// host/vit_export.cu — write a checkpoint in a PyTorch layout: main() around common/export's
// export_main (no GPU involved). See `vit_export --help`.
#include <iostream>
#include <string>
#include <vector>

#include "common/export.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    return vit::export_main(args, std::cout, std::cerr);
  } catch (const std::exception& e) {  // not a user error: still one line, still non-zero
    std::cerr << "vit_export: error: " << e.what() << "\n";
    return 1;
  }
}
