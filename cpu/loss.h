// cpu/loss.h — reference softmax cross-entropy with label smoothing, as
// torch.nn.CrossEntropyLoss(label_smoothing=eps): target = (1 - eps) * onehot(label) + eps / K,
// loss_b = -sum_k target_k * log_softmax(logits_b)_k.
#pragma once
#include <cstdint>

namespace vit::ref {

// logits (B, K), labels (B) in [0, K) -> losses (B) (=), probs (B, K) softmax (=); returns the
// mean of losses. A label outside [0, K) throws vit::Error.
template <class T>
T xent_forward(const T* logits, const int32_t* labels, T* losses, T* probs, int B, int K,
               float smoothing);

// dlogits (B, K) = (probs - target) * scale (=); scale = 1/B for the mean loss.
template <class T>
void xent_backward(const T* probs, const int32_t* labels, T* dlogits, int B, int K,
                   float smoothing, T scale);

}  // namespace vit::ref
