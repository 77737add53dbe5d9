//! Runs `cargo test`, passing its output through, and ends with one line
//! totalling every test binary: `tests: N passed, N failed, N skipped`.
//! cargo prints a `test result:` line per binary (the last is often a binary
//! with no tests), so the total is the only honest closing line.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    thread,
};

use anyhow::{Context as _, bail};

#[derive(Default, Debug, PartialEq, Eq)]
pub struct Totals {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl Totals {
    /// Adds a libtest summary line: `test result: ok. 3 passed; 0 failed; 1 ignored; ...`
    /// (ignored tests count as skipped).
    fn add_result_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else { return };
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            let (n, what) = match words.as_slice() {
                [.., n, what] => (n.parse::<u64>().unwrap_or(0), *what),
                _ => continue,
            };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.skipped += n,
                _ => {}
            }
        }
    }
}

impl Totals {
    /// Totals of test binaries' output, stdout and stderr mixed: libtest's
    /// summaries, less the root-only tests that said `SKIPPED name: reason`
    /// (libtest counted them as passed).
    pub fn from_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Totals {
        let mut t = Totals::default();
        let mut skipped_root = 0;
        for line in lines {
            if line.starts_with("SKIPPED ") {
                skipped_root += 1;
            } else {
                t.add_result_line(line);
            }
        }
        t.passed = t.passed.saturating_sub(skipped_root);
        t.skipped += skipped_root;
        t
    }

    pub fn add(&mut self, other: &Totals) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }

    /// `N passed, N failed, N skipped`
    pub fn counts(&self) -> String {
        format!("{} passed, {} failed, {} skipped", self.passed, self.failed, self.skipped)
    }

    /// The closing line of a whole run; an error when nothing passed.
    pub fn close(&self, ok: bool) -> anyhow::Result<()> {
        println!("tests: {}", self.counts());
        if !ok {
            bail!("tests failed");
        }
        if self.passed == 0 {
            bail!("no test ran");
        }
        Ok(())
    }
}

/// Runs `cargo test`, passing its output through; its totals, and whether
/// it succeeded.
pub fn run(mut cmd: Command) -> anyhow::Result<(Totals, bool)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let stderr = child.stderr.take().context("stderr")?;
    // Root-only tests that could not run say `SKIPPED name: reason` on stderr.
    let skipped = thread::spawn(move || {
        let mut n = 0u64;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("SKIPPED ") {
                n += 1;
            }
            eprintln!("{line}");
        }
        n
    });
    let mut totals = Totals::default();
    let stdout = child.stdout.take().context("stdout")?;
    let mut out = std::io::stdout();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        totals.add_result_line(&line);
        writeln!(out, "{line}")?;
    }
    let status = child.wait()?;
    // A skipped root test still "passed" in libtest's count; move it.
    let skipped_root = skipped.join().unwrap_or(0);
    totals.passed = totals.passed.saturating_sub(skipped_root);
    totals.skipped += skipped_root;
    if !status.success() {
        eprintln!("xtask: cargo test failed: {status}");
    }
    Ok((totals, status.success()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_libtest_result_lines() {
        let mut t = Totals::default();
        t.add_result_line("test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.12s");
        t.add_result_line("test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s");
        t.add_result_line("running 3 tests");
        assert_eq!(t, Totals { passed: 5, failed: 1, skipped: 1 });
        let lines = ["SKIPPED x: needs root", "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured"];
        assert_eq!(Totals::from_lines(lines), Totals { passed: 2, failed: 0, skipped: 1 });
    }
}
