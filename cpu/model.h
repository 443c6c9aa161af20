// cpu/model.h — the whole ViT on the CPU: RefModel<T> (float or double) runs forward and backward
// on already preprocessed input, with the parameters and gradients as flat arrays in ParamLayout
// order; CpuModel is the vit::Model of `--device cpu` built on RefModel<float>.
//
//   x (B, 3, S, S) -> patch_embed (+cls, +pos) -> dropout(SITE_EMBED_DROPOUT) -> res[0] (B, T, C)
//   block l:  mid      = res[l] + dropout_{l,1}(proj(attention_{l,0}(qkv(ln1(res[l])))))
//             res[l+1] = mid    + dropout_{l,2}(fc2(gelu(fc1(ln2(mid)))))
//   cls = res[L][:, 0]  (B, C) -> final LN (if config.final_ln) -> head -> logits (B, K)
//   loss = mean over images of the label-smoothed cross-entropy
// Dropout sites are layer_site(l, k) of common/philox.h (k = 0 attention probabilities, 1 after
// the output projection, 2 after fc2, both before the residual add) at the forward's step;
// train=false turns every dropout off. Final LN and head only run on the CLS rows: the other
// tokens' outputs never reach the loss. All activations of the forward are kept for backward
// (except the GELU output, recomputed: it is cheap and as large as fc1's).
#pragma once
#include <cstdint>
#include <vector>

#include "common/config.h"
#include "common/model.h"
#include "common/params.h"

namespace vit::ref {

template <class T>
class RefModel {
 public:
  // Buffers are allocated for max_batch images up front; a larger B grows them.
  RefModel(const Config& c, int max_batch, uint64_t seed, float label_smoothing = 0.0f);

  // x (B, 3, image_size, image_size), labels (B) or nullptr (no loss), params (layout().total).
  // Returns the mean loss (0 without labels); keeps logits, per-image losses and activations.
  T forward(const T* x, const int32_t* labels, int B, bool train, uint64_t step, const T* params);
  // After forward with labels: grads (layout().total) += d(loss)/d(params); dx (B, 3, S, S) =
  // d(loss)/d(x) when not nullptr. params must be the ones the forward used.
  void backward(const T* params, T* grads, T* dx = nullptr);

  const T* logits() const { return logits_.data(); }  // (B, K) of the last forward
  const T* losses() const { return losses_.data(); }  // (B)
  // (B, NH, T, T) attention probabilities of layer l in the last forward, before dropout.
  const T* probs(int l) const { return probs_[l].data(); }
  int batch() const { return B_; }
  const Config& config() const { return c_; }
  const ParamLayout& layout() const { return l_; }
  void set_label_smoothing(float s) { smoothing_ = s; }

 private:
  void ensure(int B);
  Config c_;
  ParamLayout l_;
  uint64_t seed_;
  float smoothing_;
  int cap_ = 0, B_ = 0;
  bool train_ = false, have_labels_ = false;
  uint64_t step_ = 0;
  // activations (per layer unless said)
  std::vector<T> x_;                        // (B, 3, S, S) copy of the input
  std::vector<std::vector<T>> res_;         // L+1 x (B, T, C) residual stream
  std::vector<std::vector<T>> ln1_, ln2_;   // L x (B, T, C) LayerNorm outputs
  std::vector<std::vector<T>> ln1_mean_, ln1_rstd_, ln2_mean_, ln2_rstd_;  // L x (B*T)
  std::vector<std::vector<T>> qkv_;         // L x (B, T, 3C)
  std::vector<std::vector<T>> probs_;       // L x (B, NH, T, T) softmax before dropout
  std::vector<std::vector<T>> att_;         // L x (B, T, C) attention output before proj
  std::vector<std::vector<T>> mid_;         // L x (B, T, C) stream after the attention residual
  std::vector<std::vector<T>> fc1_;         // L x (B, T, M) before GELU
  std::vector<T> gelu_;                     // (B, T, M) shared, recomputed in backward
  std::vector<T> gslope_;                   // (B, T, M) gelu'(fc1) of the layer in backward
  std::vector<T> cls_, clsn_, lnf_mean_, lnf_rstd_;  // (B, C) CLS rows, after final LN; (B)
  std::vector<T> logits_, xprobs_, losses_;          // (B, K), (B, K), (B)
  std::vector<int32_t> labels_;                      // (B)
  // backward workspace
  std::vector<T> dres_, dtmp_, dtmp2_;  // (B, T, C)
  std::vector<T> dqkv_;                 // (B, T, 3C)
  std::vector<T> dmlp_;                 // (B, T, M)
  std::vector<T> dlogits_, dcls_, dcls2_;  // (B, K), (B, C), (B, C)
};

}  // namespace vit::ref
