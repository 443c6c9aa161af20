// fuzz/fuzz_cli.cpp — the command-line parser (common/cli.cpp): flag spellings, the value
// parsers (integers, floats, r,g,b triples, choices, booleans), the model flags and the config
// validation they feed (common/config.cpp), and config_from_metadata (the same values read
// back from a checkpoint's __metadata__). An input is a command line, one argument per line.
#include <cstdint>
#include <string>
#include <vector>

#include "common/cli.h"
#include "common/config.h"
#include "common/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> args(1);
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == '\n') args.emplace_back();
    else args.back() += (char)data[i];
  }
  vit::cli::Parser p("fuzz", "fuzz [flags] ARGS");
  vit::cli::ModelFlags mf;
  mf.add_to(p);
  p.section("Other");
  int64_t n64 = 0;
  double d = 0;
  std::string choice;
  bool sw = false, b = false;
  p.value("steps", "N", "an int64", [&](const std::string& v) { n64 = vit::cli::parse_int64("--steps", v); });
  p.value("rate", "X", "a double", [&](const std::string& v) { d = vit::cli::parse_double("--rate", v); });
  p.value("mode", "a|b", "a choice", [&](const std::string& v) { choice = vit::cli::parse_choice("--mode", v, {"a", "b"}); });
  p.flag("switch", "a switch", [&] { sw = true; });
  p.boolean("thing", "a boolean", [&](bool x) { b = x; });
  try {
    std::vector<std::string> pos = p.parse(args);
    (void)p.usage();
    vit::Config c = mf.config("tiny");
    // What the flags produced reads back as the same config (the checkpoint round trip).
    vit::Config back = vit::config_from_metadata(vit::config_to_metadata(c), vit::preset("basic"));
    if (vit::config_to_metadata(back) != vit::config_to_metadata(c)) abort();
  } catch (const vit::Error&) {
  }
  // The same pairs as a __metadata__ read from a file: malformed values must be an Error too.
  std::map<std::string, std::string> md;
  for (const std::string& a : args) {
    size_t eq = a.find('=');
    if (eq != std::string::npos) md[a.substr(0, eq)] = a.substr(eq + 1);
  }
  try {
    vit::Config c = vit::config_from_metadata(md, vit::preset("tiny"));
    (void)vit::config_problem(c);
  } catch (const vit::Error&) {
  }
  return 0;
}
