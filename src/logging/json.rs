//! JSON lines, the shape of tracing-subscriber's `json().flatten_event(true)` (`timestamp`, `level`, the
//! fields flattened, message included, `target`, and `span`/`spans` inside spans), every string bounded and
//! escaped (see the module above): besides what JSON requires, DEL, C1 (U+0085), U+2028, U+2029 and the
//! bidirectional controls are written `\uXXXX`, so no reader can see a line break inside a line.

use super::{cut_marker, must_escape, Capture};
use std::fmt::{self, Write};
use tracing::field::{Field, Visit};
use tracing::{span, Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The [`FormatEvent`] of the JSON format (with [`JsonFields`] for the fields of spans).
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

/// Span fields as a JSON object (`{"key":value,…}`), kept by tracing-subscriber with the span.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonFields;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Members::default();
        event.record(&mut fields);
        fields.result?;

        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        writer.write_str("{\"timestamp\":")?;
        write_str(&mut writer, &time)?;
        write!(writer, ",\"level\":\"{}\"", meta.level())?;
        if !fields.text.is_empty() {
            writer.write_char(',')?;
            writer.write_str(&fields.text)?;
        }
        writer.write_str(",\"target\":")?;
        // A `log` record's own target (tracing-log puts it in a field); the event's otherwise.
        let target = fields
            .log_target
            .unwrap_or_else(|| Capture::of_str(meta.target()));
        write_value(&mut writer, &target)?;

        if let Some(scope) = ctx.event_scope() {
            let mut spans = Vec::new();
            for span in scope.from_root() {
                let ext = span.extensions();
                let stored = ext
                    .get::<FormattedFields<JsonFields>>()
                    .map(|f| f.fields.as_str())
                    .unwrap_or_default();
                let inner = stored
                    .strip_prefix('{')
                    .and_then(|s| s.strip_suffix('}'))
                    .unwrap_or_default();
                let mut one = String::from("{");
                one.push_str(inner);
                one.push_str(if inner.is_empty() { "" } else { "," });
                one.push_str("\"name\":");
                write_str(&mut one, span.metadata().name())?;
                one.push('}');
                spans.push(one);
            }
            if let Some(leaf) = spans.last() {
                write!(writer, ",\"span\":{leaf}")?;
            }
            write!(writer, ",\"spans\":[{}]", spans.join(","))?;
        }
        writer.write_str("}\n")
    }
}

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = Members::default();
        fields.record(&mut v);
        v.result?;
        write!(writer, "{{{}}}", v.text)
    }

    /// Fields recorded on a span after its creation join its object.
    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &span::Record<'_>,
    ) -> fmt::Result {
        let mut v = Members::default();
        fields.record(&mut v);
        v.result?;
        if v.text.is_empty() {
            return Ok(());
        }
        match current.fields.strip_suffix('}') {
            Some(open) => {
                let sep = if open == "{" { "" } else { "," };
                current.fields = format!("{open}{sep}{}}}", v.text);
            }
            None => current.fields = format!("{{{}}}", v.text),
        }
        Ok(())
    }
}

/// The fields as JSON members (`"key":value,…`, no braces), and a `log` record's target.
struct Members {
    text: String,
    log_target: Option<Capture>,
    result: fmt::Result,
}

impl Default for Members {
    fn default() -> Self {
        Members {
            text: String::new(),
            log_target: None,
            result: Ok(()),
        }
    }
}

impl Members {
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut String) -> fmt::Result) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        if !self.text.is_empty() {
            self.text.push(',');
        }
        self.result = write_str(&mut self.text, name)
            .and_then(|()| self.text.write_char(':'))
            .and_then(|()| value(&mut self.text));
    }

    fn string(&mut self, field: &Field, value: Capture) {
        if field.name() == "log.target" {
            self.log_target = Some(value);
            return;
        }
        self.member(field, |out| write_value(out, &value));
    }
}

impl Visit for Members {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field, Capture::of_str(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.string(field, Capture::of_debug(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.string(field, Capture::of_display(&value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json writes a non-finite number as null, as tracing-subscriber did.
        let text = serde_json::to_string(&value).unwrap_or_else(|_| "null".into());
        self.member(field, |out| out.write_str(&text));
    }
}

/// What `c` takes in a JSON string.
fn cost(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if must_escape(c) => 6,
        c => c.len_utf8(),
    }
}

/// A captured value as a JSON string: bounded, the marker inside the string when it was cut.
fn write_value(w: &mut dyn Write, value: &Capture) -> fmt::Result {
    let bounded = value.bounded(cost);
    w.write_char('"')?;
    write_escaped(w, bounded.text)?;
    if let Some(total) = bounded.cut {
        cut_marker(w, total)?;
    }
    w.write_char('"')
}

/// A JSON string of `text` (names, the time: not bounded).
fn write_str(w: &mut dyn Write, text: &str) -> fmt::Result {
    w.write_char('"')?;
    write_escaped(w, text)?;
    w.write_char('"')
}

fn write_escaped(w: &mut dyn Write, text: &str) -> fmt::Result {
    let mut rest = text;
    while let Some(i) = rest.find(|c: char| matches!(c, '"' | '\\') || must_escape(c)) {
        w.write_str(&rest[..i])?;
        let c = rest[i..].chars().next().unwrap_or_default();
        match c {
            '"' => w.write_str("\\\"")?,
            '\\' => w.write_str("\\\\")?,
            '\n' => w.write_str("\\n")?,
            '\r' => w.write_str("\\r")?,
            '\t' => w.write_str("\\t")?,
            '\u{8}' => w.write_str("\\b")?,
            '\u{c}' => w.write_str("\\f")?,
            c => write!(w, "\\u{:04x}", c as u32)?,
        }
        rest = &rest[i + c.len_utf8()..];
    }
    w.write_str(rest)
}
