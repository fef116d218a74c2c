//! `POST /replication/transfer` on the RPC port: one transfer request in, its response out, as
//! raw SCALE bytes (`application/octet-stream`) — the members' own messages, without JSON and
//! hex around them, so `drchain restore` reads checkpoints at disk speed. Unsafe like
//! `replication_transfer`: a `safe` server answers 403.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use drchain_replication::transfer::{serve, TransferRequest, MAX_REQUEST_BYTES};
use drchain_replication::ChunkStore;
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use jsonrpsee::core::BoxError;
use jsonrpsee::server::{HttpBody, HttpRequest, HttpResponse};
use parity_scale_codec::Encode;
use tower::{Layer, Service};

/// The path the transfer is served on.
pub const TRANSFER_PATH: &str = "/replication/transfer";

/// Serves [`TRANSFER_PATH`] from a chunk store; passes everything else on.
#[derive(Debug, Clone)]
pub struct TransferLayer {
    store: Arc<ChunkStore>,
    deny_unsafe: bool,
}

impl TransferLayer {
    /// Serves `store`'s objects, unless the server is `safe`.
    pub fn new(store: Arc<ChunkStore>, deny_unsafe: bool) -> Self {
        Self { store, deny_unsafe }
    }
}

impl<S> Layer<S> for TransferLayer {
    type Service = Transfer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Transfer {
            inner,
            store: self.store.clone(),
            deny_unsafe: self.deny_unsafe,
        }
    }
}

/// The service [`TransferLayer`] makes.
#[derive(Debug, Clone)]
pub struct Transfer<S> {
    inner: S,
    store: Arc<ChunkStore>,
    deny_unsafe: bool,
}

fn plain(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> HttpResponse {
    let mut response = HttpResponse::new(HttpBody::from(body));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

fn refuse(status: StatusCode, reason: impl Into<String>) -> HttpResponse {
    plain(
        status,
        "text/plain; charset=utf-8",
        reason.into().into_bytes(),
    )
}

/// Reads at most `limit` bytes of `body`; `None` when it is longer or fails.
async fn read_bounded<B>(body: B, limit: usize) -> Option<Vec<u8>>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, limit);
    limited.collect().await.ok().map(|c| c.to_bytes().to_vec())
}

impl<S, B> Service<HttpRequest<B>> for Transfer<S>
where
    S: Service<HttpRequest, Response = HttpResponse>,
    S::Error: Into<BoxError> + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: HttpRequest<B>) -> Self::Future {
        if request.uri().path() != TRANSFER_PATH {
            let future = self.inner.call(request.map(HttpBody::new));
            return Box::pin(async move { future.await.map_err(Into::into) });
        }
        let (store, deny_unsafe) = (self.store.clone(), self.deny_unsafe);
        Box::pin(async move {
            if request.method() != Method::POST {
                return Ok(refuse(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "POST a transfer request",
                ));
            }
            if deny_unsafe {
                return Ok(refuse(
                    StatusCode::FORBIDDEN,
                    "the replication transfer is unsafe; this node serves only safe methods (--rpc-methods)",
                ));
            }
            let Some(bytes) = read_bounded(request.into_body(), MAX_REQUEST_BYTES).await else {
                return Ok(refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a transfer request is at most {MAX_REQUEST_BYTES} bytes"),
                ));
            };
            let request = match TransferRequest::decode_bounded(&bytes) {
                Ok(r) => r,
                Err(e) => return Ok(refuse(StatusCode::BAD_REQUEST, e.to_string())),
            };
            let response = tokio::task::spawn_blocking(move || serve(&store, &request)).await;
            Ok(match response {
                Ok(r) => plain(StatusCode::OK, "application/octet-stream", r.encode()),
                Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            })
        })
    }
}
