// erf and the exact GELU for float32 (GLSL has no erf). Max abs error of erf_f32 about 1.2e-7 on
// [-10, 10] against float64 (measured by tests/test_matmul.c):
//   |x| < 0.7        the Taylor series of erf, eleven terms (remainder below 1e-9);
//   0.7 <= |x| < 3.9 1 - exp(-x^2) Q(u), u = (2|x| - 4.6) / 3.2, where Q is a degree-12 least-
//                    squares fit of erfc(t) exp(t^2) on Chebyshev nodes of [0.7, 3.9], made in
//                    float64 for this project (relative error about 1e-9);
//   |x| >= 3.9       +-1, since erfc(3.9) < 3.5e-8.
// The loops are unrolled (the including shader enables GL_EXT_control_flow_attributes): a
// coefficient array indexed by a loop counter is a per-lane memory access on CPU drivers.
const float ERF_TAYLOR[11] = float[](
    1.128379167e+00, -3.761263890e-01, 1.128379167e-01, -2.686617065e-02, 5.223977625e-03,
    -8.548327023e-04, 1.205533298e-04, -1.492565036e-05, 1.646211437e-06, -1.636584469e-07,
    1.480719282e-08);
const float ERFC_Q[13] = float[](2.267415634e-01, -1.365886923e-01, 7.781161106e-02, -4.221553658e-02, 2.192817308e-02, -1.093415729e-02, 5.266673860e-03, -2.516863007e-03, 1.142957466e-03, -4.010422113e-04, 1.683539454e-04, -1.517799984e-04, 6.292542381e-05);

float erf_f32(float x) {
    float t = abs(x);
    if (t < 0.7) {
        float s = x * x;
        float r = ERF_TAYLOR[10];
        [[unroll]] for (int i = 9; i >= 0; i--) r = fma(r, s, ERF_TAYLOR[i]);
        return x * r;
    }
    if (t >= 3.9) return sign(x);
    float u = (2.0 * t - 4.6) / 3.2;
    float q = ERFC_Q[12];
    [[unroll]] for (int i = 11; i >= 0; i--) q = fma(q, u, ERFC_Q[i]);
    return sign(x) * (1.0 - exp(-t * t) * q);
}

// Phi(x) = (1 + erf(x / sqrt 2)) / 2, the normal distribution function: gelu(x) = x Phi(x).
float gelu_cdf(float x) { return 0.5 * (1.0 + erf_f32(x * 0.70710678118654752)); }
float gelu(float x) { return x * gelu_cdf(x); }

// d gelu / dx = Phi(x) + x phi(x): the backward of the exact GELU (1 / sqrt(2 pi) = 0.3989...),
// from Phi(x) where the caller has it already (the training forward's epilogue).
float gelu_grad_cdf(float x, float cdf) { return cdf + x * 0.39894228040143268 * exp(-0.5 * x * x); }
vec4 gelu_grad_cdf(vec4 x, vec4 cdf) { return cdf + x * 0.39894228040143268 * exp(-0.5 * x * x); }
float gelu_grad(float x) { return gelu_grad_cdf(x, gelu_cdf(x)); }
