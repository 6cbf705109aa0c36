//! The Trellis node. A transaction flows through these modules in order:
//!
//! - [`api`]: HTTP API; decodes and hands transactions to the mempool, serves queries.
//! - [`mempool`]: admission (signature, chain id, membership, nonce, expiry, size, capacity).
//! - [`consensus`]: sans-IO Tendermint state machine deciding blocks.
//! - [`execution`]: runs a block's transactions against state, producing receipts and writes.
//! - [`vm`]: the WASM contract runtime (wasmtime, fuel-metered, host ABI `trellis_v1`).
//! - [`state`]: authenticated state (Jellyfish Merkle tree) over [`storage`].
//! - [`storage`]: sled; blocks, receipts, state and metadata, one atomic batch per block.
//!
//! [`node`] is the driver that wires them to clocks, disk and the network.

pub mod api;
pub mod archive;
mod cache;
pub mod chain;
pub mod config;
pub mod consensus;
pub mod execution;
pub mod generate;
pub mod localnet;
pub mod mempool;
pub mod metrics;
pub mod network;
pub mod node;
mod priority;
pub mod safety;
pub mod state;
pub mod storage;
pub mod vm;
