// The attention's normalizer, NORM (specialization constant NORM_ID), for one query row of
// scaled scores s_j over the keys it may see (masked keys take no part, not even in the maximum):
//   0 softpick (the seed's):  y_j = s_j / (1 + sum_j |s_j|)
//   1 rectified softpick:     y_j = ReLU(e^(s_j - m) - e^-m) / (sum_j |e^(s_j - m) - e^-m| + 1e-6)
//   2 softmax:                y_j = e^(s_j - m) / sum_j e^(s_j - m)
// with m = max_j s_j. The forward walks the keys in blocks keeping a running maximum M and
// rescaling its sums by e^(M_old - M_new) when M grows (FlashAttention-2's online softmax).
// Rectified softpick runs with M = max(m, 0): every term then lies in [-1, 1], so no sum
// overflows whatever the scores' sign and size (at M = m < 0 the term e^-m would be infinite),
// and the result is the same: with m <= 0 no term is positive, every y_j is 0 either way.
//
// What the forward keeps per row for the backward (the "row statistic"): r = 1 + sum |s| for
// softpick, the log of the normalizing sum lse = M + log(sum) for the exponential forms, from
// which the backward recomputes each weight without the maximum: e^(s - lse) = e^(s - M) / sum.
// With dP_j = dO . v_j and D = dO . O = sum_j y_j dP_j, the scores' gradient is
//   softpick:  (dP_j - sgn(s_j) D) / r
//   rectified: e^(s_j - lse) (1[s_j > 0] dP_j - sgn(s_j) D)
//   softmax:   e^(s_j - lse) (dP_j - D)
// (the rectified form holds the maximum constant, as the paper's kernel does: the 1e-6 makes the
// exact derivative differ by a relative 1e-6 / sum at most). Where one key holds nearly all of a
// row's weight, dP_j - D cancels (as in FlashAttention's D = rowsum(dO * O)): the scores' gradient
// then carries an absolute error of about the float32 rounding of D, which for rectified softpick's
// single-key rows (gradient about 1e-6 dP) is a large share of it.
layout(constant_id = NORM_ID) const uint NORM = 0;

const float NORM_EPS = 1e-6;
// The running maximum before any key: 0 for rectified softpick (M = max(m, 0)); for softmax the
// lowest finite float, so that e^(M_old - M_new) is 0 or 1, never inf - inf.
const float NORM_M0 = NORM == 1 ? 0.0 : -3.0e38;
// A masked key's score in the unfused path's score matrix: no part in any sum (e^-inf is 0, and
// the rows op skips it).
float norm_masked() { return NORM == 0 ? 0.0 : uintBitsToFloat(0xff800000u); }

// Rectified softpick's term e^(s - m) - e^-m, with em = e^-m. Near s = 0 the difference cancels
// (at s = 1e-5 float32 keeps 2 digits of it): there it is e^-m (e^s - 1), e^s - 1 from its series
// s (1 + s/2 (1 + s/3 (...))) to s^9 (relative error below 1e-8 for |s| < 1/2). Written out, not
// as a loop: with the loop, lavapipe at subgroups of 4 cut the op's backward over rows of 15000
// elements short (most likely its loop limiter, 65535 trips, counting the inner loop's).
float norm_rect(float s, float m, float em) {
    if (abs(s) >= 0.5) return exp(s - m) - em;
    float r = fma(s, 1.0 / 9.0, 1.0);
    r = fma(s * (1.0 / 8.0), r, 1.0);
    r = fma(s * (1.0 / 7.0), r, 1.0);
    r = fma(s * (1.0 / 6.0), r, 1.0);
    r = fma(s * (1.0 / 5.0), r, 1.0);
    r = fma(s * (1.0 / 4.0), r, 1.0);
    r = fma(s * (1.0 / 3.0), r, 1.0);
    r = fma(s * 0.5, r, 1.0);
    return em * (s * r);
}

// A live key's weight (x) and its part of the normalizing sum (y) at running maximum m, with
// em = e^-m (rectified softpick only).
vec2 norm_term(float s, float m, float em) {
    if (NORM == 0) return vec2(s, abs(s));
    if (NORM == 2) return vec2(exp(s - m));
    float u = norm_rect(s, m, em);
    return vec2(max(u, 0.0), abs(u));
}

// The normalizing sum of a row from the sum of its terms.
float norm_total(float sum) { return NORM == 0 ? 1.0 + sum : NORM == 1 ? sum + NORM_EPS : sum; }
// The row statistic the forward keeps for the backward.
float norm_stat(float total, float m) { return NORM == 0 ? total : m + log(total); }

// The backward's per-row values from the statistic: x = 1 / r (softpick) or lse, y = e^-lse.
vec2 norm_row(float stat) {
    if (NORM == 0) return vec2(1.0 / stat, 0.0);
    return vec2(stat, NORM == 1 ? exp(-stat) : 0.0);
}
// A live key's weight, recomputed from its score and the row's norm_row.
float norm_weight(float s, vec2 row) {
    if (NORM == 0) return s * row.x;
    return NORM == 2 ? exp(s - row.x) : max(norm_rect(s, row.x, row.y), 0.0);
}
// A live key's score gradient from dP = dO . v and D = dO . O.
float norm_dscore(float s, float dp, float dd, vec2 row) {
    if (NORM == 0) return (dp - sign(s) * dd) * row.x;
    float e = exp(s - row.x);
    if (NORM == 2) return e * (dp - dd);
    return e * ((s > 0.0 ? dp : 0.0) - sign(s) * dd);
}

// ---- the standalone op (softpick_rows.comp, softpick_cols.comp) ---------------------------------
// Along an axis, with the axis's maximum m known first (a pass of its own): -inf elements are
// masked (no weight, no part of any sum; the unfused attention path writes them for future keys).
// op_max turns the axis's largest element into the M the terms use; op_term is an element's
// (unnormalized weight, part of the sum S) at M with em = e^-M: norm_term, -inf elements masked
// (y = weight / norm_total(S)); op_dx is the backward from dy, S and T = sum dy weight (the
// maximum held constant).
float op_max(float m) { return NORM == 1 ? max(m, 0.0) : m; }
vec2 op_term(float x, float m) {
    if (NORM != 0 && isinf(x) && x < 0.0) return vec2(0.0);
    return norm_term(x, m, NORM == 1 ? exp(-m) : 0.0);
}
float op_mass(float x, float m) { return op_term(x, m).y; }
float op_weight(float x, float m) { return op_term(x, m).x; }
float op_dx(float x, float dy, float s, float t, float m) {
    float z = norm_total(s);
    if (NORM == 0) return (dy - sign(x) * (t / z)) / z;
    float e = exp(x - m) / z;
    if (NORM == 2) return e * (dy - t / z);
    return e * ((x > 0.0 ? dy : 0.0) - sign(x) * (t / z));
}
