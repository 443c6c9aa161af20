#include "common/weights.h"

#include <cmath>
#include <cstdlib>
#include <set>
#include <sstream>

#include "common/error.h"
#include "common/model.h"
#include "common/safetensors.h"

namespace vit {

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::Ours: return "vit.cu";
    case WeightFormat::Tintn: return "tintn";
    case WeightFormat::Torchvision: return "torchvision";
  }
  return "?";
}

WeightFormat parse_weight_format(const std::string& s) {
  if (s == "vit.cu" || s == "ours") return WeightFormat::Ours;
  if (s == "tintn") return WeightFormat::Tintn;
  if (s == "torchvision") return WeightFormat::Torchvision;
  throw Error("unknown weight layout '" + s + "' (known: vit.cu, tintn, torchvision)");
}

namespace {

enum Role {
  PatchW, PatchB, Cls, Pos,
  Ln1W, Ln1B, QkvW, QkvB, ProjW, ProjB, Ln2W, Ln2B, Fc1W, Fc1B, Fc2W, Fc2B,
  LnfW, LnfB, HeadW, HeadB
};

// The name of tensor `r` (of block `l` for per-block roles) in layout `f`; "" when the layout
// has no such tensor (tintn's final LayerNorm).
std::string role_name(WeightFormat f, Role r, int l, bool tv_linear) {
  const std::string i = std::to_string(l);
  if (f == WeightFormat::Ours) {
    const std::string b = "blocks." + i + ".";
    switch (r) {
      case PatchW: return "patch_embed.weight";
      case PatchB: return "patch_embed.bias";
      case Cls: return "cls_token";
      case Pos: return "pos_embed";
      case Ln1W: return b + "ln1.weight";
      case Ln1B: return b + "ln1.bias";
      case QkvW: return b + "attn.qkv.weight";
      case QkvB: return b + "attn.qkv.bias";
      case ProjW: return b + "attn.proj.weight";
      case ProjB: return b + "attn.proj.bias";
      case Ln2W: return b + "ln2.weight";
      case Ln2B: return b + "ln2.bias";
      case Fc1W: return b + "mlp.fc1.weight";
      case Fc1B: return b + "mlp.fc1.bias";
      case Fc2W: return b + "mlp.fc2.weight";
      case Fc2B: return b + "mlp.fc2.bias";
      case LnfW: return "final_ln.weight";
      case LnfB: return "final_ln.bias";
      case HeadW: return "head.weight";
      case HeadB: return "head.bias";
    }
  } else if (f == WeightFormat::Tintn) {
    const std::string b = "encoder.blocks." + i + ".";
    switch (r) {
      case PatchW: return "embedding.patch_embeddings.projection.weight";
      case PatchB: return "embedding.patch_embeddings.projection.bias";
      case Cls: return "embedding.cls_token";
      case Pos: return "embedding.position_embeddings";
      case Ln1W: return b + "layernorm_1.weight";
      case Ln1B: return b + "layernorm_1.bias";
      case QkvW: return b + "attention.qkv_projection.weight";
      case QkvB: return b + "attention.qkv_projection.bias";
      case ProjW: return b + "attention.output_projection.weight";
      case ProjB: return b + "attention.output_projection.bias";
      case Ln2W: return b + "layernorm_2.weight";
      case Ln2B: return b + "layernorm_2.bias";
      case Fc1W: return b + "mlp.dense_1.weight";
      case Fc1B: return b + "mlp.dense_1.bias";
      case Fc2W: return b + "mlp.dense_2.weight";
      case Fc2B: return b + "mlp.dense_2.bias";
      case LnfW: case LnfB: return "";
      case HeadW: return "classifier.weight";
      case HeadB: return "classifier.bias";
    }
  } else {
    const std::string b = "encoder.layers.encoder_layer_" + i + ".";
    const std::string fc1 = tv_linear ? "mlp.linear_1." : "mlp.0.";
    const std::string fc2 = tv_linear ? "mlp.linear_2." : "mlp.3.";
    switch (r) {
      case PatchW: return "conv_proj.weight";
      case PatchB: return "conv_proj.bias";
      case Cls: return "class_token";
      case Pos: return "encoder.pos_embedding";
      case Ln1W: return b + "ln_1.weight";
      case Ln1B: return b + "ln_1.bias";
      case QkvW: return b + "self_attention.in_proj_weight";
      case QkvB: return b + "self_attention.in_proj_bias";
      case ProjW: return b + "self_attention.out_proj.weight";
      case ProjB: return b + "self_attention.out_proj.bias";
      case Ln2W: return b + "ln_2.weight";
      case Ln2B: return b + "ln_2.bias";
      case Fc1W: return b + fc1 + "weight";
      case Fc1B: return b + fc1 + "bias";
      case Fc2W: return b + fc2 + "weight";
      case Fc2B: return b + fc2 + "bias";
      case LnfW: return "encoder.ln.weight";
      case LnfB: return "encoder.ln.bias";
      case HeadW: return "heads.head.weight";
      case HeadB: return "heads.head.bias";
    }
  }
  return "";
}

std::vector<int64_t> to64(const std::vector<int>& v) { return std::vector<int64_t>(v.begin(), v.end()); }

std::string fmtf(float v) {
  char b[32];
  snprintf(b, sizeof b, "%.9g", v);
  return b;
}

int64_t isqrt_exact(int64_t n) {  // r with r*r == n, else -1
  if (n < 0) return -1;
  int64_t r = (int64_t)std::llround(std::sqrt((double)n));
  for (int64_t c = std::max<int64_t>(0, r - 1); c <= r + 1; ++c)
    if (c * c == n) return c;
  return -1;
}

}  // namespace

std::vector<MappedTensor> tensor_map(const Config& c, WeightFormat f, bool tv_linear) {
  if (f == WeightFormat::Tintn && c.final_ln)
    throw Error("the tintn layout has no final LayerNorm: this model (--final-ln) cannot be written in it");
  const ParamLayout l(c);
  const bool torch = f != WeightFormat::Ours;
  std::vector<MappedTensor> out;
  auto add = [&](Role r, int layer, size_t offset) {
    const ParamTensor* t = nullptr;
    const std::string ours = role_name(WeightFormat::Ours, r, layer, false);
    t = l.find(ours);
    std::vector<int64_t> shape = to64(t->shape);
    if (torch && r == PatchW) shape = {c.hidden, c.channels, c.patch_size, c.patch_size};
    if (torch && r == Cls) shape = {1, 1, c.hidden};
    if (torch && r == Pos) shape = {1, c.tokens(), c.hidden};
    out.push_back({role_name(f, r, layer, tv_linear), shape, offset, t->numel, ours});
  };
  add(PatchW, 0, l.patch_w);
  add(PatchB, 0, l.patch_b);
  add(Cls, 0, l.cls);
  add(Pos, 0, l.pos);
  for (int i = 0; i < c.layers; ++i) {
    const ParamLayout::Block& b = l.blocks[i];
    add(Ln1W, i, b.ln1_w);
    add(Ln1B, i, b.ln1_b);
    add(QkvW, i, b.qkv_w);
    if (c.qkv_bias) add(QkvB, i, b.qkv_b);
    add(ProjW, i, b.proj_w);
    add(ProjB, i, b.proj_b);
    add(Ln2W, i, b.ln2_w);
    add(Ln2B, i, b.ln2_b);
    add(Fc1W, i, b.fc1_w);
    add(Fc1B, i, b.fc1_b);
    add(Fc2W, i, b.fc2_w);
    add(Fc2B, i, b.fc2_b);
  }
  if (c.final_ln) {
    add(LnfW, 0, l.lnf_w);
    add(LnfB, 0, l.lnf_b);
  }
  add(HeadW, 0, l.head_w);
  add(HeadB, 0, l.head_b);
  return out;
}

// ---- bicubic resampling -------------------------------------------------------------------------

namespace {

// PyTorch's cubic convolution kernel (Keys, A = -0.75), for |x| <= 1 and 1 < |x| < 2.
double cubic1(double x, double A) { return ((A + 2) * x - (A + 3)) * x * x + 1; }
double cubic2(double x, double A) { return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; }

// For each output index: the 4 clamped source taps and their weights.
void cubic_taps(int in, int out, std::vector<int>& idx, std::vector<double>& w) {
  const double A = -0.75, scale = (double)in / out;
  idx.resize(4 * (size_t)out);
  w.resize(4 * (size_t)out);
  for (int o = 0; o < out; ++o) {
    const double src = (o + 0.5) * scale - 0.5;  // not clamped for cubic (unlike linear)
    const double f = std::floor(src);
    const double t = src - f;
    const int i0 = (int)f;
    const double ws[4] = {cubic2(t + 1, A), cubic1(t, A), cubic1(1 - t, A), cubic2(2 - t, A)};
    for (int k = 0; k < 4; ++k) {
      idx[4 * o + k] = std::min(std::max(i0 - 1 + k, 0), in - 1);
      w[4 * o + k] = ws[k];
    }
  }
}

}  // namespace

void resize_bicubic(const float* in, int P, int H, int W, int OH, int OW, float* out) {
  std::vector<int> iy, ix;
  std::vector<double> wy, wx;
  cubic_taps(H, OH, iy, wy);
  cubic_taps(W, OW, ix, wx);
  for (int p = 0; p < P; ++p) {
    const float* src = in + (size_t)p * H * W;
    float* dst = out + (size_t)p * OH * OW;
    for (int y = 0; y < OH; ++y)
      for (int x = 0; x < OW; ++x) {
        double acc = 0;
        for (int a = 0; a < 4; ++a) {
          const float* row = src + (size_t)iy[4 * y + a] * W;
          double r = 0;
          for (int b = 0; b < 4; ++b) r += wx[4 * x + b] * row[ix[4 * x + b]];
          acc += wy[4 * y + a] * r;
        }
        dst[(size_t)y * OW + x] = (float)acc;
      }
  }
}

std::vector<float> resample_pos_embed(const float* pos, int g, int G, int C) {
  // (1 + g*g, C) token-major -> planes (C, g, g) -> (C, G, G) -> (1 + G*G, C).
  std::vector<float> planes((size_t)C * g * g), big((size_t)C * G * G);
  for (int t = 0; t < g * g; ++t)
    for (int c = 0; c < C; ++c) planes[(size_t)c * g * g + t] = pos[(size_t)(1 + t) * C + c];
  resize_bicubic(planes.data(), C, g, g, G, G, big.data());
  std::vector<float> out((size_t)(1 + G * G) * C);
  for (int c = 0; c < C; ++c) out[c] = pos[c];  // CLS row kept
  for (int t = 0; t < G * G; ++t)
    for (int c = 0; c < C; ++c) out[(size_t)(1 + t) * C + c] = big[(size_t)c * G * G + t];
  return out;
}

// ---- loading ------------------------------------------------------------------------------------

std::string LoadedWeights::summary() const {
  std::ostringstream o;
  const Config& f = file_config;
  o << weight_format_name(format) << " layout: image " << f.image_size << ", patch " << f.patch_size
    << ", hidden " << f.hidden << ", " << f.layers << " layers, " << f.heads << " heads, MLP "
    << f.mlp << ", " << f.classes << " classes";
  if (pos_resampled)
    o << "; position embeddings resampled " << f.image_size << " -> " << config.image_size;
  if (head_replaced) o << "; new " << config.classes << "-class head";
  return o.str();
}

LoadedWeights load_weights(const std::string& path, const LoadOptions& opt) {
  SafeTensorsFile f(path);
  auto fail = [&](const std::string& msg) -> void { throw Error(path + ": " + msg); };
  auto has = [&](const std::string& n) { return !n.empty() && f.find(n) != nullptr; };

  LoadedWeights res;
  res.format = WeightFormat::Ours;
  if (has("cls_token")) res.format = WeightFormat::Ours;
  else if (has("embedding.cls_token")) res.format = WeightFormat::Tintn;
  else if (has("class_token")) res.format = WeightFormat::Torchvision;
  else
    fail("not a ViT weight file vit.cu knows: no tensor 'cls_token' (vit.cu), "
         "'embedding.cls_token' (tintn) or 'class_token' (torchvision)");
  const WeightFormat fmt = res.format;
  const bool torch = fmt != WeightFormat::Ours;
  const bool tv_linear = fmt == WeightFormat::Torchvision &&
                         !has(role_name(fmt, Fc1W, 0, false)) && has(role_name(fmt, Fc1W, 0, true));
  auto name = [&](Role r, int l = 0) { return role_name(fmt, r, l, tv_linear); };
  auto shape_of = [&](Role r, size_t rank) -> std::vector<int64_t> {
    const StTensorInfo& t = f.at(name(r));  // throws "no tensor ..." naming it
    if (t.shape.size() != rank)
      fail("tensor '" + t.name + "' has shape " + shape_str(t.shape) + ": expected " +
           std::to_string(rank) + " dimensions");
    for (int64_t d : t.shape)
      if (d <= 0 || d > (1 << 30)) fail("tensor '" + t.name + "' has shape " + shape_str(t.shape));
    return t.shape;
  };

  // 1. The architecture constants: the layout's, then the file's metadata.
  Config c = opt.base;
  if (fmt == WeightFormat::Tintn) {
    c.gelu = Gelu::Tanh; c.ln_eps = 1e-5f; c.final_ln = false;
    for (int i = 0; i < 3; ++i) c.mean[i] = c.std[i] = 0.5f;
  } else if (fmt == WeightFormat::Torchvision) {
    const Config b16 = preset("vit-b16");
    c.gelu = b16.gelu; c.ln_eps = b16.ln_eps;
    for (int i = 0; i < 3; ++i) { c.mean[i] = b16.mean[i]; c.std[i] = b16.std[i]; }
  }
  const auto& md = f.metadata();
  try {
    c = config_from_metadata(md, c);
  } catch (const Error& e) {
    fail(e.what());
  }
  const Config from_md = c;

  // 2. The sizes, from the shapes.
  const std::vector<int64_t> cls = shape_of(Cls, torch ? 3 : 1);
  c.hidden = (int)cls.back();
  const std::vector<int64_t> pw = shape_of(PatchW, torch ? 4 : 2);
  if (torch) {
    if (pw[2] != pw[3]) fail("tensor '" + name(PatchW) + "' has non-square patches " + shape_str(pw));
    c.channels = (int)pw[1];
    c.patch_size = (int)pw[2];
  } else {
    c.channels = 3;
    const int64_t p = isqrt_exact(pw[1] / 3);
    if (pw[1] % 3 != 0 || p < 0)
      fail("tensor '" + name(PatchW) + "' has shape " + shape_str(pw) + ": expected (hidden, 3*p*p)");
    c.patch_size = (int)p;
  }
  const std::vector<int64_t> pos = shape_of(Pos, torch ? 3 : 2);
  const int64_t T = pos[pos.size() - 2];
  const int64_t grid = isqrt_exact(T - 1);
  if (grid <= 0)
    fail("tensor '" + name(Pos) + "' has " + std::to_string(T) +
         " rows: position tables hold 1 + grid*grid rows (CLS + a square patch grid)");
  c.image_size = (int)grid * c.patch_size;
  c.layers = 0;
  while (has(name(Ln1W, c.layers))) ++c.layers;
  if (c.layers == 0) fail("no transformer blocks (no tensor '" + name(Ln1W, 0) + "')");
  {
    const StTensorInfo& t = f.at(name(Fc1W, 0));
    if (t.shape.size() != 2 || t.shape[0] <= 0)
      fail("tensor '" + t.name + "' has shape " + shape_str(t.shape) + ": expected (mlp, hidden)");
    c.mlp = (int)t.shape[0];
  }
  {
    const StTensorInfo& t = f.at(name(HeadW));
    if (t.shape.size() != 2 || t.shape[0] <= 0)
      fail("tensor '" + t.name + "' has shape " + shape_str(t.shape) + ": expected (classes, hidden)");
    c.classes = (int)t.shape[0];
  }
  c.qkv_bias = has(name(QkvB, 0));
  c.final_ln = fmt != WeightFormat::Tintn && has(name(LnfW));

  // Metadata that contradicts the tensors means a broken file: say so rather than guess.
  auto agree = [&](const char* key, long long meta_v, long long shape_v) {
    if (md.count(key) && meta_v != shape_v)
      fail(std::string("__metadata__ says ") + key + " = " + md.at(key) + " but the tensors have " +
           std::to_string(shape_v));
  };
  agree("image_size", from_md.image_size, c.image_size);
  agree("patch_size", from_md.patch_size, c.patch_size);
  agree("channels", from_md.channels, c.channels);
  agree("classes", from_md.classes, c.classes);
  agree("hidden", from_md.hidden, c.hidden);
  agree("layers", from_md.layers, c.layers);
  agree("mlp", from_md.mlp, c.mlp);
  agree("qkv_bias", from_md.qkv_bias, c.qkv_bias);
  agree("final_ln", from_md.final_ln, c.final_ln);
  {
    std::string p = config_problem(c);
    if (!p.empty())
      fail("the model in this file is not valid: " + p +
           (md.count("heads") ? "" : " (the file does not record its number of heads: pass --heads)"));
  }
  res.file_config = c;
  res.metadata = md;

  // 3. Every tensor present with its shape; nothing unexpected.
  const std::vector<MappedTensor> map = tensor_map(c, fmt, tv_linear);
  std::set<std::string> expected;
  for (const auto& m : map) {
    expected.insert(m.name);
    const StTensorInfo* t = f.find(m.name);
    if (!t) fail("missing tensor '" + m.name + "' (shape " + shape_str(m.shape) + ")");
    if (t->shape != m.shape)
      fail("tensor '" + m.name + "' has shape " + shape_str(t->shape) + ", expected " +
           shape_str(m.shape) + " (hidden " + std::to_string(c.hidden) + ", MLP " +
           std::to_string(c.mlp) + ", patch " + std::to_string(c.patch_size) + ")");
  }
  std::vector<std::string> extra;
  for (const auto& t : f.tensors()) {
    if (expected.count(t.name)) continue;
    if (torch)
      fail("unexpected tensor '" + t.name + "' (not part of a " + weight_format_name(fmt) + " ViT with " +
           std::to_string(c.layers) + " layers" + (c.final_ln ? ", final LayerNorm" : "") + ")");
    extra.push_back(t.name);
  }

  // 4. The flags the user typed: only image size (resample) and classes (new head) may differ.
  Config want;
  try {
    want = config_from_metadata(opt.given, c);
  } catch (const Error& e) {
    fail(e.what());
  }
  auto fixed = [&](const char* flag, const std::string& file_v, const std::string& want_v) {
    if (file_v != want_v)
      fail(std::string("the file holds a model with ") + flag + " " + file_v + ", which conflicts with " +
           flag + " " + want_v + " (a weight file fixes the architecture: drop the flag)");
  };
  if (want.patch_size != c.patch_size)
    fail("the file's patch size is " + std::to_string(c.patch_size) + ": it cannot be used with --patch-size " +
         std::to_string(want.patch_size) + " (its patch embedding would not fit)");
  fixed("--hidden", std::to_string(c.hidden), std::to_string(want.hidden));
  fixed("--layers", std::to_string(c.layers), std::to_string(want.layers));
  fixed("--heads", std::to_string(c.heads), std::to_string(want.heads));
  fixed("--mlp", std::to_string(c.mlp), std::to_string(want.mlp));
  fixed("--gelu", gelu_name(c.gelu), gelu_name(want.gelu));
  fixed("--ln-eps", fmtf(c.ln_eps), fmtf(want.ln_eps));
  if (want.final_ln != c.final_ln)
    fail(std::string("the file's model has ") + (c.final_ln ? "a" : "no") + " final LayerNorm, which conflicts with " +
         (want.final_ln ? "--final-ln" : "--no-final-ln") + " (a weight file fixes the architecture: drop the flag)");
  if (want.qkv_bias != c.qkv_bias)
    fail(std::string("the file's model has ") + (c.qkv_bias ? "a" : "no") + " q|k|v bias, which conflicts with " +
         (want.qkv_bias ? "--qkv-bias" : "--no-qkv-bias") + " (a weight file fixes the architecture: drop the flag)");
  Config out = want;  // dropout, init std, mean/std: as typed, else the file's / the base's
  if (opt.new_head) {
    out.classes = opt.base.classes;
  } else if (want.classes != c.classes) {
    fail("the file's head has " + std::to_string(c.classes) + " classes but " +
         std::to_string(want.classes) +
         " were asked for: pass --new-head to replace it with a freshly initialised one");
  }
  {
    std::string p = config_problem(out);
    if (!p.empty()) fail("invalid model config: " + p);
  }
  res.config = out;
  res.head_replaced = opt.new_head;
  res.pos_resampled = out.image_size != c.image_size;

  // 5. Read, straight into the flat buffer of the model to build.
  const ParamLayout lo(out);
  res.params.assign(lo.total, 0.0f);
  std::map<std::string, size_t> dst;
  for (const auto& t : lo.tensors) dst[t.name] = t.offset;
  for (const auto& m : map) {
    float* d = res.params.data() + dst.at(m.ours);
    if (m.ours == "pos_embed" && res.pos_resampled) {
      std::vector<float> p = f.read(m.name);
      std::vector<float> r = resample_pos_embed(p.data(), c.grid(), out.grid(), c.hidden);
      std::copy(r.begin(), r.end(), d);
    } else if ((m.ours == "head.weight" || m.ours == "head.bias") && opt.new_head) {
      continue;
    } else {
      f.read_into(m.name, d, m.numel);
    }
  }
  if (opt.new_head) {
    // Exactly the head a fresh model of this config would start with.
    std::vector<float> init(lo.total);
    init_params(out, lo, opt.head_seed, init.data());
    std::copy(init.begin() + (long)lo.head_w, init.begin() + (long)(lo.head_w + (size_t)out.classes * out.hidden),
              res.params.begin() + (long)lo.head_w);
    std::copy(init.begin() + (long)lo.head_b, init.begin() + (long)(lo.head_b + (size_t)out.classes),
              res.params.begin() + (long)lo.head_b);
  }
  for (const auto& n : extra) res.extra[n] = f.read(n);
  return res;
}

// ---- writing ------------------------------------------------------------------------------------

void save_checkpoint(const std::string& path, const Config& c, const ParamLayout& layout,
                     const float* params,
                     const std::map<std::string, std::vector<float>>& extra_tensors,
                     const std::map<std::string, std::string>& extra_metadata) {
  if (layout.total != ParamLayout(c).total)
    throw std::logic_error("save_checkpoint: layout does not belong to the config");
  std::vector<StTensorOut> ts;
  for (const auto& t : layout.tensors) ts.push_back({t.name, to64(t.shape), params + t.offset});
  for (const auto& [n, v] : extra_tensors) {
    if (layout.find(n)) throw Error(path + ": extra tensor '" + n + "' has a parameter's name");
    ts.push_back({n, {(int64_t)v.size()}, v.data()});
  }
  std::map<std::string, std::string> md = extra_metadata;
  for (const auto& [k, v] : config_to_metadata(c)) md[k] = v;  // the config always wins
  md["format"] = weight_format_name(WeightFormat::Ours);
  write_safetensors(path, ts, md);
}

std::string export_problem(WeightFormat f, const Config& c) {
  if (f == WeightFormat::Ours) return "";
  auto shortf = [](float v) {  // the shortest text that reads back as v: "1e-05", not 9.99999975e-06
    char b[32];
    for (int prec = 1; prec <= 9; ++prec) {
      snprintf(b, sizeof b, "%.*g", prec, v);
      if (std::strtof(b, nullptr) == v) break;
    }
    return std::string(b);
  };
  struct Fixed { Gelu gelu; float eps; bool final_ln; };
  auto fixed = [](WeightFormat g) {
    return g == WeightFormat::Tintn ? Fixed{Gelu::Tanh, 1e-5f, false} : Fixed{Gelu::Erf, 1e-6f, true};
  };
  // What differs between the model and layout g's constants ("" when nothing).
  auto diffs = [&](WeightFormat g) {
    const Fixed k = fixed(g);
    std::vector<std::string> d;
    if (c.gelu != k.gelu)
      d.push_back(std::string(gelu_name(k.gelu)) + " GELU, this model " + gelu_name(c.gelu));
    if (c.ln_eps != k.eps)
      d.push_back("LayerNorm eps " + shortf(k.eps) + ", this model " + shortf(c.ln_eps));
    if (c.final_ln != k.final_ln)
      d.push_back(std::string(k.final_ln ? "a" : "no") + " final LayerNorm, this model " +
                  (c.final_ln ? "has one" : "none"));
    if (g == WeightFormat::Torchvision && c.channels != 3)
      d.push_back("3 input channels, this model " + std::to_string(c.channels));
    std::string s;
    for (const auto& x : d) s += (s.empty() ? "" : "; ") + x;
    return s;
  };
  const std::string why = diffs(f);
  if (why.empty()) return "";
  const WeightFormat other = f == WeightFormat::Tintn ? WeightFormat::Torchvision : WeightFormat::Tintn;
  const std::string name = f == WeightFormat::Tintn ? "tintn's ViTForClassfication" : "torchvision's VisionTransformer";
  return "cannot write this model in the " + std::string(weight_format_name(f)) + " layout: " + name +
         " has " + why + " (" +
         (diffs(other).empty() ? "export it as " + std::string(weight_format_name(other))
                               : std::string("neither PyTorch layout fits; keep the vit.cu checkpoint")) +
         ")";
}

void export_weights(const std::string& path, WeightFormat f, const Config& c, const float* params,
                    const std::map<std::string, std::string>& extra_metadata) {
  {
    const std::string p = export_problem(f, c);
    if (!p.empty()) throw Error(path + ": " + p);
  }
  std::vector<MappedTensor> map;
  try {
    map = tensor_map(c, f);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  std::map<std::string, std::string> md = extra_metadata;
  for (const auto& [k, v] : config_to_metadata(c)) md[k] = v;
  md["format"] = weight_format_name(f);
  std::vector<StTensorOut> ts;
  std::vector<std::vector<float>> zeros;  // torchvision's in_proj_bias for a model without one
  zeros.reserve(c.layers);
  for (const auto& m : map) {
    ts.push_back({m.name, m.shape, params + m.offset});
    if (f == WeightFormat::Torchvision && !c.qkv_bias && m.ours.find("attn.qkv.weight") != std::string::npos) {
      zeros.emplace_back((size_t)3 * c.hidden, 0.0f);
      std::string b = m.name.substr(0, m.name.size() - std::string("in_proj_weight").size()) + "in_proj_bias";
      ts.push_back({b, {3 * (int64_t)c.hidden}, zeros.back().data()});
      md["qkv_bias"] = "true";  // a zero bias is still a bias: the file loads back as one
    }
  }
  write_safetensors(path, ts, md);
}

}  // namespace vit
