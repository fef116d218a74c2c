//! The operator's web dashboard, served on the RPC port: `GET /` (a browser's plain GET; a
//! WebSocket upgrade on `/` is the JSON-RPC server's), `/dashboard.js`, `/dashboard.css`. The
//! files are compiled into the binary; the page talks to this same port over WebSocket
//! (JSON-RPC subscriptions), so it needs no other server, asset or build step.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, UPGRADE};
use hyper::{Method, StatusCode};
use jsonrpsee::core::BoxError;
use jsonrpsee::server::{HttpBody, HttpRequest, HttpResponse};
use tower::{Layer, Service};

const INDEX: &str = include_str!("../dashboard/index.html");
const SCRIPT: &str = include_str!("../dashboard/dashboard.js");
const STYLE: &str = include_str!("../dashboard/dashboard.css");

/// Only our own files, and connections back to this server: nothing inline, nothing from
/// elsewhere, no framing by other sites.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The file for a dashboard request, if it is one: a GET (not a WebSocket upgrade) of a
/// dashboard path.
fn page<B>(request: &HttpRequest<B>) -> Option<(&'static str, &'static str)> {
    if request.method() != Method::GET || request.headers().contains_key(UPGRADE) {
        return None;
    }
    match request.uri().path() {
        "/" | "/index.html" => Some(("text/html; charset=utf-8", INDEX)),
        "/dashboard.js" => Some(("text/javascript; charset=utf-8", SCRIPT)),
        "/dashboard.css" => Some(("text/css; charset=utf-8", STYLE)),
        _ => None,
    }
}

fn respond(content_type: &'static str, body: &'static str) -> HttpResponse {
    let mut response = HttpResponse::new(HttpBody::from(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

/// Serves the dashboard's files; passes everything else on.
#[derive(Debug, Clone, Copy, Default)]
pub struct DashboardLayer;

impl<S> Layer<S> for DashboardLayer {
    type Service = Dashboard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Dashboard { inner }
    }
}

/// The service [`DashboardLayer`] makes.
#[derive(Debug, Clone)]
pub struct Dashboard<S> {
    inner: S,
}

impl<S, B> Service<HttpRequest<B>> for Dashboard<S>
where
    S: Service<HttpRequest<B>, Response = HttpResponse>,
    S::Error: Into<BoxError> + 'static,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: HttpRequest<B>) -> Self::Future {
        if let Some((content_type, body)) = page(&request) {
            return Box::pin(async move { Ok(respond(content_type, body)) });
        }
        let future = self.inner.call(request);
        Box::pin(async move { future.await.map_err(Into::into) })
    }
}
