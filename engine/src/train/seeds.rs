//! Stateless seeds: every random draw of a training step comes from an RNG seeded by
//! (run seed, stream, step), so a run resumed at step n draws exactly what the
//! uninterrupted run drew, with no RNG state to save.

/// SplitMix64's finaliser: a bijective 64-bit mix with full avalanche.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The independent random streams of a run, one per purpose. The numbers are part of the
/// saved runs' meaning (a resumed run must draw what the original drew): never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// A training session: the SFT data order, one shuffle per epoch.
    SftOrder = 0,
    /// A training session: built-in task problems of an SFT micro-batch.
    SftProblems = 1,
    /// A training session: the RL prompts of a step.
    RlPrompts = 2,
    /// A training session: the rollout sampler of a step.
    RlSampling = 3,
    /// A training session: the pool of built-in task problems for a real tokenizer.
    TaskPool = 4,
    /// A training session: device-side draws (LoRA dropout) of a step.
    Device = 5,
    /// Model-based rewards' own sampling (self-verification) of a step.
    RewardSampling = 6,
    /// LoRA initialisation, per adapted projection.
    LoraInit = 0x4c6f_5241,
}

/// Seed of the RNG for step `step` of stream `stream` (independent streams per purpose).
pub fn step_seed(seed: u64, stream: Stream, step: u64) -> u64 {
    mix64(
        seed ^ (stream as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_steps_differ() {
        let a = step_seed(7, Stream::SftOrder, 0);
        assert_ne!(a, step_seed(7, Stream::SftProblems, 0));
        assert_ne!(a, step_seed(7, Stream::SftOrder, 1));
        assert_ne!(a, step_seed(8, Stream::SftOrder, 0));
        assert_eq!(a, step_seed(7, Stream::SftOrder, 0));
        assert_eq!(mix64(0), 0);
    }
}
