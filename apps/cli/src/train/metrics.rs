//! Metrics as JSON lines: one object per step, appended and flushed as training goes (a
//! crash loses at most the step in flight), kept in memory for the plots.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::Result;

pub struct MetricsLog {
    path: PathBuf,
    file: File,
    records: Vec<Value>,
}

impl MetricsLog {
    /// A new, empty log at `path` (an existing file is replaced).
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            records: Vec::new(),
        })
    }

    /// Continues the log at `path`, keeping only records with `global_step <= keep_upto` (a
    /// resumed run rewrites what came after its checkpoint). Kept lines stay byte for byte
    /// as they were; the shortened log replaces the old one atomically (a temporary file
    /// renamed over it), so an interrupted resume loses nothing.
    pub fn resume(path: &Path, keep_upto: u64) -> Result<Self> {
        let mut records = Vec::new();
        let mut kept = String::new();
        if path.exists() {
            let f =
                sluice::fs::open(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            for line in BufReader::new(f).lines() {
                let line = line.map_err(|e| format!("reading {}: {e}", path.display()))?;
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue; // a torn last line from an interrupted run
                };
                if v.get("global_step").and_then(Value::as_u64).unwrap_or(0) <= keep_upto {
                    kept.push_str(&line);
                    kept.push('\n');
                    records.push(v);
                }
            }
        }
        let tmp = path.with_extension("jsonl.partial");
        std::fs::write(&tmp, &kept)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("rewriting {}: {e}", path.display()))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            records,
        })
    }

    fn append(&mut self, rec: &Value) -> Result<()> {
        writeln!(self.file, "{rec}")
            .and_then(|()| self.file.flush())
            .map_err(|e| format!("writing {}: {e}", self.path.display()).into())
    }

    /// Appends one record.
    pub fn write(&mut self, rec: &Value) -> Result<()> {
        self.append(rec)?;
        self.records.push(rec.clone());
        Ok(())
    }

    pub fn records(&self) -> &[Value] {
        &self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn write_then_resume_drops_later_steps() {
        let dir = std::env::temp_dir().join(format!("sluice-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.jsonl");
        // Written by hand: a re-serialised record would read `{"global_step":1,"loss":0.1}`.
        std::fs::write(&p, "{\"global_step\": 1, \"loss\": 1.0000e-1}\n").unwrap();
        let mut log = MetricsLog::resume(&p, u64::MAX).unwrap();
        for s in 2..=5 {
            log.write(&json!({"global_step": s, "loss": 1.0 / s as f64}))
                .unwrap();
        }
        drop(log);
        // A torn line at the end is ignored.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"global_st")
            .unwrap();
        let before = std::fs::read_to_string(&p).unwrap();
        let log = MetricsLog::resume(&p, 3).unwrap();
        assert_eq!(log.records().len(), 3);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 3);
        // Kept lines are byte for byte what was written (no float re-printing).
        let first3: Vec<&str> = before.lines().take(3).collect();
        assert_eq!(text.lines().collect::<Vec<_>>(), first3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
