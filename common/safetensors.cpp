#include "common/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "common/error.h"

namespace vit {

using json = nlohmann::json;

const char* st_dtype_name(StDtype d) {
  switch (d) {
    case StDtype::F32: return "F32";
    case StDtype::F16: return "F16";
    case StDtype::BF16: return "BF16";
  }
  return "?";
}

size_t st_dtype_size(StDtype d) { return d == StDtype::F32 ? 4 : 2; }

size_t StTensorInfo::numel() const {
  size_t n = 1;
  for (int64_t d : shape) n *= (size_t)d;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

float f16_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / NaN (payload kept)
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);  // rebias 15 -> 127
  } else if (mant == 0) {
    bits = sign;  // +-0
  } else {
    // Subnormal: mant * 2^-24, exact in float.
    float v = (float)mant * (1.0f / 16777216.0f);
    memcpy(&bits, &v, 4);
    bits |= sign;
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_float(uint16_t b) {
  uint32_t bits = (uint32_t)b << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

// ---- reading ----------------------------------------------------------------------------------

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& msg) {
  throw Error(path + ": " + msg);
}

bool parse_dtype(const std::string& s, StDtype* d) {
  if (s == "F32") *d = StDtype::F32;
  else if (s == "F16") *d = StDtype::F16;
  else if (s == "BF16") *d = StDtype::BF16;
  else return false;
  return true;
}

// A JSON number that is a non-negative integer (as written by every safetensors writer).
bool as_u64(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) { *out = v.get<uint64_t>(); return true; }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) { *out = (uint64_t)v.get<int64_t>(); return true; }
  return false;
}

// How deep brackets nest in `text` outside JSON strings; stops counting past `limit`. A
// safetensors header nests 3 deep ({name: {shape: [...]}}); checking this before parsing keeps
// a hostile header ("[[[[...", up to 100 MB of it) from the parser, whose tree would cost a heap
// allocation per level (gigabytes for a file of megabytes) and whose depth, parsed or walked,
// no bound would otherwise limit.
int json_depth(const std::string& text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;  // the escaped character cannot end the string
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return deepest;
}

}  // namespace

SafeTensorsFile::SafeTensorsFile(const std::string& path) : path_(path) {
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) fail(path, std::string("cannot open: ") + strerror(errno));
  file_.reset(f);
  struct stat st;
  if (fstat(fileno(f), &st) != 0) fail(path, std::string("cannot stat: ") + strerror(errno));
  if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
  const uint64_t fsize = (uint64_t)st.st_size;
  if (fsize < 8)
    fail(path, "not a safetensors file: " + std::to_string(fsize) +
                   " bytes, shorter than the 8-byte header length");
  unsigned char lenb[8];
  if (fread(lenb, 1, 8, f) != 8) fail(path, "cannot read the header length");
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | lenb[i];
  if (hlen > fsize - 8)
    fail(path, "not a safetensors file (or truncated): header length " + std::to_string(hlen) +
                   " exceeds the " + std::to_string(fsize - 8) + " bytes after it");
  if (hlen > ((uint64_t)100 << 20))  // the format's own limit; also bounds our allocation
    fail(path, "header of " + std::to_string(hlen) + " bytes is over the 100 MB safetensors limit");
  std::string header(hlen, '\0');
  if (hlen && fread(&header[0], 1, hlen, f) != hlen) fail(path, "cannot read the header");
  data_start_ = 8 + hlen;
  const uint64_t data_size = fsize - data_start_;

  // Parse, remembering the top-level keys to catch duplicates (json keeps only the last).
  std::set<std::string> seen;
  std::string duplicate;
  auto cb = [&](int depth, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      const std::string k = parsed.get<std::string>();
      if (!seen.insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  constexpr int kMaxDepth = 8;  // 3 needed; some slack for writers' __metadata__ habits
  if (json_depth(header, kMaxDepth) > kMaxDepth)
    fail(path, "header nests more than " + std::to_string(kMaxDepth) +
                   " levels deep (a safetensors header has 3): not a safetensors file");
  json h;
  try {
    h = json::parse(header, cb);
  } catch (const json::exception& e) {
    fail(path, std::string("header is not valid JSON (not a safetensors file?): ") + e.what());
  }
  if (!h.is_object()) fail(path, "header is not a JSON object");
  if (!duplicate.empty()) fail(path, "tensor '" + duplicate + "' appears twice in the header");

  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(path, "__metadata__ is not a JSON object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail(path, "__metadata__ value of '" + m.key() + "' is not a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string tn = "tensor '" + name + "': ";
    if (!v.is_object()) fail(path, tn + "entry is not a JSON object");
    if (!v.contains("dtype") || !v["dtype"].is_string()) fail(path, tn + "missing dtype");
    StTensorInfo t;
    t.name = name;
    const std::string ds = v["dtype"].get<std::string>();
    if (!parse_dtype(ds, &t.dtype))
      fail(path, tn + "unsupported dtype '" + ds + "' (F32, F16 and BF16 can be read)");
    if (!v.contains("shape") || !v["shape"].is_array()) fail(path, tn + "missing shape");
    // The element count, computed so that it cannot wrap: a dimension is at most 2^63 - 1
    // (the shape is int64 here and in PyTorch), and once the product exceeds what the data
    // section could hold (one element per byte at least) it is only remembered as too big, so
    // [2^62] or [2^31, 2^31] of F32 is not mistaken for 0 bytes. A zero dimension makes any
    // shape empty.
    uint64_t numel = 1;
    bool too_big = false, empty = false;
    for (const json& d : v["shape"]) {
      uint64_t x;
      if (!as_u64(d, &x)) fail(path, tn + "shape is not a list of non-negative integers");
      if (x > (uint64_t)INT64_MAX)
        fail(path, tn + "shape has a dimension of " + std::to_string(x) + ", over 2^63 - 1");
      t.shape.push_back((int64_t)x);
      if (x == 0) empty = true;
      else if (!too_big && numel > data_size / x) too_big = true;
      else if (!too_big) numel *= x;
    }
    if (empty) numel = 0;
    const bool overflow = too_big && !empty;
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() ||
        v["data_offsets"].size() != 2 || !as_u64(v["data_offsets"][0], &t.begin) ||
        !as_u64(v["data_offsets"][1], &t.end))
      fail(path, tn + "data_offsets is not a pair of non-negative integers");
    if (t.begin > t.end)
      fail(path, tn + "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                     "] end before they begin");
    if (t.end > data_size)
      fail(path, tn + "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                     "] run past the end of the data section (" + std::to_string(data_size) +
                     " bytes; truncated file?)");
    if (overflow)
      fail(path, tn + "shape " + shape_str(t.shape) + " has more elements than the " +
                     std::to_string(data_size) + "-byte data section can hold");
    const size_t want = numel * st_dtype_size(t.dtype);  // <= 4 * data_size: no wrap
    if (t.end - t.begin != want)
      fail(path, tn + "shape " + shape_str(t.shape) + " of " + ds + " needs " +
                     std::to_string(want) + " bytes but data_offsets [" +
                     std::to_string(t.begin) + ", " + std::to_string(t.end) + "] hold " +
                     std::to_string(t.end - t.begin));
    tensors_.push_back(std::move(t));
  }

  // The tensors must tile the data section: sorted by offset, each begins where the last ended.
  std::stable_sort(tensors_.begin(), tensors_.end(), [](const StTensorInfo& a, const StTensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  const StTensorInfo* prev = nullptr;
  for (const auto& t : tensors_) {
    if (t.begin < cursor)
      fail(path, "tensor '" + t.name + "' overlaps tensor '" + prev->name + "' (bytes " +
                     std::to_string(t.begin) + ".." + std::to_string(cursor) + ")");
    if (t.begin > cursor)
      fail(path, "tensor '" + t.name + "' leaves a hole of " + std::to_string(t.begin - cursor) +
                     " bytes before it in the data section");
    cursor = t.end;
    if (t.end > t.begin || !prev) prev = &t;
  }
  if (cursor != data_size)
    fail(path, "data section is " + std::to_string(data_size) + " bytes but the tensors cover " +
                   std::to_string(cursor) + " (file size does not match the header)");
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

const StTensorInfo* SafeTensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const StTensorInfo& SafeTensorsFile::at(const std::string& name) const {
  const StTensorInfo* t = find(name);
  if (!t) fail(path_, "no tensor '" + name + "'");
  return *t;
}

std::vector<float> SafeTensorsFile::read(const std::string& name) const {
  const StTensorInfo& t = at(name);
  std::vector<float> out(t.numel());
  read_into(name, out.data(), out.size());
  return out;
}

void SafeTensorsFile::read_into(const std::string& name, float* out, size_t n) const {
  const StTensorInfo& t = at(name);
  if (n != t.numel())
    fail(path_, "tensor '" + name + "' has " + std::to_string(t.numel()) + " elements, " +
                    std::to_string(n) + " expected");
  const size_t bytes = t.end - t.begin;
  FILE* f = file_.get();
  if (fseeko(f, (off_t)(data_start_ + t.begin), SEEK_SET) != 0)
    fail(path_, "tensor '" + name + "': seek failed: " + strerror(errno));
  if (t.dtype == StDtype::F32) {
    if (bytes && fread(out, 1, bytes, f) != bytes)
      fail(path_, "tensor '" + name + "': short read (file changed or truncated?)");
    return;  // little-endian host (x86-64, aarch64): the bytes are the floats
  }
  std::vector<uint16_t> buf(n);
  if (bytes && fread(buf.data(), 1, bytes, f) != bytes)
    fail(path_, "tensor '" + name + "': short read (file changed or truncated?)");
  if (t.dtype == StDtype::F16)
    for (size_t i = 0; i < n; ++i) out[i] = f16_to_float(buf[i]);
  else
    for (size_t i = 0; i < n; ++i) out[i] = bf16_to_float(buf[i]);
}

// ---- writing ----------------------------------------------------------------------------------

void write_safetensors(const std::string& path, const std::vector<StTensorOut>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // Header first: everything that can be wrong with the request fails before a file exists.
  json h = json::object();
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__")
      throw Error(path + ": cannot write a tensor named '" + t.name + "'");
    if (!names.insert(t.name).second)
      throw Error(path + ": tensor '" + t.name + "' given twice");
    size_t n = 1;
    for (int64_t d : t.shape) {
      if (d < 0) throw Error(path + ": tensor '" + t.name + "' has a negative dimension");
      n *= (size_t)d;
    }
    if (n && !t.data) throw Error(path + ": tensor '" + t.name + "' has no data");
    h[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + 4 * n}}};
    offset += 4 * n;
  }
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::string header = h.dump();
  header.append((8 - header.size() % 8) % 8, ' ');  // data section 8-byte aligned
  unsigned char lenb[8];
  for (int i = 0; i < 8; ++i) lenb[i] = (unsigned char)((uint64_t)header.size() >> (8 * i));

  const std::string tmp = path + ".tmp." + std::to_string((long)getpid());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw Error(path + ": cannot write: " + tmp + ": " + strerror(errno));
  auto write_all = [&](const void* p, size_t n) {
    const char* c = (const char*)p;
    while (n > 0) {
      ssize_t w = ::write(fd, c, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      c += w;
      n -= (size_t)w;
    }
    return true;
  };
  bool ok = write_all(lenb, 8) && write_all(header.data(), header.size());
  for (size_t i = 0; ok && i < tensors.size(); ++i) {
    size_t n = 1;
    for (int64_t d : tensors[i].shape) n *= (size_t)d;
    ok = write_all(tensors[i].data, 4 * n);  // little-endian host: floats are F32 bytes
  }
  if (ok) ok = fsync(fd) == 0;
  int err = errno;
  if (close(fd) != 0 && ok) { ok = false; err = errno; }
  if (ok && rename(tmp.c_str(), path.c_str()) != 0) { ok = false; err = errno; }
  if (!ok) {
    unlink(tmp.c_str());
    throw Error(path + ": cannot write: " + strerror(err) + " (the previous file, if any, is unchanged)");
  }
  // Make the rename itself durable: fsync the directory (best effort).
  std::string dir = std::filesystem::path(path).parent_path().string();  // "/" for "/x"
  if (dir.empty()) dir = ".";
  int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) { fsync(dfd); close(dfd); }
}

}  // namespace vit
