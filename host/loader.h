// host/loader.h — the data loader: a whole dataset split in (pinned) host memory, and a
// background thread that gathers the next batch of the epoch's shuffled order into a staging
// buffer while the model works on the current one.
//
// Double-buffered: batch i lives in staging slot i % 2. next() hands out batch i and, in the
// same call, gives slot (i-1) % 2 back to the prefetch thread, which then gathers batch i+1
// into it. So the pointers next() returns stay valid (and unchanged) until the following
// next() or start_epoch(): the caller must be done with them by then, including any
// cudaMemcpyAsync reading them (the trainer reads the loss back every step, which waits for
// the step and hence for its input copy).
//
// The order of an epoch is a pure function of (seed, epoch): a Fisher-Yates shuffle whose
// i-th swap draws philox_u32(seed, SITE_SHUFFLE, epoch, i). A run resumed at (epoch, batch)
// therefore sees exactly the batches the uninterrupted run would have.
//
// The split is any `--data` format (common/dataset.h): CIFAR-10 / CIFAR-100 records, or an
// image folder decoded once (or read from its cache) to S x S, S = DataOptions::store_size.
// Either way an image is (3, S, S) uint8 planar, S = image_size() (32 for CIFAR).
//
// With pinned=true the split and the staging buffers come from cudaMallocHost (page-locked:
// the CUDA model's async copies from them overlap compute); under simt that is plain memory.
// With pinned=false (the CPU reference) no CUDA call is made at all.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/cifar.h"
#include "common/dataset.h"

namespace vit {

// How an image folder is loaded (ignored for CIFAR, whose images are 32 x 32 as stored).
struct DataOptions {
  int store_size = 32;    // S: images are resized to S x S once, at load
  bool strict = false;    // an unreadable image is an error, not skipped
  bool tty = false;       // decoding progress redrawn in place
  bool cache = true;      // reuse / write DIR/.vitcache-<split>-<S>.bin
  int threads = 0;        // decoding threads (0: one per core, at most 16)
};

// The permutation of [0, n) for (seed, epoch) described above.
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch);

struct Batch {
  const uint8_t* images = nullptr;  // (count, 3, S, S) uint8, in the staging buffer
  const int32_t* labels = nullptr;  // (count)
  int count = 0;                    // 0: the epoch is over
  int64_t index = 0;                // batch number within the epoch
};

class Loader {
 public:
  // Reads the split from `dir` (throws vit::Error on bad data, see common/cifar.h and
  // common/image_folder.h; an image folder must have exactly `classes` class folders).
  // max_batch: the largest batch start_epoch() will be asked for (sizes the staging buffers).
  Loader(const std::string& dir, Split split, int classes, int max_batch, uint64_t seed,
         bool pinned, const DataOptions& data = DataOptions());
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  int64_t size() const { return n_; }
  int64_t batches(int batch) const { return (n_ + batch - 1) / batch; }  // the last may be partial
  const uint8_t* images() const { return images_; }  // the whole split (size(), 3, S, S)
  const int32_t* labels() const { return labels_; }
  DataFormat format() const { return format_; }
  int image_size() const { return S_; }                                  // S
  size_t image_bytes() const { return (size_t)3 * S_ * S_; }             // per image
  int64_t skipped() const { return skipped_; }  // unreadable images left out (image folders)
  bool from_cache() const { return from_cache_; }

  // Starts an epoch of batches of `batch` images in the order epoch_order(size, seed, epoch)
  // (shuffle) or 0..size-1 (no shuffle), beginning with batch number `start_batch`.
  void start_epoch(int64_t epoch, int batch, bool shuffle, int64_t start_batch = 0);
  // The next batch of the epoch; count == 0 once every batch has been handed out.
  Batch next();

 private:
  enum class State { Empty, Filling, Ready, Held };
  struct Slot {
    uint8_t* images = nullptr;  // (max_batch, 3, S, S)
    int32_t* labels = nullptr;  // (max_batch)
    State state = State::Empty;
    int count = 0;
  };

  void run();  // the prefetch thread
  void gather(int64_t b, Slot& s);
  void* alloc(size_t bytes);
  void release(void* p);

  int64_t n_ = 0;
  DataFormat format_ = DataFormat::Cifar10;
  int S_ = CIFAR_IMAGE_SIZE;
  int64_t skipped_ = 0;
  bool from_cache_ = false;
  int max_batch_;
  uint64_t seed_;
  bool pinned_;
  uint8_t* images_ = nullptr;  // (n, 3, S, S)
  int32_t* labels_ = nullptr;  // (n)

  std::mutex mu_;
  std::condition_variable cv_;
  Slot slots_[2];
  std::vector<int64_t> order_;  // this epoch's order (identity when not shuffled)
  int batch_ = 1;
  int64_t n_batches_ = 0, next_fill_ = 0, next_take_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace vit
