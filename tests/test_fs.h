// tests/test_fs.h — small file-system helpers for tests that write files: a temporary
// directory removed with everything in it at the end of the test, whole-file read/write, and
// a sorted directory listing (to check no temporary file was left behind).
// VIT_KEEP_TMP=1 keeps the temporary directories, to look at what a test wrote.
#pragma once
#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace vit_test {
// A namespace of its own: tests/toy_cifar.h has a different vit_test::TempDir, and two inline
// classes of one name would silently merge at link time.
namespace fs {

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw std::runtime_error("cannot write " + path);
  f.write(bytes.data(), (std::streamsize)bytes.size());
}

inline std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// tests/fixtures/<name>: relative to the repository root (where make test runs the binaries),
// or under $VIT_FIXTURES when set.
inline std::string fixture(const std::string& name) {
  const char* d = getenv("VIT_FIXTURES");
  if (d && *d) return std::string(d) + "/" + name;
  std::string here = __FILE__;  // tests/test_fs.h, as the compiler was given it
  size_t slash = here.find_last_of('/');
  return (slash == std::string::npos ? std::string("tests") : here.substr(0, slash)) + "/fixtures/" + name;
}

class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/vit_test.XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
    dir_ = buf.data();
  }
  ~TempDir() { if (!getenv("VIT_KEEP_TMP")) remove_all(dir_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

 private:
  static void remove_all(const std::string& p) {
    for (const auto& n : list_dir(p)) {
      std::string c = p + "/" + n;
      if (DIR* d = opendir(c.c_str())) {
        closedir(d);
        remove_all(c);
      } else {
        unlink(c.c_str());
      }
    }
    rmdir(p.c_str());
  }
  std::string dir_;
};

}  // namespace fs
}  // namespace vit_test
