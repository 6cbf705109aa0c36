//! The host side of ABI `trellis_v1`: the functions a contract imports, what
//! each costs in fuel, and the per-call state they work on.
//!
//! Every guest pointer is checked against the memory's current size before it
//! is touched and every length is charged before anything is allocated for it,
//! so a guest can make a call fail (a trap) but never make the host panic or
//! allocate beyond what its fuel pays for.

use super::view::StateView;
use super::{CallEnv, ContractEvent, Entry};
use crate::execution::keys;
use crate::state::{StateRead, Writes};
use crate::storage::StorageError;
use trellis_types::{Event, EventSource, Organisation, decode, encode};
use wasmtime::{Engine, Linker, Memory, ResourceLimiter};

pub(crate) const WASM_PAGE_BYTES: u64 = 64 * 1024;

/// Most elements a table may grow to (`table.grow` past it returns -1).
pub(crate) const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Longest abort or error message kept in a receipt, in bytes.
pub(crate) const MAX_MESSAGE_BYTES: usize = 1024;

/// Fuel charged by host functions, on top of the fuel of the guest's own
/// instructions (about one unit per WASM instruction). Documented in
/// `docs/contracts.md`; changing a number changes consensus.
pub mod fuel {
    /// Every host call.
    pub const BASE: u64 = 100;
    /// Each byte copied between guest memory and the host, either way.
    pub const PER_BYTE: u64 = 1;
    /// `storage_get` and `member_roles`: one state lookup (value bytes at `PER_BYTE`).
    pub const STORAGE_READ: u64 = 1_000;
    /// `storage_next`: lookups in every state layer (entry bytes at `PER_BYTE`).
    pub const STORAGE_NEXT: u64 = 2_000;
    /// `storage_set`: one state write ...
    pub const STORAGE_WRITE: u64 = 5_000;
    /// ... plus this per byte of key and value: written state is kept by every node for good.
    pub const STORAGE_WRITE_PER_BYTE: u64 = 10;
    /// `storage_remove`.
    pub const STORAGE_REMOVE: u64 = 2_000;
    /// `emit`: one event ...
    pub const EMIT: u64 = 1_000;
    /// ... plus this per encoded byte: events are kept in receipts.
    pub const EMIT_PER_BYTE: u64 = 5;
    /// `blake3`: per byte hashed.
    pub const HASH_PER_BYTE: u64 = 2;
}

/// The host functions: name, number of `i32` parameters, whether they return an `i32`.
pub(crate) const FUNCTIONS: &[(&str, usize, bool)] = &[
    ("input", 0, true),
    ("result_read", 1, false),
    ("storage_get", 2, true),
    ("storage_set", 4, false),
    ("storage_remove", 2, false),
    ("storage_next", 4, true),
    ("caller", 0, true),
    ("block", 0, true),
    ("member_roles", 2, true),
    ("emit", 2, false),
    ("set_output", 2, false),
    ("set_error", 2, false),
    ("abort", 2, false),
    ("blake3", 3, false),
    ("index_set", 4, false),
    ("index_remove", 2, false),
    ("index_next", 4, true),
];

/// The ABI signature of host function `name`: `(i32 parameters, returns i32)`.
pub(crate) fn signature(name: &str) -> Option<(usize, bool)> {
    FUNCTIONS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(_, params, returns)| (params, returns))
}

pub(crate) fn signature_text(params: usize, returns: bool) -> String {
    let params = vec!["i32"; params].join(", ");
    if returns {
        format!("({params}) -> i32")
    } else {
        format!("({params})")
    }
}

/// Why a call stopped, when the host stopped it. Checked before wasmtime's own
/// trap, since the host's reason is the precise one.
#[derive(Debug)]
pub(crate) enum Failure {
    OutOfFuel,
    Trap(String),
    /// The node's own storage failed: not the contract's doing, and not a receipt.
    Storage(StorageError),
}

/// Memory and table limits of one call.
pub(crate) struct Limiter {
    memory_bytes: usize,
    pub(crate) memory_exceeded: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            // A trap rather than -1: growth past the cap ends the call as `out_of_memory`.
            self.memory_exceeded = true;
            return Err(wasmtime::Error::msg("memory limit reached"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

/// What one call's host functions work on; the store owns it.
pub(crate) struct HostState {
    entry: Entry,
    contract: trellis_types::Address,
    /// `c/<address>/`: the contract's keys live under it ...
    data_prefix: Vec<u8>,
    /// ... and its query index under `q/<address>/`.
    index_prefix: Vec<u8>,
    input: Vec<u8>,
    caller: Vec<u8>,
    block: Vec<u8>,
    pub(crate) view: StateView,
    /// This call's writes, full state keys.
    pub(crate) writes: Writes,
    pub(crate) events: Vec<Event>,
    /// What the last host function that returns data returned.
    result: Vec<u8>,
    pub(crate) output: Option<Vec<u8>>,
    pub(crate) error: Option<Vec<u8>>,
    pub(crate) failure: Option<Failure>,
    pub(crate) limiter: Limiter,
    pub(crate) memory: Option<Memory>,
}

impl HostState {
    pub(crate) fn new(entry: Entry, env: &CallEnv, input: Vec<u8>, view: StateView) -> HostState {
        HostState {
            entry,
            contract: env.contract,
            data_prefix: keys::contract_data(&env.contract),
            index_prefix: keys::contract_index(&env.contract),
            input,
            caller: encode(&env.caller),
            block: encode(&env.block),
            view,
            writes: Writes::new(),
            events: Vec::new(),
            result: Vec::new(),
            output: None,
            error: None,
            failure: None,
            limiter: Limiter {
                memory_bytes: usize::try_from(env.limits.memory_bytes).unwrap_or(usize::MAX),
                memory_exceeded: false,
            },
            memory: None,
        }
    }

    fn prefix(&self, space: Space) -> &[u8] {
        match space {
            Space::State => &self.data_prefix,
            Space::Index => &self.index_prefix,
        }
    }
}

type Cx<'a> = wasmtime::Caller<'a, HostState>;
type HostResult<T> = wasmtime::Result<T>;

/// Records why the call stops (the first reason wins) and returns the trap that stops it.
fn stop(cx: &mut Cx<'_>, failure: Failure) -> wasmtime::Error {
    let message = match &failure {
        Failure::OutOfFuel => "out of fuel".to_owned(),
        Failure::Trap(m) => m.clone(),
        Failure::Storage(e) => format!("storage failed: {e}"),
    };
    let state = cx.data_mut();
    if state.failure.is_none() {
        state.failure = Some(failure);
    }
    wasmtime::Error::msg(message)
}

fn trap(cx: &mut Cx<'_>, message: impl Into<String>) -> wasmtime::Error {
    stop(cx, Failure::Trap(message.into()))
}

fn storage(cx: &mut Cx<'_>, e: StorageError) -> wasmtime::Error {
    stop(cx, Failure::Storage(e))
}

fn charge(cx: &mut Cx<'_>, cost: u64) -> HostResult<()> {
    let left = cx.get_fuel()?;
    match left.checked_sub(cost) {
        Some(rest) => cx.set_fuel(rest),
        None => {
            cx.set_fuel(0)?;
            Err(stop(cx, Failure::OutOfFuel))
        }
    }
}

fn length(cx: &mut Cx<'_>, len: i32, what: &str) -> HostResult<usize> {
    usize::try_from(len).map_err(|_| trap(cx, format!("{what}: negative length {len}")))
}

/// The guest's memory and `[ptr, ptr + len)` in it, or a trap naming `what`.
fn span(cx: &mut Cx<'_>, ptr: i32, len: usize, what: &str) -> HostResult<(Memory, usize)> {
    let Some(memory) = cx.data().memory else {
        return Err(trap(
            cx,
            "host function called before the module's memory was available",
        ));
    };
    // Pointers are unsigned 32-bit addresses.
    let start = ptr as u32 as usize;
    let size = memory.data_size(&*cx);
    if start.checked_add(len).is_none_or(|end| end > size) {
        return Err(trap(
            cx,
            format!("{what}: {len} bytes at {start} lie outside the contract's {size}-byte memory"),
        ));
    }
    Ok((memory, start))
}

/// Copies `len` bytes at `ptr` out of guest memory, charging for them first.
fn read(cx: &mut Cx<'_>, ptr: i32, len: usize, what: &str) -> HostResult<Vec<u8>> {
    charge(cx, fuel::PER_BYTE.saturating_mul(len as u64))?;
    let (memory, start) = span(cx, ptr, len, what)?;
    let mut buf = vec![0; len];
    memory
        .read(&*cx, start, &mut buf)
        .map_err(|e| trap(cx, format!("{what}: {e}")))?;
    Ok(buf)
}

/// Copies `bytes` into guest memory at `ptr`, charging for them first.
fn write(cx: &mut Cx<'_>, ptr: i32, bytes: &[u8], what: &str) -> HostResult<()> {
    charge(cx, fuel::PER_BYTE.saturating_mul(bytes.len() as u64))?;
    let (memory, start) = span(cx, ptr, bytes.len(), what)?;
    memory
        .write(&mut *cx, start, bytes)
        .map_err(|e| trap(cx, format!("{what}: {e}")))
}

/// Puts `data` in the result buffer and returns its length.
fn give(cx: &mut Cx<'_>, data: Vec<u8>) -> HostResult<i32> {
    let len = i32::try_from(data.len())
        .map_err(|_| trap(cx, "a result is too large for a 32-bit length"))?;
    cx.data_mut().result = data;
    Ok(len)
}

fn writable(cx: &mut Cx<'_>, what: &str) -> HostResult<()> {
    match cx.data().entry {
        Entry::Call => Ok(()),
        Entry::Query => Err(trap(cx, format!("{what} is not allowed in a query"))),
    }
}

/// Where a contract's key lives: its state, or its query index (written by
/// calls like state, but outside the state tree; see [`crate::state::QUERY_INDEX`]).
#[derive(Clone, Copy)]
enum Space {
    State,
    Index,
}

fn full_key(cx: &Cx<'_>, space: Space, key: &[u8]) -> Vec<u8> {
    [cx.data().prefix(space), key].concat()
}

/// Cuts `s` to at most [`MAX_MESSAGE_BYTES`], at a character boundary.
pub(crate) fn bounded(mut s: String) -> String {
    if s.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn input(mut cx: Cx<'_>) -> HostResult<i32> {
    charge(&mut cx, fuel::BASE)?;
    let data = cx.data().input.clone();
    give(&mut cx, data)
}

fn result_read(mut cx: Cx<'_>, ptr: i32) -> HostResult<()> {
    charge(&mut cx, fuel::BASE)?;
    let data = std::mem::take(&mut cx.data_mut().result);
    let written = write(&mut cx, ptr, &data, "result_read");
    cx.data_mut().result = data;
    written
}

fn storage_get(mut cx: Cx<'_>, key_ptr: i32, key_len: i32) -> HostResult<i32> {
    charge(&mut cx, fuel::BASE + fuel::STORAGE_READ)?;
    let key_len = length(&mut cx, key_len, "storage_get key")?;
    let key = read(&mut cx, key_ptr, key_len, "storage_get key")?;
    let key = full_key(&cx, Space::State, &key);
    let state = cx.data();
    match state.view.get_under(&state.writes, &key) {
        Ok(Some(value)) => {
            charge(&mut cx, fuel::PER_BYTE.saturating_mul(value.len() as u64))?;
            give(&mut cx, value)
        }
        Ok(None) => Ok(-1),
        Err(e) => Err(storage(&mut cx, e)),
    }
}

fn storage_set(
    cx: Cx<'_>,
    key_ptr: i32,
    key_len: i32,
    val_ptr: i32,
    val_len: i32,
) -> HostResult<()> {
    let what = ["storage_set", "storage_set key", "storage_set value"];
    set_in(
        cx,
        Space::State,
        what,
        (key_ptr, key_len),
        (val_ptr, val_len),
    )
}

fn storage_remove(cx: Cx<'_>, key_ptr: i32, key_len: i32) -> HostResult<()> {
    let what = ["storage_remove", "storage_remove key"];
    remove_in(cx, Space::State, what, (key_ptr, key_len))
}

fn storage_next(
    cx: Cx<'_>,
    prefix_ptr: i32,
    prefix_len: i32,
    after_ptr: i32,
    after_len: i32,
) -> HostResult<i32> {
    let what = ["storage_next prefix", "storage_next after"];
    next_in(
        cx,
        Space::State,
        what,
        (prefix_ptr, prefix_len),
        (after_ptr, after_len),
    )
}

fn index_set(cx: Cx<'_>, key_ptr: i32, key_len: i32, val_ptr: i32, val_len: i32) -> HostResult<()> {
    let what = ["index_set", "index_set key", "index_set value"];
    set_in(
        cx,
        Space::Index,
        what,
        (key_ptr, key_len),
        (val_ptr, val_len),
    )
}

fn index_remove(cx: Cx<'_>, key_ptr: i32, key_len: i32) -> HostResult<()> {
    let what = ["index_remove", "index_remove key"];
    remove_in(cx, Space::Index, what, (key_ptr, key_len))
}

/// Queries only: what a call does must depend on authenticated state alone.
fn index_next(
    mut cx: Cx<'_>,
    prefix_ptr: i32,
    prefix_len: i32,
    after_ptr: i32,
    after_len: i32,
) -> HostResult<i32> {
    if matches!(cx.data().entry, Entry::Call) {
        return Err(trap(
            &mut cx,
            "index_next is only for queries: a call reads authenticated state alone",
        ));
    }
    if !cx.data().view.committed().indexes().queries {
        return Err(storage(&mut cx, StorageError::NotIndexed("query")));
    }
    let what = ["index_next prefix", "index_next after"];
    next_in(
        cx,
        Space::Index,
        what,
        (prefix_ptr, prefix_len),
        (after_ptr, after_len),
    )
}

/// `storage_set` or `index_set`: `what` names the function, its key and its value.
fn set_in(
    mut cx: Cx<'_>,
    space: Space,
    what: [&str; 3],
    (key_ptr, key_len): (i32, i32),
    (value_ptr, value_len): (i32, i32),
) -> HostResult<()> {
    writable(&mut cx, what[0])?;
    let key_len = length(&mut cx, key_len, what[1])?;
    let value_len = length(&mut cx, value_len, what[2])?;
    let bytes = (key_len as u64).saturating_add(value_len as u64);
    charge(
        &mut cx,
        (fuel::BASE + fuel::STORAGE_WRITE)
            .saturating_add(fuel::STORAGE_WRITE_PER_BYTE.saturating_mul(bytes)),
    )?;
    let key = read(&mut cx, key_ptr, key_len, what[1])?;
    let value = read(&mut cx, value_ptr, value_len, what[2])?;
    let key = full_key(&cx, space, &key);
    cx.data_mut().writes.insert(key, Some(value));
    Ok(())
}

/// `storage_remove` or `index_remove`: `what` names the function and its key.
fn remove_in(
    mut cx: Cx<'_>,
    space: Space,
    what: [&str; 2],
    (key_ptr, key_len): (i32, i32),
) -> HostResult<()> {
    writable(&mut cx, what[0])?;
    charge(&mut cx, fuel::BASE + fuel::STORAGE_REMOVE)?;
    let key_len = length(&mut cx, key_len, what[1])?;
    let key = read(&mut cx, key_ptr, key_len, what[1])?;
    let key = full_key(&cx, space, &key);
    cx.data_mut().writes.insert(key, None);
    Ok(())
}

/// `storage_next` or `index_next`: `what` names the prefix and `after`.
fn next_in(
    mut cx: Cx<'_>,
    space: Space,
    what: [&str; 2],
    (prefix_ptr, prefix_len): (i32, i32),
    (after_ptr, after_len): (i32, i32),
) -> HostResult<i32> {
    charge(&mut cx, fuel::BASE + fuel::STORAGE_NEXT)?;
    let prefix_len = length(&mut cx, prefix_len, what[0])?;
    let prefix = read(&mut cx, prefix_ptr, prefix_len, what[0])?;
    let after = match after_len {
        -1 => None,
        len => {
            let len = length(&mut cx, len, what[1])?;
            Some(read(&mut cx, after_ptr, len, what[1])?)
        }
    };
    let prefix = full_key(&cx, space, &prefix);
    let after = after.map(|a| full_key(&cx, space, &a));
    let state = cx.data();
    let own_prefix_len = state.prefix(space).len();
    match state
        .view
        .next_under(&state.writes, &prefix, after.as_deref())
    {
        Ok(Some((key, value))) => {
            let entry = encode(&(key[own_prefix_len..].to_vec(), value));
            charge(&mut cx, fuel::PER_BYTE.saturating_mul(entry.len() as u64))?;
            give(&mut cx, entry)
        }
        Ok(None) => Ok(-1),
        Err(e) => Err(storage(&mut cx, e)),
    }
}

fn caller(mut cx: Cx<'_>) -> HostResult<i32> {
    charge(&mut cx, fuel::BASE)?;
    let data = cx.data().caller.clone();
    give(&mut cx, data)
}

fn block(mut cx: Cx<'_>) -> HostResult<i32> {
    charge(&mut cx, fuel::BASE)?;
    let data = cx.data().block.clone();
    give(&mut cx, data)
}

fn member_roles(mut cx: Cx<'_>, org_ptr: i32, org_len: i32) -> HostResult<i32> {
    charge(&mut cx, fuel::BASE + fuel::STORAGE_READ)?;
    let org_len = length(&mut cx, org_len, "member_roles org")?;
    let org = read(&mut cx, org_ptr, org_len, "member_roles org")?;
    // Organisation ids are ASCII: bytes that are not UTF-8 name no member.
    let Ok(org) = String::from_utf8(org) else {
        return Ok(-1);
    };
    let record = match cx.data().view.get(&keys::organisation(&org)) {
        Ok(record) => record,
        Err(e) => return Err(storage(&mut cx, e)),
    };
    let Some(bytes) = record else {
        return Ok(-1);
    };
    match decode::<Organisation>(&bytes) {
        Ok(organisation) => give(&mut cx, encode(&organisation.roles)),
        Err(e) => Err(storage(
            &mut cx,
            StorageError::Corrupt {
                what: format!("state record of organisation {org}: {e}"),
            },
        )),
    }
}

fn emit(mut cx: Cx<'_>, ptr: i32, len: i32) -> HostResult<()> {
    writable(&mut cx, "emit")?;
    let len = length(&mut cx, len, "emit")?;
    charge(
        &mut cx,
        (fuel::BASE + fuel::EMIT).saturating_add(fuel::EMIT_PER_BYTE.saturating_mul(len as u64)),
    )?;
    let bytes = read(&mut cx, ptr, len, "emit")?;
    let event: ContractEvent = decode(&bytes)
        .map_err(|e| trap(&mut cx, format!("emit was given an undecodable event: {e}")))?;
    let source = EventSource::Contract(cx.data().contract);
    cx.data_mut().events.push(Event {
        source,
        kind: event.kind,
        attributes: event.attributes,
    });
    Ok(())
}

fn set_output(mut cx: Cx<'_>, ptr: i32, len: i32) -> HostResult<()> {
    charge(&mut cx, fuel::BASE)?;
    let len = length(&mut cx, len, "set_output")?;
    let bytes = read(&mut cx, ptr, len, "set_output")?;
    cx.data_mut().output = Some(bytes);
    Ok(())
}

fn set_error(mut cx: Cx<'_>, ptr: i32, len: i32) -> HostResult<()> {
    charge(&mut cx, fuel::BASE)?;
    let len = length(&mut cx, len, "set_error")?;
    let bytes = read(&mut cx, ptr, len, "set_error")?;
    cx.data_mut().error = Some(bytes);
    Ok(())
}

fn abort(mut cx: Cx<'_>, ptr: i32, len: i32) -> HostResult<()> {
    charge(&mut cx, fuel::BASE)?;
    let len = length(&mut cx, len, "abort message")?;
    let bytes = read(&mut cx, ptr, len, "abort message")?;
    let message = bounded(String::from_utf8_lossy(&bytes).into_owned());
    Err(trap(&mut cx, format!("contract aborted: {message}")))
}

fn blake3(mut cx: Cx<'_>, ptr: i32, len: i32, out_ptr: i32) -> HostResult<()> {
    let len = length(&mut cx, len, "blake3 input")?;
    charge(
        &mut cx,
        fuel::BASE.saturating_add(fuel::HASH_PER_BYTE.saturating_mul(len as u64)),
    )?;
    let bytes = read(&mut cx, ptr, len, "blake3 input")?;
    let hash = ::blake3::hash(&bytes);
    write(&mut cx, out_ptr, hash.as_bytes(), "blake3 output")
}

/// The linker every module is instantiated with: all of [`FUNCTIONS`] under `trellis_v1`.
pub(crate) fn linker(engine: &Engine) -> Linker<HostState> {
    let mut linker = Linker::new(engine);
    let m = super::HOST_MODULE;
    let defined = (|| -> wasmtime::Result<()> {
        linker.func_wrap(m, "input", input)?;
        linker.func_wrap(m, "result_read", result_read)?;
        linker.func_wrap(m, "storage_get", storage_get)?;
        linker.func_wrap(m, "storage_set", storage_set)?;
        linker.func_wrap(m, "storage_remove", storage_remove)?;
        linker.func_wrap(m, "storage_next", storage_next)?;
        linker.func_wrap(m, "caller", caller)?;
        linker.func_wrap(m, "block", block)?;
        linker.func_wrap(m, "member_roles", member_roles)?;
        linker.func_wrap(m, "emit", emit)?;
        linker.func_wrap(m, "set_output", set_output)?;
        linker.func_wrap(m, "set_error", set_error)?;
        linker.func_wrap(m, "abort", abort)?;
        linker.func_wrap(m, "blake3", blake3)?;
        linker.func_wrap(m, "index_set", index_set)?;
        linker.func_wrap(m, "index_remove", index_remove)?;
        linker.func_wrap(m, "index_next", index_next)?;
        Ok(())
    })();
    defined.expect("each host function is defined once, with a WASM-representable signature");
    linker
}
