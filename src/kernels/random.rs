//! A deterministic source of numbers for tests and benchmarks: the same seed gives the same
//! inputs on every machine and in wasm, so a figure or a failure can be reproduced.

/// `n` numbers spread evenly over [-0.5, 0.5), the same for the same seed (xorshift).
pub fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}
