//! The contract runtime: WebAssembly modules on wasmtime, host ABI `trellis_v1`
//! (see `docs/contracts.md`).
//!
//! Guarantees: a call's outcome (output or error code and message), its writes,
//! events and fuel depend only on the module, the invocation, the state it reads
//! and the block, never on the node, its cache or its clock; writes and events
//! are kept only when the call succeeds; nothing a guest does (bad pointers,
//! endless loops, memory bombs, deep recursion) panics the node or escapes the
//! fuel and memory limits. Assumes every node runs this exact wasmtime version
//! and engine configuration (fuel costs are part of consensus). Recursion is
//! bounded by the module itself (`frames`), not by the native stack, so the
//! architecture does not matter.

mod frames;
mod host;
mod view;

pub use view::StateView;

use crate::storage::StorageError;
use host::{Failure, HostState};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use trellis_types::params::MAX_CONTRACT_MEMORY_BYTES;
use trellis_types::{Address, ChainParams, Event, ExecError, Hash, Role};
use wasmtime::{
    Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Module, OptLevel,
    PoolConcurrencyLimitError, PoolingAllocationConfig, Store, Trap, ValType, WasmFeatures,
};

/// Native stack a call may use, in bytes. Only a backstop: the deterministic
/// frame budget (`frames`) always runs out first. The thread that executes
/// calls needs this much stack plus room for the host (2 MiB threads are ample).
pub const MAX_WASM_STACK: usize = 512 * 1024;

/// Compiled modules kept in memory; past this the cache starts over (compiling
/// again only costs time, never changes a result).
const MODULE_CACHE_CAPACITY: usize = 256;

/// The one module contracts import from.
pub(crate) const HOST_MODULE: &str = "trellis_v1";

/// The hash a contract's code is known by (`sys/code/<hash>`, deploy records,
/// genesis `code_hash`): plain blake3 of the module's bytes, so `b3sum` of a
/// `.wasm` file gives it.
pub fn code_hash(code: &[u8]) -> Hash {
    Hash(*blake3::hash(code).as_bytes())
}

/// Per-call limits, from the chain parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub fuel: u64,
    pub memory_bytes: u64,
}

impl Limits {
    pub fn from_params(params: &ChainParams) -> Limits {
        Limits {
            fuel: params.fuel_per_call,
            memory_bytes: params.max_memory_bytes,
        }
    }
}

/// Which export a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// A transaction: may write and emit events.
    Call,
    /// Read-only: `storage_set`, `storage_remove` and `emit` trap.
    Query,
}

impl Entry {
    fn export(self) -> &'static str {
        match self {
            Entry::Call => "call",
            Entry::Query => "query",
        }
    }
}

// The ABI's values, encoded exactly like the contract kit's types of the same names.

/// What a call asks for: `method` with encoded `args`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    pub method: String,
    pub args: Vec<u8>,
}

/// The sender of the transaction being executed (all-zero account in a query).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub account: [u8; 32],
    pub org: String,
    pub roles: Vec<Role>,
}

impl Caller {
    /// No account, no organisation, no roles (an open node's query caller
    /// adds the regulator's role to it).
    pub fn nobody() -> Caller {
        Caller {
            account: [0; 32],
            org: String::new(),
            roles: Vec::new(),
        }
    }
}

/// The block being executed (in a query: the latest committed block).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockInfo {
    pub chain_id: String,
    pub height: u64,
    pub timestamp_ms: u64,
}

/// An event as a contract emits it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractEvent {
    pub kind: String,
    pub attributes: Vec<(String, String)>,
}

/// A contract's refusal, as it passes it to `set_error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractError {
    pub code: String,
    pub message: String,
}

/// Receipt codes for calls that did not end in the contract's own verdict.
pub mod codes {
    pub const TRAP: &str = "trap";
    pub const OUT_OF_FUEL: &str = "out_of_fuel";
    pub const OUT_OF_MEMORY: &str = "out_of_memory";
    pub const INVALID_MODULE: &str = "invalid_module";
    /// Recursion past the deterministic frame budget (see `frames`).
    pub const STACK_EXHAUSTED: &str = "stack_exhausted";
}

/// Who calls which contract in which block, within which limits.
#[derive(Debug, Clone)]
pub struct CallEnv {
    pub contract: Address,
    pub caller: Caller,
    pub block: BlockInfo,
    pub limits: Limits,
}

/// What a call did. `writes` (full state keys) and `events` are empty unless `result` is `Ok`.
#[derive(Debug)]
pub struct Outcome {
    /// The output the contract set, or why the call failed.
    pub result: Result<Vec<u8>, ExecError>,
    pub fuel_used: u64,
    pub writes: crate::state::Writes,
    pub events: Vec<Event>,
}

/// Why a module cannot be deployed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidModule(pub String);

/// Calls one [`Vm`] runs at the same time by default: execution is one
/// thread; a nested call would be the second.
const DEFAULT_CONCURRENT_CALLS: u32 = 2;

/// Memory of each instance slot kept mapped between calls (see [`engine_config`]).
const KEEP_RESIDENT_BYTES: usize = 1 << 20;

/// One engine and linker for the node's life; compiled modules cached by code
/// hash. Instances come from a pool of memory slots reserved up front and
/// reset between calls, so a call maps no memory of its own.
pub struct Vm {
    engine: Engine,
    linker: Linker<HostState>,
    modules: Mutex<HashMap<Hash, InstancePre<HostState>>>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm").finish_non_exhaustive()
    }
}

impl Vm {
    /// A VM for executing blocks (one call at a time).
    pub fn new() -> Vm {
        Vm::with_concurrent_calls(DEFAULT_CONCURRENT_CALLS)
    }

    /// A VM that runs up to `calls` contract calls at once (the API's read-only
    /// queries); one more fails as [`StorageError::Busy`], never as a receipt.
    pub fn with_concurrent_calls(calls: u32) -> Vm {
        let engine = Engine::new(&engine_config(calls))
            .expect("the fixed engine configuration is valid for this wasmtime build");
        let linker = host::linker(&engine);
        Vm {
            engine,
            linker,
            modules: Mutex::new(HashMap::new()),
        }
    }

    /// Checks that `code` is a module Trellis can run within `limits` and
    /// compiles it (keeping it for later calls). What deploy and upgrade check:
    /// a binary module (not text); exports `memory`, `call: () -> i32` and
    /// `query: () -> i32`; imports only functions of `trellis_v1`, each with
    /// its ABI signature; an initial memory within the limit.
    pub fn validate(&self, code: &[u8], limits: Limits) -> Result<Hash, InvalidModule> {
        let hash = code_hash(code);
        let pre = self.compile(code)?;
        check_memory(pre.module(), limits)?;
        self.cache(hash, pre);
        Ok(hash)
    }

    fn compile(&self, code: &[u8]) -> Result<InstancePre<HostState>, InvalidModule> {
        let code = frames::instrument(code).map_err(InvalidModule)?;
        let module = Module::from_binary(&self.engine, &code)
            .map_err(|e| InvalidModule(format!("not a valid module: {}", root_message(&e))))?;
        check_imports(&module)?;
        check_exports(&module)?;
        self.linker
            .instantiate_pre(&module)
            .map_err(|e| InvalidModule(format!("cannot link: {}", root_message(&e))))
    }

    fn cache(&self, hash: Hash, pre: InstancePre<HostState>) {
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if modules.len() >= MODULE_CACHE_CAPACITY && !modules.contains_key(&hash) {
            modules.clear();
        }
        modules.insert(hash, pre);
    }

    fn cached(&self, hash: &Hash) -> Option<InstancePre<HostState>> {
        let modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        modules.get(hash).cloned()
    }

    /// Runs `entry` of the contract whose code hashes to `code_hash` (its code is
    /// read from `sys/code/<hash>` through `view` unless already compiled).
    /// `view` is the state before the call; it comes back unchanged: the
    /// outcome's writes are for the caller to apply. Only a storage failure is
    /// an `Err`: everything a contract can cause is in the [`Outcome`].
    pub fn run(
        &self,
        code_hash: &Hash,
        entry: Entry,
        invocation: &Invocation,
        env: &CallEnv,
        view: &mut StateView,
    ) -> Result<Outcome, StorageError> {
        let pre = match self.cached(code_hash) {
            Some(pre) => pre,
            None => {
                let key = crate::execution::keys::code(code_hash);
                let Some(code) = crate::state::StateRead::get(view, &key)? else {
                    return Err(StorageError::Corrupt {
                        what: format!("contract code {code_hash} is missing from state"),
                    });
                };
                match self.compile(&code) {
                    Ok(pre) => {
                        self.cache(*code_hash, pre.clone());
                        pre
                    }
                    Err(e) => {
                        return Ok(Outcome {
                            result: Err(fail(
                                codes::INVALID_MODULE,
                                format!("stored code {code_hash} no longer compiles: {e}"),
                            )),
                            fuel_used: 0,
                            writes: Default::default(),
                            events: Vec::new(),
                        });
                    }
                }
            }
        };
        // The store must own its data, so the view moves in for the call and back out after.
        let placeholder = StateView::new(view.committed().clone(), Default::default());
        let state = HostState::new(
            entry,
            env,
            trellis_types::encode(invocation),
            std::mem::replace(view, placeholder),
        );
        let (outcome, state_view) = run_in_store(&self.engine, &pre, entry, env.limits, state);
        *view = state_view;
        outcome
    }
}

impl Default for Vm {
    fn default() -> Self {
        Vm::new()
    }
}

/// The engine configuration every node shares. Fuel (not epochs) bounds time,
/// so where a call stops is deterministic; NaNs are canonicalised; no threads,
/// SIMD, relaxed SIMD, GC, exceptions, component model, 64-bit or multiple
/// memories, tail calls or custom page sizes. What stays is what rustc's
/// `wasm32-unknown-unknown` output uses: MVP, mutable globals, sign extension,
/// non-trapping float-to-int, multi-value, bulk memory and the reference-types
/// encodings (no GC types: the `gc` crate feature is off).
fn engine_config(concurrent_calls: u32) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(concurrent_calls)
        .total_memories(concurrent_calls)
        .total_tables(concurrent_calls)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .table_elements(host::MAX_TABLE_ELEMENTS)
        // Never below the chain's own cap, so the limiter, which turns growth
        // past `max_memory_bytes` into `out_of_memory`, always decides first.
        .max_memory_size(MAX_CONTRACT_MEMORY_BYTES as usize)
        // A returned slot keeps up to this much of its memory mapped and is
        // reset in place (rewritten from the module's image), instead of
        // being unmapped and taking a page fault per page on the next call.
        // Resetting only the pages a call dirtied (`pagemap_scan`, Linux
        // 6.7+) cost as much as rewriting them for our contracts' few pages:
        // about 1.5 % of the node either way (docs/benchmarks.md).
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES);
    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .consume_fuel(true)
        .cranelift_nan_canonicalization(true)
        .cranelift_opt_level(OptLevel::Speed)
        .max_wasm_stack(MAX_WASM_STACK)
        // Trap messages go into receipts: they must not carry native addresses or backtraces.
        .wasm_backtrace_max_frames(None)
        .wasm_simd(false)
        .wasm_relaxed_simd(false)
        .relaxed_simd_deterministic(true)
        .wasm_multi_memory(false)
        .wasm_memory64(false)
        .wasm_tail_call(false)
        .wasm_custom_page_sizes(false)
        .wasm_wide_arithmetic(false)
        .wasm_stack_switching(false)
        .wasm_features(
            WasmFeatures::THREADS
                | WasmFeatures::SHARED_EVERYTHING_THREADS
                | WasmFeatures::GC
                | WasmFeatures::GC_TYPES
                | WasmFeatures::FUNCTION_REFERENCES
                | WasmFeatures::EXCEPTIONS
                | WasmFeatures::LEGACY_EXCEPTIONS
                | WasmFeatures::COMPONENT_MODEL,
            false,
        );
    config
}

fn fail(code: &str, message: impl Into<String>) -> ExecError {
    ExecError {
        code: code.to_owned(),
        message: message.into(),
    }
}

/// The innermost message of a wasmtime error, without backtraces.
fn root_message(e: &wasmtime::Error) -> String {
    e.root_cause().to_string()
}

fn check_imports(module: &Module) -> Result<(), InvalidModule> {
    for import in module.imports() {
        let (m, name) = (import.module(), import.name());
        if m != HOST_MODULE {
            return Err(InvalidModule(format!(
                "imports `{m}.{name}`: contracts may import only from `{HOST_MODULE}`"
            )));
        }
        let Some((params, returns)) = host::signature(name) else {
            return Err(InvalidModule(format!(
                "imports `{m}.{name}`, which the host API does not have"
            )));
        };
        let ExternType::Func(ty) = import.ty() else {
            return Err(InvalidModule(format!(
                "imports `{m}.{name}` as something other than a function"
            )));
        };
        let ok = ty.params().len() == params
            && ty.params().all(|p| matches!(p, ValType::I32))
            && ty.results().len() == usize::from(returns)
            && ty.results().all(|r| matches!(r, ValType::I32));
        if !ok {
            return Err(InvalidModule(format!(
                "imports `{m}.{name}` with signature {ty}, the host API's is {}",
                host::signature_text(params, returns)
            )));
        }
    }
    Ok(())
}

fn check_exports(module: &Module) -> Result<(), InvalidModule> {
    match module.get_export("memory") {
        Some(ExternType::Memory(_)) => {}
        _ => {
            return Err(InvalidModule(
                "does not export its memory as `memory`".into(),
            ));
        }
    }
    for name in [Entry::Call.export(), Entry::Query.export()] {
        let ok = match module.get_export(name) {
            Some(ExternType::Func(ty)) => {
                ty.params().len() == 0
                    && ty.results().len() == 1
                    && ty.results().all(|r| matches!(r, ValType::I32))
            }
            _ => false,
        };
        if !ok {
            return Err(InvalidModule(format!(
                "does not export a function `{name}: () -> i32`"
            )));
        }
    }
    Ok(())
}

fn check_memory(module: &Module, limits: Limits) -> Result<(), InvalidModule> {
    if let Some(ExternType::Memory(memory)) = module.get_export("memory") {
        let bytes = memory.minimum().saturating_mul(host::WASM_PAGE_BYTES);
        if bytes > limits.memory_bytes {
            return Err(InvalidModule(format!(
                "starts with {bytes} bytes of memory, more than the {} a call may use",
                limits.memory_bytes
            )));
        }
    }
    Ok(())
}

/// Instantiates and runs one call in a fresh store; gives the view back whatever happens.
fn run_in_store(
    engine: &Engine,
    pre: &InstancePre<HostState>,
    entry: Entry,
    limits: Limits,
    state: HostState,
) -> (Result<Outcome, StorageError>, StateView) {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store
        .set_fuel(limits.fuel)
        .expect("fuel is enabled in the engine configuration");
    let instance = pre.instantiate(&mut store);
    if let Err(e) = &instance
        && e.downcast_ref::<PoolConcurrencyLimitError>().is_some()
    {
        // A limit of this node, not something the contract did: no receipt.
        return (
            Err(StorageError::Busy(root_message(e))),
            store.into_data().view,
        );
    }
    let mut frames_exhausted = false;
    let result = instance.and_then(|instance| {
        let memory = instance.get_memory(&mut store, "memory");
        store.data_mut().memory = memory;
        let func = instance.get_typed_func::<(), i32>(&mut store, entry.export())?;
        let result = func.call(&mut store, ());
        if result.is_err() {
            // The thunks leave the counter past the budget only when they trap for it.
            frames_exhausted = instance
                .get_global(&mut store, frames::COUNTER_EXPORT)
                .and_then(|counter| counter.get(&mut store).i32())
                .is_some_and(|used| used as u32 > frames::FRAME_BUDGET);
        }
        result
    });
    let fuel_left = store.get_fuel().unwrap_or(0);
    let state = store.into_data();
    let fuel_used = limits.fuel - fuel_left.min(limits.fuel);
    state.finish(result, frames_exhausted, fuel_used, limits)
}

impl HostState {
    /// Turns how the export ended into the call's outcome.
    fn finish(
        self,
        result: wasmtime::Result<i32>,
        frames_exhausted: bool,
        fuel_used: u64,
        limits: Limits,
    ) -> (Result<Outcome, StorageError>, StateView) {
        let HostState {
            view,
            writes,
            events,
            output,
            error,
            failure,
            limiter,
            ..
        } = self;
        let failed = |e: ExecError, fuel_used| Outcome {
            result: Err(e),
            fuel_used,
            writes: Default::default(),
            events: Vec::new(),
        };
        let outcome = match (result, failure) {
            (_, Some(Failure::Storage(e))) => return (Err(e), view),
            (_, Some(Failure::OutOfFuel)) => failed(
                fail(
                    codes::OUT_OF_FUEL,
                    format!("the call used all of its {} fuel", limits.fuel),
                ),
                limits.fuel,
            ),
            (_, Some(Failure::Trap(message))) => failed(fail(codes::TRAP, message), fuel_used),
            (Err(_), None) if frames_exhausted => failed(
                fail(
                    codes::STACK_EXHAUSTED,
                    format!(
                        "recursion deeper than the {} frame units a call may use",
                        frames::FRAME_BUDGET
                    ),
                ),
                fuel_used,
            ),
            (Err(_), None) if limiter.memory_exceeded => failed(
                fail(
                    codes::OUT_OF_MEMORY,
                    format!(
                        "the contract's memory would grow past the {} bytes a call may use",
                        limits.memory_bytes
                    ),
                ),
                fuel_used,
            ),
            (Err(e), None) => match e.downcast_ref::<Trap>() {
                Some(Trap::OutOfFuel) => failed(
                    fail(
                        codes::OUT_OF_FUEL,
                        format!("the call used all of its {} fuel", limits.fuel),
                    ),
                    limits.fuel,
                ),
                Some(Trap::StackOverflow) => failed(
                    fail(
                        codes::TRAP,
                        format!(
                            "{}: recursion deeper than the {MAX_WASM_STACK}-byte stack allows",
                            Trap::StackOverflow
                        ),
                    ),
                    fuel_used,
                ),
                Some(trap) => failed(fail(codes::TRAP, trap.to_string()), fuel_used),
                None => failed(fail(codes::TRAP, root_message(&e)), fuel_used),
            },
            (Ok(0), None) => Outcome {
                result: Ok(output.unwrap_or_default()),
                fuel_used,
                writes,
                events,
            },
            (Ok(status), None) => {
                let error = error
                    .ok_or_else(|| {
                        format!("the export returned {status} without calling set_error")
                    })
                    .and_then(|bytes| {
                        trellis_types::decode::<ContractError>(&bytes)
                            .map_err(|e| format!("set_error was given an undecodable error: {e}"))
                    })
                    .and_then(check_error_code);
                match error {
                    Ok(e) => failed(
                        ExecError {
                            code: e.code,
                            // Receipts are every node's to keep: a contract may
                            // not make them larger than the call.
                            message: host::bounded(e.message),
                        },
                        fuel_used,
                    ),
                    Err(message) => failed(fail(codes::TRAP, message), fuel_used),
                }
            }
        };
        (Ok(outcome), view)
    }
}

/// A contract's error code: 1 to 64 of `[a-z0-9_]`, so receipts stay machine-readable.
fn check_error_code(e: ContractError) -> Result<ContractError, String> {
    let ok = !e.code.is_empty()
        && e.code.len() <= 64
        && e.code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(e)
    } else {
        Err(format!(
            "set_error code {:?} is not 1 to 64 of [a-z0-9_]",
            e.code
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests;
