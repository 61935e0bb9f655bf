// The sampler of the fused CPU step (included by fastgen.cpp after fastgen_kernels.h): one draw per
// row from the logits with a given uniform number, by inverse CDF.
#pragma once

#include "fastgen_kernels.h"

namespace {

// ---- sampling --------------------------------------------------------------------------------
struct SampleScratch {
  std::vector<float> z, tmp;
  std::vector<int32_t> order;
  explicit SampleScratch(int64_t V) : z((V + 7) / 8 * 8), tmp(V), order(V) {}
};

// One draw from softmax(logits / temperature), restricted by top-k and nucleus, by inverse CDF
// with the uniform u in [0, 1): the distribution of sashimi.sampling.sample_logits. -1 when the
// logits are not finite.
int64_t sample_row(SampleScratch& S, int64_t V, const float* logits, float temperature, int64_t top_k, float top_p,
                   float u) {
  SG_PROF(P_SAMPLE);
  float* z = S.z.data();
  const float* src = logits;
  if (temperature != 1.0f) {  // a division, as the reference does
    for (int64_t i = 0; i < V; ++i) z[i] = logits[i] / temperature;
    src = z;
  }
  if (top_k > 0 && top_k < V) {  // keep every token >= the k-th largest (ties kept, as masked_fill(<))
    float* t = S.tmp.data();
    std::copy(src, src + V, t);
    std::nth_element(t, t + (top_k - 1), t + V, [](float a, float b) { return a > b; });
    const float kth = t[top_k - 1];
    for (int64_t i = 0; i < V; ++i) z[i] = src[i] < kth ? -std::numeric_limits<float>::infinity() : src[i];
    src = z;
  }
  // max, and whether any logit is NaN (NaN would pass the clamps of exp8 silently)
  f8 mv = bc(-std::numeric_limits<float>::infinity());
  i8v nan = i8v{};
  int64_t i = 0;
  for (; i + 8 <= V; i += 8) {
    const f8 v = load8(src + i);
    nan |= v != v;
    mv = sel(v > mv, v, mv);
  }
  float m = -std::numeric_limits<float>::infinity();
  for (int j = 0; j < 8; ++j) m = std::max(m, mv[j]);
  bool bad = false;
  for (int j = 0; j < 8; ++j) bad |= nan[j] != 0;
  for (; i < V; ++i) {
    bad |= std::isnan(src[i]);
    m = std::max(m, src[i]);
  }
  if (bad || !std::isfinite(m)) return -1;
  // unnormalised probabilities and their total
  const f8 mb = bc(m);
  f8 acc = f8{};
  for (i = 0; i + 8 <= V; i += 8) {
    const f8 e = exp8(load8(src + i) - mb);
    store8(z + i, e);
    acc += e;
  }
  double total = 0.0;
  for (int j = 0; j < 8; ++j) total += acc[j];
  for (; i < V; ++i) total += (z[i] = std::exp(src[i] - m));
  if (!std::isfinite(total) || !(total > 0.0)) return -1;
  if (top_p >= 1.0f) {  // inverse CDF over the tokens in index order, 8 at a time
    const double goal = static_cast<double>(u) * total;
    double cum = 0.0;
    for (i = 0; i + 8 <= V; i += 8) {
      double block = 0.0;
      for (int j = 0; j < 8; ++j) block += z[i + j];
      if (cum + block > goal) break;
      cum += block;
    }
    for (; i < V; ++i) {  // a token of zero probability is never drawn: cum must grow past goal
      cum += z[i];
      if (z[i] > 0.0f && cum > goal) return i;
    }
    for (i = V - 1; i >= 0; --i)  // rounding: the goal reached the total
      if (z[i] > 0.0f) return i;
    return -1;
  }
  const float inv = static_cast<float>(1.0 / total);
  for (i = 0; i < V; ++i) z[i] *= inv;  // probabilities
  int32_t* order = S.order.data();
  for (i = 0; i < V; ++i) order[i] = static_cast<int32_t>(i);
  // drop a token when the more likely ones before it already reach top_p
  std::stable_sort(order, order + V, [z](int32_t a, int32_t b) { return z[a] > z[b]; });
  float cum = 0.0f;
  int64_t count = 0;
  for (i = 0; i < V; ++i) {
    cum += z[order[i]];
    if (cum - z[order[i]] >= top_p) break;
    ++count;
  }
  double kept = 0.0;
  for (i = 0; i < count; ++i) kept += z[order[i]];
  const double target = static_cast<double>(u) * kept;
  double c = 0.0;
  int64_t last = -1;
  for (i = 0; i < count; ++i) {
    const float p = z[order[i]];
    if (p <= 0.0f) continue;
    c += p;
    last = order[i];
    if (c > target) return order[i];
  }
  return last;
}

}  // namespace
