//! Vectors of f32 for our operators' kernels, written once over [`Simd`] and compiled per
//! instruction set: AVX-512 (16 lanes) where the CPU has it, else AVX2 with FMA (8 lanes: every
//! x86 server CPU since 2013-2015). A kernel is a [`Kernel`] whose `run::<S>` is
//! `#[inline(always)]`; [`Isa::run`] calls it from a function compiled with that instruction
//! set's target features, so the whole kernel, the vector methods included, is compiled for it
//! (the way the `pulp` crate dispatches).
//!
//! Where neither runs (another architecture, an old x86), [`Isa::detect`] gives `None` and the
//! graph rewrites that bring our operators in leave the model to tract's.

/// An instruction set our kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Isa {
    /// AVX-512F: 16 lanes, masked loads and stores.
    Avx512,
    /// AVX2 and FMA: 8 lanes.
    Avx2,
}

impl Isa {
    /// The widest instruction set of ours this CPU runs, if any.
    pub fn detect() -> Option<Isa> {
        Isa::ALL.into_iter().find(|isa| isa.supported())
    }

    /// Widest first.
    pub const ALL: [Isa; 2] = [Isa::Avx512, Isa::Avx2];

    /// Every one this CPU runs, widest first (tests run each kernel on each).
    #[cfg(test)]
    pub fn supported_all() -> impl Iterator<Item = Isa> {
        Isa::ALL.into_iter().filter(|isa| isa.supported())
    }

    /// Whether this CPU runs it.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
                Isa::Avx2 => {
                    std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Lanes of one vector.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
        }
    }

    /// Runs `kernel` compiled for this instruction set.
    ///
    /// # Safety
    /// The CPU supports it ([`Isa::supported`]); and whatever `kernel`'s own contract asks.
    pub unsafe fn run<K: Kernel>(self, kernel: K) -> K::Output {
        #[cfg(target_arch = "x86_64")]
        match self {
            Isa::Avx512 => run_avx512(kernel),
            Isa::Avx2 => run_avx2(kernel),
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = kernel;
            unreachable!("{self:?} is never supported on this architecture")
        }
    }
}

/// A kernel written over [`Simd`]; `run` must be `#[inline(always)]` (and everything it calls
/// that touches vectors), so that it is compiled inside [`Isa::run`]'s target features.
pub(crate) trait Kernel {
    type Output;

    /// # Safety
    /// Runs only where `S`'s instruction set is supported; the kernel's own contract.
    unsafe fn run<S: Simd>(self) -> Self::Output;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_avx512<K: Kernel>(kernel: K) -> K::Output {
    kernel.run::<Avx512>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: Kernel>(kernel: K) -> K::Output {
    kernel.run::<Avx2>()
}

/// The vector operations our kernels use. Every method is unsafe: it needs the instruction set,
/// and those taking pointers read or write `LANES` values there (masked ones only the lanes
/// set; the others may lie outside the allocation).
///
/// Whole-vector loads and stores are masked ones with every lane set, which LLVM turns into
/// plain moves: `_mm256_loadu_ps` and its kind go through `ptr::read_unaligned`, which the dev
/// profile (tests, benchmarks) checks on every call and makes the value take a trip through
/// the stack (AVX2 detector 1x1 layers: 10.9 ms that way, 6.6 ms without checks).
pub(crate) trait Simd {
    const LANES: usize;
    /// `LANES` f32 values.
    type F: Copy;
    /// A set of lanes for masked loads and stores.
    type Mask: Copy;

    unsafe fn splat(x: f32) -> Self::F;
    unsafe fn zero() -> Self::F;
    /// `a * b + c`, rounded once.
    unsafe fn fmadd(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    unsafe fn add(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn max(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn load(p: *const f32) -> Self::F;
    unsafe fn store(p: *mut f32, v: Self::F);
    /// The lanes whose bit is set in `bits` (bit j for lane j; bits past `LANES` ignored).
    unsafe fn mask(bits: u32) -> Self::Mask;
    /// The lanes of `mask` read from `p`, zero in the others.
    unsafe fn load_masked(p: *const f32, mask: Self::Mask) -> Self::F;
    /// The lanes of `mask` written to `p`, the others left alone.
    unsafe fn store_masked(p: *mut f32, mask: Self::Mask, v: Self::F);
    /// Lanes 0, 2, 4... of `lo` followed by `hi`: every other value of `2 * LANES` in a row.
    unsafe fn even(lo: Self::F, hi: Self::F) -> Self::F;
}

/// AVX-512F, 16 lanes.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Simd for Avx512 {
    const LANES: usize = 16;
    type F = std::arch::x86_64::__m512;
    type Mask = u16;

    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::F {
        std::arch::x86_64::_mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn zero() -> Self::F {
        std::arch::x86_64::_mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self::F, b: Self::F, c: Self::F) -> Self::F {
        std::arch::x86_64::_mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn add(a: Self::F, b: Self::F) -> Self::F {
        std::arch::x86_64::_mm512_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: Self::F, b: Self::F) -> Self::F {
        std::arch::x86_64::_mm512_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::F {
        // All lanes: LLVM emits a plain load (see the trait's text).
        std::arch::x86_64::_mm512_maskz_loadu_ps(u16::MAX, p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::F) {
        std::arch::x86_64::_mm512_mask_storeu_ps(p, u16::MAX, v)
    }
    #[inline(always)]
    unsafe fn mask(bits: u32) -> Self::Mask {
        bits as u16
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, mask: Self::Mask) -> Self::F {
        std::arch::x86_64::_mm512_maskz_loadu_ps(mask, p)
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, mask: Self::Mask, v: Self::F) {
        std::arch::x86_64::_mm512_mask_storeu_ps(p, mask, v)
    }
    #[inline(always)]
    unsafe fn even(lo: Self::F, hi: Self::F) -> Self::F {
        use std::arch::x86_64::*;
        const EVEN: [i32; 16] = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30];
        _mm512_permutex2var_ps(lo, _mm512_loadu_si512(EVEN.as_ptr().cast()), hi)
    }
}

/// AVX2 with FMA, 8 lanes.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Simd for Avx2 {
    const LANES: usize = 8;
    type F = std::arch::x86_64::__m256;
    /// All bits set in the lanes of the set.
    type Mask = std::arch::x86_64::__m256i;

    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::F {
        std::arch::x86_64::_mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn zero() -> Self::F {
        std::arch::x86_64::_mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self::F, b: Self::F, c: Self::F) -> Self::F {
        std::arch::x86_64::_mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn add(a: Self::F, b: Self::F) -> Self::F {
        std::arch::x86_64::_mm256_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: Self::F, b: Self::F) -> Self::F {
        std::arch::x86_64::_mm256_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::F {
        // All lanes: LLVM emits a plain load (see the trait's text).
        use std::arch::x86_64::*;
        _mm256_maskload_ps(p, _mm256_set1_epi32(-1))
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::F) {
        use std::arch::x86_64::*;
        _mm256_maskstore_ps(p, _mm256_set1_epi32(-1), v)
    }
    #[inline(always)]
    unsafe fn mask(bits: u32) -> Self::Mask {
        use std::arch::x86_64::*;
        let lane_bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        let set = _mm256_and_si256(_mm256_set1_epi32(bits as i32), lane_bits);
        _mm256_cmpeq_epi32(set, lane_bits)
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, mask: Self::Mask) -> Self::F {
        std::arch::x86_64::_mm256_maskload_ps(p, mask)
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, mask: Self::Mask, v: Self::F) {
        std::arch::x86_64::_mm256_maskstore_ps(p, mask, v)
    }
    #[inline(always)]
    unsafe fn even(lo: Self::F, hi: Self::F) -> Self::F {
        use std::arch::x86_64::*;
        // [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6], then its 64-bit quarters in the order 0 2 1 3.
        let pairs = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi);
        _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
            pairs,
        )))
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Loads 32 values (or the lanes of `bits`), keeps the even ones of 2 vectors, adds and
    /// multiplies: each method once, compared with the scalar result.
    struct Probe<'a> {
        values: &'a [f32],
        bits: u32,
    }

    impl Kernel for Probe<'_> {
        type Output = Vec<f32>;

        #[inline(always)]
        unsafe fn run<S: Simd>(self) -> Vec<f32> {
            let n = S::LANES;
            let p = self.values.as_ptr();
            let masked = S::load_masked(p, S::mask(self.bits));
            let even = S::even(S::load(p), S::load(p.add(n)));
            let two = S::splat(2.0);
            let v = S::max(
                S::fmadd(even, two, masked),
                S::add(S::zero(), S::splat(-1.0)),
            );
            let mut out = vec![7.0; 2 * n];
            S::store(out.as_mut_ptr(), v);
            S::store_masked(out.as_mut_ptr().add(n), S::mask(self.bits), v);
            out
        }
    }

    #[test]
    fn every_instruction_set_computes_the_same() {
        let values: Vec<f32> = (0..32).map(|i| i as f32 - 10.0).collect();
        let bits = 0b1010_0110_0011_0101u32;
        for isa in Isa::supported_all() {
            let n = isa.lanes();
            // Safety: supported (filtered above); `values` holds 2 * n values.
            let got = unsafe {
                isa.run(Probe {
                    values: &values,
                    bits,
                })
            };
            let want: Vec<f32> = (0..n)
                .map(|j| {
                    let masked = if bits >> j & 1 == 1 { values[j] } else { 0.0 };
                    (values[2 * j] * 2.0 + masked).max(-1.0)
                })
                .collect();
            assert_eq!(got[..n], want[..], "{isa:?}");
            for j in 0..n {
                let kept = if bits >> j & 1 == 1 { want[j] } else { 7.0 };
                assert_eq!(got[n + j], kept, "{isa:?} masked store lane {j}");
            }
        }
    }
}
