#include "common/dataset_cache.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <system_error>

#include "common/error.h"

namespace vit {

namespace {

constexpr char MAGIC[8] = {'V', 'I', 'T', 'C', 'A', 'C', 'H', 'E'};
constexpr uint32_t VERSION = 1;
// A header larger than this is not one of ours (a million files of ~100 bytes each).
constexpr uint64_t MAX_HEADER = 1ull << 30;

using File = std::unique_ptr<FILE, int (*)(FILE*)>;

nlohmann::json header_of(const ImageFolderSplit& s, int size, const std::vector<std::string>& errors) {
  nlohmann::json files = nlohmann::json::array();
  for (size_t i = 0; i < s.files.size(); ++i) {
    const ImageFile& f = s.files[i];
    files.push_back({f.rel, f.bytes, f.mtime_ns, f.label, errors.empty() ? "" : errors[i]});
  }
  return {{"size", size}, {"files", files}};
}

}  // namespace

std::string default_cache_path(const std::string& dir, Split s, int size) {
  return (std::filesystem::path(dir) /
          (std::string(".vitcache-") + image_folder_split_dir(s) + "-" + std::to_string(size) + ".bin"))
      .string();
}

std::string fallback_cache_path(const std::string& dir, Split s, int size,
                                const std::string& fallback_dir) {
  std::error_code ec;
  std::string abs = std::filesystem::absolute(dir, ec).lexically_normal().string();
  if (ec) abs = dir;
  while (abs.size() > 1 && abs.back() == '/') abs.pop_back();
  // FNV-1a 64: a stable name for the directory (std::hash may differ between builds).
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : abs) h = (h ^ c) * 1099511628211ull;
  char hex[17];
  snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
  return (std::filesystem::path(fallback_dir) / (std::string("vitcache-") + hex + "-" +
                                                 image_folder_split_dir(s) + "-" +
                                                 std::to_string(size) + ".bin"))
      .string();
}

std::string default_fallback_dir() {
  const char* v = getenv("VIT_CACHE_DIR");
  if (v && *v) return v;
  v = getenv("XDG_CACHE_HOME");
  if (v && *v) return std::string(v) + "/vit.cu";
  v = getenv("HOME");
  if (v && *v) return std::string(v) + "/.cache/vit.cu";
  return "";
}

bool read_cache(const std::string& path, const ImageFolderSplit& s, int size, uint8_t* images,
                int32_t* labels, std::vector<std::string>* errors) {
  File f(fopen(path.c_str(), "rb"), fclose);
  if (!f) return false;
  char magic[8];
  uint32_t version = 0;
  uint64_t hlen = 0;
  if (fread(magic, 1, 8, f.get()) != 8 || memcmp(magic, MAGIC, 8) != 0) return false;
  if (fread(&version, 4, 1, f.get()) != 1 || version != VERSION) return false;
  std::error_code ec;
  const uintmax_t total = std::filesystem::file_size(path, ec);
  // A header longer than the file is a damaged (or foreign) file: not worth allocating for.
  if (fread(&hlen, 8, 1, f.get()) != 1 || ec || hlen > MAX_HEADER || hlen > total) return false;
  std::string text(hlen, '\0');
  if (fread(&text[0], 1, hlen, f.get()) != hlen) return false;
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(text);
    if (!h.is_object() || !h.contains("size") || h["size"] != size) return false;
    const nlohmann::json& files = h.at("files");
    if (!files.is_array() || files.size() != s.files.size()) return false;
    std::vector<std::string> errs(s.files.size());
    for (size_t i = 0; i < s.files.size(); ++i) {
      const nlohmann::json& e = files[i];
      const ImageFile& want = s.files[i];
      if (!e.is_array() || e.size() != 5 || e[0] != want.rel || e[1] != want.bytes ||
          e[2] != want.mtime_ns || e[3] != want.label || !e[4].is_string())
        return false;
      errs[i] = e[4].get<std::string>();
    }
    // The pixel section must be exactly the kept images: no more, no less.
    int64_t kept = 0;
    for (const std::string& e : errs) kept += e.empty();
    const size_t image_bytes = (size_t)3 * size * size;
    const long data_at = ftell(f.get());
    if (data_at < 0 || total != (uintmax_t)data_at + (uintmax_t)kept * image_bytes) return false;
    if (kept > 0 && fread(images, image_bytes, (size_t)kept, f.get()) != (size_t)kept) return false;
    int64_t at = 0;
    for (size_t i = 0; i < s.files.size(); ++i)
      if (errs[i].empty()) labels[at++] = s.files[i].label;
    *errors = std::move(errs);
    return true;
  } catch (const nlohmann::json::exception&) {
    return false;  // not our header: decode again
  }
}

void write_cache(const std::string& path, const ImageFolderSplit& s, int size,
                 const std::vector<std::string>& errors, const uint8_t* images) {
  const std::string text = header_of(s, size, errors).dump();
  int64_t kept = 0;
  for (const std::string& e : errors) kept += e.empty();
  const size_t image_bytes = (size_t)3 * size * size;
  const std::string tmp = path + ".tmp." + std::to_string((long)getpid());
  bool ok;
  int err = 0;
  {
    File f(fopen(tmp.c_str(), "wb"), fclose);
    if (!f) throw Error("cannot write the image cache '" + tmp + "': " + strerror(errno));
    const uint64_t hlen = text.size();
    ok = fwrite(MAGIC, 1, 8, f.get()) == 8 && fwrite(&VERSION, 4, 1, f.get()) == 1 &&
         fwrite(&hlen, 8, 1, f.get()) == 1 && fwrite(text.data(), 1, hlen, f.get()) == hlen &&
         (kept == 0 || fwrite(images, image_bytes, (size_t)kept, f.get()) == (size_t)kept);
    if (!ok) err = errno;
    if (fflush(f.get()) != 0 && ok) { ok = false; err = errno; }
  }
  if (ok && rename(tmp.c_str(), path.c_str()) != 0) { ok = false; err = errno; }
  if (!ok) {
    unlink(tmp.c_str());
    throw Error("cannot write the image cache '" + path + "': " + strerror(err));
  }
}

}  // namespace vit
