#include "common/config.h"

#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "common/error.h"

namespace vit {

Config preset(const std::string& name) {
  Config c;  // defaults are the "basic" preset: the reference's from-scratch ViT
  if (name == "basic") return c;
  if (name == "vit-b16") {
    c.image_size = 224; c.patch_size = 16; c.hidden = 768; c.layers = 12; c.heads = 12;
    c.mlp = 3072; c.dropout = 0.0f; c.attn_dropout = 0.0f; c.gelu = Gelu::Erf; c.ln_eps = 1e-6f;
    c.final_ln = true;
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    for (int i = 0; i < 3; ++i) { c.mean[i] = mean[i]; c.std[i] = std[i]; }
    return c;
  }
  if (name == "tiny") {  // seconds on a CPU: for tests and demos
    c.patch_size = 8; c.hidden = 64; c.layers = 2; c.heads = 2; c.mlp = 128;
    return c;
  }
  throw Error("unknown preset '" + name + "' (known: basic, vit-b16, tiny)");
}

std::vector<std::string> preset_names() { return {"basic", "vit-b16", "tiny"}; }

std::string config_problem(const Config& c) {
  std::ostringstream o;
  auto positive = [&](const char* n, int v) {
    if (v <= 0 && o.tellp() == 0) o << n << " must be positive (got " << v << ")";
  };
  positive("--image-size", c.image_size);
  positive("--patch-size", c.patch_size);
  positive("--channels", c.channels);
  positive("--classes", c.classes);
  positive("--hidden", c.hidden);
  positive("--layers", c.layers);
  positive("--heads", c.heads);
  positive("--mlp", c.mlp);
  if (o.tellp() != 0) return o.str();
  if (c.channels != 3) return "--channels must be 3 (RGB images)";
  if (c.hidden % c.heads != 0)
    return "--hidden " + std::to_string(c.hidden) + " is not divisible by --heads " +
           std::to_string(c.heads);
  if (c.image_size % c.patch_size != 0)
    return "--image-size " + std::to_string(c.image_size) + " is not divisible by --patch-size " +
           std::to_string(c.patch_size);
  if (!(c.dropout >= 0.0f && c.dropout < 1.0f))
    return "--dropout must be in [0, 1) (got " + std::to_string(c.dropout) + ")";
  if (!(c.attn_dropout >= 0.0f && c.attn_dropout < 1.0f))
    return "--attn-dropout must be in [0, 1) (got " + std::to_string(c.attn_dropout) + ")";
  if (!(c.ln_eps > 0.0f)) return "--ln-eps must be positive";
  if (!(c.init_std > 0.0f)) return "--init-std must be positive";
  for (int i = 0; i < 3; ++i)
    if (!(c.std[i] > 0.0f)) return "--std values must be positive";
  return "";
}

void validate(const Config& c) {
  std::string p = config_problem(c);
  if (!p.empty()) throw Error("invalid model config: " + p);
}

const char* gelu_name(Gelu g) { return g == Gelu::Tanh ? "tanh" : "erf"; }

Gelu parse_gelu(const std::string& s) {
  if (s == "tanh") return Gelu::Tanh;
  if (s == "erf") return Gelu::Erf;
  throw Error("--gelu must be 'tanh' or 'erf' (got '" + s + "')");
}

static std::string fmt(float v) {
  char b[32];
  snprintf(b, sizeof b, "%.9g", v);
  return b;
}

std::map<std::string, std::string> config_to_metadata(const Config& c) {
  std::map<std::string, std::string> m;
  m["image_size"] = std::to_string(c.image_size);
  m["patch_size"] = std::to_string(c.patch_size);
  m["channels"] = std::to_string(c.channels);
  m["classes"] = std::to_string(c.classes);
  m["hidden"] = std::to_string(c.hidden);
  m["layers"] = std::to_string(c.layers);
  m["heads"] = std::to_string(c.heads);
  m["mlp"] = std::to_string(c.mlp);
  m["dropout"] = fmt(c.dropout);
  m["attn_dropout"] = fmt(c.attn_dropout);
  m["init_std"] = fmt(c.init_std);
  m["qkv_bias"] = c.qkv_bias ? "true" : "false";
  m["gelu"] = gelu_name(c.gelu);
  m["ln_eps"] = fmt(c.ln_eps);
  m["final_ln"] = c.final_ln ? "true" : "false";
  m["mean"] = fmt(c.mean[0]) + "," + fmt(c.mean[1]) + "," + fmt(c.mean[2]);
  m["std"] = fmt(c.std[0]) + "," + fmt(c.std[1]) + "," + fmt(c.std[2]);
  return m;
}

static int to_int(const std::string& k, const std::string& v) {
  char* end = nullptr;
  long x = strtol(v.c_str(), &end, 10);
  if (v.empty() || *end) throw Error("metadata '" + k + "' is not an integer: '" + v + "'");
  return (int)x;
}
static float to_float(const std::string& k, const std::string& v) {
  char* end = nullptr;
  float x = strtof(v.c_str(), &end);
  if (v.empty() || *end) throw Error("metadata '" + k + "' is not a number: '" + v + "'");
  return x;
}
static bool to_bool(const std::string& k, const std::string& v) {
  if (v == "true" || v == "1") return true;
  if (v == "false" || v == "0") return false;
  throw Error("metadata '" + k + "' is not true/false: '" + v + "'");
}
static void to_float3(const std::string& k, const std::string& v, float out[3]) {
  std::stringstream s(v);
  std::string part;
  int n = 0;
  while (std::getline(s, part, ',')) {
    if (n == 3) break;
    out[n++] = to_float(k, part);
  }
  if (n != 3 || s.rdbuf()->in_avail() > 0)
    throw Error("metadata '" + k + "' must be three comma-separated numbers: '" + v + "'");
}

Config config_from_metadata(const std::map<std::string, std::string>& md, const Config& base) {
  Config c = base;
  for (const auto& [k, v] : md) {
    if (k == "image_size") c.image_size = to_int(k, v);
    else if (k == "patch_size") c.patch_size = to_int(k, v);
    else if (k == "channels") c.channels = to_int(k, v);
    else if (k == "classes") c.classes = to_int(k, v);
    else if (k == "hidden") c.hidden = to_int(k, v);
    else if (k == "layers") c.layers = to_int(k, v);
    else if (k == "heads") c.heads = to_int(k, v);
    else if (k == "mlp") c.mlp = to_int(k, v);
    else if (k == "dropout") c.dropout = to_float(k, v);
    else if (k == "attn_dropout") c.attn_dropout = to_float(k, v);
    else if (k == "init_std") c.init_std = to_float(k, v);
    else if (k == "qkv_bias") c.qkv_bias = to_bool(k, v);
    else if (k == "gelu") c.gelu = parse_gelu(v);
    else if (k == "ln_eps") c.ln_eps = to_float(k, v);
    else if (k == "final_ln") c.final_ln = to_bool(k, v);
    else if (k == "mean") to_float3(k, v, c.mean);
    else if (k == "std") to_float3(k, v, c.std);
    // other keys (format, step, optimizer state ...) belong to other readers
  }
  return c;
}

}  // namespace vit
