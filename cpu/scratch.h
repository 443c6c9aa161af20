// cpu/scratch.h — when the reference's loops go parallel, and per-thread workspace that grows
// and is then reused, so the ops need no workspace argument and allocate nothing once the
// largest batch has run.
#pragma once
#include <cstddef>
#include <vector>

namespace vit::ref {

// OpenMP loops run in parallel only from this much work (elements touched) up: below it the
// fork/join costs more than the loop, and on a loaded machine (threads descheduled at every
// barrier) far more. Loops doing more per element scale the work they compare.
constexpr size_t kParallelMin = 1 << 17;

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
