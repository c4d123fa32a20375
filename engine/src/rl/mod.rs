//! Reinforcement learning (GRPO family): rewards here; rollouts, advantages and losses alongside.
pub mod rewards;
