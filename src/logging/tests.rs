use super::*;
use std::io;
use std::sync::{Arc, Mutex};

/// An in-memory log output.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buf {
    type Writer = Buf;
    fn make_writer(&'a self) -> Buf {
        self.clone()
    }
}

impl Buf {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Text,
    Json,
}

/// What the formatter of `mode` writes for what `f` logs.
fn logged(mode: Mode, f: impl FnOnce()) -> String {
    let buf = Buf::default();
    let filter = EnvFilter::new("trace");
    match mode {
        Mode::Text => {
            tracing::subscriber::with_default(text_builder(filter, buf.clone(), false).finish(), f)
        }
        Mode::Json => {
            tracing::subscriber::with_default(json_builder(filter, buf.clone()).finish(), f)
        }
    }
    buf.text()
}

fn lines(out: &str) -> Vec<&str> {
    out.strip_suffix('\n')
        .unwrap_or_else(|| panic!("output ends with a line feed: {out:?}"))
        .split('\n')
        .collect()
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    lines(out)
        .into_iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Every character a reader could take for a line break, and then some.
const BREAKERS: &str =
    "a\nb\rc\u{2028}d\u{0085}e\u{2029}f\u{000B}g\u{000C}h\u{001B}i\u{007F}j\u{0000}k\tl";

#[test]
fn text_line_breaks_in_a_field_stay_on_one_line_escaped() {
    let forged = "x\n2025-01-01T00:00:00.000000Z  INFO passerelle::proxy::endpoints: login succeeded sub=admin";
    let out = logged(Mode::Text, || {
        tracing::info!(sub = %forged, display = %BREAKERS, debug = ?BREAKERS, plain = BREAKERS, "login succeeded");
    });
    let lines = lines(&out);
    assert_eq!(lines.len(), 1, "{out:?}");
    assert_eq!(
        out.matches("login succeeded").count(),
        2,
        "the message and inside the quoted value"
    );
    assert!(
        lines[0].contains(r#"sub="x\n2025-01-01T00:00:00.000000Z  INFO"#),
        "{out}"
    );
    assert!(
        lines[0].contains(
            r#"display="a\nb\rc\u{2028}d\u{85}e\u{2029}f\u{b}g\u{c}h\u{1b}i\u{7f}j\u{0}k\tl""#
        ),
        "{out}"
    );
    assert!(lines[0].contains(r#"plain="a\nb\rc\u{2028}"#), "{out}");
    // ?Debug values are Rust's escaping of the string, itself escaped again.
    assert!(lines[0].contains(r#"debug="\"a\\nb\\rc"#), "{out}");
    for c in [
        '\r', '\u{2028}', '\u{2029}', '\u{85}', '\u{b}', '\u{c}', '\u{1b}', '\u{7f}', '\0',
    ] {
        assert!(!out.contains(c), "{c:?} written raw: {out:?}");
    }
}

#[test]
fn text_message_is_escaped_and_values_are_quoted_when_ambiguous() {
    let out = logged(Mode::Text, || {
        tracing::warn!(request_id = "abc-123_x", error = %"a b=c", empty = "", n = 42, "two\nlines");
    });
    assert_eq!(lines(&out).len(), 1, "{out:?}");
    assert!(
        out.contains(r#"two\nlines request_id=abc-123_x error="a b=c" empty="" n=42"#),
        "{out}"
    );
}

#[test]
fn a_60000_byte_field_is_cut_with_its_length_in_both_formats() {
    let huge = "i".repeat(60_000);
    for mode in [Mode::Text, Mode::Json] {
        let out = logged(mode, || {
            tracing::warn!(request_id = "r1", error = %format!("iss `{huge}` is not the issuer"), iss = huge.as_str(), "login failed");
        });
        let lines = lines(&out);
        assert_eq!(lines.len(), 1, "{mode:?}");
        assert!(lines[0].len() < 1_300, "{mode:?}: {} bytes", lines[0].len());
        assert_eq!(
            out.matches("…[cut, 60000 bytes]").count(),
            1,
            "{mode:?}: {out}"
        );
        assert_eq!(
            out.matches("…[cut, 60024 bytes]").count(),
            1,
            "{mode:?}: {out}"
        );
        assert!(!out.contains(&"i".repeat(513)), "{mode:?}");
        assert!(
            out.contains(&"i".repeat(500)),
            "{mode:?}: the start of the value is kept"
        );
    }
    // One field alone: the line stays under 1 KB.
    for mode in [Mode::Text, Mode::Json] {
        let out = logged(mode, || tracing::info!(iss = %huge, "x"));
        assert!(out.len() < 1_024, "{mode:?}: {} bytes", out.len());
        assert!(out.contains("…[cut, 60000 bytes]"), "{mode:?}");
    }
    let v = &json_lines(&logged(Mode::Json, || tracing::info!(iss = %huge, "x")))[0];
    let iss = v["iss"].as_str().unwrap();
    assert_eq!(iss, format!("{}…[cut, 60000 bytes]", "i".repeat(512)));
}

#[test]
fn escapes_count_towards_the_bound_and_cuts_fall_on_characters() {
    let controls = "\u{1}".repeat(400); // 400 bytes, 2,000 once escaped
    let accents = "é".repeat(400); // 800 bytes
    let nels = "\u{85}".repeat(300); // 600 bytes
    for mode in [Mode::Text, Mode::Json] {
        let out = logged(mode, || {
            tracing::info!(a = %controls, b = %accents, c = %nels, "{}", "\u{2028}".repeat(1_000));
        });
        assert_eq!(lines(&out).len(), 1, "{mode:?}");
        assert!(out.len() < 4 * 560 + 200, "{mode:?}: {} bytes", out.len());
        assert!(
            out.contains("…[cut, 400 bytes]"),
            "{mode:?}: escaped, 400 bytes do not fit"
        );
        assert!(out.contains("…[cut, 800 bytes]"), "{mode:?}");
        assert!(out.contains("…[cut, 600 bytes]"), "{mode:?}");
        assert!(
            out.contains("…[cut, 3000 bytes]"),
            "{mode:?}: the message too"
        );
    }
    let v = &json_lines(&logged(Mode::Json, || tracing::info!(b = %accents, "x")))[0];
    assert_eq!(v["b"], format!("{}…[cut, 800 bytes]", "é".repeat(256)));
}

#[test]
fn json_stays_valid_and_keeps_its_shape() {
    let out = logged(Mode::Json, || {
        tracing::info!(request_id = "r-1", status = 403u16, route = 2usize, ok = true, ratio = 0.5, delta = -3i64, sub = %BREAKERS, "login succeeded");
        tracing::warn!(r#type = "x", quote = "a\"b\\c", "second");
        let span = tracing::info_span!("request", request_id = "s-9", path = %"/a\nb");
        let _g = span.enter();
        span.record("path", "/b");
        tracing::error!(late = 1, "in a span");
    });
    for c in ['\r', '\u{2028}', '\u{2029}', '\u{85}', '\u{7f}'] {
        assert!(!out.contains(c), "{c:?} written raw");
    }
    assert!(
        out.contains(r"\u2028") && out.contains(r"\u0085") && out.contains(r"\u007f"),
        "{out}"
    );
    let v = json_lines(&out);
    assert_eq!(v.len(), 3, "{out}");
    let first = v[0].as_object().unwrap();
    let keys: Vec<&str> = first.keys().map(String::as_str).collect();
    for k in [
        "timestamp",
        "level",
        "target",
        "message",
        "request_id",
        "status",
        "sub",
    ] {
        assert!(keys.contains(&k), "{k} in {keys:?}");
    }
    assert_eq!(first["level"], "INFO");
    assert_eq!(first["message"], "login succeeded");
    assert_eq!(first["target"], module_path!());
    assert_eq!(first["status"], 403);
    assert_eq!(first["route"], 2);
    assert_eq!(first["ok"], true);
    assert_eq!(first["ratio"], 0.5);
    assert_eq!(first["delta"], -3);
    assert_eq!(first["sub"], BREAKERS, "escaped, and read back exactly");
    assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(out.starts_with("{\"timestamp\":"), "timestamp first: {out}");
    assert_eq!(v[1]["type"], "x");
    assert_eq!(v[1]["quote"], "a\"b\\c");
    assert!(v[1].get("span").is_none() && v[1].get("spans").is_none());
    assert_eq!(v[2]["span"]["name"], "request");
    assert_eq!(v[2]["span"]["request_id"], "s-9");
    assert_eq!(v[2]["spans"][0]["name"], "request");
    assert_eq!(v[2]["late"], 1);
}

#[test]
fn text_spans_keep_their_fields_escaped() {
    let out = logged(Mode::Text, || {
        let span = tracing::info_span!("request", path = %"/a\nb");
        let _g = span.enter();
        tracing::info!("inside");
    });
    assert_eq!(lines(&out).len(), 1, "{out:?}");
    assert!(out.contains(r#"request{path="/a\nb"}: "#), "{out}");
}
