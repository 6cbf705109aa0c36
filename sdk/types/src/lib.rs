//! Trellis wire types, shared by the node, the SDK and the contract tooling.
//!
//! Everything that is hashed or signed is defined here, together with the one
//! canonical byte encoding ([`codec`]), the domain-separated hashes ([`hash`])
//! and the signature rules ([`crypto`]). A value's hash or signature is only
//! ever computed over [`codec::encode`] of it, so every node agrees byte for byte.

pub mod access;
pub mod api;
pub mod archive;
pub mod block;
pub mod codec;
pub mod crypto;
pub mod governance;
pub mod hash;
pub mod member;
pub mod params;
pub mod proof;
pub mod receipt;
pub mod tx;
pub mod validators;

mod bytes;

pub use block::{Block, DuplicateVote, Header, QuorumCertificate, Vote, VoteData, VoteKind};
pub use bytes::Bytes;
pub use codec::{CodecError, decode, encode};
pub use crypto::{KeyPair, PublicKey, Signature, SignatureError};
pub use governance::{Change, Proposal};
pub use hash::{Domain, Hash};
pub use member::{Account, OrgId, Organisation, Role};
pub use params::ChainParams;
pub use proof::{MerkleProof, ProofError, QUERY_INDEX, StateProof, verify_state_proof};
pub use receipt::{Event, EventSource, ExecError, Receipt, ReceiptStatus};
pub use tx::{Address, Payload, SignedTransaction, SystemOp, Transaction};
pub use validators::{CertificateError, ValidatorSet};
