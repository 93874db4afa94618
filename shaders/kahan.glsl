// Compensated (Kahan) summation shared by the reduction shaders. `precise` stops the compiler from
// reassociating the compensation away. The compensation is dropped once the sum is infinite, so
// an overflowing |x| sum stays +Inf (as the float32 formula gives) instead of turning into NaN.
void kahan_add(inout float sum, inout float comp, float value) {
    precise float y = value - comp;
    precise float t = sum + y;
    precise float c = (t - sum) - y;
    comp = isinf(t) ? 0.0 : c;
    sum = t;
}

void kahan_add4(inout vec4 sum, inout vec4 comp, vec4 value) {
    precise vec4 y = value - comp;
    precise vec4 t = sum + y;
    precise vec4 c = (t - sum) - y;
    comp = mix(c, vec4(0.0), isinf(t));
    sum = t;
}
