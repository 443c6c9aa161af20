// cpu/scratch.h — per-thread workspace that grows and is then reused, so the ops of the
// reference need no workspace argument and allocate nothing once the largest batch has run.
#pragma once
#include <cstddef>
#include <vector>

namespace vit::ref {

// A buffer of at least n elements, private to the calling thread (OpenMP threads included).
// `slot` tells apart buffers one op needs at the same time. Contents are unspecified.
template <class T>
T* scratch(size_t n, int slot = 0) {
  thread_local std::vector<T> bufs[4];
  std::vector<T>& b = bufs[slot];
  if (b.size() < n) b.resize(n);
  return b.data();
}

}  // namespace vit::ref
