//! Health endpoints in Patroni's convention, so HAProxy, Envoy or Kubernetes can route on
//! them: `GET /primary?service=NAME` answers 200 only on the node serving the service under its
//! lease, 503 otherwise; likewise `/replica`, `/health`, `/liveness`, `/readiness`. The body is
//! JSON: role, epoch (the fencing token), lease left, last heartbeat.
//!
//! | path | 200 when |
//! | --- | --- |
//! | `/primary` (`/master`, `/leader`) | this node serves the service (active, lease holds) |
//! | `/replica` | a healthy standby |
//! | `/health` | the service's health check passes on this node |
//! | `/liveness` | the agent's loop is running (turned within the last 2 s) |
//! | `/readiness` | serving, or a healthy standby ready to take over |
//!
//! Without `?service=` the one configured service is meant; with several, the parameter is
//! required (400). An unknown service is 404.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use drchain_consensus::clock::Clock;
use drchain_support::Health;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use tokio::sync::watch;

use super::machine::{LocalRole, ServiceReport};
use crate::http::response;

/// How recently the agent's loop must have turned for `/liveness` to pass.
const LIVENESS_MS: u64 = 2000;

/// The checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Primary,
    Replica,
    Health,
    Liveness,
    Readiness,
}

impl Check {
    fn from_path(path: &str) -> Option<Self> {
        Some(match path.trim_end_matches('/') {
            "/primary" | "/master" | "/leader" => Check::Primary,
            "/replica" => Check::Replica,
            "/health" => Check::Health,
            "/liveness" => Check::Liveness,
            "/readiness" => Check::Readiness,
            _ => return None,
        })
    }

    fn passes(self, report: &ServiceReport, alive: bool) -> bool {
        let healthy_standby = report.role == LocalRole::Standby
            && !report.serving
            && report.health == Health::Healthy;
        match self {
            Check::Primary => report.serving,
            Check::Replica => healthy_standby,
            Check::Health => report.health != Health::Failed,
            Check::Liveness => alive,
            Check::Readiness => report.serving || healthy_standby,
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(flatten)]
    report: &'a ServiceReport,
    /// Whether the agent's loop is running.
    alive: bool,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    services: Vec<&'a str>,
}

/// Answers one request from the agent's latest reports.
fn respond<B>(
    request: &Request<B>,
    reports: &watch::Receiver<Vec<ServiceReport>>,
    alive_ms: &AtomicU64,
    clock: &dyn Clock,
) -> Response<Full<Bytes>> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n",
        );
    }
    let Some(check) = Check::from_path(request.uri().path()) else {
        return text(
            StatusCode::NOT_FOUND,
            "not found: /primary, /replica, /health, /liveness, /readiness (?service=NAME)\n",
        );
    };
    let wanted = request.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("service="))
            .map(str::to_owned)
    });
    let reports = reports.borrow().clone();
    let names = || {
        reports
            .iter()
            .map(|r| r.service.as_str())
            .collect::<Vec<_>>()
    };
    let found = match &wanted {
        Some(name) => reports.iter().find(|r| r.service.as_str() == name),
        None if reports.len() == 1 => reports.first(),
        None => {
            return json(
                StatusCode::BAD_REQUEST,
                &ErrorBody {
                    error: "say which service: ?service=NAME".into(),
                    services: names(),
                },
            )
        }
    };
    let Some(report) = found else {
        return json(
            StatusCode::NOT_FOUND,
            &ErrorBody {
                error: format!(
                    "this node's agent does not protect service {:?}",
                    wanted.unwrap_or_default()
                ),
                services: names(),
            },
        );
    };
    let now = clock.now();
    let alive = now.wall_ms.saturating_sub(alive_ms.load(Ordering::Relaxed)) <= LIVENESS_MS;
    // The lease is re-checked now: the report may be a few milliseconds old.
    let report = report.clone().at(now.mono);
    let status = if check.passes(&report, alive) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        &Body {
            report: &report,
            alive,
        },
    )
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    response(status, "text/plain", body.to_owned())
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let mut body =
        serde_json::to_string_pretty(body).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    body.push('\n');
    response(status, "application/json", body)
}

/// Serves the health endpoints on `addr` until the returned task is dropped or aborted.
pub async fn serve(
    addr: SocketAddr,
    reports: watch::Receiver<Vec<ServiceReport>>,
    alive: Arc<AtomicU64>,
    clock: Arc<dyn Clock>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), crate::http::HttpError> {
    crate::http::serve(addr, "health endpoints", move |request| {
        respond(request, &reports, &alive, clock.as_ref())
    })
    .await
}
