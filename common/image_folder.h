// common/image_folder.h — image-folder datasets, torchvision's ImageFolder convention:
//   DIR/train/<class>/**.{jpg,jpeg,png,bmp}    (case-insensitive extensions; other files ignored)
//   DIR/val/<class>/**                          (the test split)
// The classes are the sorted names of the folders under DIR/train (names starting with '.' are
// skipped), class index = position in that order; val may lack a class but not add one. Files
// are taken in sorted relative-path order, so the index of an image is a pure function of the
// tree (the loader's Philox order then depends only on the seed).
//
// Loading a split decodes every file once with stb_image (common/image.h: grey and RGBA become
// RGB) on a pool of std::threads, resizes it to S x S (S = the stored size: the model's image
// size, or --store-size for random-resized-crop headroom; aspect ratio not kept, as
// torchvision's Resize((S, S)); stb_image_resize's filters, which average when shrinking, so a
// large photo does not alias) and stores it as (3, S, S) uint8 planar, exactly a CIFAR record
// without its label: the loader and the input kernel treat both alike. The result is cached
// (common/dataset_cache.h) so a second run skips the decoding. An unreadable image is named and
// skipped (its count reported), or, with strict, a vit::Error.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/cifar.h"  // Split

namespace vit {

// DIR/train is a directory (the one thing that tells an image folder from a CIFAR directory).
bool is_image_folder(const std::string& dir);
// The sorted class folder names of DIR/train. Throws vit::Error when there are none.
std::vector<std::string> image_folder_classes(const std::string& dir);
// "train" | "val": the folder of a split.
const char* image_folder_split_dir(Split s);

struct ImageFile {
  std::string rel;       // path relative to the split folder: "<class>/<name>"
  int32_t label = 0;     // class index
  int64_t bytes = 0;     // size and modification time (ns since the epoch): the cache key
  int64_t mtime_ns = 0;
};

struct ImageFolderSplit {
  Split split = Split::Train;
  std::string root;                  // DIR/train | DIR/val
  std::vector<std::string> classes;  // of DIR/train, in index order
  std::vector<ImageFile> files;      // sorted by rel
};

// Lists a split. Throws vit::Error (one line) when the split folder is missing, a train class
// folder has no image, a val folder is not a train class, or the split has no image at all.
ImageFolderSplit scan_image_folder(const std::string& dir, Split s);

// One image file -> (3, S, S) uint8 planar at `out`. Throws vit::Error "FILE: cannot read
// image: ..." (common/image.h).
void decode_image_to(const std::string& path, int S, uint8_t* out);

struct DecodeOptions {
  int size = 32;           // S, the stored size
  bool strict = false;     // an unreadable image is an error instead of skipped
  int threads = 0;         // decoding threads; 0 = one per core (at most 16)
  bool tty = false;        // progress redrawn in place (else a plain line every 10%)
  bool cache = true;       // read / write the cache file
  std::string cache_path;  // "" = default_cache_path(dir, split, size), and when that cannot
                           // be written, fallback_cache_path(..., fallback_dir)
  std::string fallback_dir = "-";  // "-" = default_fallback_dir(); "" = no fallback
};

struct DecodeResult {
  int64_t kept = 0;                  // images written (the readable ones, in file order)
  std::vector<std::string> skipped;  // "FILE: reason" of each unreadable image
  bool from_cache = false;
  std::string cache_path;            // the cache used or written ("" when none)
  std::string cache_warning;         // why no cache could be written ("" when one was)
};

// Decodes (or reads from the cache) every file of `s` into images ((files, 3, S, S) uint8,
// room for all of them) and labels (files); the kept images come first, in file order.
// Progress goes to stdout, one line per skipped image to stderr.
DecodeResult load_image_folder(const ImageFolderSplit& s, const DecodeOptions& o, uint8_t* images,
                               int32_t* labels);

}  // namespace vit
