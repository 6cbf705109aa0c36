//! Receipts: what executing a transaction did.

use crate::codec::encode;
use crate::hash::{Domain, Hash};
use crate::tx::Address;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptStatus {
    Success,
    /// Execution failed: state changes were rolled back, the nonce was consumed.
    Failed,
}

/// Why execution failed: a stable machine-readable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventSource {
    System,
    Contract(Address),
}

/// Something that happened, for indexers, the SDK's event stream and auditors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub source: EventSource,
    pub kind: String,
    /// Ordered key/value pairs (never a map, so the encoding is deterministic).
    pub attributes: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Receipt {
    pub tx: Hash,
    pub status: ReceiptStatus,
    pub error: Option<ExecError>,
    pub fuel_used: u64,
    pub events: Vec<Event>,
}

impl Receipt {
    pub fn hash(&self) -> Hash {
        Domain::Receipt.hash(&encode(self))
    }
}
