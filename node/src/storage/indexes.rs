//! Which indexes a store keeps beside the chain (`[index]` in the node's
//! configuration). Neither is consensus data: blocks, receipts and the state
//! tree are the same on every node whatever it indexes; a validator that
//! serves no queries may keep neither, as CometBFT's `indexer = "null"` does.
//!
//! The choice is made when the store is created and recorded with genesis:
//! an index is built block by block, so one switched on later would miss
//! every earlier block, and one switched off would go stale. A store is
//! refused if its configuration asks for other indexes than it keeps.

use super::{StorageError, prefix};
use serde::{Deserialize, Serialize};

/// `[index]`: the indexes a node keeps. Default: both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Indexes {
    /// Transactions by hash: `GET /v1/transactions/{hash}` finds committed ones.
    pub transactions: bool,
    /// Contracts' query indexes (`q/`): queries that list, such as pieces by holder.
    pub queries: bool,
}

impl Default for Indexes {
    fn default() -> Self {
        Indexes {
            transactions: true,
            queries: true,
        }
    }
}

impl Indexes {
    /// Neither index: a validator that serves no queries.
    pub const NONE: Indexes = Indexes {
        transactions: false,
        queries: false,
    };

    /// The record written with genesis.
    pub(super) fn record(self) -> Vec<u8> {
        vec![u8::from(self.transactions), u8::from(self.queries)]
    }

    /// What the store in `db` keeps: `configured` (both if `None`) for a new
    /// store; for a stored chain what it recorded, refused if `configured`
    /// asks for something else.
    pub(super) fn kept(
        db: &sled::Db,
        configured: Option<Indexes>,
    ) -> Result<Indexes, StorageError> {
        if !db.contains_key(prefix::HEAD)? {
            return Ok(configured.unwrap_or_default());
        }
        let stored = Indexes::stored(db)?;
        match configured {
            Some(configured) if configured != stored => {
                Err(StorageError::IndexesDiffer { stored, configured })
            }
            _ => Ok(stored),
        }
    }

    /// What a stored chain keeps: its record, or both for a store written
    /// before the record existed (which kept both).
    fn stored(db: &sled::Db) -> Result<Indexes, StorageError> {
        let flag = |byte: u8| match byte {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(super::corrupt("the store's index record is malformed")),
        };
        match db.get(prefix::INDEXES)?.as_deref() {
            None => Ok(Indexes::default()),
            Some(&[transactions, queries]) => Ok(Indexes {
                transactions: flag(transactions)?,
                queries: flag(queries)?,
            }),
            Some(_) => Err(super::corrupt("the store's index record is malformed")),
        }
    }
}

/// As `GET /status` reports them.
impl From<Indexes> for trellis_types::api::IndexesKept {
    fn from(kept: Indexes) -> Self {
        trellis_types::api::IndexesKept {
            transactions: kept.transactions,
            queries: kept.queries,
        }
    }
}

impl std::fmt::Display for Indexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "transactions = {}, queries = {}",
            self.transactions, self.queries
        )
    }
}
