//! The small HTTP/1.1 pieces of the agent and the node: a server loop for plain endpoints (`/metrics`, the health
//! endpoints) and a GET client (health checks, `drchain bench`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;

/// An HTTP failure, with what was asked.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The server could not listen.
    #[error("cannot serve {what} on {addr}: {source}")]
    Bind {
        /// What was to be served (for the operator).
        what: String,
        /// The address asked for.
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The URL is not `http://host[:port]/path`.
    #[error("bad URL {url}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No TCP connection.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL asked for.
        url: String,
        source: std::io::Error,
    },
    /// The request or its response failed.
    #[error("GET {url} failed: {reason}")]
    Exchange {
        /// The URL asked for.
        url: String,
        /// What failed.
        reason: String,
    },
}

/// A response body with its status and content type.
pub fn response(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// Serves `handler` on `addr` until the returned task is dropped or aborted. Binding fails
/// with `what` and the address in the error.
pub async fn serve<H>(
    addr: SocketAddr,
    what: &str,
    handler: H,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), HttpError>
where
    H: Fn(&Request<hyper::body::Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let bind = |source| HttpError::Bind {
        what: what.to_owned(),
        addr,
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    let handler = Arc::new(handler);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = handler(&request);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Ok((local, task))
}

/// A plain HTTP/1.1 GET: the status and the body.
pub async fn get(url: &str) -> Result<(StatusCode, String), HttpError> {
    let bad = |reason: String| HttpError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let exchange = |e: &dyn std::fmt::Display| HttpError::Exchange {
        url: url.to_owned(),
        reason: e.to_string(),
    };
    let uri: hyper::Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
    let host = uri.host().ok_or_else(|| bad("no host".into()))?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|source| HttpError::Connect {
            url: url.to_owned(),
            source,
        })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| exchange(&e))?;
    tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| exchange(&e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| exchange(&e))?;
    let status = response.status();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map_err(|e| exchange(&e))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
