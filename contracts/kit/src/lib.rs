//! The Trellis contract kit.
//!
//! A contract is a type implementing [`Contract`]: its logic sees the chain
//! only through a [`Host`], so the same code runs inside wasmtime (with
//! [`wasm::WasmHost`], on `wasm32`) and natively in unit tests (with
//! [`testing::TestHost`], feature `testing`). [`export_contract!`] turns a
//! contract type into the module's `call` and `query` exports. Arguments,
//! results, stored records and events use the canonical encoding ([`codec`]).
//! The host API it wraps is documented in `docs/contracts.md`.

#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use trellis_codec as codec;

#[cfg(feature = "testing")]
pub mod testing;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

/// Makes `$contract` (a type implementing [`Contract`]) the module's entry
/// points: the `call` and `query` exports of host ABI v1, each of which
/// reads and decodes the invocation (a malformed one is a `bad_invocation`
/// error), dispatches to the contract, and reports its output or error.
/// Expands to nothing off `wasm32`, so a contract crate can invoke it
/// unconditionally and still be tested natively.
#[macro_export]
macro_rules! export_contract {
    ($contract:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[unsafe(no_mangle)]
            pub extern "C" fn call() -> i32 {
                $crate::wasm::run_call::<$contract>()
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn query() -> i32 {
                $crate::wasm::run_query::<$contract>()
            }
        };
    };
}

/// What an organisation may do; encodes exactly like `trellis_types::Role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    CoreEnterprise,
    Supplier,
    Bank,
    Regulator,
    Admin,
}

/// The sender of the transaction being executed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub account: [u8; 32],
    pub org: String,
    pub roles: Vec<Role>,
}

impl Caller {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// The block being executed (for queries: the latest committed block).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockInfo {
    pub chain_id: String,
    pub height: u64,
    pub timestamp_ms: u64,
}

/// What a transaction asks a contract to do: `method` with encoded `args`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    pub method: String,
    pub args: Vec<u8>,
}

/// An event: a kind and ordered key/value attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractEvent {
    pub kind: String,
    pub attributes: Vec<(String, String)>,
}

/// A contract's refusal: a stable machine-readable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractError {
    pub code: String,
    pub message: String,
}

impl ContractError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ContractError {
            code: code.into(),
            message: message.into(),
        }
    }
}

pub type ContractResult<T> = Result<T, ContractError>;

/// The chain as a contract sees it. Keys are the contract's own; the node
/// keeps each contract's storage apart.
pub trait Host {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    fn set(&mut self, key: &[u8], value: &[u8]);
    fn remove(&mut self, key: &[u8]);
    /// The first entry whose key starts with `prefix` and is greater than
    /// `after` (any key with the prefix when `after` is `None`), in byte order.
    fn next(&self, prefix: &[u8], after: Option<&[u8]>) -> Option<(Vec<u8>, Vec<u8>)>;
    fn caller(&self) -> Caller;
    fn block(&self) -> BlockInfo;
    /// Roles of a member organisation; `None` if it is not a member.
    fn member_roles(&self, org: &str) -> Option<Vec<Role>>;
    fn emit(&mut self, event: ContractEvent);
    fn blake3(&self, data: &[u8]) -> [u8; 32];
    /// Writes an entry of the contract's query index: records kept beside its
    /// state, outside the state tree, so that queries can list things (which
    /// pieces an organisation holds). Calls write it; only queries read it.
    fn index_set(&mut self, key: &[u8], value: &[u8]);
    fn index_remove(&mut self, key: &[u8]);
    /// [`Host::next`] over the query index. Queries only: in a call it traps,
    /// since what a call does must follow from authenticated state alone.
    fn index_next(&self, prefix: &[u8], after: Option<&[u8]>) -> Option<(Vec<u8>, Vec<u8>)>;
}

/// A contract: transactions go to [`Contract::call`], read-only requests to [`Contract::query`].
pub trait Contract {
    fn call(host: &mut dyn Host, method: &str, args: &[u8]) -> ContractResult<Vec<u8>>;
    fn query(host: &dyn Host, method: &str, args: &[u8]) -> ContractResult<Vec<u8>>;
}

/// Decodes arguments, answering a contract error (code `bad_args`) on malformed input.
pub fn args<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> ContractResult<T> {
    codec::decode(bytes)
        .map_err(|e| ContractError::new("bad_args", alloc::format!("arguments do not decode: {e}")))
}

/// Encodes a result.
pub fn ret<T: Serialize>(value: &T) -> ContractResult<Vec<u8>> {
    Ok(codec::encode(value))
}

/// Typed storage over a [`Host`]: values in the canonical encoding.
pub mod store {
    use super::*;

    /// Reads a record; a stored value that does not decode is a bug in the
    /// contract's own writes, so it aborts the call rather than being skipped.
    pub fn get<T: Serialize + DeserializeOwned>(host: &dyn Host, key: &[u8]) -> Option<T> {
        host.get(key).map(|bytes| match codec::decode(&bytes) {
            Ok(v) => v,
            Err(e) => panic!("stored record does not decode: {e}"),
        })
    }

    pub fn set<T: Serialize>(host: &mut dyn Host, key: &[u8], value: &T) {
        host.set(key, &codec::encode(value));
    }

    /// Every entry under `prefix`, in key order.
    pub fn scan(host: &dyn Host, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        scan_with(|after| host.next(prefix, after))
    }

    /// Every query index entry under `prefix`, in key order (queries only).
    pub fn scan_index(host: &dyn Host, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        scan_with(|after| host.index_next(prefix, after))
    }

    type Entry = (Vec<u8>, Vec<u8>);

    fn scan_with(next: impl Fn(Option<&[u8]>) -> Option<Entry>) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        while let Some(entry) = next(out.last().map(|(k, _)| k.as_slice())) {
            out.push(entry);
        }
        out
    }
}
