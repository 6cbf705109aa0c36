//! The Trellis client SDK: what a bank's, a core enterprise's or a
//! supplier's own systems use to talk to a Trellis node.
//!
//! - [`Client`] ([`Client::builder`]): endpoints with failover, retries,
//!   reads of blocks, transactions and state, contract queries.
//! - Submitting: [`Client::submit`] signs with the client's key and a nonce
//!   it allocates, and returns a [`PendingTx`]; [`PendingTx::wait_for_commit`]
//!   returns the [`Committed`] receipt with its events.
//! - [`Receivables`] ([`Client::receivables`]): the receivables contract's
//!   calls and queries with the contract's own types.
//! - [`Client::state_with_proof`], [`Client::transaction_with_proof`],
//!   [`Client::verified_block`]: state values, transactions with their
//!   receipts, and whole blocks, verified against the header of a block the
//!   validators committed.
//! - [`Client::events`]: the resumable stream of committed transactions.
//! - [`keys`]: ed25519 keys in PKCS#8 PEM files (OpenSSL-compatible), optionally encrypted.
//! - [`Error`]: one error type that tells refusals, failed executions,
//!   commit time-outs and transport trouble apart.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = trellis_sdk::Client::builder()
//!     .endpoint("http://127.0.0.1:8080")
//!     .signer(trellis_sdk::keys::load("supplier-t1.pem", None)?)
//!     .build()?;
//! // The address the genesis deployed the contract at (trellis_genesis knows the dev chain's).
//! let contract = trellis_types::Address([0; 32]);
//! let receivables = client.receivables(contract);
//! receivables.accept(1).await?;
//! for view in receivables.holdings("supplier-t1").await? {
//!     println!("piece {}: {} {}", view.piece.id, view.piece.amount, view.piece.currency);
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod client;
mod error;
mod events;
mod governance;
pub mod keys;
mod receivables;
mod submit;

pub use client::{
    Account, Client, ClientBuilder, RetryPolicy, VerifiedState, VerifiedTransaction, verify_block,
    verify_header, verify_state, verify_transaction,
};
pub use error::{Error, Result};
pub use events::{EventStream, EventsBuilder};
pub use receivables::{Receivables, invoice_hash};
pub use submit::{Committed, PendingTx};

/// The shapes of the node's API, re-exported: [`api::CommittedTx`] (an event
/// stream item), [`api::TxPosition`], [`api::StatusResponse`], ...
pub use trellis_types::api;
