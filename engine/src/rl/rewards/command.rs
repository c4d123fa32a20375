//! A user reward: an external program that scores completions, speaking JSON lines — the
//! way users plug in their own verifier (TRL's custom reward functions, as a process).
//!
//! The program is started once and kept running. For every sample it reads one line on
//! stdin, `{"prompt": str, "completion": str, "reference": str | null, "group": int}`, and
//! answers one line on stdout: a number, `null` (not applicable), or `{"score": number |
//! null}`. Its stderr passes through. A missing, late (past `timeout_s`) or malformed answer,
//! a non-finite score, or the program exiting is an error naming the command and the line.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use super::{Reward, RewardError, RewardFuture, Sample, Scores};
use serde_json::{Value, json};

/// A running scorer process.
pub struct CommandReward {
    name: String,
    shown: String,
    timeout: Duration,
    io: Mutex<Io>,
}

struct Io {
    child: Child,
    stdin: ChildStdin,
    /// Lines of the child's stdout, read by a helper thread (so that waiting can time out).
    lines: Receiver<std::io::Result<String>>,
}

impl CommandReward {
    /// Starts `argv` (program and arguments) in the folder `dir`. `name` labels the reward
    /// in metrics.
    pub fn spawn(
        name: &str,
        argv: &[String],
        dir: &std::path::Path,
        timeout_s: f64,
    ) -> Result<Self, String> {
        let (program, args) = argv
            .split_first()
            .ok_or("a command reward needs a program: `command = [\"prog\", \"arg\"...]`")?;
        let shown = argv.join(" ");
        let timeout = Duration::try_from_secs_f64(timeout_s)
            .map_err(|e| format!("the reward command `{shown}`: `timeout_s` = {timeout_s}: {e}"))?;
        let mut child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting the reward command `{shown}`: {e}"))?;
        let (stdin, stdout) = match (child.stdin.take(), child.stdout.take()) {
            (Some(i), Some(o)) => (i, o),
            _ => {
                return Err(format!(
                    "the reward command `{shown}` has no stdin/stdout pipes"
                ));
            }
        };
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.to_string(),
            shown,
            timeout,
            io: Mutex::new(Io {
                child,
                stdin,
                lines,
            }),
        })
    }

    fn error(&self, message: String) -> RewardError {
        RewardError::Input {
            reward: self.name.clone(),
            message: format!("command `{}`: {message}", self.shown),
        }
    }

    /// Sends every sample, then reads one answer per sample.
    fn score_all(&self, samples: &[Sample]) -> Result<Scores, RewardError> {
        let mut io = self
            .io
            .lock()
            .map_err(|_| self.error("an earlier call panicked".into()))?;
        let mut batch = String::new();
        for s in samples {
            let line = json!({
                "prompt": s.prompt,
                "completion": s.completion,
                "reference": s.reference,
                "group": s.group,
            });
            batch.push_str(&line.to_string());
            batch.push('\n');
        }
        io.stdin
            .write_all(batch.as_bytes())
            .and_then(|()| io.stdin.flush())
            .map_err(|e| self.error(format!("writing its stdin: {e} (did it exit?)")))?;
        (0..samples.len())
            .map(|i| {
                let line = match io.lines.recv_timeout(self.timeout) {
                    Ok(Ok(line)) => line,
                    Ok(Err(e)) => return Err(self.error(format!("reading its stdout: {e}"))),
                    Err(RecvTimeoutError::Timeout) => {
                        return Err(self.error(format!(
                            "no answer for sample {i} within {:.0} s",
                            self.timeout.as_secs_f64()
                        )));
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        let status = io.child.try_wait().ok().flatten();
                        return Err(self.error(format!(
                            "it exited ({}) before answering sample {i}",
                            status.map_or("still closing".into(), |s| s.to_string())
                        )));
                    }
                };
                parse_score(&line)
                    .map_err(|e| self.error(format!("answer {} `{line}`: {e}", i + 1)))
            })
            .collect()
    }
}

/// `1.5`, `null`, `{"score": 1.5}` or `{"score": null}`.
fn parse_score(line: &str) -> Result<Option<f64>, String> {
    let v: Value = serde_json::from_str(line.trim()).map_err(|e| format!("not JSON: {e}"))?;
    let v = match v {
        Value::Object(mut o) => o.remove("score").ok_or("an object needs a `score` field")?,
        v => v,
    };
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.is_finite() => Ok(Some(x)),
            _ => Err("not a finite number".into()),
        },
        other => Err(format!("expected a number or null, got {other}")),
    }
}

impl Reward for CommandReward {
    fn name(&self) -> &str {
        &self.name
    }

    fn score<'a>(&'a self, samples: &'a [Sample]) -> RewardFuture<'a> {
        Box::pin(std::future::ready(self.score_all(samples)))
    }
}

impl Drop for CommandReward {
    /// Kills the process and reaps it (no zombie, no pipe left open).
    fn drop(&mut self) {
        if let Ok(io) = self.io.get_mut() {
            let _ = io.child.kill();
            let _ = io.child.wait();
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn sh(script: &str, timeout_s: f64) -> CommandReward {
        let argv = ["sh".to_string(), "-c".to_string(), script.to_string()];
        CommandReward::spawn("user", &argv, std::path::Path::new("."), timeout_s).unwrap()
    }

    fn samples(n: usize) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample::new("p", format!("c{i}")).with_reference("r"))
            .collect()
    }

    #[test]
    fn scores_come_back_in_order() {
        // Answers: the length of each request line, then null, then an object.
        let r = sh(
            r#"n=0; while IFS= read -r l; do n=$((n+1)); case $n in
                 1) echo ${#l};; 2) echo null;; *) echo '{"score": 0.25}';; esac; done"#,
            10.0,
        );
        let s = r.score_all(&samples(3)).unwrap();
        assert!(s[0].is_some_and(|x| x > 10.0), "{s:?}");
        assert_eq!(&s[1..], &[None, Some(0.25)]);
    }

    #[test]
    fn bad_answers_name_the_command_and_the_line() {
        let e = sh("while read l; do echo oops; done", 10.0)
            .score_all(&samples(1))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("while read l") && e.contains("answer 1 `oops`"),
            "{e}"
        );
        let e = sh("read l; exit 3", 10.0)
            .score_all(&samples(2))
            .unwrap_err()
            .to_string();
        assert!(e.contains("exited"), "{e}");
        let e = sh("while read l; do sleep 5; done", 0.2)
            .score_all(&samples(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no answer for sample 0 within"), "{e}");
        let e = sh("while read l; do echo 1e999; done", 10.0)
            .score_all(&samples(1))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a finite number") || e.contains("not JSON"),
            "{e}"
        );
        let e = CommandReward::spawn("user", &["/nonexistent/verifier".into()], ".".as_ref(), 1.0)
            .err()
            .unwrap();
        assert!(e.contains("/nonexistent/verifier"), "{e}");
    }
}
