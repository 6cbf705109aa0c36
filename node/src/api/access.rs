//! Who reads: the API's authentication and the rules of who sees what.
//!
//! On a node with `[api] access = "members"` (the default) a request names
//! its reader with a signed `Authorization` header
//! ([`trellis_types::access`]): a member's account key, checked against the
//! latest state. [`authenticate`] establishes the [`Reader`] before any
//! handler runs; the handlers apply the rules:
//!
//! - anyone: health, status, metrics, the OpenAPI document, the validators,
//!   block headers, equivocation evidence, and submissions (a transaction
//!   is signed by a member's account, which is its own credential);
//! - any member: contract records and queries (the query runs as the
//!   member's account, and the contract decides what it shows: the
//!   receivables contract shows a piece to its holder, its issuer, the bank
//!   financing it and regulators), the transactions that concern the
//!   member's organisation (it sent them or their events name it) and the
//!   event stream of those, the membership records in the state
//!   (`sys/account/…`, `sys/org/…`, parameters and contract records), and a
//!   contract's own state keys where its `may_read` query allows;
//! - a regulator: everything, including whole blocks, exports, any state key.
//!
//! A node with `access = "open"` asks no one: every reader is treated as a
//! regulator (what the dev node does, whose keys are public anyway).

use super::ApiError;
use crate::execution;
use crate::storage::Storage;
use crate::vm;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use trellis_types::access::{MAX_CLOCK_SKEW_MS, RequestSignature};
use trellis_types::{Role, Signature};

/// `[api] access`: whether the node asks who reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Reads need a member's signature; each member sees what concerns it.
    #[default]
    Members,
    /// No one is asked; everyone reads everything.
    Open,
}

/// Who asks, as [`authenticate`] established it.
#[derive(Debug, Clone)]
pub enum Reader {
    /// No signature, on a node that asks.
    Anonymous,
    /// A member's account, by its signature.
    Member(vm::Caller),
    /// Anyone, on a node that does not ask.
    Anyone,
}

impl Reader {
    pub fn sees_everything(&self) -> bool {
        match self {
            Reader::Anyone => true,
            Reader::Member(caller) => caller.roles.contains(&Role::Regulator),
            Reader::Anonymous => false,
        }
    }

    /// The member, or 401 `unauthenticated`.
    pub fn member(&self) -> Result<Option<&vm::Caller>, ApiError> {
        match self {
            Reader::Anonymous => Err(unauthenticated()),
            Reader::Member(caller) => Ok(Some(caller)),
            Reader::Anyone => Ok(None),
        }
    }

    /// Nothing, if the reader sees everything; else 401 or 403 naming `what`.
    pub fn must_see_everything(&self, what: &str) -> Result<(), ApiError> {
        if self.sees_everything() {
            return Ok(());
        }
        self.member()?;
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{what} is for regulators: a member reads what concerns it"),
        ))
    }

    /// The organisation whose view the reader is limited to; `None` if it
    /// sees everything (401 if anonymous).
    pub fn limited_to(&self) -> Result<Option<&str>, ApiError> {
        if self.sees_everything() {
            return Ok(None);
        }
        Ok(self.member()?.map(|caller| caller.org.as_str()))
    }

    /// Whom a contract query runs as: the member, or on an open node a
    /// reader with the regulator's role.
    pub fn query_caller(&self) -> Result<vm::Caller, ApiError> {
        Ok(match self.member()? {
            Some(caller) => caller.clone(),
            None => vm::Caller {
                roles: vec![Role::Regulator],
                ..vm::Caller::nobody()
            },
        })
    }
}

fn unauthenticated() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "sign the request with a member's account key (Authorization: Trellis …; docs/api.md, \
         \"Who reads what\")",
    )
}

fn refused(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// Signed requests seen within the clock window, so none is taken twice.
pub struct Replays {
    /// By time, then signature: what is older than the window goes first.
    seen: Mutex<BTreeSet<(u64, Signature)>>,
    capacity: usize,
}

/// Signatures remembered at most: a minute of a busy client's reads. Past
/// it, new signed requests wait (503) until the oldest leave the window.
pub const REPLAY_CAPACITY: usize = 262_144;

impl Replays {
    pub fn new(capacity: usize) -> Replays {
        Replays {
            seen: Mutex::default(),
            capacity,
        }
    }

    /// Records `auth`'s signature, or says why it cannot be taken.
    fn admit(&self, auth: &RequestSignature, now_ms: u64) -> Result<(), ApiError> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let oldest = now_ms.saturating_sub(MAX_CLOCK_SKEW_MS);
        while seen.first().is_some_and(|(time, _)| *time < oldest) {
            seen.pop_first();
        }
        let entry = (auth.time_ms, auth.signature);
        if seen.contains(&entry) {
            return Err(refused(
                "replayed",
                "this signed request was already taken: sign each request afresh",
            ));
        }
        if seen.len() >= self.capacity {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many signed requests within the clock window; retry shortly",
            ));
        }
        seen.insert(entry);
        Ok(())
    }
}

/// Establishes the [`Reader`] of every request (see the module's doc) and
/// refuses a request whose `Authorization` is not a member's valid,
/// fresh, first-seen signature.
pub async fn authenticate(
    State(state): State<Arc<super::ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    match reader(&state, request).await {
        Ok((reader, mut request)) => {
            request.extensions_mut().insert(reader);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

async fn reader(state: &super::ApiState, request: Request) -> Result<(Reader, Request), ApiError> {
    if state.access == Access::Open {
        return Ok((Reader::Anyone, request));
    }
    // A submission's transactions carry their senders' signatures, which
    // admission checks: the request's would add nothing.
    if is_submission(&request) {
        return Ok((Reader::Anonymous, request));
    }
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Ok((Reader::Anonymous, request));
    };
    let auth = value
        .to_str()
        .map_err(|_| "the header is not ASCII".to_owned())
        .and_then(|v| RequestSignature::parse(v).map_err(|e| e.to_string()))
        .map_err(|e| refused("bad_authorization", format!("Authorization: {e}")))?;
    let path = match request.uri().path_and_query() {
        Some(path) => path.as_str().to_owned(),
        None => "/".to_owned(),
    };
    // Into the request's span and so its log line: who claims to read what
    // (the organisation is added once the claim holds).
    let span = tracing::Span::current();
    span.record("key", tracing::field::display(&auth.key));
    span.record("path", tracing::field::display(&path));
    let now = crate::node::now_ms();
    if auth.time_ms.abs_diff(now) > MAX_CLOCK_SKEW_MS {
        return Err(refused(
            "stale_request",
            format!(
                "the request was signed at {} ms, {} ms from this node's clock \
                 ({now} ms); at most {MAX_CLOCK_SKEW_MS} ms is taken",
                auth.time_ms,
                auth.time_ms.abs_diff(now)
            ),
        ));
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, state.max_body_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "oversized",
                format!("request body is over {} bytes", state.max_body_bytes),
            )
        })?;
    if !auth.verify(&state.chain_id, parts.method.as_str(), &path, &body) {
        return Err(refused(
            "bad_signature",
            format!(
                "the signature is not {}'s over this request on chain {}",
                auth.key, state.chain_id
            ),
        ));
    }
    // A member's first: no one else's signatures take up the replay memory.
    let caller = member(&state.storage, &auth)?;
    state.replays.admit(&auth, now)?;
    span.record("org", tracing::field::display(&caller.org));
    Ok((
        Reader::Member(caller),
        Request::from_parts(parts, Body::from(body)),
    ))
}

/// `POST /v1/transactions` or `POST /v1/transactions/batch`.
fn is_submission(request: &Request) -> bool {
    request.method() == axum::http::Method::POST
        && matches!(
            request.uri().path(),
            "/v1/transactions" | "/v1/transactions/batch"
        )
}

/// The member account that signed, as the latest state records it.
fn member(storage: &Storage, auth: &RequestSignature) -> Result<vm::Caller, ApiError> {
    let account = execution::account(storage, &auth.key)?.ok_or_else(|| {
        refused(
            "unknown_account",
            format!("{} is not an account of a member", auth.key),
        )
    })?;
    let org = execution::organisation(storage, &account.org)?;
    if execution::is_suspended(org.as_ref()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "suspended",
            format!("{} is suspended: it has no roles", account.org),
        ));
    }
    Ok(execution::contract_caller(auth.key, &account.org, org))
}

/// Whether any member may read state key `key` directly: the membership
/// records, the open governance proposals and the chain's parameters and
/// contract records, which every member needs to take part. A contract's
/// own keys are its to grant (`may_read`, asked by the state route).
pub fn member_may_read_key(key: &[u8]) -> bool {
    use execution::keys;
    [
        keys::ACCOUNT,
        keys::ORGANISATION,
        keys::CONTRACT,
        keys::PROPOSAL,
    ]
    .iter()
    .any(|prefix| key.starts_with(prefix))
        || key == keys::PARAMS
        || key == keys::GENESIS
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_types::KeyPair;

    fn signed_at(time_ms: u64) -> RequestSignature {
        let key = KeyPair::from_seed([3; 32]);
        RequestSignature::sign(&key, "trellis-test", "GET", "/status", &[], time_ms)
    }

    fn code(result: Result<(), ApiError>) -> Option<String> {
        result.err().map(|e| e.code.into_owned())
    }

    #[test]
    fn a_signature_is_taken_once_while_fresh_and_the_memory_is_bounded() {
        let replays = Replays::new(2);
        let now = 1_000_000;
        let (a, b, c) = (signed_at(now), signed_at(now), signed_at(now + 5));
        assert_eq!(code(replays.admit(&a, now)), None);
        assert_eq!(code(replays.admit(&a, now)).as_deref(), Some("replayed"));
        assert_eq!(code(replays.admit(&b, now)), None);
        // Full: a new signature waits; a replay is still a replay.
        assert_eq!(code(replays.admit(&c, now)).as_deref(), Some("busy"));
        assert_eq!(code(replays.admit(&b, now)).as_deref(), Some("replayed"));
        // Once the first two are past the clock window they are forgotten
        // (the node refuses them as stale by then), and room is made.
        let later = now + MAX_CLOCK_SKEW_MS + 1;
        assert_eq!(code(replays.admit(&c, later)), None);
        assert_eq!(replays.seen.lock().unwrap().len(), 1);
    }
}
