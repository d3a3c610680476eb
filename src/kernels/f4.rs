//! Four f32 lanes: wasm's `v128` where the build has simd128, otherwise an array the compiler
//! vectorises itself. Both add products separately (no fused multiply-add), so they agree. The
//! kernels written on it (`attend.rs`, `dense.rs`) say each step once for both.

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod imp {
    use core::arch::wasm32::*;

    #[derive(Clone, Copy)]
    pub struct F4(v128);

    impl F4 {
        pub const ZERO: F4 = F4(f32x4(0.0, 0.0, 0.0, 0.0));

        #[inline(always)]
        pub fn splat(v: f32) -> F4 {
            F4(f32x4_splat(v))
        }

        #[inline(always)]
        pub fn store(self, to: &mut [f32; 4]) {
            // SAFETY: `to` is 16 writable bytes; wasm stores need no alignment.
            unsafe { v128_store(to.as_mut_ptr() as *mut v128, self.0) }
        }

        /// `self + a · b`, lane by lane.
        #[inline(always)]
        pub fn add_product(self, a: F4, b: F4) -> F4 {
            F4(f32x4_add(self.0, f32x4_mul(a.0, b.0)))
        }

        /// The lanes' sum, as (l0 + l2) + (l1 + l3).
        #[inline(always)]
        pub fn sum(self) -> f32 {
            let pairs = f32x4_add(self.0, i32x4_shuffle::<2, 3, 0, 1>(self.0, self.0));
            f32x4_extract_lane::<0>(pairs) + f32x4_extract_lane::<1>(pairs)
        }
    }

    impl From<&[f32; 4]> for F4 {
        #[inline(always)]
        fn from(s: &[f32; 4]) -> F4 {
            // SAFETY: `s` is 16 readable bytes; wasm loads need no alignment.
            F4(unsafe { v128_load(s.as_ptr() as *const v128) })
        }
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod imp {
    #[derive(Clone, Copy)]
    pub struct F4([f32; 4]);

    impl F4 {
        pub const ZERO: F4 = F4([0.0; 4]);

        #[inline(always)]
        pub fn splat(v: f32) -> F4 {
            F4([v; 4])
        }

        #[inline(always)]
        pub fn store(self, to: &mut [f32; 4]) {
            *to = self.0;
        }

        #[inline(always)]
        pub fn add_product(self, a: F4, b: F4) -> F4 {
            F4(std::array::from_fn(|i| self.0[i] + a.0[i] * b.0[i]))
        }

        #[inline(always)]
        pub fn sum(self) -> f32 {
            (self.0[0] + self.0[2]) + (self.0[1] + self.0[3])
        }
    }

    impl From<&[f32; 4]> for F4 {
        #[inline(always)]
        fn from(s: &[f32; 4]) -> F4 {
            F4(*s)
        }
    }
}

pub use imp::F4;
