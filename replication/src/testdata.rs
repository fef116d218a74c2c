//! Deterministic bytes for tests and benchmarks: the same seed gives the same data on every
//! machine.

/// `len` pseudo-random bytes from `seed` (xorshift64): they do not compress (like encrypted
/// or already compressed service data).
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

/// `n` database-like pages of 4 KiB from `seed`: repeated structure, varying values (they
/// compress, and a dictionary trained on some pages helps with the others).
#[doc(hidden)]
pub fn database_pages(n: usize, seed: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut page = Vec::with_capacity(4096);
            let mut k = 0u32;
            while page.len() < 4096 {
                let v = (i as u32).wrapping_mul(2_654_435_761) ^ seed ^ k;
                page.extend_from_slice(
                    format!(
                        "{{\"id\":{k},\"user\":\"user{}\",\"balance\":{},\"status\":\"active\"}}\n",
                        v % 9973,
                        v % 100_000
                    )
                    .as_bytes(),
                );
                k += 1;
            }
            page.truncate(4096);
            page
        })
        .collect()
}
