//! The JSON API. Items are the stored documents as relaxed Extended JSON, as `audit ... --json`
//! prints them; errors are `{"error": ..., "parameter": ...}`.

use super::params::{self, BadParam, Search};
use super::{auth, stats, store_status, Shared};
use crate::document::Collection;
use crate::store::{Filter, FindOptions};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Response, StatusCode, Uri};
use bson::oid::ObjectId;
use bson::{Bson, Document};
use serde_json::{json, Value};

pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(v.to_string()))
        .expect("json response")
}

fn bad(p: BadParam) -> Response<Body> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": format!("invalid parameter `{}`: {}", p.name, p.message), "parameter": p.name}),
    )
}

fn failed(e: &crate::store::StoreError) -> Response<Body> {
    let (status, message) = store_status(e);
    json_response(status, &json!({ "error": message }))
}

/// A stored document as relaxed Extended JSON.
pub(crate) fn ext_json(d: Document) -> Value {
    Bson::Document(d).into_relaxed_extjson()
}

/// One page of a search: up to `limit` documents and the cursor of the next page, if any.
pub(crate) async fn page(
    state: &Shared,
    c: Collection,
    search: &Search,
) -> Result<(Vec<Document>, Option<String>), crate::store::StoreError> {
    let mut docs = state
        .store
        .find_raw(c, &search.options(state.query_timeout))
        .await?;
    let next = if docs.len() as u64 > search.limit {
        docs.truncate(search.limit as usize);
        docs.last()
            .and_then(|d| d.get_object_id("_id").ok())
            .map(|id| id.to_hex())
    } else {
        None
    };
    Ok((docs, next))
}

/// Turns query pairs into a search (one per collection).
type Parser = fn(&[(String, String)]) -> Result<Search, BadParam>;

async fn list(
    state: Shared,
    headers: HeaderMap,
    uri: Uri,
    c: Collection,
    parse: Parser,
) -> Response<Body> {
    if !state.auth.api_ok(&headers) {
        return auth::unauthorized();
    }
    let search = match parse(&params::pairs(uri.query())) {
        Ok(s) => s,
        Err(p) => return bad(p),
    };
    match page(&state, c, &search).await {
        Ok((docs, next)) => json_response(
            StatusCode::OK,
            &json!({
                "items": docs.into_iter().map(ext_json).collect::<Vec<_>>(),
                "next": next,
            }),
        ),
        Err(e) => failed(&e),
    }
}

/// One document by id, or `None`.
pub(crate) async fn by_id(
    state: &Shared,
    c: Collection,
    id: ObjectId,
) -> Result<Option<Document>, crate::store::StoreError> {
    let opts = FindOptions::new(Filter::eq("_id", id))
        .window(0, Some(1))
        .max_time(state.query_timeout);
    Ok(state.store.find_raw(c, &opts).await?.into_iter().next())
}

async fn one(state: Shared, headers: HeaderMap, c: Collection, id: String) -> Response<Body> {
    if !state.auth.api_ok(&headers) {
        return auth::unauthorized();
    }
    let Ok(oid) = ObjectId::parse_str(&id) else {
        return bad(BadParam {
            name: "id".into(),
            message: format!("`{id}` is not an id (24 hexadecimal digits)"),
        });
    };
    match by_id(&state, c, oid).await {
        Ok(Some(d)) => json_response(StatusCode::OK, &ext_json(d)),
        Ok(None) => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no {} with id {oid}", c.name())}),
        ),
        Err(e) => failed(&e),
    }
}

pub(crate) async fn access_list(
    State(state): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
) -> Response<Body> {
    list(
        state,
        headers,
        uri,
        Collection::Access,
        params::access_search,
    )
    .await
}

pub(crate) async fn model_action_list(
    State(state): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
) -> Response<Body> {
    list(
        state,
        headers,
        uri,
        Collection::ModelAction,
        params::model_action_search,
    )
    .await
}

pub(crate) async fn access_one(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response<Body> {
    one(state, headers, Collection::Access, id).await
}

pub(crate) async fn model_action_one(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response<Body> {
    one(state, headers, Collection::ModelAction, id).await
}

pub(crate) async fn process_one(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response<Body> {
    one(state, headers, Collection::Process, id).await
}

pub(crate) async fn stats(
    State(state): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
) -> Response<Body> {
    if !state.auth.api_ok(&headers) {
        return auth::unauthorized();
    }
    let p = match params::stats_params(&params::pairs(uri.query()), chrono::Utc::now()) {
        Ok(p) => p,
        Err(p) => return bad(p),
    };
    match stats::compute(&state.store, p, state.query_timeout).await {
        Ok(s) => json_response(StatusCode::OK, &s.to_json()),
        Err(e) => failed(&e),
    }
}
