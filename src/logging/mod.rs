//! Logs: human-readable on a terminal, JSON lines otherwise (containers, journald). pingora's `log`
//! records are captured too (tracing-log), or they would be lost.
//!
//! Field values come from outside (an `iss` on a callback, a provider's `sub`, an error quoting either), so
//! the formatters below treat EVERY field value, the message included, the same way whatever the call site:
//! - bounded: a value whose rendering would pass [`MAX_VALUE_BYTES`] is cut at a character boundary and ends
//!   with `…[cut, N bytes]` (N: the original length), so one line cannot be flooded;
//! - escaped: control characters (C0, DEL, C1 including U+0085), U+2028, U+2029 and the bidirectional
//!   controls are written as escapes (`\n`, `\u{85}` in text; `\n`, `\u0085` in JSON), so a value can never
//!   start a new line or pass for another one.
//!
//! Text: tracing-subscriber's own line layout (time, level, target) with [`text::TextFields`] for the fields
//! (`key=value`, quoted when the value holds a space, `"`, `\`, `=` or an escape). JSON: [`json::JsonLines`],
//! the shape of tracing-subscriber's `json().flatten_event(true)`: `timestamp`, `level`, the fields (message
//! included) flattened, `target`, and `span`/`spans` inside a span.

mod json;
pub mod pingora_levels;
mod text;

use crate::config::LogFormat;
use std::fmt;
use std::io::IsTerminal;
use tracing_subscriber::fmt::format::{Format, Full};
use tracing_subscriber::fmt::{MakeWriter, SubscriberBuilder};
use tracing_subscriber::EnvFilter;

pub use json::{JsonFields, JsonLines};
pub use text::TextFields;

/// The longest rendering of one field value, escapes included (the cut marker comes on top).
pub const MAX_VALUE_BYTES: usize = 512;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("PASSERELLE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,pingora_core=warn,pingora_proxy=warn"));
    let terminal = std::io::stderr().is_terminal();
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !terminal,
    };
    pingora_levels::install();
    let _ = if json {
        json_builder(filter, std::io::stderr).try_init()
    } else {
        text_builder(filter, std::io::stderr, terminal).try_init()
    };
    pingora_levels::follow_subscriber_level();
}

/// Text lines; colours only when `ansi` (a terminal), never in a file or a pipe.
pub fn text_builder<W>(
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> SubscriberBuilder<TextFields, Format<Full>, EnvFilter, W>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .fmt_fields(TextFields)
}

/// JSON lines.
pub fn json_builder<W>(
    filter: EnvFilter,
    writer: W,
) -> SubscriberBuilder<JsonFields, JsonLines, EnvFilter, W>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .fmt_fields(JsonFields)
        .event_format(JsonLines)
}

/// Characters written as an escape in both formats: a log reader (a terminal, `journalctl`, a JSON-lines
/// shipper, an editor) could take them for a line break, or they could reorder what is shown.
pub(crate) fn must_escape(c: char) -> bool {
    c.is_control() // C0, DEL, C1 (U+0085 NEL included)
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' // line and paragraph separators
                | '\u{061C}' | '\u{200E}' | '\u{200F}' // bidirectional marks
                | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' // bidirectional embeddings, isolates
        )
}

/// A field value as it is captured: its first [`MAX_VALUE_BYTES`] bytes (whole characters; no escape is
/// shorter than the character it stands for, so the rendering never needs more) and its full length. A 60 KB
/// value is never held whole.
#[derive(Default)]
pub(crate) struct Capture {
    kept: String,
    total: usize,
    full: bool,
}

impl Capture {
    pub(crate) fn of_str(value: &str) -> Self {
        let mut c = Capture::default();
        let _ = fmt::Write::write_str(&mut c, value);
        c
    }

    pub(crate) fn of_debug(value: &dyn fmt::Debug) -> Self {
        let mut c = Capture::default();
        let _ = fmt::write(&mut c, format_args!("{value:?}"));
        c
    }

    pub(crate) fn of_display(value: &dyn fmt::Display) -> Self {
        let mut c = Capture::default();
        let _ = fmt::write(&mut c, format_args!("{value}"));
        c
    }

    /// The part of the value that is written, given what each character costs once escaped, and whether
    /// the value was cut (then the marker follows).
    pub(crate) fn bounded(&self, cost: impl Fn(char) -> usize) -> Bounded<'_> {
        let mut used = 0;
        for (i, c) in self.kept.char_indices() {
            used += cost(c);
            if used > MAX_VALUE_BYTES {
                return Bounded {
                    text: &self.kept[..i],
                    cut: Some(self.total),
                };
            }
        }
        Bounded {
            text: &self.kept,
            cut: (self.total > self.kept.len()).then_some(self.total),
        }
    }
}

impl fmt::Write for Capture {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.total += s.len();
        if !self.full {
            let room = MAX_VALUE_BYTES - self.kept.len();
            if s.len() <= room {
                self.kept.push_str(s);
            } else {
                let mut end = room;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                self.kept.push_str(&s[..end]);
                self.full = true;
            }
        }
        Ok(())
    }
}

/// What is written of a value: `text`, then, when `cut` holds the original length, the marker.
pub(crate) struct Bounded<'a> {
    pub text: &'a str,
    pub cut: Option<usize>,
}

/// Ends a cut value (no character of it needs an escape or quotes in either format, but its space does).
pub(crate) fn cut_marker(w: &mut dyn fmt::Write, total: usize) -> fmt::Result {
    write!(w, "…[cut, {total} bytes]")
}

#[cfg(test)]
mod tests;
