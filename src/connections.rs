//! How each downstream connection is served, so that a silent keep-alive connection costs its socket and a
//! few kilobytes, not a parked request.
//!
//! A ministry's portal at opening time holds ten thousand browsers that sent one request and keep their
//! connection for the next. pingora, left to itself, waits for that next request inside its request future:
//! the proxy's boxed `process_new_http` (about 12 KB), the HTTP session (about 4 KB), a 64 KB read buffer and
//! its per-connection task, sized for a TLS handshake (about 10 KB) — about 100 KB per idle browser, a
//! gigabyte for ten thousand, while nginx keeps a few hundred bytes. Here a plain HTTP/1.x connection lives
//! in a task of its own that waits for the next request's first bytes holding only the stream: the request
//! future and the session exist only while a request is being read, decided and proxied, and plain-TCP
//! listeners read without the L4 buffer (the HTTP parser has its own; the buffer only saved copies for TLS
//! records). The bytes that end the wait are put back for the parser, so a request still costs one `recv`.
//! Everything a request goes through is pingora's own code, called one request at a time.
//!
//! HTTP/2 (one long-lived connection multiplexing its own streams), TLS (whose decrypted bytes cannot be put
//! back) and anything but HTTP/1.x are handed to pingora's loop unchanged.

use std::future::poll_fn;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as PlainStream;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long a connection may stay silent after its last answer before it is closed: pingora's keep-alive
/// default for a first request (it waits without limit after later ones).
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
    /// The first bytes of the next request arrived (they are put back for the parser).
    Request,
    /// The client closed, or the read failed.
    Closed,
    /// Silent for the idle timeout, or the server is shutting down.
    Idle,
}

/// The most bytes read while waiting: a browser's request usually fits, so the parser finds it whole in the
/// bytes put back and the request costs the same single `recv` as in pingora's loop. The buffer lives on the
/// stack of one poll, never in the waiting future, so an idle connection does not keep it.
const FIRST_READ: usize = 4096;

/// One attempt at reading the next request's first bytes; what was read is put back (pingora's rewind).
fn poll_first_bytes(stream: &mut PlainStream, cx: &mut Context<'_>) -> Poll<Wait> {
    let mut first = [MaybeUninit::<u8>::uninit(); FIRST_READ];
    let mut read = ReadBuf::uninit(&mut first);
    match Pin::new(&mut *stream).poll_read(cx, &mut read) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(Wait::Closed),
        Poll::Ready(Ok(())) => {
            stream.rewind(read.filled());
            Poll::Ready(Wait::Request)
        }
        Poll::Ready(Err(_)) => Poll::Ready(Wait::Closed),
    }
}

/// Waits for the next request with nothing but the stream itself held. `deadline` is the connection's one idle
/// timer, pushed back at each wait rather than made anew: moving a registered timer later is a single atomic
/// store in tokio (the entry fires at the old time and is filed again), where a timer per request costs a
/// registration and a removal every time.
///
/// A shutdown (or a binary upgrade handing the listener over) ends the wait of a keep-alive connection that
/// has been answered, but not the wait for a connection's first request: a client that just connected is
/// sending one, and closing the connection under it would fail a request no one can retry safely. That
/// wait still ends with the idle timer, or when the runtime stops after `shutdown_timeout`.
async fn wait_for_request(
    stream: &mut PlainStream,
    idle: Duration,
    mut deadline: Pin<&mut Sleep>,
    shutdown: &mut ShutdownWatch,
    turn: Turn,
) -> Wait {
    deadline.as_mut().reset(Instant::now() + idle);
    // The read comes first even when shutting down: a request already sent is read and answered (pingora then
    // closes the connection after it), as in pingora's own loop, rather than reset unread.
    tokio::select! {
        biased;
        wait = poll_fn(|cx| poll_first_bytes(stream, cx)) => wait,
        _ = deadline.as_mut() => Wait::Idle,
        _ = shutting_down(shutdown), if turn == Turn::Next => Wait::Idle,
    }
}

/// Which request of its connection is awaited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    First,
    Next,
}

/// Ready once the server is shutting down (at once if it already is).
async fn shutting_down(shutdown: &mut ShutdownWatch) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            // No one left to signal a shutdown: never.
            return std::future::pending().await;
        }
    }
}

impl<A> LeanConnections<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// Serves one plain HTTP/1.x connection, request after request, until it closes or stays silent.
    async fn serve_http1(
        self: Arc<Self>,
        mut stream: Box<PlainStream>,
        mut shutdown: ShutdownWatch,
    ) {
        let request_limit = self
            .app
            .server_options()
            .and_then(|o| o.keepalive_request_limit);
        let mut settings: Option<HttpPersistentSettings> = None;
        let deadline = tokio::time::sleep(self.idle_timeout);
        tokio::pin!(deadline);
        let mut turn = Turn::First;
        loop {
            let idle = self.idle_timeout;
            match wait_for_request(&mut stream, idle, deadline.as_mut(), &mut shutdown, turn).await
            {
                Wait::Request => {}
                Wait::Closed | Wait::Idle => return,
            }
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(kept) => kept.apply_to_session(&mut session),
                None => session.set_keepalive_reuses_remaining(request_limit),
            }
            // Keep-alive unless shutting down, with the idle timeout, on every request and not only the first:
            // pingora waits for each read of a request's headers as long as its keep-alive timeout, which after
            // the first request is "infinite" (HTTP/1.1's default), so a client that started a request and then
            // stalled held its session forever. Once the request is read, pingora sets the answer's keep-alive
            // from the request itself. (Whole seconds: 0 would mean no limit.)
            let keepalive = (!*shutdown.borrow()).then_some(self.idle_timeout.as_secs().max(1));
            session.set_keepalive(keepalive);
            // Without pipelining (pingora's default, kept here) a connection is handed back only when no byte
            // of a next request was read with this one, so waiting on the socket above never misses one.
            let Some(reused) = self.app.process_new_http(session, &shutdown).await else {
                return;
            };
            let (reused, kept) = reused.consume();
            let Some(next) = plain(reused) else {
                return;
            };
            stream = next;
            settings = kept;
            turn = Turn::Next;
        }
    }
}

#[async_trait]
impl<A> ServerApp for LeanConnections<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let options = self.app.server_options();
        let plain_h1 = !options.is_some_and(|o| o.h2c || o.force_custom)
            && matches!(stream.selected_alpn_proto(), None | Some(ALPN::H1))
            && stream.as_any().is::<PlainStream>();
        if !plain_h1 {
            return self.app.process_new(stream, shutdown).await;
        }
        let stream = plain(stream)?;
        // pingora's task for this connection was sized for its accept and TLS handshake (about 10 KB); the
        // connection's life goes on in a task of its own, sized for the wait below, and pingora's ends here.
        tokio::spawn(Arc::clone(self).serve_http1(stream, shutdown.clone()));
        None
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}

/// The plain TCP (or Unix) stream behind pingora's boxed one, which is what can be read and rewound here;
/// `None` only if pingora handed back another kind, which then closes the connection.
fn plain(stream: Stream) -> Option<Box<PlainStream>> {
    stream.into_any().downcast::<PlainStream>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// One wait with a fresh timer, as on a connection's first request.
    async fn wait(stream: &mut PlainStream, idle: Duration, watch: &ShutdownWatch) -> Wait {
        let deadline = tokio::time::sleep(idle);
        tokio::pin!(deadline);
        wait_for_request(stream, idle, deadline, &mut watch.clone(), Turn::Next).await
    }

    async fn pair() -> (Box<PlainStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Box::new(PlainStream::from(server)), client)
    }

    #[tokio::test]
    async fn the_bytes_read_while_waiting_are_given_back_to_the_parser() {
        let (mut stream, mut client) = pair().await;
        let (_tx, watch) = tokio::sync::watch::channel(false);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let wait = wait(&mut stream, Duration::from_secs(5), &watch).await;
        assert_eq!(wait, Wait::Request);
        let mut line = [0u8; 16];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut line)
            .await
            .unwrap();
        assert_eq!(&line, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_request_longer_than_the_first_read_reaches_the_parser_whole() {
        let (mut stream, mut client) = pair().await;
        let (_tx, watch) = tokio::sync::watch::channel(false);
        let request: Vec<u8> = (0..3 * FIRST_READ).map(|i| (i % 251) as u8).collect();
        client.write_all(&request).await.unwrap();
        let wait = wait(&mut stream, Duration::from_secs(5), &watch).await;
        assert_eq!(wait, Wait::Request);
        let mut seen = vec![0u8; request.len()];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut seen)
            .await
            .unwrap();
        assert_eq!(seen, request);
    }

    #[tokio::test]
    async fn a_closed_connection_ends_the_wait() {
        let (mut stream, client) = pair().await;
        let (_tx, watch) = tokio::sync::watch::channel(false);
        drop(client);
        let wait = wait(&mut stream, Duration::from_secs(5), &watch).await;
        assert_eq!(wait, Wait::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_after_the_idle_timeout() {
        let (mut stream, _client) = pair().await;
        let (_tx, watch) = tokio::sync::watch::channel(false);
        let wait = wait(&mut stream, Duration::from_secs(60), &watch).await;
        assert_eq!(wait, Wait::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn the_connection_timer_is_pushed_back_at_each_wait() {
        let (mut stream, mut client) = pair().await;
        let (_tx, mut watch) = tokio::sync::watch::channel(false);
        let idle = Duration::from_secs(60);
        let deadline = tokio::time::sleep(idle);
        tokio::pin!(deadline);
        // 50 s into the first wait a request comes: the timer set for 60 s must not cut the next wait short.
        tokio::time::sleep(Duration::from_secs(50)).await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let first = wait_for_request(
            &mut stream,
            idle,
            deadline.as_mut(),
            &mut watch,
            Turn::First,
        )
        .await;
        assert_eq!(first, Wait::Request);
        let mut request = [0u8; 18];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut request)
            .await
            .unwrap();
        let start = Instant::now();
        let second =
            wait_for_request(&mut stream, idle, deadline.as_mut(), &mut watch, Turn::Next).await;
        assert_eq!(second, Wait::Idle);
        assert!(start.elapsed() >= idle, "idle after {:?}", start.elapsed());
    }

    #[tokio::test]
    async fn a_request_already_read_when_shutdown_begins_is_still_served() {
        let (mut stream, _client) = pair().await;
        // Bytes already taken from the socket (put back, as the wait does) are readable at once, whatever the
        // reactor has seen: the read and the shutdown are both ready, and the read must win.
        stream.rewind(b"POST / HTTP/1.1\r\n");
        let (tx, watch) = tokio::sync::watch::channel(false);
        tx.send(true).unwrap();
        assert_eq!(
            wait(&mut stream, Duration::from_secs(5), &watch).await,
            Wait::Request
        );
    }

    #[tokio::test]
    async fn a_silent_connection_ends_at_once_when_already_shutting_down() {
        let (mut stream, _client) = pair().await;
        let (tx, watch) = tokio::sync::watch::channel(false);
        tx.send(true).unwrap();
        assert_eq!(
            wait(&mut stream, Duration::from_secs(3600), &watch).await,
            Wait::Idle
        );
    }

    #[tokio::test]
    async fn shutdown_ends_the_wait() {
        let (mut stream, _client) = pair().await;
        let (tx, watch) = tokio::sync::watch::channel(false);
        let waiting =
            tokio::spawn(async move { wait(&mut stream, Duration::from_secs(3600), &watch).await });
        tx.send(true).unwrap();
        assert_eq!(waiting.await.unwrap(), Wait::Idle);
    }

    #[tokio::test]
    async fn a_new_connection_gets_its_first_request_read_even_when_shutdown_begins() {
        let (mut stream, mut client) = pair().await;
        let (tx, mut watch) = tokio::sync::watch::channel(false);
        tx.send(true).unwrap();
        let deadline = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(deadline);
        let waiting = async {
            wait_for_request(
                &mut stream,
                Duration::from_secs(3600),
                deadline.as_mut(),
                &mut watch,
                Turn::First,
            )
            .await
        };
        // The request arrives after the shutdown began: it is still awaited, then read.
        let (wait, ()) = tokio::join!(waiting, async {
            tokio::task::yield_now().await;
            client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        });
        assert_eq!(wait, Wait::Request);
    }
}
