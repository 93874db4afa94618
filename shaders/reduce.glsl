// Sums (and with GROUP_MAX defined, maxima) over a group of GROUP invocations (1, the subgroup
// size, or the workgroup size; a power of two), with subgroup arithmetic (USE_SUBGROUP) or a tree
// in shared memory. The including shader declares GROUP and USE_SUBGROUP as specialization
// constants; the host only picks GROUP as a multiple of the (full) subgroup size on the subgroup
// path.
shared float scratch[gl_WorkGroupSize.x];

// Sum (group_sum) or maximum (group_max) of `v` over the GROUP invocations of this segment.
// Called by every invocation of the workgroup (barriers need uniform control flow), valid rows or
// not.
#define DEFINE_GROUP_REDUCE(name, SUBGROUP_OP, COMBINE)                                         \
    float name(float v) {                                                                       \
        if (GROUP == 1) return v;                                                               \
        uint lid = gl_LocalInvocationID.x;                                                      \
        if (USE_SUBGROUP) {                                                                     \
            /* The host only picks GROUP as a multiple of the (full) subgroup size. */          \
            v = SUBGROUP_OP(v);                                                                 \
            if (GROUP <= gl_SubgroupSize) return v;                                             \
            if (subgroupElect()) scratch[gl_SubgroupID] = v;                                    \
            barrier();                                                                          \
            uint per_group = GROUP / gl_SubgroupSize;                                           \
            uint first = (lid / GROUP) * per_group;                                             \
            float r = scratch[first];                                                           \
            for (uint k = 1; k < per_group; k++) r = COMBINE(r, scratch[first + k]);            \
            barrier();                                                                          \
            return r;                                                                           \
        }                                                                                       \
        scratch[lid] = v;                                                                       \
        barrier();                                                                              \
        uint g = lid % GROUP;                                                                   \
        for (uint s = GROUP / 2; s > 0; s >>= 1) {                                              \
            if (g < s) scratch[lid] = COMBINE(scratch[lid], scratch[lid + s]);                  \
            barrier();                                                                          \
        }                                                                                       \
        float total = scratch[lid - g];                                                         \
        barrier();                                                                              \
        return total;                                                                           \
    }
#define REDUCE_ADD(a, b) ((a) + (b))
DEFINE_GROUP_REDUCE(group_sum, subgroupAdd, REDUCE_ADD)
#ifdef GROUP_MAX
DEFINE_GROUP_REDUCE(group_max, subgroupMax, max)
#endif
