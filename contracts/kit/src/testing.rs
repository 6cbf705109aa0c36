//! A simulated chain for native unit tests of contract logic (feature `testing`).
//!
//! [`TestHost`] keeps one contract's storage and query index, a caller, a
//! block, the member registry and the events emitted so far.
//! [`TestHost::call`] and [`TestHost::query`] run a contract with the node's
//! semantics: a call that returns `Err` or panics leaves no writes and no
//! events behind, a panic surfaces as a `trap` error, a query that tries to
//! write, remove or emit traps ("read-only"), and so does a call that reads
//! the query index. Queries see the latest block and run as the reader
//! ([`TestHost::set_reader`]), as the node runs them as the member whose
//! signed request asked (a regulator unless set: [`regulator_reader`]).

extern crate std;

use alloc::borrow::ToOwned;
use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::{
    BlockInfo, Caller, Contract, ContractError, ContractEvent, ContractResult, Host, Role,
};

#[cfg(feature = "wasm-testing")]
mod wasm;
#[cfg(feature = "wasm-testing")]
pub use wasm::WasmContract;

/// The chain id a fresh [`TestHost`] reports.
pub const TEST_CHAIN_ID: &str = "trellis-test";

/// A deterministic account for `org`: the blake3 hash of `"trellis-test-account:" || org`.
pub fn account_of(org: &str) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"trellis-test-account:");
    hasher.update(org.as_bytes());
    *hasher.finalize().as_bytes()
}

/// A caller acting for `org` with `roles`, on [`account_of`]`(org)`.
pub fn caller_from(org: &str, roles: &[Role]) -> Caller {
    Caller {
        account: account_of(org),
        org: org.to_owned(),
        roles: roles.to_vec(),
    }
}

/// Whom [`TestHost`]'s queries run as unless [`TestHost::set_reader`]
/// says otherwise: a regulator, who sees everything.
pub fn regulator_reader() -> Caller {
    caller_from("regulator", &[Role::Regulator])
}

/// A caller with no account, organisation or roles: a fresh host's caller.
pub fn anonymous_caller() -> Caller {
    Caller {
        account: [0; 32],
        org: String::new(),
        roles: Vec::new(),
    }
}

/// A simulated host; see the module docs.
#[derive(Debug, Clone)]
pub struct TestHost {
    storage: Storage,
    caller: Caller,
    /// Whom queries run as.
    reader: Caller,
    block: BlockInfo,
    members: BTreeMap<String, Vec<Role>>,
    events: Vec<ContractEvent>,
}

impl Default for TestHost {
    fn default() -> Self {
        Self::new()
    }
}

impl TestHost {
    /// Empty storage, no members, the anonymous caller, block 1 at time 0 on
    /// chain [`TEST_CHAIN_ID`].
    pub fn new() -> Self {
        TestHost {
            storage: Storage::default(),
            caller: anonymous_caller(),
            reader: regulator_reader(),
            block: BlockInfo {
                chain_id: TEST_CHAIN_ID.into(),
                height: 1,
                timestamp_ms: 0,
            },
            members: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    pub fn set_caller(&mut self, caller: Caller) -> &mut Self {
        self.caller = caller;
        self
    }

    /// Acts as `org` from now on, with the roles the member registry gives it
    /// (none if it is not a member).
    pub fn act_as(&mut self, org: &str) -> &mut Self {
        let roles = self.members.get(org).cloned().unwrap_or_default();
        self.set_caller(caller_from(org, &roles))
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Runs queries as `reader` from now on.
    pub fn set_reader(&mut self, reader: Caller) -> &mut Self {
        self.reader = reader;
        self
    }

    /// Runs queries as `org`, with the roles the member registry gives it.
    pub fn read_as(&mut self, org: &str) -> &mut Self {
        let roles = self.members.get(org).cloned().unwrap_or_default();
        self.set_reader(caller_from(org, &roles))
    }

    pub fn set_chain_id(&mut self, chain_id: &str) -> &mut Self {
        self.block.chain_id = chain_id.into();
        self
    }

    pub fn set_block(&mut self, height: u64, timestamp_ms: u64) -> &mut Self {
        self.block.height = height;
        self.block.timestamp_ms = timestamp_ms;
        self
    }

    /// Moves to the next block, `ms` later.
    pub fn advance(&mut self, ms: u64) -> &mut Self {
        self.block.height += 1;
        self.block.timestamp_ms += ms;
        self
    }

    pub fn block(&self) -> &BlockInfo {
        &self.block
    }

    /// Registers (or replaces) a member organisation; roles are kept sorted
    /// and without duplicates, as the chain keeps them.
    pub fn add_member(&mut self, org: &str, roles: &[Role]) -> &mut Self {
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        self.members.insert(org.into(), roles);
        self
    }

    pub fn remove_member(&mut self, org: &str) -> &mut Self {
        self.members.remove(org);
        self
    }

    /// Every event emitted by successful calls, oldest first.
    pub fn events(&self) -> &[ContractEvent] {
        &self.events
    }

    /// The events so far, leaving none behind.
    pub fn take_events(&mut self) -> Vec<ContractEvent> {
        core::mem::take(&mut self.events)
    }

    /// The contract's storage as committed by successful calls.
    pub fn storage(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.storage.state
    }

    /// The contract's query index as committed by successful calls.
    pub fn index(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.storage.index
    }

    /// Runs `C::call` as a transaction from the current caller in the current block.
    pub fn call<C: Contract>(&mut self, method: &str, args: &[u8]) -> ContractResult<Vec<u8>> {
        self.exec(|host| C::call(host, method, args))
    }

    /// Runs `C::query` read-only, as the reader, against the current block.
    pub fn query<C: Contract>(&self, method: &str, args: &[u8]) -> ContractResult<Vec<u8>> {
        self.read(|host| C::query(host, method, args))
    }

    /// Runs any code as a transaction, with [`TestHost::call`]'s rollback rules:
    /// for seeding state through a contract's own helpers, or for testing
    /// logic below the method dispatch.
    pub fn exec<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Host) -> ContractResult<T>,
    ) -> ContractResult<T> {
        let mut frame = Frame {
            storage: Writes::Staged(self.storage.clone()),
            caller: &self.caller,
            block: &self.block,
            members: &self.members,
            events: Vec::new(),
        };
        let outcome = trap_panics(|| f(&mut frame));
        if outcome.is_ok() {
            let Frame {
                storage, events, ..
            } = frame;
            if let Writes::Staged(storage) = storage {
                self.storage = storage;
            }
            self.events.extend(events);
        }
        outcome
    }

    /// Runs any code as a query: read-only, as the reader.
    pub fn read<T>(&self, f: impl FnOnce(&dyn Host) -> ContractResult<T>) -> ContractResult<T> {
        self.read_raw(|host| f(host))
    }

    /// Runs code as a query through a mutable handle: what a wasm module can
    /// attempt with the raw imports (safe Rust cannot, holding `&dyn Host`).
    /// A write, removal or event traps, as it does on the node.
    pub fn read_raw<T>(
        &self,
        f: impl FnOnce(&mut dyn Host) -> ContractResult<T>,
    ) -> ContractResult<T> {
        let mut frame = Frame {
            storage: Writes::ReadOnly(&self.storage),
            caller: &self.reader,
            block: &self.block,
            members: &self.members,
            events: Vec::new(),
        };
        trap_panics(|| f(&mut frame))
    }
}

/// Runs `f`, turning a panic into the `trap` error the node reports for a trap.
fn trap_panics<T>(f: impl FnOnce() -> ContractResult<T>) -> ContractResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "panic".to_string()
            };
            Err(ContractError::new("trap", message))
        }
    }
}

/// Why a call may not read the query index, as the node says it.
pub(crate) const INDEX_READ_IN_CALL: &str =
    "index_next is only for queries: a call reads authenticated state alone";

/// A contract's storage and its query index.
#[derive(Debug, Clone, Default)]
pub(crate) struct Storage {
    pub(crate) state: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(crate) index: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// The first entry of `map` whose key starts with `prefix` and is greater
/// than `after`, as the node's `storage_next` and `index_next` find it.
pub(crate) fn next_in(
    map: &BTreeMap<Vec<u8>, Vec<u8>>,
    prefix: &[u8],
    after: Option<&[u8]>,
) -> Option<(Vec<u8>, Vec<u8>)> {
    // Start at the prefix itself, or just past `after` if that is later.
    let lower = match after {
        Some(a) if a >= prefix => Bound::Excluded(a),
        _ => Bound::Included(prefix),
    };
    map.range::<[u8], _>((lower, Bound::Unbounded))
        .next()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
}

enum Writes<'a> {
    /// A call's working copy; becomes the storage if the call succeeds.
    Staged(Storage),
    ReadOnly(&'a Storage),
}

/// What one call or query sees.
struct Frame<'a> {
    storage: Writes<'a>,
    caller: &'a Caller,
    block: &'a BlockInfo,
    members: &'a BTreeMap<String, Vec<Role>>,
    events: Vec<ContractEvent>,
}

impl Frame<'_> {
    fn view(&self) -> &Storage {
        match &self.storage {
            Writes::Staged(s) => s,
            Writes::ReadOnly(s) => s,
        }
    }

    fn writable(&mut self, what: &str) -> &mut Storage {
        match &mut self.storage {
            Writes::Staged(s) => s,
            Writes::ReadOnly(_) => panic!("read-only: {what} in a query"),
        }
    }
}

impl Host for Frame<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.view().state.get(key).cloned()
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.writable("storage_set")
            .state
            .insert(key.to_vec(), value.to_vec());
    }

    fn remove(&mut self, key: &[u8]) {
        self.writable("storage_remove").state.remove(key);
    }

    fn next(&self, prefix: &[u8], after: Option<&[u8]>) -> Option<(Vec<u8>, Vec<u8>)> {
        next_in(&self.view().state, prefix, after)
    }

    fn caller(&self) -> Caller {
        self.caller.clone()
    }

    fn block(&self) -> BlockInfo {
        self.block.clone()
    }

    fn member_roles(&self, org: &str) -> Option<Vec<Role>> {
        self.members.get(org).cloned()
    }

    fn emit(&mut self, event: ContractEvent) {
        if matches!(self.storage, Writes::ReadOnly(_)) {
            panic!("read-only: emit in a query");
        }
        self.events.push(event);
    }

    fn blake3(&self, data: &[u8]) -> [u8; 32] {
        *blake3::hash(data).as_bytes()
    }

    fn index_set(&mut self, key: &[u8], value: &[u8]) {
        self.writable("index_set")
            .index
            .insert(key.to_vec(), value.to_vec());
    }

    fn index_remove(&mut self, key: &[u8]) {
        self.writable("index_remove").index.remove(key);
    }

    fn index_next(&self, prefix: &[u8], after: Option<&[u8]>) -> Option<(Vec<u8>, Vec<u8>)> {
        if let Writes::Staged(_) = self.storage {
            panic!("{INDEX_READ_IN_CALL}");
        }
        next_in(&self.view().index, prefix, after)
    }
}
