//! pingora's `log` records, with the level an operator needs. pingora writes at ERROR what clients do every
//! day: a browser closing a kept-alive connection ("fails to read from downstream: ConnectionClosed"), a
//! handshake abandoned half-way, a pooled connection lost to a race. An operator paged for those learns to
//! ignore ERROR. Here they become DEBUG; everything else keeps pingora's level.

use tracing::level_filters::LevelFilter;
use tracing_log::{AsLog, AsTrace};

/// What a client, not the deployment, causes: the message fragments pingora writes for them.
const CLIENT_CAUSED: &[&str] = &[
    "fails to read from downstream",
    "downstream session type",
    "failed to send error response to downstream",
    "Downstream handshake error",
    "Downstream handshake timeout",
    "failed to acquire reusable stream",
];

/// The level a pingora record deserves.
pub fn level_for(target: &str, level: log::Level, message: &str) -> log::Level {
    if level > log::Level::Warn || !target.starts_with("pingora") {
        return level;
    }
    match CLIENT_CAUSED.iter().any(|m| message.contains(m)) {
        true => log::Level::Debug,
        false => level,
    }
}

struct PingoraLevels;

static LOGGER: PingoraLevels = PingoraLevels;

/// Before the subscriber: tracing-subscriber's own bridge then finds the `log` slot taken.
pub fn install() {
    let _ = log::set_logger(&LOGGER);
}

/// After the subscriber: `log` records below its level are not even formatted.
pub fn follow_subscriber_level() {
    log::set_max_level(LevelFilter::current().as_log());
}

impl log::Log for PingoraLevels {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level().as_trace() <= LevelFilter::current()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if record.level() > log::Level::Warn {
            let _ = tracing_log::format_trace(record);
            return;
        }
        let text = record.args().to_string();
        let level = level_for(record.target(), record.level(), &text);
        if level == record.level() {
            let _ = tracing_log::format_trace(record);
            return;
        }
        let _ = tracing_log::format_trace(
            &log::Record::builder()
                .args(format_args!("{text}"))
                .level(level)
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_clients_do_is_debug_what_needs_an_operator_keeps_its_level() {
        let e = log::Level::Error;
        for message in [
            "HTTP server fails to read from downstream: ConnectionClosed context: while reading request headers, bytes already read: 1",
            "Fail to proxy: Downstream ReadError context: while reading request headers, downstream session type: HTTP/1.1",
            "Downstream handshake error from 127.0.0.1:5000: TLSHandshakeFailure",
            "failed to acquire reusable stream",
        ] {
            assert_eq!(level_for("pingora_core::apps::http_app", e, message), log::Level::Debug, "{message}");
        }
        assert_eq!(
            level_for(
                "pingora_core::services::listening",
                e,
                "Accept() failed Too many open files"
            ),
            e
        );
        assert_eq!(
            level_for("pingora_core::server", log::Level::Warn, "bootstrap failed"),
            log::Level::Warn
        );
        assert_eq!(
            level_for("passerelle::proxy", e, "fails to read from downstream"),
            e,
            "only pingora's own records"
        );
    }
}
