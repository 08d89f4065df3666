//! Progress on stderr: a bar (indicatif) on a terminal, otherwise a plain
//! line every few seconds, so logs and CI output stay readable.

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

/// Plain lines come this often at most.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// One progress display.
pub struct Progress {
    label: String,
    total: u64,
    bar: Option<ProgressBar>,
    last_line: Instant,
}

impl Progress {
    /// A display of `total` steps (0 when unknown).
    pub fn new(label: &str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {per_sec} {msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            bar
        });
        Progress {
            label: label.into(),
            total,
            bar,
            last_line: Instant::now(),
        }
    }

    /// Sets the position, with a short note.
    pub fn set(&mut self, position: u64, note: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(position);
                bar.set_message(note.to_string());
            }
            None if self.last_line.elapsed() >= PLAIN_EVERY => {
                self.last_line = Instant::now();
                err!("{}: {position}/{} {note}", self.label, self.total);
            }
            None => {}
        }
    }

    /// Ends the display with a last line.
    pub fn finish(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.finish_with_message(line.to_string()),
            None => err!("{}: {line}", self.label),
        }
    }
}
