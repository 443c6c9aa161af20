// fuzz/fuzz_util.h — shared by the libFuzzer targets in fuzz/ (built by `make fuzz`, see
// docs/reliability.md).
//
// The readers under test take a path (they stat, seek and read like they do on real files), so
// each input is handed over as a file. An in-memory file (memfd) reached through
// /proc/self/fd/N is a regular file to stat/fopen, costs no disk I/O and is rewritten in place
// per input, so a run of millions of inputs leaves nothing behind.
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace vit_fuzz {

class MemFile {
 public:
  explicit MemFile(const char* name) {
    fd_ = memfd_create(name, 0);
    if (fd_ < 0) { perror("memfd_create"); abort(); }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  // The file's whole content becomes data[0..n).
  const std::string& set(const uint8_t* data, size_t n) {
    if (ftruncate(fd_, 0) != 0) { perror("ftruncate"); abort(); }
    size_t done = 0;
    while (done < n) {
      ssize_t w = pwrite(fd_, data + done, n - done, (off_t)done);
      if (w <= 0) { perror("pwrite"); abort(); }
      done += (size_t)w;
    }
    return path_;
  }
  const std::string& path() const { return path_; }

 private:
  int fd_;
  std::string path_;
};

}  // namespace vit_fuzz
