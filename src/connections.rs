//! How each downstream connection is served, so that a silent keep-alive connection costs its socket and a
//! few kilobytes, not a parked request.
//!
//! A ministry's portal at opening time holds ten thousand browsers that sent one request and keep their
//! connection for the next. pingora, left to itself, waits for that next request inside its request future:
//! the proxy's boxed `process_new_http` (about 12 KB), the HTTP session (about 4 KB) and, on every
//! connection, a 64 KB read buffer — about 100 KB per idle browser, a gigabyte for ten thousand, while nginx
//! keeps a few hundred bytes. Here the wait for the next request's first byte happens before any of that is
//! built: the request future and the session exist only while a request is being read, decided and
//! proxied, and plain-TCP listeners read without the L4 buffer (the HTTP parser has its own; the buffer
//! only saved copies for TLS records). Everything a request goes through is pingora's own code, called one
//! request at a time.
//!
//! HTTP/2 (one long-lived connection multiplexing its own streams) and anything but HTTP/1.x are handed to
//! pingora's loop unchanged.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;

/// pingora's own keep-alive default: a connection silent this long after its last answer is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Wraps an HTTP application (the proxy) and serves its HTTP/1.x connections one request at a time.
pub struct LeanConnections<A> {
    app: Arc<A>,
    idle_timeout: Duration,
}

impl<A> LeanConnections<A> {
    pub fn new(app: A, idle_timeout: Duration) -> Self {
        LeanConnections {
            app: Arc::new(app),
            idle_timeout,
        }
    }
}

/// Why a connection stopped waiting for its next request.
#[derive(Debug, PartialEq, Eq)]
enum Wait {
    /// A byte of the next request arrived (it is put back for the parser).
    Request,
    /// The client closed, or the read failed.
    Closed,
    /// The stream cannot be peeked at (TLS): the request is read the usual way, inside pingora's future.
    Unpeekable,
    /// Silent for the idle timeout, or the server is shutting down.
    Idle,
}

/// Waits for the first byte of the next request with nothing but the stream itself held: the byte read is
/// put back (pingora's rewind) so that the parser sees the whole request.
async fn wait_for_request(stream: &mut Stream, idle: Duration, shutdown: &ShutdownWatch) -> Wait {
    if *shutdown.borrow() {
        return Wait::Idle;
    }
    let mut shutdown = shutdown.clone();
    let mut first = [0u8; 1];
    tokio::select! {
        biased;
        peeked = tokio::time::timeout(idle, stream.try_peek(&mut first)) => match peeked {
            Ok(Ok(true)) => Wait::Request,
            Ok(Ok(false)) => Wait::Unpeekable,
            Ok(Err(_)) => Wait::Closed,
            Err(_) => Wait::Idle,
        },
        _ = shutdown.changed() => Wait::Idle,
    }
}

#[async_trait]
impl<A> ServerApp for LeanConnections<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let options = self.app.server_options();
        let plain_h1 = !options.is_some_and(|o| o.h2c)
            && matches!(stream.selected_alpn_proto(), None | Some(ALPN::H1));
        if !plain_h1 {
            return self.app.process_new(stream, shutdown).await;
        }
        let request_limit = options.and_then(|o| o.keepalive_request_limit);
        let mut settings: Option<HttpPersistentSettings> = None;
        loop {
            match wait_for_request(&mut stream, self.idle_timeout, shutdown).await {
                Wait::Request | Wait::Unpeekable => {}
                Wait::Closed | Wait::Idle => return None,
            }
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(kept) => kept.apply_to_session(&mut session),
                // The first request on the connection: pingora's defaults (keep-alive unless shutting down).
                None => {
                    let keepalive = (!*shutdown.borrow()).then_some(self.idle_timeout.as_secs());
                    session.set_keepalive(keepalive);
                    session.set_keepalive_reuses_remaining(request_limit);
                }
            }
            // Without pipelining (pingora's default, kept here) a connection is handed back only when no byte
            // of a next request was read with this one, so waiting on the socket above never misses one.
            let (reused, kept) = self
                .app
                .process_new_http(session, shutdown)
                .await?
                .consume();
            stream = reused;
            settings = kept;
        }
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(server));
        (stream, client)
    }

    #[tokio::test]
    async fn the_first_byte_is_given_back_to_the_parser() {
        let (mut stream, mut client) = pair().await;
        let (_tx, watch) = tokio::sync::watch::channel(false);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let wait = wait_for_request(&mut stream, Duration::from_secs(5), &watch).await;
        assert_eq!(wait, Wait::Request);
        let mut line = [0u8; 16];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut line)
            .await
            .unwrap();
        assert_eq!(&line, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_closed_connection_ends_the_wait() {
        let (mut stream, client) = pair().await;
        let (_tx, watch) = tokio::sync::watch::channel(false);
        drop(client);
        let wait = wait_for_request(&mut stream, Duration::from_secs(5), &watch).await;
        assert_eq!(wait, Wait::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_after_the_idle_timeout() {
        let (mut stream, _client) = pair().await;
        let (_tx, watch) = tokio::sync::watch::channel(false);
        let wait = wait_for_request(&mut stream, Duration::from_secs(60), &watch).await;
        assert_eq!(wait, Wait::Idle);
    }

    #[tokio::test]
    async fn shutdown_ends_the_wait() {
        let (mut stream, _client) = pair().await;
        let (tx, watch) = tokio::sync::watch::channel(false);
        let waiting = tokio::spawn(async move {
            wait_for_request(&mut stream, Duration::from_secs(3600), &watch).await
        });
        tx.send(true).unwrap();
        assert_eq!(waiting.await.unwrap(), Wait::Idle);
    }
}
