//! Errors of the RL objective functions.

/// What went wrong in an RL objective function (bad shapes, empty groups, bad config).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RlError {
    /// An input does not have the shape the others imply.
    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    Shape {
        what: &'static str,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// The batch has no sequences.
    #[error("empty batch: {0}")]
    Empty(&'static str),
    /// Groups cannot be formed (group size 0, a batch that is not a multiple of it, ...).
    #[error("bad grouping: {0}")]
    Groups(String),
    /// A statistic needs more valid tokens or sequences than there are.
    #[error("not enough data: {0}")]
    NotEnough(String),
    /// A setting is out of range or contradicts another one.
    #[error("bad config: {0}")]
    Config(String),
    /// A name that is not one of the known choices.
    #[error("unknown {kind} `{name}` (valid: {valid})")]
    Unknown {
        kind: &'static str,
        name: String,
        valid: String,
    },
}

/// Checks that `rows` is a `[b][t]` grid (every row `t` long).
pub(crate) fn check_grid(
    what: &'static str,
    rows: &[Vec<f64>],
    b: usize,
    t: usize,
) -> Result<(), RlError> {
    if rows.len() != b {
        return Err(RlError::Shape {
            what,
            expected: vec![b, t],
            got: vec![rows.len(), rows.first().map_or(0, Vec::len)],
        });
    }
    if let Some(r) = rows.iter().find(|r| r.len() != t) {
        return Err(RlError::Shape {
            what,
            expected: vec![b, t],
            got: vec![b, r.len()],
        });
    }
    Ok(())
}
