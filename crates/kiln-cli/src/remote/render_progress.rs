//! The transcript's spinners for waiting: while the model has not answered a request yet, and
//! while the connection to the server is being regained. Terminal only: piped output stays
//! the transcript.

use super::Renderer;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::time::Duration;

impl<W: Write> Renderer<W> {
    /// While the model has not answered a request: a spinner with the time so far (on a
    /// terminal; elsewhere nothing, so piped output stays the transcript).
    pub(super) fn wait_for_model(&mut self) {
        let Some(spinners) = &self.spinners else {
            return;
        };
        if let Some(old) = self.waiting.take() {
            old.finish_and_clear();
        }
        let style = ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .expect("a valid template")
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏▸");
        let bar = spinners.add(ProgressBar::new_spinner().with_style(style));
        bar.set_message(self.paint.dim("waiting for the model…"));
        bar.enable_steady_tick(Duration::from_millis(100));
        self.waiting = Some(bar);
    }

    /// Shows that the connection is being regained (`Some(reason)`) or is back (`None`).
    /// Returns whether it was shown here (a terminal); if not, the caller says it elsewhere.
    pub(crate) fn reconnecting(&mut self, reason: Option<&str>) -> bool {
        let Some(spinners) = &self.spinners else {
            return false;
        };
        match reason {
            Some(reason) => {
                let bar = self.reconnecting.get_or_insert_with(|| {
                    let style = ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                        .expect("a valid template");
                    let bar = spinners.add(ProgressBar::new_spinner().with_style(style));
                    bar.enable_steady_tick(Duration::from_millis(100));
                    bar
                });
                bar.set_message(format!("reconnecting… ({reason})"));
            }
            None => {
                if let Some(bar) = self.reconnecting.take() {
                    bar.finish_and_clear();
                }
            }
        }
        true
    }

    /// Whether a "waiting for the model" spinner is up.
    #[cfg(test)]
    pub(crate) fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }
}
