//! The HTTP edge: one `axum::Router` per function, built from the route table
//! ([`routes`]), with the layers every function shares (request span, body
//! limit, API keys, JSON errors). Handlers only translate between HTTP and the
//! use cases in [`crate::api`], [`crate::conversations`] and [`crate::webhooks`].

mod conversations;
pub mod error;
mod messages;
pub mod routes;
mod suppressions;
mod webhooks;

use std::collections::HashSet;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, on};
use futures::future::BoxFuture;
use lambda_http::RequestExt;
use serde::Serialize;
use serde_json::{Map, Value};
use tracing::{Instrument, info_span};

use crate::access::{AuthError, Authenticator, Caller};
use crate::domain::Scope;
use crate::ports::ApiKeyStore;

pub use error::ApiError;
pub use routes::{Function, Operation, Route};

pub use conversations::read_router;
pub use messages::{inbound_router, outbound_router};
pub use suppressions::suppressions_router;
pub use webhooks::webhooks_router;

/// Largest request body accepted by default (API Gateway allows more; messages
/// never need it). The provider webhooks take more: see [`Route::max_body`].
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The body limit of the route a request came in on, for the 413's message.
#[derive(Debug, Clone, Copy)]
struct BodyLimit(usize);

/// The header carrying an idempotency key (the convention Stripe and AWS
/// Powertools users know).
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// Builds one function's router from the route table: each of its operations
/// is served at its path with and without a trailing slash, under the method
/// the table gives, and [`Routes::finish`] refuses a router that misses one.
pub struct Routes<S> {
    function: Function,
    router: Router<S>,
    served: HashSet<Operation>,
    keys: Option<Authenticate>,
}

/// The API key check, whatever store the keys live in.
type Authenticate = Arc<
    dyn Fn(Option<String>, Scope) -> BoxFuture<'static, Result<Caller, AuthError>> + Send + Sync,
>;

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new(function: Function) -> Self {
        Self {
            function,
            router: Router::new(),
            served: HashSet::new(),
            keys: None,
        }
    }

    /// Checks API keys with `keys` on every route the table gives a scope.
    pub fn with_keys<K: ApiKeyStore + 'static>(mut self, keys: Arc<Authenticator<K>>) -> Self {
        self.keys = Some(Arc::new(move |authorization, scope| {
            let keys = keys.clone();
            Box::pin(async move { keys.authenticate(authorization.as_deref(), scope).await })
        }));
        self
    }

    /// Serves `operation` with `handler` (any method router; the table's method
    /// is applied to it).
    pub fn serve<H, T>(mut self, operation: Operation, handler: H) -> Self
    where
        H: axum::handler::Handler<T, S>,
        T: 'static,
    {
        let route = operation.route();
        assert_eq!(
            route.function, self.function,
            "{operation:?} belongs to another function"
        );
        let mut method_router: MethodRouter<S> = on(route.method_filter(), handler);
        if let Some(scope) = route.scope {
            let keys = self.keys.clone().unwrap_or_else(|| {
                panic!("{operation:?} needs an API key: build the router with_keys first")
            });
            method_router = method_router
                .route_layer(middleware::from_fn_with_state((keys, scope), require_key));
        }
        let limit = route.max_body;
        method_router = method_router.layer(DefaultBodyLimit::max(limit));
        method_router = method_router.layer(axum::Extension(BodyLimit(limit)));
        for path in route.paths() {
            self.router = self.router.route(&path, method_router.clone());
        }
        self.served.insert(operation);
        self
    }

    /// The finished router with the shared layers. Panics (at cold start, and in
    /// the tests that build every router) if an operation of this function in the
    /// route table has no handler.
    pub fn finish(self, state: S) -> Router {
        let missing: Vec<_> = Operation::ALL
            .into_iter()
            .filter(|op| op.route().function == self.function && !self.served.contains(op))
            .collect();
        assert!(
            missing.is_empty(),
            "{} serves no handler for {missing:?}",
            self.function.binary()
        );
        self.router
            .fallback(no_route)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(state)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(middleware::from_fn(request_span))
    }
}

/// Every request runs in a span carrying its method, path and Lambda request
/// id, and the API key's id once it is known (never the key).
async fn request_span(request: Request, next: Next) -> Response {
    let request_id = request
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .unwrap_or_default();
    let span = info_span!(
        "request",
        method = %request.method(),
        path = request.uri().path(),
        request_id,
        key_id = tracing::field::Empty,
    );
    next.run(request).instrument(span).await
}

/// The API key layer: `Authorization: Bearer <key>` with the route's scope,
/// else 401 (403 for a key without the scope); the caller is handed to the
/// handler as an extension.
async fn require_key(
    axum::extract::State((keys, scope)): axum::extract::State<(Authenticate, Scope)>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let authorization =
        header_str(request.headers(), header::AUTHORIZATION.as_str()).map(str::to_owned);
    let caller = keys(authorization, scope).await.inspect_err(|e| {
        tracing::info!(error = %e, scope = scope.as_str(), "request refused");
    })?;
    tracing::Span::current().record("key_id", caller.key_id.as_str());
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

async fn no_route(request: Request) -> ApiError {
    ApiError::NotFound {
        field: "path",
        message: format!("no route for {}", request.uri().path()),
    }
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed {
        method: request.method().to_string(),
    }
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    // Serializing our own plain structs cannot fail; fall back to an empty object.
    raw_json_response(
        status,
        serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned()),
    )
}

/// A response with an already serialized JSON body.
pub fn raw_json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A header's value, if present and text.
fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The query string's parameters, decoded (`+` is a space); never refused:
/// each use case checks the parameters it reads.
pub struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    /// The first value of `name`.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for QueryParams {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        Ok(Self(
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        ))
    }
}

/// The request body, within its route's limit (413 above it).
pub struct LimitedBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for LimitedBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let limit = request
            .extensions()
            .get::<BodyLimit>()
            .map_or(MAX_BODY_BYTES, |l| l.0);
        Bytes::from_request(request, state)
            .await
            .map(Self)
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge { limit }
                } else {
                    ApiError::bad_request("body", rejection.body_text())
                }
            })
    }
}

/// A request body that is a JSON object: 415 for a declared non-JSON content
/// type, 413 above [`MAX_BODY_BYTES`], 400 for anything else that is not a JSON
/// object.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let content_type =
            header_str(request.headers(), header::CONTENT_TYPE.as_str()).map(str::to_owned);
        check_json_media_type(content_type.as_deref())?;
        let LimitedBody(bytes) = LimitedBody::from_request(request, state).await?;
        parse_json_object(&bytes).map(Self)
    }
}

fn check_json_media_type(content_type: Option<&str>) -> Result<(), ApiError> {
    match content_type {
        Some(declared) if !is_json_media_type(declared) => Err(ApiError::UnsupportedMediaType {
            declared: declared.to_owned(),
            expected: "application/json",
        }),
        _ => Ok(()),
    }
}

/// Reads a request body as a JSON object (see [`JsonObject`]).
pub fn json_object_body(
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<Map<String, Value>, ApiError> {
    check_json_media_type(content_type)?;
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    parse_json_object(bytes)
}

/// A body already within the limit, as a JSON object (400 otherwise).
fn parse_json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "body",
            "request body is empty; send a JSON object",
        ));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request(
            "body",
            "request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(
            "body",
            format!("request body is not valid JSON: {e}"),
        )),
    }
}

/// A `Content-Type` value without its parameters, lower-cased (`type/subtype`).
pub fn media_type_essence(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn is_json_media_type(value: &str) -> bool {
    let essence = media_type_essence(value);
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(result: Result<Map<String, Value>, ApiError>) -> u16 {
        result.unwrap_err().status().as_u16()
    }

    #[test]
    fn accepts_json_objects() {
        for ct in [
            None,
            Some("application/json"),
            Some("application/json; charset=utf-8"),
            Some("application/vnd.api+json"),
        ] {
            let map = json_object_body(ct, br#"{"a":1}"#).unwrap();
            assert_eq!(map["a"], 1);
        }
    }

    #[test]
    fn rejects_other_content_types_with_415() {
        let err = json_object_body(Some("text/plain"), br#"{"a":1}"#).unwrap_err();
        assert_eq!(err.status(), 415);
        assert!(matches!(err, ApiError::UnsupportedMediaType { .. }));
    }

    #[test]
    fn rejects_malformed_json_with_400() {
        for body in ["{", "", "[1,2]", "\"text\"", "null"] {
            let err = json_object_body(Some("application/json"), body.as_bytes()).unwrap_err();
            assert_eq!(err.status(), 400, "{body:?}");
            assert!(
                matches!(&err, ApiError::BadRequest { field: Some(f), .. } if f == "body"),
                "{err:?}"
            );
        }
    }

    #[test]
    fn rejects_large_bodies_with_413() {
        let big = format!(r#"{{"body":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        assert_eq!(status(json_object_body(None, big.as_bytes())), 413);
    }
}
