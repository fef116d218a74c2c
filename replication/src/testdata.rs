//! Deterministic bytes for tests and benchmarks: the same seed gives the same data on every
//! machine, and it does not compress (like encrypted or already compressed service data).

/// `len` pseudo-random bytes from `seed` (xorshift64).
#[doc(hidden)]
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
