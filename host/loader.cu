// host/loader.cu — see loader.h. Compiled by nvcc for vit_train and by g++ against simt for the
// tests (cudaMallocHost is then plain memory).
#include "host/loader.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "common/image_folder.h"
#include "common/philox.h"
#include "kernels/common.cuh"

namespace vit {

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    // j uniform in [0, i] by a 32x32->64-bit multiply (bias < (i+1)/2^32: negligible here).
    uint64_t r = philox_u32(seed, SITE_SHUFFLE, (uint64_t)epoch, (uint64_t)i);
    int64_t j = (int64_t)((r * (uint64_t)(i + 1)) >> 32);
    std::swap(order[i], order[j]);
  }
  return order;
}

void* Loader::alloc(size_t bytes) {
  if (bytes == 0) bytes = 1;
  void* p = nullptr;
  if (pinned_) {
    cudaError_t e = cudaMallocHost(&p, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();
      char mib[32];
      snprintf(mib, sizeof mib, "%.1f", bytes / 1048576.0);
      throw Error(std::string("cannot allocate ") + mib +
                  " MiB of pinned host memory for the dataset: " + cudaGetErrorString(e) +
                  " (use --device cpu without a GPU)");
    }
  } else {
    p = std::malloc(bytes);
    if (!p) throw Error("out of host memory allocating " + std::to_string(bytes >> 20) + " MiB");
  }
  return p;
}

void Loader::release(void* p) {
  if (!p) return;
  if (pinned_) cudaFreeHost(p);
  else std::free(p);
}

Loader::Loader(const std::string& dir, Split split, int classes, int max_batch, uint64_t seed,
               bool pinned, const DataOptions& data)
    : max_batch_(max_batch), seed_(seed), pinned_(pinned) {
  if (max_batch <= 0) throw Error("batch size must be positive");
  // Both kinds are probed first (files listed, sizes checked) so the pinned allocation below is
  // sized once and the pixels are read straight into it.
  const bool folder = is_image_folder(dir);
  SplitFiles f;
  ImageFolderSplit fs;
  if (folder) {
    format_ = DataFormat::ImageFolder;
    fs = scan_image_folder(dir, split);
    if ((int)fs.classes.size() != classes)
      throw Error("'" + dir + "/train' has " + std::to_string(fs.classes.size()) +
                  " class folders but the model has " + std::to_string(classes) + " classes");
    S_ = data.store_size;
    if (S_ < 1) throw Error("--store-size must be positive (got " + std::to_string(S_) + ")");
    n_ = (int64_t)fs.files.size();  // before skips: room for every file
  } else {
    f = probe_split(dir, split);
    format_ = f.label_byte == 1 ? DataFormat::Cifar100 : DataFormat::Cifar10;
    n_ = f.total;
  }
  try {
    images_ = (uint8_t*)alloc((size_t)n_ * image_bytes());
    labels_ = (int32_t*)alloc((size_t)n_ * sizeof(int32_t));
    if (folder) {
      DecodeOptions o;
      o.size = S_;
      o.strict = data.strict;
      o.tty = data.tty;
      o.cache = data.cache;
      o.threads = data.threads;
      DecodeResult r = load_image_folder(fs, o, images_, labels_);
      skipped_ = n_ - r.kept;
      from_cache_ = r.from_cache;
      n_ = r.kept;  // the tail of the allocation (skipped images' room) stays unused
    } else {
      read_split(f, classes, images_, labels_);
    }
    for (Slot& s : slots_) {
      s.images = (uint8_t*)alloc((size_t)max_batch * image_bytes());
      s.labels = (int32_t*)alloc((size_t)max_batch * sizeof(int32_t));
    }
  } catch (...) {
    release(images_);
    release(labels_);
    for (Slot& s : slots_) { release(s.images); release(s.labels); }
    throw;
  }
  thread_ = std::thread(&Loader::run, this);
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  release(images_);
  release(labels_);
  for (Slot& s : slots_) { release(s.images); release(s.labels); }
}

void Loader::start_epoch(int64_t epoch, int batch, bool shuffle, int64_t start_batch) {
  if (batch <= 0 || batch > max_batch_)
    throw Error("loader: batch " + std::to_string(batch) + " outside 1.." +
                std::to_string(max_batch_));
  std::vector<int64_t> order;
  if (shuffle) {
    order = epoch_order(n_, seed_, epoch);
  } else {
    order.resize(n_);
    for (int64_t i = 0; i < n_; ++i) order[i] = i;
  }
  std::unique_lock<std::mutex> lk(mu_);
  // A gather in flight writes into its slot: let it finish before the slots are reset.
  cv_.wait(lk, [&] { return slots_[0].state != State::Filling && slots_[1].state != State::Filling; });
  for (Slot& s : slots_) s.state = State::Empty;
  order_.swap(order);
  batch_ = batch;
  n_batches_ = batches(batch);
  next_fill_ = next_take_ = start_batch < 0 ? 0 : start_batch;
  lk.unlock();
  cv_.notify_all();
}

Batch Loader::next() {
  std::unique_lock<std::mutex> lk(mu_);
  for (Slot& s : slots_)
    if (s.state == State::Held) s.state = State::Empty;
  cv_.notify_all();
  Batch b;
  if (next_take_ >= n_batches_) return b;
  Slot& s = slots_[next_take_ % 2];
  cv_.wait(lk, [&] { return s.state == State::Ready; });
  s.state = State::Held;
  b.images = s.images;
  b.labels = s.labels;
  b.count = s.count;
  b.index = next_take_++;
  return b;
}

void Loader::gather(int64_t b, Slot& s) {
  int64_t begin = b * batch_, end = std::min(begin + batch_, n_);
  for (int64_t i = begin; i < end; ++i) {
    int64_t src = order_[i];
    memcpy(s.images + (size_t)(i - begin) * image_bytes(), images_ + (size_t)src * image_bytes(),
           image_bytes());
    s.labels[i - begin] = labels_[src];
  }
  s.count = (int)(end - begin);
}

void Loader::run() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] {
      return stop_ || (next_fill_ < n_batches_ && slots_[next_fill_ % 2].state == State::Empty);
    });
    if (stop_) return;
    int64_t b = next_fill_++;
    Slot& s = slots_[b % 2];
    s.state = State::Filling;
    // order_ and batch_ only change in start_epoch, which waits for this gather to finish.
    lk.unlock();
    gather(b, s);
    lk.lock();
    s.state = State::Ready;
    cv_.notify_all();
  }
}

}  // namespace vit
