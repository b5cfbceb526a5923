//! Progress of long work: indicatif bars on a terminal, plain lines otherwise.

use std::io::{IsTerminal, Read};
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bars: Option<MultiProgress>,
}

impl Progress {
    /// Bars when standard error is a terminal; one line per finished item otherwise.
    pub fn new() -> Self {
        let bars = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self { bars }
    }

    /// No output at all (for library callers and tests).
    pub fn quiet() -> Self {
        Self {
            bars: Some(MultiProgress::with_draw_target(ProgressDrawTarget::hidden())),
        }
    }

    /// A line of its own: above the bars on a terminal, on standard error otherwise.
    pub fn note(&self, line: &str) {
        match &self.bars {
            Some(multi) => {
                let _ = multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    pub fn item(&self, label: String, total: u64) -> Item {
        let bar = self.bars.as_ref().map(|multi| {
            let style = ProgressStyle::with_template(
                "{prefix} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("a valid template");
            multi.add(
                ProgressBar::new(total)
                    .with_style(style)
                    .with_prefix(label.clone()),
            )
        });
        Item {
            bar,
            label,
            start: Instant::now(),
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// One bar (or one line, when it finishes).
pub struct Item {
    bar: Option<ProgressBar>,
    label: String,
    start: Instant,
}

impl Item {
    pub fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    pub fn done(&self, status: &str) {
        let line = format!(
            "{} {status} in {:.2} s",
            self.label,
            self.start.elapsed().as_secs_f64()
        );
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.finish_with_message(status.to_owned()),
            Some(_) => {}
            None => eprintln!("{line}"),
        }
    }
}

/// Counts bytes into a progress item as they are read.
pub struct Counting<'a, R> {
    pub inner: R,
    pub item: &'a Item,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.item.advance(n as u64);
        Ok(n)
    }
}
