// common/predict.h — vit_predict as a function, so the tests run exactly what the program runs
// (host/vit_predict.cu is main() around it plus the device -> Model choice).
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/model.h"

namespace vit {

// Builds the model for `device` ("cpu" | "cuda"); throws vit::Error when it cannot.
using ModelFactory =
    std::function<std::unique_ptr<Model>(const std::string& device, const Config&, const ModelOptions&)>;

// `args` without the program name. Results go to `out`; a one-line error (prefixed
// "vit_predict: error: ") and the usage go to `err`. Returns the exit status: 0, or 1 on any
// error (bad flag, unreadable weights or image, impossible config).
int predict_main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
                 const ModelFactory& make_model);

// Display names of the classes: the file's __metadata__ "class_names" (a JSON list, written by
// tools/export_torchvision.py for ImageNet weights) when it has one of the right length, else
// the CIFAR-10 names for 10 classes, else "class N".
std::vector<std::string> class_names(int classes, const std::map<std::string, std::string>& metadata);

}  // namespace vit
