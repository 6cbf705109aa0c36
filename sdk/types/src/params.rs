//! Chain parameters, fixed at genesis and identical on every node.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChainParams {
    /// Most transactions in one block.
    pub max_block_txs: u32,
    /// Most bytes of encoded transactions in one block.
    pub max_block_bytes: u64,
    /// Least time between two blocks while transactions wait, in ms.
    pub block_interval_ms: u64,
    /// A block is made after this long even with nothing to include (heartbeat), in ms.
    pub idle_block_interval_ms: u64,
    /// Largest encoded signed transaction accepted, in bytes.
    pub max_tx_bytes: u32,
    /// How far ahead of the sender's next nonce a transaction may be.
    pub max_nonce_gap: u64,
    /// How far in the future a transaction's expiry may lie, in ms.
    pub max_expiry_ms: u64,
    /// Transactions the mempool holds at most.
    pub mempool_capacity: u32,
    /// Transactions one sender may have waiting at most.
    pub mempool_per_sender: u32,
    /// Fuel one contract call may burn.
    pub fuel_per_call: u64,
    /// Linear memory one contract instance may grow to, in bytes.
    pub max_memory_bytes: u64,
    /// Nested contract calls allowed.
    pub max_call_depth: u32,
}

/// The most linear memory a chain may let one contract call use: the node
/// reserves a slot this large per concurrent call, so the cap is fixed.
pub const MAX_CONTRACT_MEMORY_BYTES: u64 = 256 * 1024 * 1024;

impl Default for ChainParams {
    fn default() -> Self {
        ChainParams {
            max_block_txs: 10_000,
            max_block_bytes: 8 * 1024 * 1024,
            block_interval_ms: 100,
            idle_block_interval_ms: 5_000,
            max_tx_bytes: 64 * 1024,
            max_nonce_gap: 1_000,
            max_expiry_ms: 60 * 60 * 1000,
            mempool_capacity: 100_000,
            mempool_per_sender: 2_000,
            fuel_per_call: 10_000_000,
            max_memory_bytes: 16 * 1024 * 1024,
            max_call_depth: 8,
        }
    }
}
