// common/export.h — vit_export as a function, so the tests run exactly what the program runs
// (host/vit_export.cu is main() around it): a weight file (normally a vit.cu checkpoint) written
// in one of the two PyTorch layouts of shared/weights.md, model weights only, with the lines of
// Python that load it printed. See `vit_export --help`.
#pragma once
#include <ostream>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/weights.h"

namespace vit {

// `args` without the program name. The summary and the PyTorch lines go to `out`; a one-line
// error (prefixed "vit_export: error: ") to `err`. Returns 0, or 1 on any error (bad flag,
// unreadable weights, a model the format cannot express: export_problem).
int export_main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

// The Python that builds the PyTorch model of `c` in layout `f` (torchvision's
// VisionTransformer, or tintn's ViTForClassfication) and loads `path` into it, one statement
// per line, with a comment on the input normalisation.
std::string pytorch_loading_lines(WeightFormat f, const Config& c, const std::string& path);

}  // namespace vit
