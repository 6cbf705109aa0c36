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
//!
//! `GET /v1/events` streams committed transactions as Server-Sent Events (see
//! [`events`]): it reads committed blocks from storage from its start
//! position, then follows new commits, woken by the driver's status channel.
//! A stream's position is its SSE id `height:index`, so a client that
//! reconnects with `Last-Event-ID` continues with no gap and no duplicate.
//! A follower that wants whole blocks asks `GET /v1/blocks/{height}` with
//! `wait_ms` (a long poll, see [`BlockQuery`]) and, with `Accept:
//! application/octet-stream`, gets them in their canonical encoding.

use crate::consensus::ValidatorSet;
use crate::execution::{self, ContractRecord};
use crate::mempool::{AdmissionError, Batcher, Mempool, NotAdmitted};
use crate::metrics::{ApiLabels, CodeLabels, Metrics, RouteLabels};
use crate::storage::{ChainHead, CommittedBlock, Storage, StorageError, TxLocation, check_indexed};
use crate::vm::{self, CallEnv, Entry, Invocation, Limits, StateView, Vm};
use axum::Extension;
use axum::body::Bytes as Body;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tracing::Instrument;
use trellis_genesis::Genesis;
use trellis_types::api::{CommittedTx, EventFilter, MAX_BLOCK_WAIT_MS, TxPosition};
use trellis_types::{
    Address, Block, Bytes, Domain, Event, Hash, MerkleProof, PublicKey, QuorumCertificate, Receipt,
};
use utoipa::{IntoParams, OpenApi, ToSchema};

mod access;
pub use access::{Access, REPLAY_CAPACITY, Reader, Replays};

/// What the handlers share.
pub struct ApiState {
    pub chain_id: String,
    pub genesis_hash: Hash,
    /// The genesis's validators, served as they are.
    pub validators: ValidatorList,
    pub storage: Storage,
    pub mempool: Arc<Mempool>,
    /// Admits submissions, concurrent ones in batches.
    pub admission: Batcher,
    /// Runs contract queries.
    pub vm: Arc<Vm>,
    /// Published by the consensus driver.
    pub status: tokio::sync::watch::Receiver<ChainStatus>,
    pub metrics: Arc<Metrics>,
    /// Largest request body accepted; larger ones get 413 `oversized`.
    pub max_body_bytes: usize,
    /// Bounds reads and queries; past it they get 503 `busy`.
    pub reads: ReadLimit,
    /// Whether readers must sign their requests ([`access`]).
    pub access: Access,
    /// Signed requests already taken.
    pub replays: Replays,
}

// ---------------------------------------------------------------------------
// Wire shapes (the shared ones live in `trellis_types::api`)

pub use trellis_types::api::{
    BatchSubmitted, BatchVerdict, BlockResponse, ChainStatus, ContractQuery, ContractQueryResult,
    ErrorBody, EvidenceList, HeaderResponse, Health, MAX_BATCH_TXS, ProposalInfo, ProposalList,
    StateResponse, StatusResponse, TxProofResponse, TxStatus, TxSubmitted, ValidatorInfo,
    ValidatorList,
};

/// `POST /v1/transactions` with `Content-Type: application/json`.
#[derive(Deserialize, ToSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct SubmitTransaction {
    /// Hex of the canonical encoding of a `SignedTransaction` (optional `0x` prefix).
    pub signed_tx: String,
}

/// `POST /v1/transactions/batch` with `Content-Type: application/json`.
#[derive(Deserialize, ToSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct SubmitBatch {
    /// Hex of each transaction's canonical encoding, in order (optional `0x` prefixes).
    #[serde(deserialize_with = "at_most_a_batch")]
    pub signed_txs: Vec<String>,
}

/// The error [`at_most_a_batch`] stops with, recognised by [`batch_txs`].
const TOO_MANY_TXS: &str = "too many transactions";

/// A list refused at its `MAX_BATCH_TXS + 1`th entry, as it is read: each
/// entry of a few bytes would take a string's 24 in memory.
fn at_most_a_batch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {MAX_BATCH_TXS} hex strings")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut txs = Vec::new();
            while let Some(tx) = seq.next_element()? {
                if txs.len() == MAX_BATCH_TXS {
                    return Err(serde::de::Error::custom(TOO_MANY_TXS));
                }
                txs.push(tx);
            }
            Ok(txs)
        }
    }
    d.deserialize_seq(Bounded)
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

/// The canonical encoding of a list of byte strings, each a `SignedTransaction`'s
/// canonical encoding, as raw bytes.
pub struct RawBatch;

impl utoipa::PartialSchema for RawBatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .description(Some(
                "canonical encoding of a list of byte strings, each the canonical encoding of a SignedTransaction",
            ))
            .into()
    }
}
impl ToSchema for RawBatch {}

#[derive(Deserialize, IntoParams, Debug)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StateQuery {
    /// Include a Merkle proof of the value (or its absence) against `state_root`.
    #[serde(default)]
    pub proof: bool,
    /// Committed height to read at; the latest by default.
    pub height: Option<u64>,
}

/// Most proofs one `GET /v1/evidence` returns.
pub const MAX_EVIDENCE: usize = 100;

/// `GET /v1/blocks/{height}` parameters.
#[derive(Deserialize, IntoParams, Debug)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BlockQuery {
    /// When the block is above the head, wait up to this many milliseconds
    /// (at most [`MAX_BLOCK_WAIT_MS`]) for it to commit before answering 404:
    /// a follower's long poll. 0 (the default) answers at once.
    #[serde(default)]
    pub wait_ms: u64,
}

#[derive(Deserialize, IntoParams, Debug)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EvidenceQuery {
    /// The lowest height to list; 0 by default.
    #[serde(default)]
    pub from_height: u64,
    /// With `from_height`: list from after this validator's proof (hex key)
    /// at that height, to go on from the last proof of a page.
    pub after_validator: Option<PublicKey>,
    /// At most this many, up to and by default 100 (`MAX_EVIDENCE`).
    pub limit: Option<usize>,
}

#[derive(Deserialize, IntoParams, Debug)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ProposalsQuery {
    /// List from after this proposal id (hex), to go on from a page's `next_after`.
    pub after: Option<Hash>,
    /// At most this many, up to and by default 100 (`MAX_PROPOSALS`).
    pub limit: Option<usize>,
}

/// The longest page of `GET /v1/proposals`.
const MAX_PROPOSALS: usize = 100;

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
        match e {
            StorageError::Busy(why) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", why),
            e @ StorageError::NotIndexed(_) => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_indexed", e.to_string())
            }
            e => ApiError::internal(e),
        }
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

/// The HTTP status for each admission error (exhaustive, so a new refusal
/// cannot fall through to a 500).
pub fn admission_status(e: &AdmissionError) -> StatusCode {
    use AdmissionError as E;
    match e {
        E::Oversized { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        E::Malformed(_)
        | E::WrongChain { .. }
        | E::Expired { .. }
        | E::ExpiryTooFar { .. }
        | E::WeakKey => StatusCode::BAD_REQUEST,
        E::BadSignature => StatusCode::UNAUTHORIZED,
        E::UnknownSender(_) | E::ReadOnlySender(_) | E::Suspended(_) => StatusCode::FORBIDDEN,
        E::NonceReplayed { .. } | E::AlreadyKnown(_) | E::NonceTaken(_) => StatusCode::CONFLICT,
        E::NonceTooFarAhead { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        E::MempoolFull { .. }
        | E::MempoolBytesFull { .. }
        | E::SenderQueueFull { .. }
        | E::OrgShareFull { .. } => StatusCode::TOO_MANY_REQUESTS,
        E::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<AdmissionError> for ApiError {
    fn from(e: AdmissionError) -> Self {
        match e {
            AdmissionError::Storage(e) => ApiError::internal(e),
            e => ApiError::new(admission_status(&e), e.code(), e.to_string()),
        }
    }
}

impl From<NotAdmitted> for ApiError {
    fn from(e: NotAdmitted) -> Self {
        match e {
            NotAdmitted::QueueFull(_) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "admission_queue_full",
                e.to_string(),
            ),
            NotAdmitted::Stopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                e.to_string(),
            ),
        }
    }
}

/// Bounds the API's blocking work: store reads, contract queries and event
/// stream reads. At most `running` of them hold a blocking thread at once,
/// so peers' signature checks and the driver's block phases always find
/// one. At most `admitted` requests run or wait for a turn; one more is
/// answered 503 `busy` at once instead of queueing without end.
pub struct ReadLimit {
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
    max_admitted: usize,
}

impl ReadLimit {
    pub fn new(running: usize, admitted: usize) -> ReadLimit {
        ReadLimit {
            running: Arc::new(Semaphore::new(running)),
            admitted: Arc::new(Semaphore::new(admitted)),
            max_admitted: admitted,
        }
    }

    /// A place among the admitted requests, or 503 `busy`.
    fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.admitted.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!(
                    "{} API reads are already running or waiting; retry shortly",
                    self.max_admitted
                ),
            )
        })
    }

    /// A turn on a blocking thread. The permit goes into the work itself, so
    /// a client that hangs up mid-read frees no thread that is still reading.
    async fn turn(&self) -> OwnedSemaphorePermit {
        self.running
            .clone()
            .acquire_owned()
            .await
            .expect("the read semaphore is never closed")
    }
}

/// Runs `work` on a blocking thread within the API's [`ReadLimit`]; a panic
/// in it becomes a 500, never a dropped connection.
async fn blocking<T: Send + 'static>(
    state: Arc<ApiState>,
    work: impl FnOnce(&ApiState) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let _admitted = state.reads.admit()?;
    let turn = state.reads.turn().await;
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        work(&state)
    })
    .await
    .map_err(|e| ApiError::internal(format!("API task failed: {e}")))?
}

/// `value` as a JSON response, serialised here rather than by axum once the
/// handler returns: inside [`blocking`], a large answer (a full block's JSON
/// is tens of megabytes) is built on a read thread and within the read
/// limit, not on an async worker that the peer-to-peer network shares.
fn json_response<T: serde::Serialize>(value: &T) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value)
        .map_err(|e| ApiError::internal(format!("encoding the answer: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
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

/// Limits and timings of `GET /v1/events`.
#[derive(Debug, Clone)]
pub struct EventStreamConfig {
    /// Streams open at once; one more is refused with 429 `too_many_streams`.
    pub max_streams: usize,
    /// How often an idle stream sends an SSE comment, so proxies keep it open.
    pub keep_alive: Duration,
    /// How often a stream looks at the head even without a status change.
    pub poll_interval: Duration,
}

impl Default for EventStreamConfig {
    fn default() -> Self {
        EventStreamConfig {
            max_streams: 256,
            keep_alive: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// What the event stream handler shares: the stream limit and the signal
/// that the server is shutting down (open streams end then, so a graceful
/// shutdown does not wait on them forever).
#[derive(Clone)]
struct EventStreams {
    config: EventStreamConfig,
    permits: Arc<Semaphore>,
    closing: Option<watch::Receiver<bool>>,
}

pub fn router(state: Arc<ApiState>) -> Router {
    build_router(state, EventStreamConfig::default(), None)
}

fn build_router(
    state: Arc<ApiState>,
    config: EventStreamConfig,
    closing: Option<watch::Receiver<bool>>,
) -> Router {
    let streams = EventStreams {
        permits: Arc::new(Semaphore::new(config.max_streams)),
        config,
        closing,
    };
    Router::new()
        .route("/v1/events", get(events))
        .route("/v1/transactions", post(submit_transaction))
        .route("/v1/transactions/batch", post(submit_batch))
        .route("/v1/transactions/{hash}", get(get_transaction))
        .route("/v1/transactions/{hash}/proof", get(transaction_proof))
        .route("/v1/blocks/latest", get(latest_block))
        .route("/v1/blocks/{height}", get(block_by_height))
        .route("/v1/blocks/{height}/header", get(block_header))
        .route("/v1/blocks/by-hash/{hash}", get(block_by_hash))
        .route("/v1/state/{key}", get(get_state))
        .route("/v1/contracts/{address}", get(get_contract))
        .route("/v1/contracts/{address}/query", post(query_contract))
        .route("/v1/proposals", get(proposals))
        .route("/v1/proposals/{id}", get(proposal))
        .route("/v1/evidence", get(evidence))
        .route("/v1/validators", get(validators))
        .route("/status", get(status))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(streams))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::authenticate,
        ))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            observe,
        ))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then ends the
/// open event streams and finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, EventStreamConfig::default(), shutdown).await
}

/// [`serve`] with event stream settings of its own.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    config: EventStreamConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "API listening");
    }
    let (closing_tx, closing_rx) = watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = closing_tx.send(true);
    };
    axum::serve(listener, build_router(state, config, Some(closing_rx)))
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
    // `key`, `org` and `path`: who read what, as `access::authenticate`
    // records them for a signed request (the audit trail of reads).
    let span = tracing::info_span!(
        "api",
        method = %request.method(),
        route = %route,
        key = tracing::field::Empty,
        org = tracing::field::Empty,
        path = tracing::field::Empty,
    );
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
        (status = 403, description = "unknown_sender, read_only_sender", body = ErrorBody),
        (status = 409, description = "nonce_replayed, already_known, nonce_taken", body = ErrorBody),
        (status = 413, description = "oversized", body = ErrorBody),
        (status = 415, description = "unsupported_content_type", body = ErrorBody),
        (status = 422, description = "nonce_too_far_ahead", body = ErrorBody),
        (status = 429, description = "mempool_full, sender_queue_full, org_share_full, admission_queue_full", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody),
        (status = 503, description = "shutting_down", body = ErrorBody),
    )
)]
async fn submit_transaction(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Body, BytesRejection>,
) -> Result<(StatusCode, Json<TxSubmitted>), ApiError> {
    let result = submit(&state, &headers, body).await;
    if let Err(e) = &result {
        count_refusal(&state.metrics, &e.code);
    }
    result.map(|tx_hash| (StatusCode::ACCEPTED, Json(TxSubmitted { tx_hash })))
}

/// Counts a refused submission (or batch, or transaction of a batch) by its code.
fn count_refusal(metrics: &Metrics, code: &str) {
    metrics
        .admission_rejected
        .get_or_create(&CodeLabels {
            code: code.to_owned(),
        })
        .inc();
}

async fn submit(
    state: &Arc<ApiState>,
    headers: &HeaderMap,
    body: Result<Body, BytesRejection>,
) -> Result<Hash, ApiError> {
    let bytes = match read_body(state, headers, body)? {
        (BodyFormat::Binary, body) => body.to_vec(),
        (BodyFormat::Json, body) => {
            let request: SubmitTransaction = serde_json::from_slice(&body).map_err(|e| {
                ApiError::malformed(format!("body is not {{\"signed_tx\": \"<hex>\"}}: {e}"))
            })?;
            from_hex("signed_tx", &request.signed_tx)?
        }
    };
    Ok(state.admission.admit(bytes).await??)
}

/// A submission's body and its format, or why it cannot be read.
fn read_body(
    state: &ApiState,
    headers: &HeaderMap,
    body: Result<Body, BytesRejection>,
) -> Result<(BodyFormat, Body), ApiError> {
    let format = body_format(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
            "send application/octet-stream (canonical bytes) or application/json (hex)",
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
    Ok((format, body))
}

fn from_hex(field: &str, value: &str) -> Result<Vec<u8>, ApiError> {
    hex::decode(value.strip_prefix("0x").unwrap_or(value))
        .map_err(|e| ApiError::malformed(format!("{field} is not hex: {e}")))
}

/// Submit up to 1,024 signed transactions in one request.
///
/// Each transaction is admitted or refused on its own, exactly as
/// `POST /v1/transactions` would (a batch is not atomic); the answer holds
/// one verdict per transaction, in order. The whole batch is refused only
/// when it cannot be read or admission cannot take it. The body limit is
/// the node's `api.max_body_bytes`, for the batch as a whole.
#[utoipa::path(
    post,
    path = "/v1/transactions/batch",
    tag = "transactions",
    request_body(
        description = "The transactions' canonical encodings: a canonically encoded list of byte strings, or hex in JSON",
        content(
            (RawBatch = "application/octet-stream"),
            (SubmitBatch = "application/json"),
        )
    ),
    responses(
        (status = 200, description = "One verdict per transaction, in order: status 202 with its hash, or the status and error `POST /v1/transactions` would have answered", body = BatchSubmitted),
        (status = 400, description = "malformed: the batch (not one of its transactions) cannot be read, or is empty", body = ErrorBody),
        (status = 413, description = "oversized (the body), too_many_transactions (over 1,024)", body = ErrorBody),
        (status = 415, description = "unsupported_content_type", body = ErrorBody),
        (status = 429, description = "admission_queue_full", body = ErrorBody),
        (status = 503, description = "shutting_down", body = ErrorBody),
    )
)]
async fn submit_batch(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Body, BytesRejection>,
) -> Result<Json<BatchSubmitted>, ApiError> {
    let verdicts = match batch_txs(&state, &headers, body) {
        Ok(txs) => state.admission.admit_all(txs).await.map_err(ApiError::from),
        Err(e) => Err(e),
    }
    .inspect_err(|e| count_refusal(&state.metrics, &e.code))?;
    let results = verdicts
        .into_iter()
        .map(|verdict| match verdict {
            Ok(tx_hash) => BatchVerdict {
                status: StatusCode::ACCEPTED.as_u16(),
                tx_hash: Some(tx_hash),
                error: None,
            },
            Err(e) => {
                let e = ApiError::from(e);
                count_refusal(&state.metrics, &e.code);
                BatchVerdict {
                    status: e.status.as_u16(),
                    tx_hash: None,
                    error: Some(ErrorBody {
                        code: e.code.into_owned(),
                        message: e.message,
                    }),
                }
            }
        })
        .collect();
    Ok(Json(BatchSubmitted { results }))
}

/// The transactions of a batch's body, each still in its canonical bytes.
fn batch_txs(
    state: &ApiState,
    headers: &HeaderMap,
    body: Result<Body, BytesRejection>,
) -> Result<Vec<Vec<u8>>, ApiError> {
    let too_many = |count: &dyn std::fmt::Display| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_transactions",
            format!("a batch holds at most {MAX_BATCH_TXS} transactions, this one {count}"),
        )
    };
    let txs: Vec<Vec<u8>> = match read_body(state, headers, body)? {
        (BodyFormat::Binary, body) => {
            // The count comes first in the encoding: an oversized batch is
            // refused before it is decoded (a one-byte entry takes 24 in memory).
            if let Ok((count, _)) = trellis_types::codec::decode_prefix::<u64>(&body)
                && count > MAX_BATCH_TXS as u64
            {
                return Err(too_many(&count));
            }
            trellis_types::decode::<Vec<Bytes>>(&body)
                .map_err(|e| {
                    ApiError::malformed(format!(
                        "body is not the canonical encoding of a list of byte strings: {e}"
                    ))
                })?
                .into_iter()
                .map(|tx| tx.0)
                .collect()
        }
        (BodyFormat::Json, body) => {
            let request: SubmitBatch = serde_json::from_slice(&body).map_err(|e| {
                if e.to_string().starts_with(TOO_MANY_TXS) {
                    return too_many(&"more");
                }
                ApiError::malformed(format!(
                    "body is not {{\"signed_txs\": [\"<hex>\", ...]}}: {e}"
                ))
            })?;
            request
                .signed_txs
                .iter()
                .enumerate()
                .map(|(i, tx)| from_hex(&format!("signed_txs[{i}]"), tx))
                .collect::<Result<_, _>>()?
        }
    };
    if txs.is_empty() {
        return Err(ApiError::malformed(
            "a batch holds at least one transaction",
        ));
    }
    if txs.len() > MAX_BATCH_TXS {
        return Err(too_many(&txs.len()));
    }
    Ok(txs)
}

/// Where a transaction is: pending in this node's mempool, committed, or
/// dropped from the mempool without being committed (among the latest
/// drops since the node started).
#[utoipa::path(
    get,
    path = "/v1/transactions/{hash}",
    tag = "transactions",
    params(("hash" = String, Path, description = "Transaction hash, hex")),
    responses(
        (status = 200, body = TxStatus),
        (status = 401, description = "who reads: unauthenticated, bad_authorization, stale_request, bad_signature, replayed, unknown_account (docs/api.md, \"Who reads what\")", body = ErrorBody),
        (status = 400, description = "malformed hash", body = ErrorBody),
        (status = 404, description = "not_found: neither pending here, committed nor dropped lately", body = ErrorBody),
        (status = 501, description = "not_indexed: this node keeps no transaction index and neither has it pending nor dropped it", body = ErrorBody),
        (status = 503, description = "busy: the node's reads are all taken; retry shortly", body = ErrorBody),
    )
)]
async fn get_transaction(
    State(state): State<Arc<ApiState>>,
    Extension(reader): Extension<Reader>,
    hash: Result<Path<String>, PathRejection>,
) -> Result<Json<TxStatus>, ApiError> {
    let hash = parse_hash(&path_param(hash)?)?;
    let limited_to = reader.limited_to()?.map(str::to_owned);
    // Look in the mempool before storage: a transaction leaves the mempool only
    // after its block is stored, so one of the two looks always finds it.
    // Storage wins when both do (it stays in the mempool until pruned).
    let pending = state.mempool.contains(&hash);
    // Without the index only the mempool can answer (a drop is never of a
    // committed transaction).
    if !state.storage.indexes().transactions {
        if pending {
            return Ok(Json(TxStatus::Pending));
        }
        if let Some(reason) = state.mempool.dropped(&hash) {
            return Ok(Json(TxStatus::Dropped { reason }));
        }
    }
    let location = blocking(state.clone(), move |state| {
        let location = state.storage.tx_location(&hash)?;
        match (location, limited_to) {
            (Some(location), Some(org)) if !tx_concerns(&state.storage, &org, &location)? => {
                Err(not_theirs(&hash, &org))
            }
            (location, _) => Ok(location),
        }
    })
    .await?;
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
    if let Some(reason) = state.mempool.dropped(&hash) {
        return Ok(Json(TxStatus::Dropped { reason }));
    }
    Err(ApiError::not_found(format!(
        "transaction {hash} is neither pending here, committed nor dropped lately"
    )))
}

/// Whether the committed transaction at `location` concerns `org`: its
/// events name it, or an account of `org` sent it.
fn tx_concerns(storage: &Storage, org: &str, location: &TxLocation) -> Result<bool, ApiError> {
    let parties = [org.to_owned()];
    if names_party(&parties, &location.receipt.events) {
        return Ok(true);
    }
    let Some(committed) = storage.committed_block(location.height)? else {
        return Ok(false);
    };
    let Some(tx) = committed.block.txs.get(location.index as usize) else {
        return Ok(false);
    };
    let sender = sender_org(storage, &mut HashMap::new(), &tx.tx.sender, location.height)?;
    Ok(sender.as_deref() == Some(org))
}

/// What a member hears of a transaction that does not concern it: what it
/// would hear of one that does not exist.
fn not_theirs(hash: &Hash, org: &str) -> ApiError {
    ApiError::not_found(format!(
        "transaction {hash} is not committed here, or does not concern {org}"
    ))
}

/// A committed transaction and its receipt with their Merkle proofs under
/// the block header's `tx_root` and `receipts_root`: what a client that
/// trusts the header (checked against the validators' certificate, `GET
/// /v1/blocks/{height}/header`) needs to trust the transaction's result.
#[utoipa::path(
    get,
    path = "/v1/transactions/{hash}/proof",
    tag = "transactions",
    params(("hash" = String, Path, description = "Transaction hash, hex")),
    responses(
        (status = 200, body = TxProofResponse),
        (status = 401, description = "who reads: unauthenticated, bad_authorization, stale_request, bad_signature, replayed, unknown_account (docs/api.md, \"Who reads what\")", body = ErrorBody),
        (status = 400, description = "malformed hash", body = ErrorBody),
        (status = 404, description = "not_found: not committed (it may be pending)", body = ErrorBody),
        (status = 501, description = "not_indexed: this node keeps no transaction index", body = ErrorBody),
        (status = 503, description = "busy: the node's reads are all taken; retry shortly", body = ErrorBody),
    )
)]
async fn transaction_proof(
    State(state): State<Arc<ApiState>>,
    Extension(reader): Extension<Reader>,
    hash: Result<Path<String>, PathRejection>,
) -> Result<Json<TxProofResponse>, ApiError> {
    let hash = parse_hash(&path_param(hash)?)?;
    let limited_to = reader.limited_to()?.map(str::to_owned);
    blocking(state, move |state| {
        let not_committed = || {
            let pending = if state.mempool.contains(&hash) {
                " (it is pending here)"
            } else {
                ""
            };
            ApiError::not_found(format!("transaction {hash} is not committed{pending}"))
        };
        let location = state
            .storage
            .tx_location(&hash)?
            .ok_or_else(not_committed)?;
        if let Some(org) = limited_to
            && !tx_concerns(&state.storage, &org, &location)?
        {
            return Err(not_theirs(&hash, &org));
        }
        let committed = state
            .storage
            .committed_block(location.height)?
            .ok_or_else(not_committed)?;
        let (block, receipts) = (&committed.block, &committed.receipts);
        let index = location.index as usize;
        let tx = block
            .txs
            .get(index)
            .filter(|tx| tx.hash() == hash)
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "transaction {hash} is indexed at {}:{index}, where another is",
                    location.height
                ))
            })?;
        // Each receipt names its transaction's hash: no need to hash them again.
        let tx_leaves: Vec<Hash> = receipts
            .iter()
            .zip(&block.txs)
            .map(|(receipt, tx)| trellis_types::block::tx_leaf(&receipt.tx, &tx.signature))
            .collect();
        let receipt_leaves: Vec<Hash> = receipts.iter().map(Receipt::hash).collect();
        let proof = |domain, leaves: &[Hash]| {
            MerkleProof::new(domain, leaves, index).ok_or_else(|| {
                ApiError::internal(format!(
                    "block {} has no leaf {index} among its {} leaves",
                    location.height,
                    leaves.len()
                ))
            })
        };
        Ok(Json(TxProofResponse {
            height: location.height,
            index: location.index,
            tx: tx.clone(),
            receipt: location.receipt,
            tx_proof: proof(Domain::TxRoot, &tx_leaves)?,
            receipt_proof: proof(Domain::ReceiptRoot, &receipt_leaves)?,
        }))
    })
    .await
}

/// A [`BlockResponse`] that borrows the stored block and receipts: the same
/// fields in the same order, so the same JSON and canonical bytes, without
/// copying a block of thousands of transactions for each answer.
#[derive(serde::Serialize)]
struct BlockAnswer<'a> {
    hash: Hash,
    block: &'a Block,
    commit: &'a QuorumCertificate,
    receipts: &'a [Receipt],
}

/// The committed block at `height` with the certificate that committed it.
fn load_block(
    storage: &Storage,
    height: u64,
) -> Result<Option<(Arc<CommittedBlock>, QuorumCertificate)>, ApiError> {
    let Some(committed) = storage.committed_block(height)? else {
        return Ok(None);
    };
    let commit = storage.commit_certificate(height)?.ok_or_else(|| {
        ApiError::internal(format!(
            "block {height} is stored without its commit certificate"
        ))
    })?;
    Ok(Some((committed, commit)))
}

/// The latest committed block.
#[utoipa::path(
    get,
    path = "/v1/blocks/latest",
    tag = "blocks",
    responses(
        (status = 200, description = "JSON; the canonical encoding with `Accept: application/octet-stream`", content((BlockResponse = "application/json"), (Vec<u8> = "application/octet-stream"))),
        (status = 401, description = "who reads: unauthenticated, bad_authorization, stale_request, bad_signature, replayed, unknown_account (docs/api.md, \"Who reads what\")", body = ErrorBody),
        (status = 403, description = "forbidden: whole blocks are for regulators", body = ErrorBody),
        (status = 404, description = "no block yet", body = ErrorBody),
        (status = 503, description = "busy: the node's reads are all taken; retry shortly", body = ErrorBody),
    )
)]
async fn latest_block(
    State(state): State<Arc<ApiState>>,
    Extension(reader): Extension<Reader>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    reader.must_see_everything("a whole block")?;
    let canonical = wants_canonical(&headers);
    blocking(state, move |state| {
        let head = head_height(state)?;
        let block = load_block(&state.storage, head)?
            .ok_or_else(|| ApiError::internal(format!("head block {head} is missing")))?;
        block_response(&block, canonical)
    })
    .await
}

/// The latest committed height; 404 before the first block.
fn head_height(state: &ApiState) -> Result<u64, ApiError> {
    state
        .storage
        .head()
        .map(|head| head.height)
        .ok_or_else(|| ApiError::not_found("the chain has no block yet"))
}

/// The committed block at a height; with `wait_ms`, a long poll for the
/// next one (see [`BlockQuery`]).
#[utoipa::path(
    get,
    path = "/v1/blocks/{height}",
    tag = "blocks",
    params(("height" = u64, Path, description = "Block height"), BlockQuery),
    responses(
        (status = 200, description = "JSON; the canonical encoding with `Accept: application/octet-stream`", content((BlockResponse = "application/json"), (Vec<u8> = "application/octet-stream"))),
        (status = 401, description = "who reads: unauthenticated, bad_authorization, stale_request, bad_signature, replayed, unknown_account (docs/api.md, \"Who reads what\")", body = ErrorBody),
        (status = 403, description = "forbidden: whole blocks are for regulators", body = ErrorBody),
        (status = 400, description = "malformed height or wait_ms", body = ErrorBody),
        (status = 404, description = "not_found: above the head (after waiting wait_ms)", body = ErrorBody),
        (status = 429, description = "too_many_streams: waiting, and the node's limit of streams and waits is reached", body = ErrorBody),
        (status = 503, description = "busy: the node's reads are all taken; retry shortly", body = ErrorBody),
    )
)]
async fn block_by_height(
    State(state): State<Arc<ApiState>>,
    Extension(streams): Extension<EventStreams>,
    Extension(reader): Extension<Reader>,
    headers: HeaderMap,
    height: Result<Path<String>, PathRejection>,
    query: Result<Query<BlockQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    reader.must_see_everything("a whole block")?;
    let height = path_param(height)?;
    let height: u64 = height
        .parse()
        .map_err(|_| ApiError::malformed(format!("`{height}` is not a block height")))?;
    let Query(query) = query.map_err(|e| ApiError::malformed(e.body_text()))?;
    if query.wait_ms > MAX_BLOCK_WAIT_MS {
        return Err(ApiError::malformed(format!(
            "wait_ms {} is above {MAX_BLOCK_WAIT_MS}",
            query.wait_ms
        )));
    }
    let canonical = wants_canonical(&headers);
    if query.wait_ms > 0 {
        let wait = Duration::from_millis(query.wait_ms);
        wait_for_height(&state, &streams, height, wait).await?;
    }
    blocking(state, move |state| {
        let block = load_block(&state.storage, height)?
            .ok_or_else(|| ApiError::not_found(format!("no block at height {height}")))?;
        block_response(&block, canonical)
    })
    .await
}

/// A committed block's header and commit certificate, without its body:
/// what a client checking a state proof needs of the block.
#[utoipa::path(
    get,
    path = "/v1/blocks/{height}/header",
    tag = "blocks",
    params(("height" = String, Path, description = "Block height, or `latest`")),
    responses(
        (status = 200, body = HeaderResponse),
        (status = 400, description = "malformed height", body = ErrorBody),
        (status = 404, description = "not_found: above the head", body = ErrorBody),
        (status = 503, description = "busy: the node's reads are all taken; retry shortly", body = ErrorBody),
    )
)]
async fn block_header(
    State(state): State<Arc<ApiState>>,
    height: Result<Path<String>, PathRejection>,
) -> Result<Json<HeaderResponse>, ApiError> {
    let height = path_param(height)?;
    let height: Option<u64> = match height.as_str() {
        "latest" => None,
        number => Some(number.parse().map_err(|_| {
            ApiError::malformed(format!("`{number}` is not a block height or `latest`"))
        })?),
    };
    blocking(state, move |state| {
        let height = match height {
            Some(height) => height,
            None => head_height(state)?,
        };
        let (header, commit) = state
            .storage
            .certified_header(height)?
            .ok_or_else(|| ApiError::not_found(format!("no block at height {height}")))?;
        Ok(Json(HeaderResponse {
            hash: commit.block,
            header,
            commit,
        }))
    })
    .await
}

/// Returns once the head reaches `height`, `wait` has passed or the server
/// is closing, whichever comes first. Waiting takes one of the event
/// streams' slots (429 `too_many_streams` when none is free): a long poll
/// holds a connection as a stream does.
async fn wait_for_height(
    state: &ApiState,
    streams: &EventStreams,
    height: u64,
    wait: Duration,
) -> Result<(), ApiError> {
    let committed = || state.storage.head().is_some_and(|h| h.height >= height);
    if committed() {
        return Ok(());
    }
    let _slot = streams
        .permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| too_many_streams(&streams.config))?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut status = state.status.clone();
    let mut closing = streams.closing.clone();
    while !committed() && tokio::time::Instant::now() < deadline {
        let look_again = deadline.min(tokio::time::Instant::now() + streams.config.poll_interval);
        tokio::select! {
            changed = status.changed() => if changed.is_err() {
                return Ok(()); // The driver is gone: nothing will commit any more.
            },
            () = tokio::time::sleep_until(look_again) => {}
            () = server_closing(&mut closing) => return Ok(()),
        }
    }
    Ok(())
}

/// Whether the request's `Accept` names `application/octet-stream` (and
/// not with `q=0`): the canonical encoding, as blocks are hashed and stored,
/// instead of JSON.
fn wants_canonical(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let essence = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .is_some_and(|q| q.parse::<f64>().is_ok_and(|q| q == 0.0))
            });
            essence.eq_ignore_ascii_case("application/octet-stream") && !refused
        })
}

/// A loaded block as JSON or in its canonical encoding.
fn block_response(
    (committed, commit): &(Arc<CommittedBlock>, QuorumCertificate),
    canonical: bool,
) -> Result<Response, ApiError> {
    let answer = BlockAnswer {
        hash: committed.block.hash(),
        block: &committed.block,
        commit,
        receipts: &committed.receipts,
    };
    let mut response = if canonical {
        let body = trellis_types::codec::encode_sized(&answer);
        ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
    } else {
        json_response(&answer)?
    };
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    Ok(response)
}

/// Open governance proposals, in id order, with the approvals that count
/// now; any member reads them.
#[utoipa::path(
    get,
    path = "/v1/proposals",
    tag = "governance",
    params(ProposalsQuery),
    responses(
        (status = 200, body = ProposalList),
        (status = 401, description = "who reads: unauthenticated, bad_authorization, stale_request, bad_signature, replayed, unknown_account (docs/api.md, \"Who reads what\")", body = ErrorBody),
        (status = 400, description = "malformed query, or a limit above 100", body = ErrorBody),
        (status = 503, description = "busy: the node's reads are all taken; retry shortly", body = ErrorBody),
    )
)]
async fn proposals(
    State(state): State<Arc<ApiState>>,
    Extension(reader): Extension<Reader>,
    query: Result<Query<ProposalsQuery>, QueryRejection>,
) -> Result<Json<ProposalList>, ApiError> {
    reader.member()?;
    let Query(query) = query.map_err(|e| ApiError::malformed(e.body_text()))?;
    let limit = query.limit.unwrap_or(MAX_PROPOSALS);
    if limit > MAX_PROPOSALS {
        return Err(ApiError::malformed(format!(
            "limit {limit} is above {MAX_PROPOSALS}"
        )));
    }
    blocking(state, move |state| {
        let proposals = execution::open_proposals(
            &state.storage,
            query.after.as_ref(),
            limit,
            state.storage.head().map_or(0, |h| h.timestamp_ms),
        )?;
        let next_after = (proposals.len() == limit)
            .then(|| proposals.last().map(|p| p.id))
            .flatten();
        Ok(Json(ProposalList {
            proposals,
            next_after,
        }))
    })
    .await
}

/// One open governance proposal, by the hash of the transaction that made it.
#[utoipa::path(
    get,
    path = "/v1/proposals/{id}",
    tag = "governance",
    params(("id" = String, Path, description = "Proposal id: the proposing transaction's hash, hex")),
    responses(
        (status = 200, body = ProposalInfo),
        (status = 401, description = "who reads: unauthenticated, bad_authorization, stale_request, bad_signature, replayed, unknown_account (docs/api.md, \"Who reads what\")", body = ErrorBody),
        (status = 400, description = "malformed id", body = ErrorBody),
        (status = 404, description = "proposal_not_found: none open by that id (never made, carried out, or not yet committed)", body = ErrorBody),
        (status = 503, description = "busy: the node's reads are all taken; retry shortly", body = ErrorBody),
    )
)]
async fn proposal(
    State(state): State<Arc<ApiState>>,
    Extension(reader): Extension<Reader>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ProposalInfo>, ApiError> {
    reader.member()?;
    let id = parse_hash(&path_param(id)?)?;
    blocking(state, move |state| {
        let time_ms = state.storage.head().map_or(0, |h| h.timestamp_ms);
        execution::open_proposal(&state.storage, &id, time_ms)?
            .map(Json)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "proposal_not_found",
                    format!("no proposal {id} is open"),
                )
            })
    })
    .await
}

/// Proofs that validators equivocated (signed two votes for one step),
/// as this node saw them: each is two signed votes anyone can check.
#[utoipa::path(
    get,
    path = "/v1/evidence",
    tag = "node",
    params(EvidenceQuery),
    responses(
        (status = 200, body = EvidenceList),
        (status = 400, description = "malformed query, or a limit above 100", body = ErrorBody),
        (status = 503, description = "busy: the node's reads are all taken; retry shortly", body = ErrorBody),
    )
)]
async fn evidence(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<EvidenceQuery>, QueryRejection>,
) -> Result<Json<EvidenceList>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::malformed(e.body_text()))?;
    let limit = query.limit.unwrap_or(MAX_EVIDENCE);
    if limit > MAX_EVIDENCE {
        return Err(ApiError::malformed(format!(
            "limit {limit} is above {MAX_EVIDENCE}"
        )));
    }
    blocking(state, move |state| {
        let evidence =
            state
                .storage
                .evidence(query.from_height, query.after_validator.as_ref(), limit)?;
        Ok(Json(EvidenceList { evidence }))
    })
    .await
}

/// The validator set, fixed by the genesis: who signs blocks, and how
/// many votes a block needs.
#[utoipa::path(get, path = "/v1/validators", tag = "node", responses((status = 200, body = ValidatorList)))]
async fn validators(State(state): State<Arc<ApiState>>) -> Json<ValidatorList> {
    Json(state.validators.clone())
}

/// The genesis's validators as the API serves them, with the votes a
/// block needs as the consensus counts them.
pub fn validator_list(genesis: &Genesis) -> ValidatorList {
    let keys = genesis.validators.iter().map(|v| v.consensus_key).collect();
    ValidatorList {
        validators: genesis
            .validators
            .iter()
            .map(|v| ValidatorInfo {
                name: v.name.clone(),
                org: v.org.clone(),
                consensus_key: v.consensus_key,
                node_key: v.node_key,
            })
            .collect(),
        quorum: ValidatorSet::new(keys)
            .expect("a validated genesis names at least one validator")
            .quorum(),
    }
}

/// The committed block with a hash.
#[utoipa::path(
    get,
    path = "/v1/blocks/by-hash/{hash}",
    tag = "blocks",
    params(("hash" = String, Path, description = "Block hash, hex")),
    responses(
        (status = 200, description = "JSON; the canonical encoding with `Accept: application/octet-stream`", content((BlockResponse = "application/json"), (Vec<u8> = "application/octet-stream"))),
        (status = 401, description = "who reads: unauthenticated, bad_authorization, stale_request, bad_signature, replayed, unknown_account (docs/api.md, \"Who reads what\")", body = ErrorBody),
        (status = 403, description = "forbidden: whole blocks are for regulators", body = ErrorBody),
        (status = 400, description = "malformed hash", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 503, description = "busy: the node's reads are all taken; retry shortly", body = ErrorBody),
    )
)]
async fn block_by_hash(
    State(state): State<Arc<ApiState>>,
    Extension(reader): Extension<Reader>,
    headers: HeaderMap,
    hash: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    reader.must_see_everything("a whole block")?;
    let hash = parse_hash(&path_param(hash)?)?;
    let canonical = wants_canonical(&headers);
    blocking(state, move |state| {
        let height = state
            .storage
            .block_height(&hash)?
            .ok_or_else(|| ApiError::not_found(format!("no block {hash}")))?;
        let block = load_block(&state.storage, height)?.ok_or_else(|| {
            ApiError::internal(format!(
                "block {hash} is indexed at missing height {height}"
            ))
        })?;
        check_indexed(&block.0.block, &hash)?;
        block_response(&block, canonical)
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
        (status = 401, description = "who reads: unauthenticated, bad_authorization, stale_request, bad_signature, replayed, unknown_account (docs/api.md, \"Who reads what\")", body = ErrorBody),
        (status = 403, description = "forbidden: a key the reader may not read: a contract's own key its `may_read` query does not allow, or another beyond the membership records", body = ErrorBody),
        (status = 400, description = "malformed key or query; not_in_state_tree: the key is a contract's query index (`q/...`), which has no proof", body = ErrorBody),
        (status = 404, description = "not_found: height not committed", body = ErrorBody),
        (status = 410, description = "pruned: this node no longer keeps the state of that height", body = ErrorBody),
        (status = 503, description = "busy: the node's reads are all taken; retry shortly", body = ErrorBody),
    )
)]
async fn get_state(
    State(state): State<Arc<ApiState>>,
    Extension(reader): Extension<Reader>,
    key: Result<Path<String>, PathRejection>,
    query: Result<Query<StateQuery>, QueryRejection>,
) -> Result<Json<StateResponse>, ApiError> {
    let key = path_param(key)?;
    let key = hex::decode(key.strip_prefix("0x").unwrap_or(&key))
        .map_err(|e| ApiError::malformed(format!("state key is not hex: {e}")))?;
    reader.member()?;
    if key.starts_with(trellis_types::QUERY_INDEX) {
        return Err(not_in_state_tree());
    }
    // Whom the key's contract is asked about, unless no one need be.
    let ask_contract = match reader.limited_to()? {
        Some(_) if !access::member_may_read_key(&key) => Some(reader.query_caller()?),
        _ => None,
    };
    let Query(query) = query.map_err(|e| ApiError::malformed(e.body_text()))?;
    blocking(state, move |state| {
        if let Some(caller) = ask_contract
            && !contract_lets_read(state, &caller, &key)?
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "{} may not read this key: a contract's own keys are read where \
                     its `may_read` query allows, the rest by regulators",
                    caller.org
                ),
            ));
        }
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
            Err(e @ StorageError::Pruned { .. }) => {
                return Err(ApiError::new(StatusCode::GONE, "pruned", e.to_string()));
            }
            Err(StorageError::NotInStateTree) => return Err(not_in_state_tree()),
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

fn not_in_state_tree() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "not_in_state_tree",
        StorageError::NotInStateTree.to_string(),
    )
}

/// Whether the contract that owns state key `key` (`c/<address>/<own key>`)
/// lets `caller` read it: its `may_read` query, given the contract's own
/// key, answers `true`. No for any other key, and where the contract has no
/// such query.
fn contract_lets_read(state: &ApiState, caller: &vm::Caller, key: &[u8]) -> Result<bool, ApiError> {
    let Some((address, own_key)) = Address::split_state_key(key) else {
        return Ok(false);
    };
    let args = trellis_types::encode(&own_key.to_vec());
    let answer = at_one_head(&state.storage, |head| {
        run_query(state, &address, caller, "may_read", &args, head)
    })?;
    match answer {
        Ok(Json(answer)) => Ok(trellis_types::decode::<bool>(&answer.result).unwrap_or(false)),
        // No such contract, or no such query (or it refused): not readable.
        Err(e)
            if matches!(
                e.status,
                StatusCode::NOT_FOUND | StatusCode::UNPROCESSABLE_ENTITY
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
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
        (status = 401, description = "who reads: unauthenticated, bad_authorization, stale_request, bad_signature, replayed, unknown_account (docs/api.md, \"Who reads what\")", body = ErrorBody),
        (status = 400, description = "malformed address", body = ErrorBody),
        (status = 404, description = "contract_not_found", body = ErrorBody),
        (status = 503, description = "busy: the node's reads are all taken; retry shortly", body = ErrorBody),
    )
)]
async fn get_contract(
    State(state): State<Arc<ApiState>>,
    Extension(reader): Extension<Reader>,
    address: Result<Path<String>, PathRejection>,
) -> Result<Json<ContractRecord>, ApiError> {
    reader.member()?;
    let address = parse_address(&path_param(address)?)?;
    blocking(state, move |state| {
        execution::contract(&state.storage, &address)?
            .map(Json)
            .ok_or_else(|| contract_not_found(&address))
    })
    .await
}

/// Runs a contract's `query` export, read-only, against the latest committed
/// state, as the reader's account (on an open node, as a regulator), within
/// the chain's fuel and memory limits for one call.
#[utoipa::path(
    post,
    path = "/v1/contracts/{address}/query",
    tag = "contracts",
    params(("address" = String, Path, description = "Contract address, hex")),
    request_body(content = ContractQuery, content_type = "application/json"),
    responses(
        (status = 200, body = ContractQueryResult),
        (status = 401, description = "who reads: unauthenticated, bad_authorization, stale_request, bad_signature, replayed, unknown_account (docs/api.md, \"Who reads what\")", body = ErrorBody),
        (status = 400, description = "malformed address or body", body = ErrorBody),
        (status = 404, description = "contract_not_found", body = ErrorBody),
        (status = 422, description = "the contract refused (its own code, e.g. `not_found`, `bad_args`) or stopped: `trap`, `out_of_fuel`, `out_of_memory`", body = ErrorBody),
        (status = 500, description = "internal (including stored code that no longer compiles)", body = ErrorBody),
        (status = 503, description = "busy: the node's reads are all taken; retry shortly", body = ErrorBody),
    )
)]
async fn query_contract(
    State(state): State<Arc<ApiState>>,
    Extension(reader): Extension<Reader>,
    address: Result<Path<String>, PathRejection>,
    body: Result<Json<ContractQuery>, JsonRejection>,
) -> Result<Json<ContractQueryResult>, ApiError> {
    let caller = reader.query_caller()?;
    let address = parse_address(&path_param(address)?)?;
    let Json(query) = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "oversized",
            format!("request body is over {} bytes", state.max_body_bytes),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
            "send application/json",
        ),
        _ => ApiError::malformed(format!(
            "body is not {{\"method\": \"...\", \"args\": \"<hex>\"}}: {}",
            e.body_text()
        )),
    })?;
    let args = hex::decode(query.args.strip_prefix("0x").unwrap_or(&query.args))
        .map_err(|e| ApiError::malformed(format!("args is not hex: {e}")))?;
    blocking(state, move |state| {
        at_one_head(&state.storage, |head| {
            run_query(state, &address, &caller, &query.method, &args, head)
        })?
    })
    .await
}

/// Runs a contract's query on the latest state, as of `head`.
fn run_query(
    state: &ApiState,
    address: &Address,
    caller: &vm::Caller,
    method: &str,
    args: &[u8],
    head: &ChainHead,
) -> Result<Json<ContractQueryResult>, ApiError> {
    let storage = &state.storage;
    let record =
        execution::contract(storage, address)?.ok_or_else(|| contract_not_found(address))?;
    let params = execution::params(storage)?;
    let env = CallEnv {
        contract: *address,
        caller: caller.clone(),
        block: vm::BlockInfo {
            chain_id: state.chain_id.clone(),
            height: head.height,
            timestamp_ms: head.timestamp_ms,
        },
        limits: Limits::from_params(&params),
    };
    let invocation = Invocation {
        method: method.to_owned(),
        args: args.to_vec(),
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
}

/// How many times a read of the latest state runs before it gives up when
/// every run overlaps the staging of a new block.
const READ_ATTEMPTS: usize = 3;

/// `read`'s answer as of one head. Reads of the latest state take each key
/// as it is when read, so a block staged while `read` ran may have given
/// some of its reads their new values (a holder's index entry of one
/// height, the piece of the next): such a run is discarded and run again.
/// 503 `busy` if blocks kept overlapping it.
fn at_one_head<T>(storage: &Storage, mut read: impl FnMut(&ChainHead) -> T) -> Result<T, ApiError> {
    for _ in 0..READ_ATTEMPTS {
        let head = storage
            .head()
            .ok_or_else(|| ApiError::not_found("the chain has no block yet"))?;
        let answer = read(&head);
        if storage.head() == Some(head) {
            return Ok(answer);
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        format!("new blocks overlapped the read {READ_ATTEMPTS} times; retry"),
    ))
}

// ---------------------------------------------------------------------------
// The event stream

/// The query parameters of `GET /v1/events`. Parsed by hand (repeated keys
/// and comma lists); this type only documents them.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct EventsParams {
    /// First block height to deliver; by default the next block to commit.
    from_height: Option<u64>,
    /// Continue strictly after this transaction, `height:index` (an earlier
    /// message's SSE id). The `Last-Event-ID` header does the same and wins.
    after: Option<String>,
    /// Only transactions with an event of one of these kinds. Repeatable or a comma list.
    kind: Option<Vec<String>>,
    /// Only transactions concerning one of these parties: an organisation id or
    /// an account key (hex). A transaction concerns a party that sent it (the
    /// key, or any key of the organisation) or that an event attribute names
    /// (its whole value or one of its `:`-separated fields). Repeatable or a comma list.
    party: Option<Vec<String>>,
    /// Only transactions signed by one of these account keys (hex). Repeatable or a comma list.
    sender: Option<Vec<String>>,
}

/// Where a stream starts and what it delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StreamRequest {
    /// First height to read and, at that height only, the first index to deliver.
    start: TxPosition,
    filter: EventFilter,
    /// The organisation of a reader limited to what concerns it.
    reader_org: Option<String>,
}

/// Values one event filter (`kind`, `party`, `sender`) may list at most.
const MAX_FILTER_VALUES: usize = 64;

/// Bytes one filter value may have at most (an account key in hex is 64).
const MAX_FILTER_VALUE_BYTES: usize = 128;

/// The values of filter `name`, repeated or comma-separated; refuses empty,
/// overlong or too many values, which would widen or slow every match.
fn parse_list<'a>(
    name: &str,
    values: impl Iterator<Item = &'a str>,
) -> Result<Vec<String>, ApiError> {
    let mut list: Vec<String> = Vec::new();
    for value in values.flat_map(|v| v.split(',')).map(str::trim) {
        if value.is_empty() {
            return Err(ApiError::malformed(format!("`{name}` has an empty value")));
        }
        if value.len() > MAX_FILTER_VALUE_BYTES {
            return Err(ApiError::malformed(format!(
                "a `{name}` value is longer than {MAX_FILTER_VALUE_BYTES} bytes"
            )));
        }
        if !list.iter().any(|v| v == value) {
            list.push(value.to_owned());
        }
        if list.len() > MAX_FILTER_VALUES {
            return Err(ApiError::malformed(format!(
                "`{name}` lists more than {MAX_FILTER_VALUES} values"
            )));
        }
    }
    Ok(list)
}

fn parse_position(s: &str) -> Result<TxPosition, ApiError> {
    s.parse().map_err(|e: trellis_types::api::BadPosition| {
        ApiError::malformed(format!("{e}: resume after the SSE id of a message"))
    })
}

/// The stream a request asks for; `head` is the latest committed height.
fn stream_request(
    params: &[(String, String)],
    last_event_id: Option<&str>,
    head: u64,
) -> Result<StreamRequest, ApiError> {
    const KNOWN: [&str; 5] = ["from_height", "after", "kind", "party", "sender"];
    if let Some((key, _)) = params.iter().find(|(k, _)| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::malformed(format!(
            "unknown query parameter `{key}`; known: {}",
            KNOWN.join(", ")
        )));
    }
    let single = |name: &str| -> Result<Option<&str>, ApiError> {
        let mut values = params.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
        let first = values.next();
        if values.next().is_some() {
            return Err(ApiError::malformed(format!("`{name}` is given twice")));
        }
        Ok(first.map(String::as_str))
    };
    let list = |name: &str| {
        parse_list(
            name,
            params
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
        )
    };

    // Checked even when the header wins, so a bad `after` never passes.
    let after_param = single("after")?.map(parse_position).transpose()?;
    let after = match last_event_id.map(str::trim).filter(|v| !v.is_empty()) {
        Some(id) => Some(parse_position(id)?),
        None => after_param,
    };
    let from_height = single("from_height")?
        .map(|h| {
            h.parse::<u64>().map_err(|_| {
                ApiError::malformed(format!("from_height `{h}` is not a block height"))
            })
        })
        .transpose()?;
    let start = match (after, from_height) {
        (Some(after), _) => match after.index.checked_add(1) {
            Some(index) => TxPosition {
                height: after.height,
                index,
            },
            None => TxPosition {
                height: after.height.saturating_add(1),
                index: 0,
            },
        },
        (None, Some(height)) => TxPosition { height, index: 0 },
        (None, None) => TxPosition {
            height: head.saturating_add(1),
            index: 0,
        },
    };
    let senders = list("sender")?
        .iter()
        .map(|s| {
            PublicKey::from_hex(s).map_err(|e| {
                ApiError::malformed(format!("sender `{s}` is not a 32-byte hex key: {e}"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(StreamRequest {
        start,
        filter: EventFilter {
            kinds: list("kind")?,
            parties: list("party")?,
            senders,
        },
        reader_org: None,
    })
}

/// Decides which committed transactions a stream delivers. Remembers each
/// sender's organisation, which the `party` filter needs.
struct Matcher {
    filter: EventFilter,
    /// The parties that parse as account keys.
    party_keys: Vec<PublicKey>,
    /// The organisation of a reader limited to what concerns it.
    reader_org: Option<[String; 1]>,
    orgs: HashMap<PublicKey, Option<String>>,
}

impl Matcher {
    fn new(filter: EventFilter, reader_org: Option<&str>) -> Matcher {
        let party_keys = filter
            .parties
            .iter()
            .filter_map(|p| PublicKey::from_hex(p).ok())
            .collect();
        Matcher {
            filter,
            party_keys,
            reader_org: reader_org.map(|org| [org.to_owned()]),
            orgs: HashMap::new(),
        }
    }

    /// Whether the transaction from `sender` that emitted `events` in the
    /// block at `height` goes through.
    fn matches(
        &mut self,
        storage: &Storage,
        sender: &PublicKey,
        events: &[Event],
        height: u64,
    ) -> Result<bool, ApiError> {
        let f = &self.filter;
        if !f.senders.is_empty() && !f.senders.contains(sender) {
            return Ok(false);
        }
        if !f.kinds.is_empty() && !events.iter().any(|e| f.kinds.contains(&e.kind)) {
            return Ok(false);
        }
        let concerns = |parties: &[String], orgs: &mut _| {
            if names_party(parties, events) {
                return Ok(true);
            }
            let org = sender_org(storage, orgs, sender, height)?;
            Ok::<_, ApiError>(org.is_some_and(|org| parties.contains(&org)))
        };
        if !f.parties.is_empty()
            && !self.party_keys.contains(sender)
            && !concerns(&f.parties, &mut self.orgs)?
        {
            return Ok(false);
        }
        match &self.reader_org {
            Some(org) => concerns(org, &mut self.orgs),
            None => Ok(true),
        }
    }
}

/// Whether an attribute of `events` names one of `parties`: the whole
/// value, or one of its `:`-separated fields (a split's `child` =
/// `id:org:amount`).
fn names_party(parties: &[String], events: &[Event]) -> bool {
    events.iter().flat_map(|e| &e.attributes).any(|(_, value)| {
        parties
            .iter()
            .any(|p| value == p || value.split(':').any(|field| field == p))
    })
}

/// The organisation of the account `sender` that signed a transaction in
/// the block at `height`, remembered in `orgs`.
fn sender_org(
    storage: &Storage,
    orgs: &mut HashMap<PublicKey, Option<String>>,
    sender: &PublicKey,
    height: u64,
) -> Result<Option<String>, ApiError> {
    if let Some(org) = orgs.get(sender) {
        return Ok(org.clone());
    }
    let mut org = execution::account(storage, sender)?.map(|a| a.org);
    if org.is_none() {
        // A key removed since: its record as of the block, unless this
        // node pruned that state, where the organisation is not known
        // and only the key or the events can name the party.
        let key = execution::keys::account(sender);
        let record = match storage.get_with_proof(&key, height) {
            Ok(read) => read.value,
            Err(StorageError::Pruned { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        org = record
            .and_then(|bytes| trellis_types::decode::<execution::AccountRecord>(&bytes).ok())
            .map(|a| a.org);
    }
    orgs.insert(*sender, org.clone());
    Ok(org)
}

/// The transactions of the block at `height` from index `from` that
/// `matcher` lets through, as stream messages; `None` when the height is not
/// committed yet.
fn committed_txs(
    storage: &Storage,
    matcher: &mut Matcher,
    height: u64,
    from: u32,
) -> Result<Option<Vec<SseEvent>>, ApiError> {
    let Some(committed) = storage.committed_block(height)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    let txs = committed.block.txs.iter().zip(&committed.receipts);
    for (index, (stx, receipt)) in (0u32..).zip(txs) {
        if index < from || !matcher.matches(storage, &stx.tx.sender, &receipt.events, height)? {
            continue;
        }
        let position = TxPosition { height, index };
        let json = message_json(&committed, index)?;
        out.push(SseEvent::default().id(position.to_string()).data(json));
    }
    Ok(Some(out))
}

/// Transaction `index` of `committed` as a stream sends it (a
/// [`CommittedTx`] in JSON): made once and shared by every stream that sends
/// it.
fn message_json(committed: &CommittedBlock, index: u32) -> Result<&str, ApiError> {
    let i = index as usize;
    let cell = &committed.stream_json[i];
    if let Some(json) = cell.get() {
        return Ok(json);
    }
    let block = &committed.block;
    // Storage checks at commit that receipt i carries transaction i's hash:
    // no need to encode and hash the transaction again.
    let tx = CommittedTx::new(
        &block.header,
        index,
        block.txs[i].tx.sender,
        &committed.receipts[i],
    );
    let json = serde_json::to_string(&tx)
        .map_err(|e| ApiError::internal(format!("encoding a streamed transaction: {e}")))?;
    Ok(cell.get_or_init(|| json))
}

type SseItem = Result<SseEvent, std::convert::Infallible>;

/// The last message of a stream this node cannot go on with: `event:
/// error`, its data an [`ErrorBody`] (code `internal`).
fn stream_error(message: &str) -> SseEvent {
    let body = ErrorBody {
        code: "internal".into(),
        message: format!("the event stream ended: {message}"),
    };
    SseEvent::default()
        .event("error")
        .data(serde_json::to_string(&body).unwrap_or_default())
}

/// Feeds one stream: committed blocks from `next` on, then each new commit,
/// until the client goes away or the server shuts down. Holds `_permit`
/// (one of the open-stream slots) for as long as it runs.
async fn feed_stream(
    state: Arc<ApiState>,
    streams: EventStreams,
    request: StreamRequest,
    out: mpsc::Sender<SseItem>,
    _permit: OwnedSemaphorePermit,
) {
    let mut status = state.status.clone();
    let mut closing = streams.closing.clone();
    let mut next = request.start;
    let mut matcher = Some(Matcher::new(request.filter, request.reader_org.as_deref()));
    loop {
        // Deliver every committed block from `next` up to the head.
        while state
            .storage
            .head()
            .is_some_and(|h| h.height >= next.height)
        {
            if out.is_closed() {
                return; // The client went away, though nothing matched for it.
            }
            let storage = state.storage.clone();
            let (mut m, at) = (
                matcher
                    .take()
                    .expect("the matcher is put back after each block"),
                next,
            );
            let turn = tokio::select! {
                turn = state.reads.turn() => turn,
                () = out.closed() => return,
            };
            let read = tokio::task::spawn_blocking(move || {
                let _turn = turn;
                let txs = committed_txs(&storage, &mut m, at.height, at.index);
                (m, txs)
            })
            .await;
            let read = match read {
                Ok((m, Ok(Some(events)))) => Ok((m, events)),
                Ok((_, Ok(None))) => Err(format!("committed block {} is missing", at.height)),
                Ok((_, Err(e))) => Err(format!("reading block {}: {}", at.height, e.message)),
                Err(e) => Err(format!("reading block {}: {e}", at.height)),
            };
            let events = match read {
                Ok((m, events)) => {
                    matcher = Some(m);
                    events
                }
                Err(failure) => {
                    // Said to the client, which would otherwise reconnect
                    // into the same failure without end.
                    tracing::error!(error = %failure, "ending an event stream");
                    let _ = out.send(Ok(stream_error(&failure))).await;
                    return;
                }
            };
            for event in events {
                if out.send(Ok(event)).await.is_err() {
                    return; // The client went away.
                }
            }
            next = TxPosition {
                height: at.height + 1,
                index: 0,
            };
        }
        tokio::select! {
            changed = status.changed() => if changed.is_err() {
                return; // The driver is gone: nothing will commit any more.
            },
            () = tokio::time::sleep(streams.config.poll_interval) => {}
            () = out.closed() => return,
            () = server_closing(&mut closing) => return,
        }
    }
}

/// Committed transactions as Server-Sent Events, in chain order, from
/// `from_height` (default: the next block) or strictly after `Last-Event-ID`
/// / `after` (`height:index`), filtered by `kind`, `party` and `sender`.
///
/// Each message is one [`CommittedTx`] as JSON, with SSE `id: height:index`.
/// Idle streams get a keep-alive comment. A client that reconnects with the
/// last id it saw continues exactly after it: no gap, no duplicate.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(
        EventsParams,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume strictly after this `height:index`; wins over `after` and `from_height`"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: one message per committed transaction, `id: height:index`, `data:` a CommittedTx", body = CommittedTx, content_type = "text/event-stream"),
        (status = 401, description = "who reads: unauthenticated, bad_authorization, stale_request, bad_signature, replayed, unknown_account (docs/api.md, \"Who reads what\")", body = ErrorBody),
        (status = 400, description = "malformed: a parameter or Last-Event-ID does not parse", body = ErrorBody),
        (status = 429, description = "too_many_streams: the node's limit of open streams is reached", body = ErrorBody),
    )
)]
async fn events(
    State(state): State<Arc<ApiState>>,
    Extension(streams): Extension<EventStreams>,
    Extension(reader): Extension<Reader>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let reader_org = reader.limited_to()?.map(str::to_owned);
    let Query(params) = query.map_err(|e| ApiError::malformed(e.body_text()))?;
    let last_event_id = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::malformed("Last-Event-ID is not text"))?,
        ),
        None => None,
    };
    let head = state.storage.head().map_or(0, |h| h.height);
    let request = StreamRequest {
        reader_org,
        ..stream_request(&params, last_event_id, head)?
    };
    let permit = streams
        .permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| too_many_streams(&streams.config))?;
    let (tx, mut rx) = mpsc::channel::<SseItem>(64);
    let keep_alive = KeepAlive::new().interval(streams.config.keep_alive);
    tokio::spawn(feed_stream(state, streams, request, tx, permit));
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok(Sse::new(stream).keep_alive(keep_alive).into_response())
}

/// Resolves when the server starts to shut down (never without a signal).
async fn server_closing(closing: &mut Option<watch::Receiver<bool>>) {
    match closing.as_mut() {
        Some(closing) => {
            let _ = closing.wait_for(|c| *c).await;
        }
        None => std::future::pending().await,
    }
}

fn too_many_streams(config: &EventStreamConfig) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_streams",
        format!(
            "this node serves at most {} event streams and block waits at once; retry later",
            config.max_streams
        ),
    )
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
        earliest_state_height: state.storage.earliest_state_height(),
        indexes: state.storage.indexes().into(),
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
        submit_batch,
        get_transaction,
        transaction_proof,
        latest_block,
        block_by_height,
        block_header,
        block_by_hash,
        get_state,
        get_contract,
        query_contract,
        proposals,
        proposal,
        evidence,
        validators,
        status,
        health,
        metrics,
        openapi,
        events,
    ),
    components(schemas(ErrorBody, ChainStatus, CommittedTx)),
    tags(
        (name = "transactions", description = "Submission and lookup"),
        (name = "blocks", description = "Committed blocks with certificates and receipts"),
        (name = "state", description = "Authenticated state reads"),
        (name = "contracts", description = "Deployed contracts and read-only contract queries"),
        (name = "governance", description = "Open proposals to change the consortium"),
        (name = "events", description = "Committed transactions as a resumable Server-Sent Events stream"),
        (name = "node", description = "Status, health, metrics"),
    )
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests;
