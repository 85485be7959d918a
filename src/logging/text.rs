//! Text fields: `message key=value key="a value"`, every value bounded and escaped (see the module above).

use super::{cut_marker, must_escape, Capture};
use std::fmt::{self, Write};
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;

/// The [`FormatFields`] of the text format, for events and spans alike.
#[derive(Debug, Default, Clone, Copy)]
pub struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = TextVisitor {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct TextVisitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl TextVisitor<'_, '_> {
    fn field(&mut self, field: &Field, value: Capture) {
        let name = field.name();
        // tracing-log's metadata of a `log` record, already in the line's target.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = self.write(name, &value);
    }

    fn write(&mut self, name: &str, value: &Capture) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.writer.write_char(' ')?;
        }
        let bounded = value.bounded(cost);
        if name == "message" {
            // Passerelle's own text, written bare, but escaped and bounded like any other value.
            write_escaped(self.writer, bounded.text, false)?;
            if let Some(total) = bounded.cut {
                cut_marker(self.writer, total)?;
            }
            return Ok(());
        }
        if self.writer.has_ansi_escapes() {
            write!(self.writer, "\x1b[3m{name}\x1b[0m\x1b[2m=\x1b[0m")?;
        } else {
            write!(self.writer, "{name}=")?;
        }
        let quoted = bounded.cut.is_some()
            || bounded.text.is_empty()
            || bounded
                .text
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '"' | '\\' | '=') || must_escape(c));
        if quoted {
            self.writer.write_char('"')?;
        }
        write_escaped(self.writer, bounded.text, quoted)?;
        if let Some(total) = bounded.cut {
            cut_marker(self.writer, total)?;
        }
        if quoted {
            self.writer.write_char('"')?;
        }
        Ok(())
    }
}

impl Visit for TextVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, Capture::of_str(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, Capture::of_display(&value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, Capture::of_debug(value));
    }
}

/// What `c` takes once written (inside quotes: the worst case).
fn cost(c: char) -> usize {
    match c {
        '\n' | '\r' | '\t' | '"' | '\\' => 2,
        c if must_escape(c) => format!("\\u{{{:x}}}", c as u32).len(),
        c => c.len_utf8(),
    }
}

/// `text` with line breaks and other controls as Rust-like escapes; inside quotes, `"` and `\` too.
fn write_escaped(w: &mut dyn Write, text: &str, quoted: bool) -> fmt::Result {
    let mut rest = text;
    while let Some(i) = rest.find(|c: char| must_escape(c) || (quoted && matches!(c, '"' | '\\'))) {
        w.write_str(&rest[..i])?;
        let c = rest[i..].chars().next().unwrap_or_default();
        match c {
            '\n' => w.write_str("\\n")?,
            '\r' => w.write_str("\\r")?,
            '\t' => w.write_str("\\t")?,
            '"' => w.write_str("\\\"")?,
            '\\' => w.write_str("\\\\")?,
            c => write!(w, "\\u{{{:x}}}", c as u32)?,
        }
        rest = &rest[i + c.len_utf8()..];
    }
    w.write_str(rest)
}
