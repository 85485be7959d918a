//! The pingora service: holds the current configuration generation and hands each request the one it
//! started on.
//!
//! A reload swaps the generation atomically ([`arc_swap`]): a request picks it once, in `new_ctx`, and
//! keeps it for all its phases, so it is never decided on one configuration and forwarded on another.

use super::{correlation_id, Ctx, Gateway};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session as HttpSession};
use pingora::upstreams::peer::HttpPeer;
use std::sync::Arc;

pub struct Passerelle {
    current: Arc<ArcSwap<Gateway>>,
}

impl Passerelle {
    pub fn new(current: Arc<ArcSwap<Gateway>>) -> Self {
        Passerelle { current }
    }
}

/// Runs one phase on the request's generation. The `Arc` is moved out of the context and back rather
/// than cloned: no reference-count traffic between worker threads on every phase.
macro_rules! on_generation {
    ($self:ident, $ctx:ident, |$gw:ident| $body:expr) => {{
        let $gw = match $ctx.gateway.take() {
            Some(gw) => gw,
            None => $self.current.load_full(),
        };
        let out = $body;
        $ctx.gateway = Some($gw);
        out
    }};
}

#[async_trait]
impl ProxyHttp for Passerelle {
    type CTX = Ctx;

    /// No downstream modules. pingora's default registers its response-compression module switched off,
    /// which still builds a module context per request and looks at every request and response header;
    /// Passerelle compresses nothing.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx {
            request_id: correlation_id(),
            gateway: Some(self.current.load_full()),
            ..Ctx::default()
        }
    }

    async fn request_filter(
        &self,
        session: &mut HttpSession,
        ctx: &mut Ctx,
    ) -> pingora::Result<bool> {
        on_generation!(self, ctx, |gw| gw.request_filter(session, ctx).await)
    }

    async fn upstream_peer(
        &self,
        session: &mut HttpSession,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        on_generation!(self, ctx, |gw| gw.upstream_peer(session, ctx).await)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut HttpSession,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        on_generation!(self, ctx, |gw| gw
            .upstream_request_filter(session, upstream, ctx)
            .await)
    }

    fn fail_to_connect(
        &self,
        session: &mut HttpSession,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        e: Box<pingora::Error>,
    ) -> Box<pingora::Error> {
        on_generation!(self, ctx, |gw| gw.fail_to_connect(session, peer, ctx, e))
    }

    async fn response_filter(
        &self,
        session: &mut HttpSession,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        on_generation!(self, ctx, |gw| gw
            .response_filter(session, upstream_response, ctx)
            .await)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut HttpSession,
        e: &pingora::Error,
        ctx: &mut Ctx,
    ) -> FailToProxy {
        on_generation!(self, ctx, |gw| gw.fail_to_proxy(session, e, ctx).await)
    }

    /// `fail_to_proxy` has written its own line, with the correlation id and at the level the cause
    /// deserves (nothing for a client that left): pingora's ERROR line would say it again, louder.
    fn suppress_error_log(
        &self,
        _session: &HttpSession,
        _ctx: &Ctx,
        _error: &pingora::Error,
    ) -> bool {
        true
    }

    async fn logging(&self, session: &mut HttpSession, e: Option<&pingora::Error>, ctx: &mut Ctx) {
        on_generation!(self, ctx, |gw| gw.logging(session, e, ctx).await)
    }
}
