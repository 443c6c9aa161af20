// common/attention_map.h — where a ViT looks: attention rollout and per-head CLS attention of
// one image, drawn as heat maps over the (resized) input image and written as PNG
// (stb_image_write, libstb-dev). For vit_predict --attention; the probabilities come from
// Model::infer_attention (common/model.h), the same on both devices.
//
// Shapes: probs (L, NH, T, T) of one image (T = 1 + g*g tokens, token 0 = CLS, patches in
// row-major order); maps over the patch grid are (g, g) = (T - 1) values, row-major.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace vit {

// Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"):
// per layer A_l = mean over heads of probs[l] (T, T); Â_l = A_l + I with every row divided by
// its sum (the residual connection as half of the flow: rows of A_l sum to 1, so Â_l =
// (A_l + I) / 2); R = Â_{L-1} ... Â_1 Â_0. Returns row 0 of R (CLS) over the patch tokens,
// R[0][1..T-1]: (T - 1) values, not normalised. Computed in double as the row vector
// e_0^T Â_{L-1} ... Â_0 (L vector-matrix products, not L matrix-matrix ones).
std::vector<float> attention_rollout(const float* probs, int L, int NH, int T);

// One layer's CLS-to-patch attention per head: out (NH, T - 1) = probs[layer][h][0][1..T-1].
std::vector<float> cls_attention(const float* probs, int L, int NH, int T, int layer);

// x -> (x - min) / (max - min) in place, over n values; a constant (or empty) map becomes all
// 0 (nothing stands out). Non-finite values are an internal error (vit::Error).
void normalise01(float* x, size_t n);

// The image as the model sees it, for drawing on: (S, S, 3) uint8 interleaved RGB, resized
// from (h, w, 3) with the model input's bilinear resize (vit::ref::resize_bilinear), rounded.
std::vector<uint8_t> resize_rgb(const uint8_t* rgb, int w, int h, int S);

// Heat-map colour of v in [0, 1] (clamped): the "jet" ramp, dark blue -> cyan -> yellow -> dark
// red, as matplotlib's; rgb[3] in 0..255.
void jet_colour(float v, uint8_t rgb[3]);

// map01 (g, g) in [0, 1] upsampled bilinearly (the same resize, align_corners=False) to S x S,
// coloured with jet_colour and blended over img (S, S, 3): out = (1 - alpha) * img + alpha *
// colour, rounded. Returns (S, S, 3).
std::vector<uint8_t> heat_overlay(const uint8_t* img, int S, const float* map01, int g,
                                  float alpha = 0.5f);

// Tiles n images (S, S, 3) in a grid of ceil(sqrt(n)) columns with `gap` white pixels between
// and around them; *w, *h receive the size. Empty cells are white.
std::vector<uint8_t> tile_images(const std::vector<std::vector<uint8_t>>& tiles, int S, int gap,
                                 int* w, int* h);

// (h, w, 3) RGB as a PNG, written to a temporary file in the same directory and renamed, so
// `path` is never half-written. Throws vit::Error "PATH: cannot write PNG: <reason>".
void write_png(const std::string& path, const uint8_t* rgb, int w, int h);

}  // namespace vit
