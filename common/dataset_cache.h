// common/dataset_cache.h — the decoded-image cache of an image-folder split, so a second run
// skips decoding (JPEG decoding of a large folder takes minutes; reading the cache is a copy).
//
// File layout (little-endian):
//   "VITCACHE"  8 bytes magic
//   u32         format version (1)
//   u64         header length H
//   H bytes     JSON header: {"size": S, "files": [[rel, bytes, mtime_ns, label, error], ...]}
//               every file of the split in scan order; error "" for a decoded image, else the
//               reason it was unreadable (so a skip is reported again without re-reading)
//   pixels      (kept, 3, S, S) uint8: the decoded images, in file order
// The cache is valid only when the header's size and file list (names, sizes, modification
// times, labels) equal the current scan and the file has exactly the pixel bytes promised:
// anything else (a file added, removed, touched or resized; another --store-size; a truncated
// cache) means decode again and rewrite it. The cache lives next to the dataset (DIR), or, when
// DIR cannot be written, in a per-user cache directory (fallback_cache_path). Written to a temporary file and renamed, so a crash
// never leaves a half-written cache that looks valid.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/image_folder.h"

namespace vit {

// DIR/.vitcache-<train|val>-<S>.bin
std::string default_cache_path(const std::string& dir, Split s, int size);
// Where the cache goes when DIR cannot take it (a read-only dataset):
// <fallback_dir>/vitcache-<hash of DIR's absolute path>-<train|val>-<S>.bin.
std::string fallback_cache_path(const std::string& dir, Split s, int size,
                                const std::string& fallback_dir);
// $VIT_CACHE_DIR, else $XDG_CACHE_HOME/vit.cu, else $HOME/.cache/vit.cu ("" without any).
std::string default_fallback_dir();

// Reads a valid cache of `s` at stored size `size`: pixels into images, labels of the kept
// images into labels, the error text of every file into *errors (files.size() entries, ""
// for kept ones). Returns false, touching nothing the caller keeps, when the cache is absent,
// unreadable or stale (never throws for those: the caller decodes instead).
bool read_cache(const std::string& path, const ImageFolderSplit& s, int size, uint8_t* images,
                int32_t* labels, std::vector<std::string>* errors);

// Writes the cache: errors[i] is "" when file i was decoded; images holds the kept ones in file
// order. Throws vit::Error naming the path when it cannot be written (the caller warns and
// goes on: the cache is an optimisation).
void write_cache(const std::string& path, const ImageFolderSplit& s, int size,
                 const std::vector<std::string>& errors, const uint8_t* images);

}  // namespace vit
