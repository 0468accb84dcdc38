//! Whether this CPU runs our AVX-512 operators (`pointwise_conv`, `depthwise3x3`). Where it
//! does not, tract's own operators are faster than our fallbacks would be, so the graph
//! rewrites that bring those operators in leave the model alone.

pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
