// tests/cuda_buffer.h — a device buffer for CUDA tests: cudaMalloc'd on construction, freed on
// destruction, with upload/download to/from std::vector. Works under simt (where fresh device
// memory is NaN-filled: initialise what a kernel reads) and on a GPU.
#pragma once
#include <gtest/gtest.h>

#include <cstddef>
#include <cstring>
#include <vector>

#include "kernels/common.cuh"

namespace vit_test {

template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;

  DeviceBuffer() = default;
  // n elements, contents left as cudaMalloc gives them (NaN bytes under simt).
  explicit DeviceBuffer(size_t count) : n(count) {
    if (n) CUDA_CHECK(cudaMalloc((void**)&ptr, n * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& v) : DeviceBuffer(v.size()) { upload(v); }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr(o.ptr), n(o.n) { o.ptr = nullptr; o.n = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      if (ptr) cudaFree(ptr);
      ptr = o.ptr; n = o.n;
      o.ptr = nullptr; o.n = 0;
    }
    return *this;
  }

  // Copies v (v.size() <= n) to the start of the buffer.
  void upload(const std::vector<T>& v) {
    if (v.size() > n) ADD_FAILURE() << "DeviceBuffer::upload: " << v.size() << " > " << n;
    if (!v.empty()) CUDA_CHECK(cudaMemcpy(ptr, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  // The whole buffer (synchronises: cudaMemcpy waits for the kernels before it).
  std::vector<T> download() const {
    std::vector<T> v(n);
    if (n) CUDA_CHECK(cudaMemcpy(v.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
  void zero() {
    if (n) CUDA_CHECK(cudaMemset(ptr, 0, n * sizeof(T)));
  }
  T* get() const { return ptr; }
  operator T*() const { return ptr; }
};

// Bitwise equality of two float arrays (determinism checks); reports the first difference.
template <class T>
::testing::AssertionResult bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "size " << a.size() << " vs " << b.size();
  for (size_t i = 0; i < a.size(); ++i)
    if (memcmp(&a[i], &b[i], sizeof(T)) != 0)
      return ::testing::AssertionFailure() << "first difference at [" << i << "]: " << a[i]
                                           << " vs " << b[i];
  return ::testing::AssertionSuccess();
}

}  // namespace vit_test
