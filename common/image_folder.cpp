#include "common/image_folder.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <thread>

#include "common/dataset_cache.h"
#include "common/error.h"
#include "common/image.h"

// stb_image_resize is compiled here and only here (stb_image itself lives in common/image.cpp).
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#define STB_IMAGE_RESIZE_STATIC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <stb/stb_image_resize.h>
#pragma GCC diagnostic pop

namespace vit {

namespace fsys = std::filesystem;

namespace {

bool is_image_name(const fsys::path& p) {
  std::string e = p.extension().string();
  for (char& c : e) c = (char)tolower((unsigned char)c);
  return e == ".jpg" || e == ".jpeg" || e == ".png" || e == ".bmp";
}

bool hidden(const fsys::path& p) {
  const std::string n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

std::vector<std::string> subfolders(const fsys::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const fsys::directory_entry& e : fsys::directory_iterator(dir, ec))
    if (!hidden(e.path()) && e.is_directory(ec)) names.push_back(e.path().filename().string());
  if (ec) throw Error("cannot list '" + dir.string() + "': " + ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

int64_t mtime_ns(const fsys::path& p, std::error_code& ec) {
  const auto t = fsys::last_write_time(p, ec);
  return (int64_t)std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace

bool is_image_folder(const std::string& dir) {
  std::error_code ec;
  return fsys::is_directory(fsys::path(dir) / "train", ec);
}

const char* image_folder_split_dir(Split s) { return s == Split::Train ? "train" : "val"; }

std::vector<std::string> image_folder_classes(const std::string& dir) {
  const fsys::path train = fsys::path(dir) / "train";
  std::vector<std::string> classes = subfolders(train);
  if (classes.empty())
    throw Error("'" + train.string() + "' has no class folders: an image-folder dataset is "
                "DIR/train/<class>/*.jpg|png|bmp and DIR/val/<class>/*");
  return classes;
}

ImageFolderSplit scan_image_folder(const std::string& dir, Split s) {
  ImageFolderSplit out;
  out.split = s;
  out.classes = image_folder_classes(dir);
  const fsys::path root = fsys::path(dir) / image_folder_split_dir(s);
  out.root = root.string();
  std::error_code ec;
  if (!fsys::is_directory(root, ec))
    throw Error("'" + out.root + "' not found: an image-folder dataset needs DIR/val/<class>/ "
                "(the test split) next to DIR/train/<class>/");
  for (const std::string& name : subfolders(root)) {
    auto it = std::find(out.classes.begin(), out.classes.end(), name);
    if (it == out.classes.end())
      throw Error("'" + (root / name).string() + "' is not one of the " +
                  std::to_string(out.classes.size()) + " classes of '" + dir +
                  "/train': every val class needs a train folder of the same name");
    const int32_t label = (int32_t)(it - out.classes.begin());
    std::vector<ImageFile> files;
    const fsys::path cdir = root / name;
    for (auto e = fsys::recursive_directory_iterator(cdir, fsys::directory_options::follow_directory_symlink, ec);
         !ec && e != fsys::recursive_directory_iterator(); e.increment(ec)) {
      if (hidden(e->path())) {
        if (e->is_directory(ec)) e.disable_recursion_pending();
        continue;
      }
      if (!is_image_name(e->path())) continue;
      // A file whose status cannot be read (a dangling symlink) is still listed, with size -1:
      // decoding then names it among the unreadable images instead of it silently vanishing.
      std::error_code fe;
      const bool regular = e->is_regular_file(fe);
      if (!regular && !fe) continue;  // a directory called x.png, a device, ...
      ImageFile f;
      f.rel = e->path().lexically_relative(root).generic_string();
      f.label = label;
      f.bytes = regular ? (int64_t)e->file_size(fe) : -1;
      if (regular && !fe) f.mtime_ns = mtime_ns(e->path(), fe);
      if (fe) f.bytes = -1;
      files.push_back(std::move(f));
    }
    if (ec) throw Error("cannot list '" + cdir.string() + "': " + ec.message());
    if (files.empty() && s == Split::Train)
      throw Error("class folder '" + cdir.string() + "' has no images (.jpg, .jpeg, .png, .bmp)");
    std::sort(files.begin(), files.end(), [](const ImageFile& a, const ImageFile& b) { return a.rel < b.rel; });
    out.files.insert(out.files.end(), files.begin(), files.end());
  }
  if (out.files.empty())
    throw Error("'" + out.root + "' has no images (.jpg, .jpeg, .png, .bmp) in its class folders");
  return out;
}

void decode_image_to(const std::string& path, int S, uint8_t* out) {
  const Image img = load_image(path);  // (H, W, 3) interleaved
  const size_t plane = (size_t)S * S;
  std::vector<uint8_t> rgb;
  const uint8_t* src = img.rgb.data();
  if (img.width != S || img.height != S) {
    rgb.resize(plane * 3);
    if (!stbir_resize_uint8(img.rgb.data(), img.width, img.height, 0, rgb.data(), S, S, 0, 3))
      throw Error(path + ": cannot read image: resizing to " + std::to_string(S) + "x" +
                  std::to_string(S) + " failed (out of memory?)");
    src = rgb.data();
  }
  for (size_t i = 0; i < plane; ++i)
    for (int c = 0; c < 3; ++c) out[c * plane + i] = src[3 * i + c];
}

DecodeResult load_image_folder(const ImageFolderSplit& s, const DecodeOptions& o, uint8_t* images,
                               int32_t* labels) {
  const int S = o.size;
  if (S < 1) throw Error("--store-size must be positive (got " + std::to_string(S) + ")");
  const size_t image_bytes = (size_t)3 * S * S;
  const int64_t n = (int64_t)s.files.size();
  const std::string split = fsys::path(s.root).filename().string();
  DecodeResult r;
  const std::string dir = fsys::path(s.root).parent_path().string();
  // The places a cache may be, in the order they are tried (read: the first valid one; write:
  // the first that takes it): next to the dataset, then the per-user fallback.
  std::vector<std::string> caches;
  if (o.cache && !o.cache_path.empty()) caches.push_back(o.cache_path);
  if (o.cache && o.cache_path.empty()) {
    caches.push_back(default_cache_path(dir, s.split, S));
    const std::string fb = o.fallback_dir == "-" ? default_fallback_dir() : o.fallback_dir;
    if (!fb.empty()) caches.push_back(fallback_cache_path(dir, s.split, S, fb));
  }
  std::vector<std::string> errors;
  for (const std::string& c : caches)
    if (read_cache(c, s, S, images, labels, &errors)) {
      r.from_cache = true;
      r.cache_path = c;
      break;
    }
  if (!r.from_cache) {
    // Each thread takes the next file index; image i lands in slot i (in place, no locking),
    // failures are compacted away afterwards.
    errors.assign((size_t)n, "");
    std::atomic<int64_t> next{0}, done{0};
    std::atomic<bool> abort{false};
    int threads = o.threads > 0 ? o.threads : (int)std::min(16u, std::max(1u, std::thread::hardware_concurrency()));
    threads = (int)std::max<int64_t>(1, std::min<int64_t>(threads, n));
    auto work = [&] {
      for (int64_t i; !abort && (i = next++) < n;) {
        const std::string path = (fsys::path(s.root) / s.files[(size_t)i].rel).string();
        try {
          decode_image_to(path, S, images + (size_t)i * image_bytes);
          labels[i] = s.files[(size_t)i].label;
        } catch (const Error& e) {
          errors[(size_t)i] = e.what();
          if (o.strict) abort = true;
        } catch (const std::bad_alloc&) {
          errors[(size_t)i] = path + ": cannot read image: out of memory decoding it";
          if (o.strict) abort = true;
        }
        ++done;
      }
    };
    const auto t0 = std::chrono::steady_clock::now();
    printf("decoding %lld %s images from %s at %dx%d (%d threads)%s", (long long)n, split.c_str(),
           s.root.c_str(), S, S, threads, o.tty ? "" : "\n");
    fflush(stdout);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) pool.emplace_back(work);
    // Progress from this thread while the pool works: redrawn in place on a terminal, a plain
    // line every 10% otherwise.
    int64_t shown_tenth = 0;
    while (done < n && !abort) {
      std::this_thread::sleep_for(std::chrono::milliseconds(o.tty ? 200 : 50));
      const int64_t d = done;
      if (o.tty) {
        printf("\rdecoding %s images: %lld/%lld (%d%%)   ", split.c_str(), (long long)d, (long long)n,
               (int)(100 * d / n));
        fflush(stdout);
      } else if (d * 10 / n > shown_tenth && d < n) {
        shown_tenth = d * 10 / n;
        printf("decoding %s images: %lld/%lld (%lld%%)\n", split.c_str(), (long long)d, (long long)n,
               (long long)(100 * d / n));
        fflush(stdout);
      }
    }
    for (std::thread& t : pool) t.join();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (o.tty) printf("\r");
    if (o.strict)
      for (const std::string& e : errors)
        if (!e.empty()) {
          if (o.tty) printf("\n");
          fflush(stdout);
          throw Error(e + " (--strict: fix or remove the file, or drop --strict to skip it)");
        }
    // Compact: the kept images move down over the skipped ones, order preserved.
    int64_t at = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (!errors[(size_t)i].empty()) continue;
      if (at != i) {
        memmove(images + (size_t)at * image_bytes, images + (size_t)i * image_bytes, image_bytes);
        labels[at] = labels[i];
      }
      ++at;
    }
    printf("decoded %lld %s images in %.1f s%s\n", (long long)n, split.c_str(), secs,
           o.tty ? "                    " : "");
    for (size_t i = 0; i < caches.size() && r.cache_path.empty(); ++i) {
      try {
        if (i > 0) {  // the fallback directory may not exist yet
          std::error_code ec;
          fsys::create_directories(fsys::path(caches[i]).parent_path(), ec);
        }
        write_cache(caches[i], s, S, errors, images);
        r.cache_path = caches[i];
      } catch (const Error& e) {
        r.cache_warning += (r.cache_warning.empty() ? "" : "; ") + std::string(e.what());
      }
    }
    if (!r.cache_path.empty()) {
      r.cache_warning.clear();
    } else if (!caches.empty()) {
      fprintf(stderr, "vit_train: warning: %s (the next run decodes again)\n", r.cache_warning.c_str());
    }
  }
  for (const std::string& e : errors)
    if (!e.empty()) r.skipped.push_back(e);
  r.kept = n - (int64_t)r.skipped.size();
  if (o.strict && !r.skipped.empty())  // from the cache: the files are still unreadable
    throw Error(r.skipped[0] + " (--strict: fix or remove the file, or drop --strict to skip it)");
  // Every skipped image by name (so the user can find it), then the count.
  for (const std::string& e : r.skipped) fprintf(stderr, "vit_train: warning: skipped %s\n", e.c_str());
  if (!r.skipped.empty())
    fprintf(stderr, "vit_train: warning: skipped %zu unreadable of %lld %s images (--strict refuses them)\n",
            r.skipped.size(), (long long)n, split.c_str());
  if (r.kept == 0)
    throw Error("no readable image in '" + s.root + "' (" + std::to_string(n) + " unreadable)");
  if (r.from_cache)
    printf("%s: %lld images at %dx%d from the cache %s\n", split.c_str(), (long long)r.kept, S, S,
           r.cache_path.c_str());
  fflush(stdout);
  fflush(stderr);
  return r;
}

}  // namespace vit
