//! The node's HTTP API: transaction submission, chain queries, status, metrics.
//!
//! Submission decodes nothing itself: the body's bytes go to
//! [`Mempool::admit`], whose [`AdmissionError::code`] becomes the response's
//! stable `code` with a status per class of error (see [`admission_status`]).
//! Every error, including axum's own rejections (body limit, bad query,
//! unknown route), is JSON `{"code", "message"}`. Queries read committed
//! storage only. Handlers never panic on input; storage errors are logged and
//! answered with 500 `internal`. The OpenAPI document is generated from the
//! handlers ([`ApiDoc`]) and served at `GET /openapi.json`. Contract queries
//! run read-only in the [`Vm`] against the latest committed state.

use crate::execution::{self, ContractRecord};
use crate::mempool::{AdmissionError, Mempool};
use crate::metrics::{ApiLabels, CodeLabels, Metrics, RouteLabels};
use crate::storage::{Storage, StorageError};
use crate::vm::{self, CallEnv, Entry, Invocation, Limits, StateView, Vm};
use axum::body::Bytes as Body;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::borrow::Cow;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tracing::Instrument;
use trellis_types::{Address, Hash};
use utoipa::{IntoParams, OpenApi, ToSchema};

/// What the handlers share.
pub struct ApiState {
    pub chain_id: String,
    pub genesis_hash: Hash,
    pub storage: Storage,
    pub mempool: Arc<Mempool>,
    /// Runs contract queries.
    pub vm: Arc<Vm>,
    /// Published by the consensus driver.
    pub status: tokio::sync::watch::Receiver<ChainStatus>,
    pub metrics: Arc<Metrics>,
    /// Largest request body accepted; larger ones get 413 `oversized`.
    pub max_body_bytes: usize,
}

// ---------------------------------------------------------------------------
// Wire shapes (the shared ones live in `trellis_types::api`)

pub use trellis_types::api::{
    BlockResponse, ChainStatus, ContractQuery, ContractQueryResult, ErrorBody, Health,
    StateResponse, StatusResponse, TxStatus, TxSubmitted,
};

/// `POST /v1/transactions` with `Content-Type: application/json`.
#[derive(Deserialize, ToSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct SubmitTransaction {
    /// Hex of the canonical encoding of a `SignedTransaction` (optional `0x` prefix).
    pub signed_tx: String,
}

/// The canonical encoding of a `SignedTransaction`, as raw bytes.
pub struct RawSignedTransaction;

impl utoipa::PartialSchema for RawSignedTransaction {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .description(Some("canonical encoding of a SignedTransaction"))
            .into()
    }
}
impl ToSchema for RawSignedTransaction {}

#[derive(Deserialize, IntoParams, Debug)]
#[into_params(parameter_in = Query)]
pub struct StateQuery {
    /// Include a Merkle proof of the value (or its absence) against `state_root`.
    #[serde(default)]
    pub proof: bool,
    /// Committed height to read at; the latest by default.
    pub height: Option<u64>,
}

// ---------------------------------------------------------------------------
// Errors

/// An error response: status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
}

impl ApiError {
    fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed", message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// Logs the detail; the client learns only that it was our fault.
    fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error serving an API request");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the node's log has the details",
        )
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                code: self.code.into_owned(),
                message: self.message,
            }),
        )
            .into_response()
    }
}

/// The HTTP status for each admission error code.
pub fn admission_status(code: &str) -> StatusCode {
    match code {
        "oversized" => StatusCode::PAYLOAD_TOO_LARGE,
        "malformed" | "non_canonical" | "wrong_chain" | "expired" | "expiry_too_far"
        | "weak_key" => StatusCode::BAD_REQUEST,
        "bad_signature" => StatusCode::UNAUTHORIZED,
        "unknown_sender" => StatusCode::FORBIDDEN,
        "nonce_replayed" | "already_known" | "nonce_taken" => StatusCode::CONFLICT,
        "nonce_too_far_ahead" => StatusCode::UNPROCESSABLE_ENTITY,
        "mempool_full" | "sender_queue_full" => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<AdmissionError> for ApiError {
    fn from(e: AdmissionError) -> Self {
        match e {
            AdmissionError::Storage(e) => ApiError::internal(e),
            e => ApiError::new(admission_status(e.code()), e.code(), e.to_string()),
        }
    }
}

/// Runs blocking work (sled reads, signature checks) off the async workers;
/// a panic in it becomes a 500, never a dropped connection.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("API task failed: {e}")))?
}

fn parse_hash(s: &str) -> Result<Hash, ApiError> {
    Hash::from_hex(s)
        .map_err(|e| ApiError::malformed(format!("`{s}` is not a 32-byte hex hash: {e}")))
}

fn path_param(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::malformed(e.body_text()))
}

// ---------------------------------------------------------------------------
// Router

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/transactions", post(submit_transaction))
        .route("/v1/transactions/{hash}", get(get_transaction))
        .route("/v1/blocks/latest", get(latest_block))
        .route("/v1/blocks/{height}", get(block_by_height))
        .route("/v1/blocks/by-hash/{hash}", get(block_by_hash))
        .route("/v1/state/{key}", get(get_state))
        .route("/v1/contracts/{address}", get(get_contract))
        .route("/v1/contracts/{address}/query", post(query_contract))
        .route("/status", get(status))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            observe,
        ))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "API listening");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Counts and times every request by route template and status, in a span of its own.
async fn observe(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    // The template, not the path: label values must stay few.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!("api", method = %request.method(), route = %route);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status();
    metrics
        .api_requests
        .get_or_create(&ApiLabels {
            route: route.clone(),
            status: status.as_u16().to_string(),
        })
        .inc();
    metrics
        .api_latency_seconds
        .get_or_create(&RouteLabels { route })
        .observe(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            latency_us = elapsed.as_micros() as u64,
            "request"
        )
    });
    response
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

// ---------------------------------------------------------------------------
// Handlers

enum BodyFormat {
    Binary,
    Json,
}

fn body_format(headers: &HeaderMap) -> Option<BodyFormat> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/octet-stream") {
        Some(BodyFormat::Binary)
    } else if essence.eq_ignore_ascii_case("application/json") {
        Some(BodyFormat::Json)
    } else {
        None
    }
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Submit a signed transaction to the mempool.
#[utoipa::path(
    post,
    path = "/v1/transactions",
    tag = "transactions",
    request_body(
        description = "The canonical encoding of a SignedTransaction, raw or hex in JSON",
        content(
            (RawSignedTransaction = "application/octet-stream"),
            (SubmitTransaction = "application/json"),
        )
    ),
    responses(
        (status = 202, description = "Admitted to the mempool", body = TxSubmitted),
        (status = 400, description = "malformed, non_canonical, wrong_chain, expired, expiry_too_far, weak_key", body = ErrorBody),
        (status = 401, description = "bad_signature", body = ErrorBody),
        (status = 403, description = "unknown_sender", body = ErrorBody),
        (status = 409, description = "nonce_replayed, already_known, nonce_taken", body = ErrorBody),
        (status = 413, description = "oversized", body = ErrorBody),
        (status = 415, description = "unsupported_content_type", body = ErrorBody),
        (status = 422, description = "nonce_too_far_ahead", body = ErrorBody),
        (status = 429, description = "mempool_full, sender_queue_full", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody),
    )
)]
async fn submit_transaction(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Body, BytesRejection>,
) -> Result<(StatusCode, Json<TxSubmitted>), ApiError> {
    let result = submit(&state, &headers, body).await;
    if let Err(e) = &result {
        state
            .metrics
            .admission_rejected
            .get_or_create(&CodeLabels {
                code: e.code.to_string(),
            })
            .inc();
    }
    result.map(|tx_hash| (StatusCode::ACCEPTED, Json(TxSubmitted { tx_hash })))
}

async fn submit(
    state: &Arc<ApiState>,
    headers: &HeaderMap,
    body: Result<Body, BytesRejection>,
) -> Result<Hash, ApiError> {
    let format = body_format(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
            "send application/octet-stream (canonical bytes) or application/json ({\"signed_tx\": \"<hex>\"})",
        )
    })?;
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "oversized",
            format!("request body is over {} bytes", state.max_body_bytes),
        ),
        _ => ApiError::malformed(format!(
            "could not read the request body: {}",
            e.body_text()
        )),
    })?;
    let bytes = match format {
        BodyFormat::Binary => body.to_vec(),
        BodyFormat::Json => {
            let request: SubmitTransaction = serde_json::from_slice(&body).map_err(|e| {
                ApiError::malformed(format!("body is not {{\"signed_tx\": \"<hex>\"}}: {e}"))
            })?;
            let hex_str = request
                .signed_tx
                .strip_prefix("0x")
                .unwrap_or(&request.signed_tx);
            hex::decode(hex_str)
                .map_err(|e| ApiError::malformed(format!("signed_tx is not hex: {e}")))?
        }
    };
    let state = state.clone();
    blocking(move || {
        Ok(state
            .mempool
            .admit(&bytes, &state.storage, wall_clock_ms())?)
    })
    .await
}

/// Where a transaction is: pending in this node's mempool or committed.
#[utoipa::path(
    get,
    path = "/v1/transactions/{hash}",
    tag = "transactions",
    params(("hash" = String, Path, description = "Transaction hash, hex")),
    responses(
        (status = 200, body = TxStatus),
        (status = 400, description = "malformed hash", body = ErrorBody),
        (status = 404, description = "not_found: neither pending here nor committed", body = ErrorBody),
    )
)]
async fn get_transaction(
    State(state): State<Arc<ApiState>>,
    hash: Result<Path<String>, PathRejection>,
) -> Result<Json<TxStatus>, ApiError> {
    let hash = parse_hash(&path_param(hash)?)?;
    // Look in the mempool before storage: a transaction leaves the mempool only
    // after its block is stored, so one of the two looks always finds it.
    // Storage wins when both do (it stays in the mempool until pruned).
    let pending = state.mempool.contains(&hash);
    let location = {
        let state = state.clone();
        blocking(move || Ok(state.storage.tx_location(&hash)?)).await?
    };
    if let Some(location) = location {
        return Ok(Json(TxStatus::Committed {
            height: location.height,
            index: location.index,
            receipt: location.receipt,
        }));
    }
    if pending {
        return Ok(Json(TxStatus::Pending));
    }
    Err(ApiError::not_found(format!(
        "transaction {hash} is neither pending here nor committed"
    )))
}

fn load_block(storage: &Storage, height: u64) -> Result<Option<BlockResponse>, ApiError> {
    let Some(block) = storage.block(height)? else {
        return Ok(None);
    };
    let commit = storage.commit_certificate(height)?.ok_or_else(|| {
        ApiError::internal(format!(
            "block {height} is stored without its commit certificate"
        ))
    })?;
    let receipts = storage.receipts(height)?.ok_or_else(|| {
        ApiError::internal(format!("block {height} is stored without its receipts"))
    })?;
    Ok(Some(BlockResponse {
        hash: block.hash(),
        block,
        commit,
        receipts,
    }))
}

/// The latest committed block.
#[utoipa::path(
    get,
    path = "/v1/blocks/latest",
    tag = "blocks",
    responses((status = 200, body = BlockResponse), (status = 404, description = "no block yet", body = ErrorBody))
)]
async fn latest_block(State(state): State<Arc<ApiState>>) -> Result<Json<BlockResponse>, ApiError> {
    blocking(move || {
        let head = state
            .storage
            .head()
            .ok_or_else(|| ApiError::not_found("the chain has no block yet"))?;
        load_block(&state.storage, head.height)?
            .map(Json)
            .ok_or_else(|| ApiError::internal(format!("head block {} is missing", head.height)))
    })
    .await
}

/// The committed block at a height.
#[utoipa::path(
    get,
    path = "/v1/blocks/{height}",
    tag = "blocks",
    params(("height" = u64, Path, description = "Block height")),
    responses(
        (status = 200, body = BlockResponse),
        (status = 400, description = "malformed height", body = ErrorBody),
        (status = 404, description = "not_found: above the head", body = ErrorBody),
    )
)]
async fn block_by_height(
    State(state): State<Arc<ApiState>>,
    height: Result<Path<String>, PathRejection>,
) -> Result<Json<BlockResponse>, ApiError> {
    let height = path_param(height)?;
    let height: u64 = height
        .parse()
        .map_err(|_| ApiError::malformed(format!("`{height}` is not a block height")))?;
    blocking(move || {
        load_block(&state.storage, height)?
            .map(Json)
            .ok_or_else(|| ApiError::not_found(format!("no block at height {height}")))
    })
    .await
}

/// The committed block with a hash.
#[utoipa::path(
    get,
    path = "/v1/blocks/by-hash/{hash}",
    tag = "blocks",
    params(("hash" = String, Path, description = "Block hash, hex")),
    responses(
        (status = 200, body = BlockResponse),
        (status = 400, description = "malformed hash", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
    )
)]
async fn block_by_hash(
    State(state): State<Arc<ApiState>>,
    hash: Result<Path<String>, PathRejection>,
) -> Result<Json<BlockResponse>, ApiError> {
    let hash = parse_hash(&path_param(hash)?)?;
    blocking(move || {
        let block = state
            .storage
            .block_by_hash(&hash)?
            .ok_or_else(|| ApiError::not_found(format!("no block {hash}")))?;
        let height = block.header.height;
        load_block(&state.storage, height)?
            .map(Json)
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "block {hash} is indexed at missing height {height}"
                ))
            })
    })
    .await
}

/// A raw state key's value at a committed height, optionally with its proof.
#[utoipa::path(
    get,
    path = "/v1/state/{key}",
    tag = "state",
    params(("key" = String, Path, description = "Raw state key, hex (e.g. hex of `sys/params`)"), StateQuery),
    responses(
        (status = 200, body = StateResponse),
        (status = 400, description = "malformed key or query", body = ErrorBody),
        (status = 404, description = "not_found: height not committed", body = ErrorBody),
    )
)]
async fn get_state(
    State(state): State<Arc<ApiState>>,
    key: Result<Path<String>, PathRejection>,
    query: Result<Query<StateQuery>, QueryRejection>,
) -> Result<Json<StateResponse>, ApiError> {
    let key = path_param(key)?;
    let key = hex::decode(key.strip_prefix("0x").unwrap_or(&key))
        .map_err(|e| ApiError::malformed(format!("state key is not hex: {e}")))?;
    let Query(query) = query.map_err(|e| ApiError::malformed(e.body_text()))?;
    blocking(move || {
        let head = state
            .storage
            .head()
            .ok_or_else(|| ApiError::not_found("the chain has no block yet"))?;
        let height = query.height.unwrap_or(head.height);
        if height > head.height {
            return Err(ApiError::not_found(format!(
                "height {height} is not committed (head: {})",
                head.height
            )));
        }
        // Read through the tree even without a proof, so value and root are of the same height.
        let proof = match state.storage.get_with_proof(&key, height) {
            Ok(proof) => proof,
            Err(StorageError::VersionNotCommitted { version, .. }) => {
                return Err(ApiError::not_found(format!(
                    "height {version} is not committed"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Json(StateResponse {
            key: proof.key.clone(),
            value: proof.value.clone(),
            height: proof.height,
            state_root: proof.state_root,
            proof: query.proof.then_some(proof),
        }))
    })
    .await
}

fn parse_address(s: &str) -> Result<Address, ApiError> {
    Address::from_hex(s)
        .map_err(|e| ApiError::malformed(format!("`{s}` is not a 32-byte hex address: {e}")))
}

fn contract_not_found(address: &Address) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "contract_not_found",
        format!("no contract is deployed at {address}"),
    )
}

/// A deployed contract's record in the latest committed state.
#[utoipa::path(
    get,
    path = "/v1/contracts/{address}",
    tag = "contracts",
    params(("address" = String, Path, description = "Contract address, hex")),
    responses(
        (status = 200, body = ContractRecord),
        (status = 400, description = "malformed address", body = ErrorBody),
        (status = 404, description = "contract_not_found", body = ErrorBody),
    )
)]
async fn get_contract(
    State(state): State<Arc<ApiState>>,
    address: Result<Path<String>, PathRejection>,
) -> Result<Json<ContractRecord>, ApiError> {
    let address = parse_address(&path_param(address)?)?;
    blocking(move || {
        execution::contract(&state.storage, &address)?
            .map(Json)
            .ok_or_else(|| contract_not_found(&address))
    })
    .await
}

/// Runs a contract's `query` export, read-only, against the latest committed
/// state, as a caller with no account, organisation or roles, within the
/// chain's fuel and memory limits for one call.
#[utoipa::path(
    post,
    path = "/v1/contracts/{address}/query",
    tag = "contracts",
    params(("address" = String, Path, description = "Contract address, hex")),
    request_body(content = ContractQuery, content_type = "application/json"),
    responses(
        (status = 200, body = ContractQueryResult),
        (status = 400, description = "malformed address or body", body = ErrorBody),
        (status = 404, description = "contract_not_found", body = ErrorBody),
        (status = 422, description = "the contract refused (its own code, e.g. `not_found`, `bad_args`) or stopped: `trap`, `out_of_fuel`, `out_of_memory`", body = ErrorBody),
        (status = 500, description = "internal (including stored code that no longer compiles)", body = ErrorBody),
    )
)]
async fn query_contract(
    State(state): State<Arc<ApiState>>,
    address: Result<Path<String>, PathRejection>,
    body: Result<Json<ContractQuery>, JsonRejection>,
) -> Result<Json<ContractQueryResult>, ApiError> {
    let address = parse_address(&path_param(address)?)?;
    let Json(query) = body.map_err(|e| {
        ApiError::malformed(format!(
            "body is not {{\"method\": \"...\", \"args\": \"<hex>\"}}: {}",
            e.body_text()
        ))
    })?;
    let args = hex::decode(query.args.strip_prefix("0x").unwrap_or(&query.args))
        .map_err(|e| ApiError::malformed(format!("args is not hex: {e}")))?;
    blocking(move || {
        let storage = &state.storage;
        let head = storage
            .head()
            .ok_or_else(|| ApiError::not_found("the chain has no block yet"))?;
        let record =
            execution::contract(storage, &address)?.ok_or_else(|| contract_not_found(&address))?;
        let params = execution::params(storage)?;
        let env = CallEnv {
            contract: address,
            caller: vm::Caller::nobody(),
            block: vm::BlockInfo {
                chain_id: state.chain_id.clone(),
                height: head.height,
                timestamp_ms: head.timestamp_ms,
            },
            limits: Limits::from_params(&params),
        };
        let invocation = Invocation {
            method: query.method,
            args,
        };
        let mut view = StateView::new(storage.clone(), Default::default());
        let outcome = state.vm.run(
            &record.code_hash,
            Entry::Query,
            &invocation,
            &env,
            &mut view,
        )?;
        match outcome.result {
            Ok(result) => Ok(Json(ContractQueryResult {
                result: result.into(),
                height: head.height,
                fuel_used: outcome.fuel_used,
            })),
            Err(e) if e.code == vm::codes::INVALID_MODULE => Err(ApiError::internal(e.message)),
            Err(e) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                e.code,
                e.message,
            )),
        }
    })
    .await
}

/// The chain as this node sees it.
#[utoipa::path(get, path = "/status", tag = "node", responses((status = 200, body = StatusResponse)))]
async fn status(State(state): State<Arc<ApiState>>) -> Json<StatusResponse> {
    let mut status = state.status.borrow().clone();
    // The head comes from storage, so /status never lags what queries already show.
    if let Some(head) = state.storage.head() {
        status.height = head.height;
        status.block_hash = head.block_hash;
        status.state_root = head.state_root;
        status.last_block_time_ms = head.timestamp_ms;
    }
    Json(StatusResponse {
        chain_id: state.chain_id.clone(),
        genesis_hash: state.genesis_hash,
        status,
    })
}

/// Liveness: answers while the HTTP server runs.
#[utoipa::path(get, path = "/health", tag = "node", responses((status = 200, body = Health)))]
async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "node",
    responses((status = 200, body = String, content_type = "application/openmetrics-text"))
)]
async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    state
        .metrics
        .mempool_size
        .set(i64::try_from(state.mempool.len()).unwrap_or(i64::MAX));
    let text = state.metrics.encode();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        )],
        text,
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "node", responses((status = 200, description = "OpenAPI 3.1 document")))]
async fn openapi() -> Response {
    static DOC: LazyLock<String> = LazyLock::new(|| {
        ApiDoc::openapi()
            .to_json()
            .expect("the generated OpenAPI document serialises")
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        DOC.as_str(),
    )
        .into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Trellis node API", description = "Submit transactions, read blocks, receipts and authenticated state."),
    paths(
        submit_transaction,
        get_transaction,
        latest_block,
        block_by_height,
        block_by_hash,
        get_state,
        get_contract,
        query_contract,
        status,
        health,
        metrics,
        openapi,
    ),
    components(schemas(ErrorBody, ChainStatus)),
    tags(
        (name = "transactions", description = "Submission and lookup"),
        (name = "blocks", description = "Committed blocks with certificates and receipts"),
        (name = "state", description = "Authenticated state reads"),
        (name = "contracts", description = "Deployed contracts and read-only contract queries"),
        (name = "node", description = "Status, health, metrics"),
    )
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests;
