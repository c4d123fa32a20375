//! Stateless seeds: every random draw of a training step comes from an RNG seeded by
//! (run seed, stream, step), so a run resumed at step n draws exactly what the
//! uninterrupted run drew, with no RNG state to save.

/// SplitMix64's finaliser: a bijective 64-bit mix with full avalanche.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seed of the RNG for step `step` of stream `stream` (independent streams per purpose).
pub fn step_seed(seed: u64, stream: u64, step: u64) -> u64 {
    mix64(
        seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_steps_differ() {
        let a = step_seed(7, 0, 0);
        assert_ne!(a, step_seed(7, 1, 0));
        assert_ne!(a, step_seed(7, 0, 1));
        assert_ne!(a, step_seed(8, 0, 0));
        assert_eq!(a, step_seed(7, 0, 0));
        assert_eq!(mix64(0), 0);
    }
}
