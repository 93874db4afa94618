// The dropout mask (SPEC.md section 6), drawn from a counter-based generator: element i of site
// `site` at step `step` is kept when hash(seed, step, site, i) is at least `threshold`
// (rate * 2^32), the hash being murmur3's 32-bit finalizer chained over the counter's words. A
// seeded run is reproducible, and a backward recomputes the forward's mask instead of storing it.
// Shared by dropout.comp and the layer norm backward that writes the masked gradient beside dx.

uvec4 dropout_mix(uvec4 h) {
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}
uint dropout_mix(uint h) { return dropout_mix(uvec4(h)).x; } // the unused lanes fold away

// The hash of (seed, step, site): one per dispatch, then mixed with each element's index.
uint dropout_base(uint seed_lo, uint seed_hi, float step, uint site) {
    uint h = dropout_mix(seed_lo ^ 0x9e3779b9u);
    h = dropout_mix(h ^ seed_hi);
    h = dropout_mix(h ^ uint(step));
    return dropout_mix(h ^ (site * 0x27d4eb2fu));
}

// y at element i (or elements i .. i + 3) kept and scaled by 1 / (1 - rate), or 0 whatever y holds.
float dropout_apply(uint base, uint threshold, float scale, uint i, float y) {
    return dropout_mix(base ^ i) >= threshold ? y * scale : 0.0;
}
vec4 dropout_apply(uint base, uint threshold, float scale, uint i, vec4 y) {
    bvec4 keep = greaterThanEqual(dropout_mix(base ^ (i + uvec4(0, 1, 2, 3))), uvec4(threshold));
    return mix(vec4(0.0), y * scale, keep);
}
