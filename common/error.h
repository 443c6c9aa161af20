// common/error.h — how vit.cu reports bad input: throw vit::Error with one line that says
// what is wrong and what to do; each program's main() catches it, prints
// "<program>: error: <message>" to stderr and exits non-zero. Never a crash, never a hang.
#pragma once
#include <stdexcept>
#include <string>

namespace vit {

struct Error : std::runtime_error {
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

}  // namespace vit
