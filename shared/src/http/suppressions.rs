//! The suppressions function's router: `GET /suppressions`,
//! `POST /suppressions`, `DELETE /suppressions/{channel}/{address}`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::access::Authenticator;
use crate::compliance;
use crate::cursor::CursorCodec;
use crate::ports::{ApiKeyStore, Suppressed, SuppressionList};
use crate::views::SuppressionView;

use super::{ApiError, Function, JsonObject, Operation, QueryParams, Routes, json_response};

struct Suppressions<S> {
    store: S,
    cursors: CursorCodec,
}

/// The suppressions function's router.
pub fn suppressions_router<S, K>(
    store: S,
    cursors: CursorCodec,
    keys: Arc<Authenticator<K>>,
) -> Router
where
    S: SuppressionList + 'static,
    K: ApiKeyStore + 'static,
{
    Routes::new(Function::Suppressions)
        .with_keys(keys)
        .serve(Operation::ListSuppressions, list::<S>)
        .serve(Operation::AddSuppression, add::<S>)
        .serve(Operation::RemoveSuppression, remove::<S>)
        .finish(Arc::new(Suppressions { store, cursors }))
}

#[derive(Serialize)]
struct ListBody {
    suppressions: Vec<SuppressionView>,
    next_cursor: Option<String>,
}

/// `GET /suppressions?address=&channel=&limit=&cursor=`.
async fn list<S: SuppressionList>(
    State(app): State<Arc<Suppressions<S>>>,
    params: QueryParams,
) -> Result<Response, ApiError> {
    let page = compliance::list_suppressions(
        &app.store,
        &app.cursors,
        params.first("address"),
        params.first("channel"),
        params.first("limit"),
        params.first("cursor"),
    )
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &ListBody {
            suppressions: page.items.iter().map(SuppressionView::from).collect(),
            next_cursor: page.next_cursor,
        },
    ))
}

/// `POST /suppressions`: 201 with a new entry, 200 with the one already there.
async fn add<S: SuppressionList>(
    State(app): State<Arc<Suppressions<S>>>,
    JsonObject(payload): JsonObject,
) -> Result<Response, ApiError> {
    let (status, entry) = match compliance::add_suppression(&app.store, &payload).await? {
        Suppressed::Added(entry) => (StatusCode::CREATED, entry),
        Suppressed::Existing(entry) => (StatusCode::OK, entry),
    };
    let mut response = json_response(status, &SuppressionView::from(&entry));
    if status == StatusCode::CREATED {
        let address: String =
            url::form_urlencoded::byte_serialize(entry.address.as_bytes()).collect();
        if let Ok(location) =
            HeaderValue::try_from(format!("/suppressions/{}/{address}", entry.channel))
        {
            response.headers_mut().insert(header::LOCATION, location);
        }
    }
    Ok(response)
}

/// `DELETE /suppressions/{channel}/{address}[?sender=]`: 204, or 404 if none.
async fn remove<S: SuppressionList>(
    State(app): State<Arc<Suppressions<S>>>,
    Path((channel, address)): Path<(String, String)>,
    params: QueryParams,
) -> Result<Response, ApiError> {
    compliance::remove_suppression(&app.store, &channel, &address, params.first("sender")).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
