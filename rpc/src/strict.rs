//! The server's param rules and call counting, as RPC middleware around the generated
//! methods.
//!
//! jsonrpsee's generated methods accept named params, ignore extra ones, and report a
//! malformed param as `"Invalid params"` with the reason only in `data`. drchain's API is
//! positional and strict, and an operator reading an error should see what is wrong without
//! digging: so params must be a JSON array no longer than the method takes
//! ([`crate::api::param_count`]), and an invalid-params error carries its reason in the
//! message. Calls and errors are counted per method here, for known methods only (a
//! client's made-up names must not create metric series).

use std::future::Future;

use jsonrpsee::core::middleware::{Batch, BatchEntry, Notification, RpcServiceT};
use jsonrpsee::core::server::BatchResponseBuilder;
use jsonrpsee::server::MethodResponse;
use jsonrpsee::types::{ErrorObjectOwned, Request};
use serde::de::IgnoredAny;

use crate::api::param_count;
use crate::{RpcError, RpcMetrics, MAX_RESPONSE_BYTES};

/// The message jsonrpsee's generated parsers give every invalid param.
const GENERIC_INVALID_PARAMS: &str = "Invalid params";
const INVALID_PARAMS_CODE: i32 = -32602;

/// Wraps the server's method dispatch (see the module docs).
#[derive(Debug, Clone)]
pub struct StrictParams<S> {
    inner: S,
    metrics: RpcMetrics,
}

impl<S> StrictParams<S> {
    /// Wraps `inner`, counting calls in `metrics`.
    pub fn new(inner: S, metrics: RpcMetrics) -> Self {
        Self { inner, metrics }
    }
}

/// Why `request`'s params break the API's rules, if they do.
fn check_params(request: &Request<'_>, takes: usize) -> Option<RpcError> {
    let given = match request.params.as_deref() {
        None => 0,
        // An empty object is how some clients say "no params".
        Some(raw) if raw.get().trim() == "{}" => 0,
        Some(raw) => match serde_json::from_str::<Option<Vec<IgnoredAny>>>(raw.get()) {
            Ok(None) => 0,
            Ok(Some(items)) => items.len(),
            Err(_) => {
                return Some(RpcError::invalid(
                    "params must be a JSON array (positional)",
                ))
            }
        },
    };
    if given <= takes {
        None
    } else if takes == 0 {
        Some(RpcError::invalid("this method takes no params"))
    } else {
        Some(RpcError::invalid(format!(
            "expected at most {takes} params, got {given}"
        )))
    }
}

/// The error of a response, if it is jsonrpsee's generic invalid-params one: its reason.
fn generic_invalid_params_reason(response: &MethodResponse) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: ErrorBody,
    }
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        message: String,
        data: Option<serde_json::Value>,
    }
    if response.as_error_code() != Some(INVALID_PARAMS_CODE) {
        return None;
    }
    let envelope: Envelope = serde_json::from_str(response.as_json().get()).ok()?;
    if envelope.error.message != GENERIC_INVALID_PARAMS {
        return None;
    }
    Some(match envelope.error.data {
        Some(serde_json::Value::String(reason)) => reason,
        Some(other) => other.to_string(),
        None => "malformed params".to_owned(),
    })
}

/// An error response to request `request_id`, of the same kind (call or subscription) as
/// the response it replaces.
fn error_response(
    request_id: jsonrpsee::types::Id<'_>,
    subscription: bool,
    error: RpcError,
) -> MethodResponse {
    let error = ErrorObjectOwned::from(error);
    if subscription {
        MethodResponse::subscription_error(request_id, error)
    } else {
        MethodResponse::error(request_id, error)
    }
}

impl<S> RpcServiceT for StrictParams<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Clone
        + Send
        + Sync
        + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = MethodResponse;
    type BatchResponse = MethodResponse;

    fn call<'a>(&self, request: Request<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let inner = self.inner.clone();
        let metrics = self.metrics.clone();
        async move {
            let known = param_count(request.method_name());
            let id = request.id();
            if let Some(error) = known.and_then(|(_, takes)| check_params(&request, takes)) {
                if let Some((name, _)) = known {
                    metrics.call(name, true);
                }
                return MethodResponse::error(id, ErrorObjectOwned::from(error));
            }
            let response = inner.call(request).await;
            if let Some((name, _)) = known {
                metrics.call(name, response.is_error());
            }
            match generic_invalid_params_reason(&response) {
                Some(reason) => {
                    let extensions = response.extensions().clone();
                    error_response(id, response.is_subscription(), RpcError::invalid(reason))
                        .with_extensions(extensions)
                }
                None => response,
            }
        }
    }

    /// Applies [`Self::call`] to each call of the batch: the server's own batch handling
    /// would bypass it.
    fn batch<'a>(&self, batch: Batch<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let service = self.clone();
        async move {
            let mut responses = BatchResponseBuilder::new_with_limit(MAX_RESPONSE_BYTES as usize);
            let mut got_notification = false;
            for entry in batch {
                let response = match entry {
                    Ok(BatchEntry::Call(request)) => service.call(request).await,
                    Ok(BatchEntry::Notification(n)) => {
                        got_notification = true;
                        service.notification(n).await;
                        continue;
                    }
                    Err(error) => {
                        let (error, id) = error.into_parts();
                        MethodResponse::error(id, error)
                    }
                };
                if let Err(too_large) = responses.append(response) {
                    return too_large;
                }
            }
            if responses.is_empty() && got_notification {
                MethodResponse::notification()
            } else {
                MethodResponse::from_batch(responses.finish())
            }
        }
    }

    fn notification<'a>(
        &self,
        n: Notification<'a>,
    ) -> impl Future<Output = MethodResponse> + Send + 'a {
        self.inner.notification(n)
    }
}

#[cfg(test)]
mod tests {
    use jsonrpsee::types::{Id, Request};
    use serde_json::value::RawValue;

    use super::check_params;
    use crate::RpcError;

    fn reason(params: Option<&str>, takes: usize) -> Option<String> {
        let raw = params.map(|p| RawValue::from_string(p.to_owned()).unwrap());
        let request = Request::owned("m".to_owned(), raw, Id::Number(1));
        check_params(&request, takes).map(|e| match e {
            RpcError::InvalidParams { reason } => reason,
            other => panic!("not an invalid-params error: {other}"),
        })
    }

    #[test]
    fn positional_params_up_to_the_count_pass() {
        assert_eq!(reason(None, 0), None);
        assert_eq!(reason(Some("null"), 0), None);
        assert_eq!(reason(Some("[]"), 0), None);
        assert_eq!(reason(Some("{}"), 0), None);
        assert_eq!(reason(Some(r#"["db"]"#), 2), None);
        assert_eq!(reason(Some(r#"["db", 7]"#), 2), None);
    }

    #[test]
    fn extra_and_named_params_are_refused_with_the_reason() {
        let extra = reason(Some(r#"["db", 1]"#), 1).unwrap();
        assert!(extra.contains("at most 1 params, got 2"), "{extra}");
        let none_taken = reason(Some("[1]"), 0).unwrap();
        assert!(none_taken.contains("takes no params"), "{none_taken}");
        let named = reason(Some(r#"{"service": "db"}"#), 1).unwrap();
        assert!(named.contains("JSON array"), "{named}");
    }
}
