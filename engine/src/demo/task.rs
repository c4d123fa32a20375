//! The demo tasks: digit sorting (`"31415="` → `"11345"`) and multi-digit addition
//! (`"37+45="` → `"82"`), each answer followed by `<eos>`.
//!
//! Problems are split once and for all into a training set and a held-out set (about 1 in 8,
//! chosen by a hash of the prompt), so held-out accuracy is measured on problems the model
//! never saw in SFT or RL.

use rand::Rng;
use rand::rngs::StdRng;

use super::vocab::{EOS, encode};
use crate::rl::rewards::Sample;
use crate::rl::step::Prompt;
use crate::train::sft::SftExample;

/// One problem: prompt text and the correct answer text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub prompt: String,
    pub answer: String,
}

impl Problem {
    pub fn prompt_ids(&self) -> Vec<u32> {
        encode(&self.prompt)
    }

    /// The answer's ids then `<eos>` (the SFT target).
    pub fn completion_ids(&self) -> Vec<u32> {
        let mut ids = encode(&self.answer);
        ids.push(EOS);
        ids
    }

    /// The SFT example: prompt then answer + `<eos>`, the answer part as targets.
    pub fn sft_example(&self) -> SftExample {
        let mut ids = self.prompt_ids();
        let np = ids.len();
        ids.extend(self.completion_ids());
        let targets = (0..ids.len()).map(|i| i >= np).collect();
        SftExample { ids, targets }
    }

    /// The RL prompt, with the answer as the verifier's reference.
    pub fn rl_prompt(&self) -> Prompt {
        Prompt {
            ids: self.prompt_ids(),
            text: self.prompt.clone(),
            reference: Some(self.answer.clone()),
        }
    }

    /// True when generated `ids` are exactly the answer followed by `<eos>`.
    pub fn is_correct(&self, ids: &[u32]) -> bool {
        ids == self.completion_ids().as_slice()
    }
}

/// A demo task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Sort `len` random digits ascending.
    Sort { len: usize },
    /// Add two `digits`-digit numbers (no leading zeros).
    Addition { digits: u32 },
}

impl std::str::FromStr for Task {
    type Err = String;
    /// `sort`, `sort:N`, `addition`, `addition:N`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, n) = match s.split_once(':') {
            Some((a, b)) => (
                a,
                Some(
                    b.parse::<u32>()
                        .map_err(|_| format!("task size `{b}` is not a number"))?,
                ),
            ),
            None => (s, None),
        };
        match (name, n) {
            ("sort", n) => match n.unwrap_or(5) {
                n @ 2..=12 => Ok(Task::Sort { len: n as usize }),
                n => Err(format!("sort length {n} outside 2..=12")),
            },
            ("addition", n) => match n.unwrap_or(2) {
                n @ 1..=6 => Ok(Task::Addition { digits: n }),
                n => Err(format!("addition digits {n} outside 1..=6")),
            },
            _ => Err(format!(
                "unknown task `{s}` (known: sort, sort:N, addition, addition:N)"
            )),
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Task::Sort { len } => write!(f, "sort:{len}"),
            Task::Addition { digits } => write!(f, "addition:{digits}"),
        }
    }
}

/// 64-bit FNV-1a then a SplitMix64 finaliser: the fixed train / held-out split.
fn hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    crate::train::seeds::mix64(h)
}

impl Task {
    /// Longest answer in tokens (incl. `<eos>`).
    pub fn max_answer_tokens(&self) -> usize {
        match self {
            Task::Sort { len } => len + 1,
            Task::Addition { digits } => *digits as usize + 2,
        }
    }

    /// The problem as a natural-language request, for models with a real tokenizer
    /// (`"31415="` → `"Sort the digits 31415 in ascending order. Reply with the digits only."`).
    pub fn instruction(&self, p: &Problem) -> String {
        let q = p.prompt.trim_end_matches('=');
        match self {
            Task::Sort { .. } => {
                format!("Sort the digits {q} in ascending order. Reply with the digits only.")
            }
            Task::Addition { .. } => {
                format!(
                    "What is {}? Reply with the number only.",
                    q.replace('+', " + ")
                )
            }
        }
    }

    /// Whether a problem belongs to the held-out set (never trained on).
    pub fn is_heldout(&self, p: &Problem) -> bool {
        hash(&p.prompt).is_multiple_of(8)
    }

    /// Number of distinct problems.
    fn space(&self) -> u64 {
        match self {
            Task::Sort { len } => 10u64.pow(*len as u32),
            Task::Addition { digits } => {
                let n = 10u64.pow(*digits)
                    - if *digits > 1 {
                        10u64.pow(digits - 1)
                    } else {
                        0
                    };
                n * n
            }
        }
    }

    fn random(&self, rng: &mut StdRng) -> Problem {
        match *self {
            Task::Sort { len } => {
                let digits: Vec<u8> = (0..len).map(|_| rng.random_range(0..10u8)).collect();
                let mut sorted = digits.clone();
                sorted.sort_unstable();
                let text = |d: &[u8]| d.iter().map(|x| char::from(b'0' + x)).collect::<String>();
                Problem {
                    prompt: format!("{}=", text(&digits)),
                    answer: text(&sorted),
                }
            }
            Task::Addition { digits } => {
                let hi = 10u64.pow(digits);
                let lo = if digits > 1 { hi / 10 } else { 0 };
                let (a, b) = (rng.random_range(lo..hi), rng.random_range(lo..hi));
                Problem {
                    prompt: format!("{a}+{b}="),
                    answer: (a + b).to_string(),
                }
            }
        }
    }

    /// A random training problem (never a held-out one).
    pub fn train_problem(&self, rng: &mut StdRng) -> Problem {
        loop {
            let p = self.random(rng);
            if !self.is_heldout(&p) {
                return p;
            }
        }
    }

    /// `n` distinct held-out problems (fewer if the task has fewer), fixed for a seed.
    pub fn heldout(&self, n: usize, seed: u64) -> Vec<Problem> {
        use rand::SeedableRng;
        let mut rng = StdRng::seed_from_u64(seed);
        let n = n.min((self.space() / 10) as usize);
        let mut out: Vec<Problem> = Vec::with_capacity(n);
        while out.len() < n {
            let p = self.random(&mut rng);
            if self.is_heldout(&p) && !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }
}

/// Graded verifier: matching positions of completion and answer (`<eos>` included) over the
/// longer of the two; 1 exactly when the completion is the answer then `<eos>`.
pub fn partial_credit(s: &Sample) -> Option<f64> {
    let got = s.completion_ids.as_ref()?;
    let mut want = encode(s.reference.as_deref()?);
    want.push(EOS);
    let right = got.iter().zip(&want).filter(|(a, b)| a == b).count();
    Some(right as f64 / got.len().max(want.len()) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn problems_and_answers() {
        let p = Problem {
            prompt: "37+45=".into(),
            answer: "82".into(),
        };
        assert_eq!(p.completion_ids(), vec![10, 4, EOS]);
        assert!(p.is_correct(&[10, 4, EOS]));
        assert!(!p.is_correct(&[10, 4]));
        let mut rng = StdRng::seed_from_u64(3);
        let s = Task::Sort { len: 5 }.train_problem(&mut rng);
        let mut d: Vec<char> = s.prompt.trim_end_matches('=').chars().collect();
        d.sort_unstable();
        assert_eq!(s.answer, d.into_iter().collect::<String>());
        let a = Task::Addition { digits: 2 }.train_problem(&mut rng);
        let (x, y) = a.prompt.trim_end_matches('=').split_once('+').unwrap();
        assert_eq!(
            a.answer,
            (x.parse::<u64>().unwrap() + y.parse::<u64>().unwrap()).to_string()
        );
    }

    #[test]
    fn training_never_draws_heldout_problems() {
        for task in [Task::Sort { len: 5 }, Task::Addition { digits: 2 }] {
            let held = task.heldout(200, 7);
            assert_eq!(held.len(), 200);
            assert!(held.iter().all(|p| task.is_heldout(p)));
            let mut rng = StdRng::seed_from_u64(1);
            let mut n_held = 0;
            for _ in 0..4000 {
                let p = task.train_problem(&mut rng);
                assert!(!task.is_heldout(&p));
                n_held += usize::from(task.is_heldout(&task.random(&mut rng)));
            }
            // About one problem in eight is held out.
            assert!((300..700).contains(&n_held), "{task}: {n_held} of 4000");
        }
    }

    #[test]
    fn task_names_parse() {
        assert_eq!("sort".parse::<Task>(), Ok(Task::Sort { len: 5 }));
        assert_eq!("sort:7".parse::<Task>(), Ok(Task::Sort { len: 7 }));
        assert_eq!(
            "addition:3".parse::<Task>(),
            Ok(Task::Addition { digits: 3 })
        );
        assert!(
            "sort:x"
                .parse::<Task>()
                .unwrap_err()
                .contains("not a number")
        );
        assert!("mul".parse::<Task>().unwrap_err().contains("unknown task"));
        assert_eq!(Task::Sort { len: 5 }.to_string(), "sort:5");
    }

    #[test]
    fn partial_credit_grades_positions() {
        let s = |c: &str, eos: bool| {
            let mut ids = encode(c);
            if eos {
                ids.push(EOS);
            }
            Sample::new("31415=", c)
                .with_reference("11345")
                .with_ids(encode("31415="), ids)
        };
        assert_eq!(partial_credit(&s("11345", true)), Some(1.0));
        assert_eq!(partial_credit(&s("11345", false)), Some(5.0 / 6.0));
        assert_eq!(partial_credit(&s("11346", true)), Some(5.0 / 6.0));
        assert_eq!(partial_credit(&s("113455", true)), Some(5.0 / 7.0));
        assert_eq!(partial_credit(&s("", true)), Some(0.0));
        assert_eq!(partial_credit(&Sample::new("a", "b")), None);
    }
}
