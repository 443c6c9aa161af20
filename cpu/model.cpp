#include "cpu/model.h"
#include "cpu/scratch.h"

#include <omp.h>

#include <algorithm>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/error.h"
#include "common/philox.h"
#include "cpu/attention.h"
#include "cpu/dropout.h"
#include "cpu/gelu.h"
#include "cpu/input.h"
#include "cpu/layernorm.h"
#include "cpu/linear.h"
#include "cpu/loss.h"
#include "cpu/optim.h"
#include "cpu/patch_embed.h"

namespace vit::ref {

// Threads for the next step: OMP_NUM_THREADS (or the CPU count) at most, fewer when other work
// keeps the CPUs busy. On a 2-core machine shared with other jobs, a fixed 2 threads spent most
// of a step spinning at barriers for a descheduled thread: 5-10x slower than one thread.
// "Other work" is the 1-minute load average minus the threads this process ran with (they count
// in it too); libgomp's own OMP_DYNAMIC uses the 15-minute average, which lags by many minutes
// and halves the speed long after the machine has become free. The model's results do not
// depend on the thread count (every reduction is split by the data, see cpu/blas.h), so this
// changes speed only. OMP_DYNAMIC set in the environment turns this off (the user decides).
static void pick_threads() {
  static const int cap = omp_get_max_threads();
  static const bool user_decides = std::getenv("OMP_DYNAMIC") != nullptr;
  static int used = cap;
  if (cap <= 1 || user_decides) return;
  double load;
  if (getloadavg(&load, 1) != 1) return;
  const double others = load - used;
  int nt = omp_get_num_procs() - (int)(others + 0.5);
  nt = nt < 1 ? 1 : nt > cap ? cap : nt;
  if (nt != used) omp_set_num_threads(nt);
  used = nt;
}

template <class T>
RefModel<T>::RefModel(const Config& c, int max_batch, uint64_t seed, float label_smoothing)
    : c_(c), l_(c), seed_(seed), smoothing_(label_smoothing) {
  validate(c);
  ensure(std::max(max_batch, 1));
}

template <class T>
void RefModel<T>::ensure(int B) {
  if (B <= cap_) return;
  cap_ = B;
  const size_t L = c_.layers, Tn = c_.tokens(), C = c_.hidden, M = c_.mlp, NH = c_.heads,
               K = c_.classes, S = c_.image_size, BT = (size_t)B * Tn;
  auto sized = [](std::vector<std::vector<T>>& v, size_t n, size_t each) {
    v.resize(n);
    for (auto& x : v) x.resize(each);
  };
  x_.resize((size_t)B * c_.channels * S * S);
  sized(res_, L + 1, BT * C);
  sized(ln1_, L, BT * C);
  sized(ln2_, L, BT * C);
  sized(ln1_mean_, L, BT);
  sized(ln1_rstd_, L, BT);
  sized(ln2_mean_, L, BT);
  sized(ln2_rstd_, L, BT);
  sized(qkv_, L, BT * 3 * C);
  sized(probs_, L, (size_t)B * NH * Tn * Tn);
  sized(att_, L, BT * C);
  sized(mid_, L, BT * C);
  sized(fc1_, L, BT * M);
  gelu_.resize(BT * M);
  gslope_.resize(BT * M);
  cls_.resize((size_t)B * C);
  clsn_.resize((size_t)B * C);
  lnf_mean_.resize(B);
  lnf_rstd_.resize(B);
  logits_.resize((size_t)B * K);
  xprobs_.resize((size_t)B * K);
  losses_.resize(B);
  labels_.resize(B);
  dres_.resize(BT * C);
  dtmp_.resize(BT * C);
  dtmp2_.resize(BT * C);
  dqkv_.resize(BT * 3 * C);
  dmlp_.resize(BT * M);
  dlogits_.resize((size_t)B * K);
  dcls_.resize((size_t)B * C);
  dcls2_.resize((size_t)B * C);
}

// a += b, n elements
template <class T>
static void add_inplace(T* a, const T* b, size_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (size_t i = 0; i < n; ++i) a[i] += b[i];
}

// a *= b, n elements
template <class T>
static void mul_inplace(T* a, const T* b, size_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (size_t i = 0; i < n; ++i) a[i] *= b[i];
}

template <class T>
T RefModel<T>::forward(const T* x, const int32_t* labels, int B, bool train, uint64_t step,
                       const T* P) {
  ensure(B);
  pick_threads();
  B_ = B;
  train_ = train;
  step_ = step;
  have_labels_ = labels != nullptr;
  const int L = c_.layers, Tn = c_.tokens(), C = c_.hidden, M = c_.mlp, NH = c_.heads,
            K = c_.classes, S = c_.image_size, BT = B * Tn;
  const size_t n = (size_t)BT * C;
  const float ph = train ? c_.dropout : 0.0f, pa = train ? c_.attn_dropout : 0.0f;
  const double eps = c_.ln_eps;
  std::copy(x, x + (size_t)B * c_.channels * S * S, x_.data());

  T* h = res_[0].data();  // (B, T, C)
  patch_embed_forward(x, P + l_.patch_w, P + l_.patch_b, P + l_.cls, P + l_.pos, h, B,
                      c_.channels, S, c_.patch_size, C);
  dropout_forward(h, h, n, ph, seed_, SITE_EMBED_DROPOUT, step);

  T* tmp = dtmp_.data();  // (B, T, C) branch output before the residual add
  for (int l = 0; l < L; ++l) {
    const ParamLayout::Block& pb = l_.blocks[l];
    const T* xin = res_[l].data();
    T* mid = mid_[l].data();
    T* out = res_[l + 1].data();
    layernorm_forward(xin, P + pb.ln1_w, P + pb.ln1_b, ln1_[l].data(), ln1_mean_[l].data(),
                      ln1_rstd_[l].data(), BT, C, eps);
    linear_forward(ln1_[l].data(), P + pb.qkv_w,
                   pb.qkv_b == ParamLayout::NONE ? (const T*)nullptr : P + pb.qkv_b,
                   qkv_[l].data(), BT, C, 3 * C);
    attention_forward(qkv_[l].data(), att_[l].data(), probs_[l].data(), B, Tn, C, NH, pa, seed_,
                      layer_site(l, 0), step);
    linear_forward(att_[l].data(), P + pb.proj_w, P + pb.proj_b, tmp, BT, C, C);
    dropout_forward(tmp, tmp, n, ph, seed_, layer_site(l, 1), step);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (size_t i = 0; i < n; ++i) mid[i] = xin[i] + tmp[i];

    layernorm_forward(mid, P + pb.ln2_w, P + pb.ln2_b, ln2_[l].data(), ln2_mean_[l].data(),
                      ln2_rstd_[l].data(), BT, C, eps);
    linear_forward(ln2_[l].data(), P + pb.fc1_w, P + pb.fc1_b, fc1_[l].data(), BT, C, M);
    gelu_forward(fc1_[l].data(), gelu_.data(), (size_t)BT * M, c_.gelu);
    linear_forward(gelu_.data(), P + pb.fc2_w, P + pb.fc2_b, tmp, BT, M, C);
    dropout_forward(tmp, tmp, n, ph, seed_, layer_site(l, 2), step);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (size_t i = 0; i < n; ++i) out[i] = mid[i] + tmp[i];
  }

  // Only the CLS rows go on.
  const T* last = res_[L].data();
  for (int b = 0; b < B; ++b)
    std::copy(last + (size_t)b * Tn * C, last + (size_t)b * Tn * C + C, cls_.data() + (size_t)b * C);
  const T* feat = cls_.data();
  if (c_.final_ln) {
    layernorm_forward(cls_.data(), P + l_.lnf_w, P + l_.lnf_b, clsn_.data(), lnf_mean_.data(),
                      lnf_rstd_.data(), B, C, eps);
    feat = clsn_.data();
  }
  linear_forward(feat, P + l_.head_w, P + l_.head_b, logits_.data(), B, C, K);
  if (!labels) return T(0);
  std::copy(labels, labels + B, labels_.data());
  return xent_forward(logits_.data(), labels, losses_.data(), xprobs_.data(), B, K, smoothing_);
}

template <class T>
void RefModel<T>::backward(const T* P, T* G, T* dx) {
  if (!have_labels_) throw Error("RefModel::backward needs a forward with labels first");
  const int B = B_, L = c_.layers, Tn = c_.tokens(), C = c_.hidden, M = c_.mlp, NH = c_.heads,
            K = c_.classes, S = c_.image_size, BT = B * Tn;
  const size_t n = (size_t)BT * C;
  const float ph = train_ ? c_.dropout : 0.0f, pa = train_ ? c_.attn_dropout : 0.0f;
  const uint64_t step = step_;

  xent_backward(xprobs_.data(), labels_.data(), dlogits_.data(), B, K, smoothing_, T(1) / (T)B);
  const T* feat = c_.final_ln ? clsn_.data() : cls_.data();
  linear_backward(dlogits_.data(), feat, P + l_.head_w, dcls_.data(), G + l_.head_w,
                  G + l_.head_b, B, C, K);
  const T* dcls = dcls_.data();
  if (c_.final_ln) {
    layernorm_backward(dcls_.data(), cls_.data(), P + l_.lnf_w, lnf_mean_.data(),
                       lnf_rstd_.data(), dcls2_.data(), G + l_.lnf_w, G + l_.lnf_b, B, C);
    dcls = dcls2_.data();
  }
  T* dres = dres_.data();  // (B, T, C) d(loss)/d(residual stream), written then accumulated
  std::fill(dres, dres + n, T(0));
  for (int b = 0; b < B; ++b)
    std::copy(dcls + (size_t)b * C, dcls + (size_t)b * C + C, dres + (size_t)b * Tn * C);

  T* dtmp = dtmp_.data();
  T* dtmp2 = dtmp2_.data();
  for (int l = L - 1; l >= 0; --l) {
    const ParamLayout::Block& pb = l_.blocks[l];
    // res[l+1] = mid + drop(fc2(gelu(fc1(ln2(mid)))))
    dropout_backward(dres, dtmp, n, ph, seed_, layer_site(l, 2), step);
    // GELU output (for fc2's weight gradient) and slope recomputed from fc1 in one pass
    gelu_forward_slope(fc1_[l].data(), gelu_.data(), gslope_.data(), (size_t)BT * M, c_.gelu);
    linear_backward(dtmp, gelu_.data(), P + pb.fc2_w, dmlp_.data(), G + pb.fc2_w, G + pb.fc2_b,
                    BT, M, C);
    mul_inplace(dmlp_.data(), gslope_.data(), (size_t)BT * M);
    linear_backward(dmlp_.data(), ln2_[l].data(), P + pb.fc1_w, dtmp, G + pb.fc1_w,
                    G + pb.fc1_b, BT, C, M);
    layernorm_backward(dtmp, mid_[l].data(), P + pb.ln2_w, ln2_mean_[l].data(),
                       ln2_rstd_[l].data(), dtmp2, G + pb.ln2_w, G + pb.ln2_b, BT, C);
    add_inplace(dres, dtmp2, n);
    // mid = res[l] + drop(proj(attention(qkv(ln1(res[l])))))
    dropout_backward(dres, dtmp, n, ph, seed_, layer_site(l, 1), step);
    linear_backward(dtmp, att_[l].data(), P + pb.proj_w, dtmp2, G + pb.proj_w, G + pb.proj_b,
                    BT, C, C);
    attention_backward(dtmp2, qkv_[l].data(), probs_[l].data(), dqkv_.data(), B, Tn, C, NH, pa,
                       seed_, layer_site(l, 0), step);
    linear_backward(dqkv_.data(), ln1_[l].data(), P + pb.qkv_w, dtmp, G + pb.qkv_w,
                    pb.qkv_b == ParamLayout::NONE ? (T*)nullptr : G + pb.qkv_b, BT, C, 3 * C);
    layernorm_backward(dtmp, res_[l].data(), P + pb.ln1_w, ln1_mean_[l].data(),
                       ln1_rstd_[l].data(), dtmp2, G + pb.ln1_w, G + pb.ln1_b, BT, C);
    add_inplace(dres, dtmp2, n);
  }
  dropout_backward(dres, dtmp, n, ph, seed_, SITE_EMBED_DROPOUT, step);
  patch_embed_backward(dtmp, x_.data(), P + l_.patch_w, dx, G + l_.patch_w, G + l_.patch_b,
                       G + l_.cls, G + l_.pos, B, c_.channels, S, c_.patch_size, C);
}

template class RefModel<float>;
template class RefModel<double>;

// ---- CpuModel: vit::Model on RefModel<float> ------------------------------------------------

namespace {

class CpuModel : public Model {
 public:
  CpuModel(const Config& c, const ModelOptions& o)
      : c_(c), o_(o), ref_(c, std::max(o.max_batch, 1), o.seed, o.label_smoothing) {
    if (o.max_batch <= 0) throw Error("max batch must be positive (got " + std::to_string(o.max_batch) + ")");
    if (o.input.src_size <= 0) throw Error("input image size must be positive");
    const size_t n = ref_.layout().total;
    params_.assign(n, 0.0f);
    grads_.assign(n, 0.0f);
    m_.assign(n, 0.0f);
    v_.assign(n, 0.0f);
    init_params(c_, ref_.layout(), o.seed, params_.data());
    x_.resize((size_t)o.max_batch * c.channels * c.image_size * c.image_size);
  }

  const Config& config() const override { return c_; }
  const ParamLayout& layout() const override { return ref_.layout(); }

  void get_params(float* out) const override { std::copy(params_.begin(), params_.end(), out); }
  void set_params(const float* in) override { std::copy(in, in + params_.size(), params_.begin()); }
  void get_grads(float* out) const override { std::copy(grads_.begin(), grads_.end(), out); }
  void get_adam_state(float* m, float* v) const override {
    std::copy(m_.begin(), m_.end(), m);
    std::copy(v_.begin(), v_.end(), v);
  }
  void set_adam_state(const float* m, const float* v) override {
    std::copy(m, m + m_.size(), m_.begin());
    std::copy(v, v + v_.size(), v_.begin());
  }

  void forward(const uint8_t* images, const int32_t* labels, int B, bool train,
               uint64_t step) override {
    if (B <= 0 || B > o_.max_batch)
      throw Error("batch of " + std::to_string(B) + " images: must be 1.." +
                  std::to_string(o_.max_batch) + " (the model's max batch)");
    if (!labels) throw Error("Model::forward needs labels (use infer() without them)");
    preprocess(images, B, o_.input, c_, train, o_.seed, step, x_.data());
    if (uses_fp16_input(c_, o_))  // stored as the CUDA model stores it (common/model.h)
      round_to_half(x_.data(), (size_t)B * c_.channels * c_.image_size * c_.image_size);
    last_loss_ = ref_.forward(x_.data(), labels, B, train, step, params_.data());
    const int K = c_.classes;
    const float* z = ref_.logits();
    for (int b = 0; b < B; ++b) {
      metrics_.loss_sum += ref_.losses()[b];
      const float* zb = z + (size_t)b * K;
      if (std::max_element(zb, zb + K) - zb == labels[b]) ++metrics_.correct;
    }
    metrics_.count += B;
    if (!std::isfinite(last_loss_) && metrics_.first_nonfinite_step < 0) {
      metrics_.first_nonfinite_step = (int64_t)step;
      metrics_.first_nonfinite_loss = last_loss_;
    }
    have_forward_ = true;
  }

  void backward() override {
    if (!have_forward_) throw Error("Model::backward called before forward");
    ref_.backward(params_.data(), grads_.data());
    // Frozen backbone: its gradients stay 0 (the CUDA model stops its backward at the head), so
    // the gradient norm is the trained tensors' alone on both devices.
    std::fill(grads_.begin(), grads_.begin() + first_trained_offset(ref_.layout(), o_), 0.0f);
  }

  void zero_grad() override { std::fill(grads_.begin(), grads_.end(), 0.0f); }

  void optimizer_step(const OptimConfig& opt, float lr, int64_t t, float grad_scale) override {
    // As the CUDA model: the norm only when clipping needs it (common/model.h).
    const double norm =
        opt.clip_grad > 0 ? global_grad_norm(grads_.data(), grads_.size(), grad_scale) : NAN;
    last_norm_ = (float)norm;
    const float coef = opt.clip_grad > 0 ? clip_coefficient(norm, opt.clip_grad) : 1.0f;
    const size_t first = first_trained_offset(ref_.layout(), o_);
    for (const ParamTensor& pt : ref_.layout().tensors)
      if (pt.offset >= first)
        adam_update(params_.data() + pt.offset, grads_.data() + pt.offset, m_.data() + pt.offset,
                    v_.data() + pt.offset, pt.numel, opt, lr, t, grad_scale, coef, pt.decay);
    // The update consumes the gradients (common/model.h), as the CUDA model's optimizer kernel.
    std::fill(grads_.begin(), grads_.end(), 0.0f);
  }
  float last_grad_norm() override { return last_norm_; }

  void get_logits(float* out) const override {
    std::copy(ref_.logits(), ref_.logits() + (size_t)ref_.batch() * c_.classes, out);
  }
  float last_loss() override { return last_loss_; }
  Metrics take_metrics() override {
    Metrics m = metrics_;
    metrics_ = Metrics();
    return m;
  }

  // Any number of images, in chunks of max_batch. Invalidates the last forward for backward().
  void infer(const float* x, int B, float* logits) override {
    const size_t img = (size_t)c_.channels * c_.image_size * c_.image_size;
    for (int b0 = 0; b0 < B; b0 += o_.max_batch) {
      const int nb = std::min(o_.max_batch, B - b0);
      const float* xb = x + b0 * img;
      if (uses_fp16_input(c_, o_)) {  // the input as the CUDA model stores it
        std::copy(xb, xb + nb * img, x_.begin());
        round_to_half(x_.data(), nb * img);
        xb = x_.data();
      }
      ref_.forward(xb, nullptr, nb, false, 0, params_.data());
      std::copy(ref_.logits(), ref_.logits() + (size_t)nb * c_.classes,
                logits + (size_t)b0 * c_.classes);
    }
    have_forward_ = false;
  }

  // infer() plus the probabilities the reference keeps for its backward anyway, reordered
  // from per-layer (B, NH, T, T) slabs to (B, L, NH, T, T).
  void infer_attention(const float* x, int B, float* logits, float* probs) override {
    const size_t img = (size_t)c_.channels * c_.image_size * c_.image_size;
    const size_t L = c_.layers, Tn = c_.tokens(), head = (size_t)c_.heads * Tn * Tn;
    for (int b0 = 0; b0 < B; b0 += o_.max_batch) {
      const int nb = std::min(o_.max_batch, B - b0);
      infer(x + b0 * img, nb, logits + (size_t)b0 * c_.classes);
      for (int b = 0; b < nb; ++b)
        for (size_t l = 0; l < L; ++l) {
          const float* src = ref_.probs((int)l) + (size_t)b * head;
          std::copy(src, src + head, probs + ((size_t)(b0 + b) * L + l) * head);
        }
    }
  }

 private:
  Config c_;
  ModelOptions o_;
  RefModel<float> ref_;
  std::vector<float> params_, grads_, m_, v_;  // (layout().total) each
  std::vector<float> x_;                       // (max_batch, 3, S, S) preprocessed input
  Metrics metrics_;
  float last_loss_ = NAN, last_norm_ = 0.0f;
  bool have_forward_ = false;
};

}  // namespace
}  // namespace vit::ref

namespace vit {
void Model::infer_attention(const float*, int, float*, float*) {
  throw Error("this model does not return attention probabilities");
}

std::unique_ptr<Model> make_cpu_model(const Config& c, const ModelOptions& o) {
  return std::make_unique<ref::CpuModel>(c, o);
}
}  // namespace vit
