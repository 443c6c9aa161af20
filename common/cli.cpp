#include "common/cli.h"

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "common/error.h"

namespace vit {
namespace cli {

Parser::Parser(std::string program, std::string synopsis, std::string description)
    : program_(std::move(program)), synopsis_(std::move(synopsis)), description_(std::move(description)) {}

void Parser::section(const std::string& title) { section_ = title; }

void Parser::add(Entry e) {
  if (lookup(e.name)) throw std::logic_error("flag --" + e.name + " registered twice");
  e.section = section_;
  entries_.push_back(std::move(e));
}

void Parser::value(const std::string& name, const std::string& metavar, const std::string& help,
                   std::function<void(const std::string&)> set) {
  Entry e;
  e.name = name; e.metavar = metavar; e.help = help; e.kind = Kind::Value; e.set_value = std::move(set);
  add(std::move(e));
}

void Parser::flag(const std::string& name, const std::string& help, std::function<void()> set) {
  Entry e;
  e.name = name; e.help = help; e.kind = Kind::Flag; e.set_flag = std::move(set);
  add(std::move(e));
}

void Parser::boolean(const std::string& name, const std::string& help, std::function<void(bool)> set) {
  Entry e;
  e.name = name; e.help = help; e.kind = Kind::Bool; e.set_bool = std::move(set);
  add(std::move(e));
}

const Parser::Entry* Parser::lookup(const std::string& name) const {
  for (const auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

std::vector<std::string> Parser::parse(int argc, const char* const* argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
  return parse(args);
}

std::vector<std::string> Parser::parse(const std::vector<std::string>& args) {
  std::vector<std::string> positional;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      positional.insert(positional.end(), args.begin() + (long)i + 1, args.end());
      break;
    }
    if (a == "-h" || a == "--help") { help_ = true; continue; }
    if (a.size() < 2 || a[0] != '-') { positional.push_back(a); continue; }  // "-" is a name too
    if (a[1] != '-') throw Error("unknown flag " + a + " (flags are spelled --name; see --help)");
    std::string name = a.substr(2), val;
    const bool has_eq = name.find('=') != std::string::npos;
    if (has_eq) { val = name.substr(name.find('=') + 1); name = name.substr(0, name.find('=')); }
    const Entry* e = lookup(name);
    bool negated = false;
    if (!e && name.rfind("no-", 0) == 0) {
      const Entry* b = lookup(name.substr(3));
      if (b && b->kind == Kind::Bool) { e = b; negated = true; }
    }
    if (!e) throw Error("unknown flag --" + name + " (see --help)");
    switch (e->kind) {
      case Kind::Value:
        if (!has_eq) {
          if (i + 1 >= args.size() || args[i + 1].rfind("--", 0) == 0)
            throw Error("--" + name + " needs a value (" + e->metavar + ")");
          val = args[++i];
        }
        e->set_value(val);
        break;
      case Kind::Flag:
        if (has_eq) throw Error("--" + name + " takes no value (got '" + val + "')");
        e->set_flag();
        break;
      case Kind::Bool:
        if (has_eq && negated) throw Error("--no-" + e->name + " takes no value (got '" + val + "')");
        e->set_bool(has_eq ? parse_bool("--" + name, val) : !negated);
        break;
    }
  }
  return positional;
}

std::string Parser::usage() const {
  std::ostringstream o;
  o << "usage: " << synopsis_ << "\n";
  if (!description_.empty()) o << description_ << "\n";
  std::string sec = "\x01";
  for (const auto& e : entries_) {
    if (e.section != sec) {
      sec = e.section;
      o << "\n" << (sec.empty() ? "Options" : sec) << ":\n";
    }
    std::string left = "  --" + e.name;
    if (e.kind == Kind::Value) left += " " + e.metavar;
    if (e.kind == Kind::Bool) left = "  --[no-]" + e.name;
    o << left;
    if (left.size() < 28) o << std::string(28 - left.size(), ' ');
    else o << "\n" << std::string(28, ' ');
    // Wrap the help text at ~100 columns, continuation lines aligned.
    std::istringstream words(e.help);
    std::string w;
    size_t col = 28;
    bool first = true;
    while (words >> w) {
      if (!first && col + 1 + w.size() > 100) { o << "\n" << std::string(28, ' '); col = 28; first = true; }
      if (!first) { o << ' '; ++col; }
      o << w;
      col += w.size();
      first = false;
    }
    o << "\n";
  }
  o << "  -h, --help                print this help\n";
  return o.str();
}

// ---- value parsers -----------------------------------------------------------------------------

int64_t parse_int64(const std::string& flag, const std::string& v) {
  errno = 0;
  char* end = nullptr;
  long long x = strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end || errno == ERANGE)
    throw Error(flag + ": '" + v + "' is not an integer");
  return (int64_t)x;
}

int parse_int(const std::string& flag, const std::string& v) {
  int64_t x = parse_int64(flag, v);
  if (x < INT_MIN || x > INT_MAX) throw Error(flag + ": '" + v + "' is out of range");
  return (int)x;
}

double parse_double(const std::string& flag, const std::string& v) {
  errno = 0;
  char* end = nullptr;
  double x = strtod(v.c_str(), &end);
  if (v.empty() || *end || errno == ERANGE || !std::isfinite(x))
    throw Error(flag + ": '" + v + "' is not a number");
  return x;
}

float parse_float(const std::string& flag, const std::string& v) {
  double x = parse_double(flag, v);
  if (std::fabs(x) > 3.4e38) throw Error(flag + ": '" + v + "' is out of range");
  return (float)x;
}

bool parse_bool(const std::string& flag, const std::string& v) {
  if (v == "true" || v == "1" || v == "yes") return true;
  if (v == "false" || v == "0" || v == "no") return false;
  throw Error(flag + ": '" + v + "' is not true or false");
}

void parse_float3(const std::string& flag, const std::string& v, float out[3]) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : v) {
    if (c == ',') { parts.push_back(cur); cur.clear(); }
    else cur += c;
  }
  parts.push_back(cur);
  if (parts.size() != 3) throw Error(flag + ": '" + v + "' must be three comma-separated numbers (r,g,b)");
  for (int i = 0; i < 3; ++i) out[i] = parse_float(flag, parts[i]);
}

std::string parse_choice(const std::string& flag, const std::string& v,
                         const std::vector<std::string>& choices) {
  std::string list;
  for (const auto& c : choices) {
    if (v == c) return v;
    list += (list.empty() ? "" : ", ") + c;
  }
  throw Error(flag + ": '" + v + "' is not one of " + list);
}

// ---- model flags ---------------------------------------------------------------------------------

static std::string fmt(float v) {
  char b[32];
  snprintf(b, sizeof b, "%.9g", v);
  return b;
}

void ModelFlags::add_to(Parser& p) {
  p.section("Model (a preset, then any field overridden)");
  p.value("preset", "NAME", "basic (the reference's from-scratch ViT) | vit-b16 (torchvision "
          "vit_b_16) | tiny (seconds on a CPU)", [this](const std::string& v) {
            try {
              vit::preset(v);
            } catch (const Error& e) {
              throw Error(std::string("--preset: ") + e.what());  // names the known presets
            }
            preset_name = v;
          });
  // Integer fields: the value is checked now, stored normalised.
  auto int_field = [&](const char* flag, const char* field, const char* help) {
    const std::string f = std::string("--") + flag, key = field;
    p.value(flag, "N", help, [this, f, key](const std::string& v) {
      overrides[key] = std::to_string(parse_int(f, v));
    });
  };
  auto float_field = [&](const char* flag, const char* field, const char* metavar, const char* help) {
    const std::string f = std::string("--") + flag, key = field;
    p.value(flag, metavar, help, [this, f, key](const std::string& v) {
      overrides[key] = fmt(parse_float(f, v));
    });
  };
  int_field("image-size", "image_size", "input resolution (square); images are resized to it");
  int_field("patch-size", "patch_size", "patch side; must divide --image-size");
  int_field("classes", "classes", "number of classes");
  int_field("hidden", "hidden", "embedding size C");
  int_field("layers", "layers", "transformer blocks");
  int_field("heads", "heads", "attention heads; must divide --hidden");
  int_field("mlp", "mlp", "MLP inner size");
  float_field("dropout", "dropout", "P", "hidden dropout (embedding, attention output, MLP output)");
  float_field("attn-dropout", "attn_dropout", "P", "dropout on the attention probabilities");
  float_field("init-std", "init_std", "S", "std of the normal weight initialisation");
  p.value("gelu", "tanh|erf", "GELU: tanh approximation (basic) or exact erf (vit-b16)",
          [this](const std::string& v) {
            overrides["gelu"] = parse_choice("--gelu", v, {"tanh", "erf"});
          });
  float_field("ln-eps", "ln_eps", "EPS", "LayerNorm epsilon");
  p.boolean("final-ln", "LayerNorm before the head (vit-b16 has one, basic not)",
            [this](bool b) { overrides["final_ln"] = b ? "true" : "false"; });
  p.boolean("qkv-bias", "bias on the q|k|v projection (default on)",
            [this](bool b) { overrides["qkv_bias"] = b ? "true" : "false"; });
  auto triple = [&](const char* flag, const char* field, const char* help) {
    const std::string f = std::string("--") + flag, key = field;
    p.value(flag, "R,G,B", help, [this, f, key](const std::string& v) {
      float x[3];
      parse_float3(f, v, x);
      overrides[key] = fmt(x[0]) + "," + fmt(x[1]) + "," + fmt(x[2]);
    });
  };
  triple("mean", "mean", "per-channel input mean on [0,1] pixels (basic 0.5; vit-b16 ImageNet's)");
  triple("std", "std", "per-channel input std");
}

Config ModelFlags::unvalidated(const std::string& default_preset) const {
  return config_from_metadata(overrides, preset(preset_name.empty() ? default_preset : preset_name));
}

Config ModelFlags::config(const std::string& default_preset) const {
  Config c = unvalidated(default_preset);
  validate(c);
  return c;
}

}  // namespace cli
}  // namespace vit
