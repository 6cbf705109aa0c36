//! The same test host, through wasmtime (feature `wasm-testing`).
//!
//! [`TestHost::call_wasm`] and [`TestHost::query_wasm`] run a contract's
//! built module on a fresh instance against the host's storage, caller,
//! block and members, through the host ABI v1 imports (`docs/contracts.md`),
//! with [`TestHost::call`]'s rules: writes and events are kept only when the
//! call succeeds, a trap is a `trap` error, and a query cannot write or emit.
//! So a scenario written against the native host runs unchanged on the
//! module the chain deploys. Fuel, memory limits and the recursion guard are
//! the node's business (`node/src/vm`), not this host's.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use wasmtime::{Caller as Cx, Engine, Linker, Memory, Module, Store};

use super::{INDEX_READ_IN_CALL, Storage, TestHost, next_in};
use crate::{
    BlockInfo, Caller, ContractError, ContractEvent, ContractResult, Invocation, Role, codec,
};

/// A contract module compiled once, to run on any number of test hosts.
pub struct WasmContract {
    engine: Engine,
    module: Module,
    linker: Linker<Frame>,
}

impl WasmContract {
    /// Compiles `wasm`; an error says why it is not a usable module.
    pub fn new(wasm: &[u8]) -> Result<Self, String> {
        let engine = Engine::default();
        let module = Module::new(&engine, wasm).map_err(|e| format!("{e:#}"))?;
        let linker = linker(&engine).map_err(|e| format!("{e:#}"))?;
        Ok(WasmContract {
            engine,
            module,
            linker,
        })
    }

    fn run(&self, export: &str, frame: Frame) -> (ContractResult<Vec<u8>>, Frame) {
        let mut store = Store::new(&self.engine, frame);
        let result = self
            .linker
            .instantiate(&mut store, &self.module)
            .and_then(|instance| instance.get_typed_func::<(), i32>(&mut store, export))
            .and_then(|entry| entry.call(&mut store, ()));
        let result = match result {
            Ok(0) => Ok(store.data().output.clone().unwrap_or_default()),
            Ok(_) => Err(store
                .data()
                .error
                .as_deref()
                .and_then(|bytes| codec::decode(bytes).ok())
                .unwrap_or_else(|| {
                    ContractError::new("trap", "a non-zero return without an error")
                })),
            Err(trap) => Err(ContractError::new("trap", format!("{trap:#}"))),
        };
        (result, store.into_data())
    }
}

impl TestHost {
    /// [`TestHost::call`], through `contract`'s module.
    pub fn call_wasm(
        &mut self,
        contract: &WasmContract,
        method: &str,
        args: &[u8],
    ) -> ContractResult<Vec<u8>> {
        self.call_wasm_input(contract, invocation(method, args))
    }

    /// [`TestHost::call_wasm`] with `input` as the raw bytes the `input` import
    /// returns: for testing how a module handles a malformed invocation.
    pub fn call_wasm_input(
        &mut self,
        contract: &WasmContract,
        input: Vec<u8>,
    ) -> ContractResult<Vec<u8>> {
        let frame = Frame::new(self, self.caller.clone(), input, false);
        let (result, frame) = contract.run("call", frame);
        if result.is_ok() {
            self.storage = frame.storage;
            self.events.extend(frame.events);
        }
        result
    }

    /// [`TestHost::query`], through `contract`'s module.
    pub fn query_wasm(
        &self,
        contract: &WasmContract,
        method: &str,
        args: &[u8],
    ) -> ContractResult<Vec<u8>> {
        self.query_wasm_input(contract, invocation(method, args))
    }

    /// [`TestHost::query_wasm`] with raw `input` bytes.
    pub fn query_wasm_input(
        &self,
        contract: &WasmContract,
        input: Vec<u8>,
    ) -> ContractResult<Vec<u8>> {
        let frame = Frame::new(self, self.reader.clone(), input, true);
        contract.run("query", frame).0
    }
}

fn invocation(method: &str, args: &[u8]) -> Vec<u8> {
    codec::encode(&Invocation {
        method: method.to_string(),
        args: args.to_vec(),
    })
}

/// What one instance sees and leaves behind.
struct Frame {
    storage: Storage,
    caller: Vec<u8>,
    block: Vec<u8>,
    members: BTreeMap<String, Vec<Role>>,
    read_only: bool,
    input: Vec<u8>,
    /// What the last host function that returns data left for `result_read`.
    result: Vec<u8>,
    output: Option<Vec<u8>>,
    error: Option<Vec<u8>>,
    events: Vec<ContractEvent>,
}

impl Frame {
    fn new(host: &TestHost, caller: Caller, input: Vec<u8>, read_only: bool) -> Self {
        Frame {
            storage: host.storage.clone(),
            caller: codec::encode(&caller),
            block: codec::encode::<BlockInfo>(&host.block),
            members: host.members.clone(),
            read_only,
            input,
            result: Vec::new(),
            output: None,
            error: None,
            events: Vec::new(),
        }
    }
}

fn memory(cx: &mut Cx<'_, Frame>) -> wasmtime::Result<Memory> {
    cx.get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::Error::msg("the module exports no memory"))
}

fn read(cx: &mut Cx<'_, Frame>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let mut bytes = vec![0; len as u32 as usize];
    memory(cx)?.read(&*cx, ptr as u32 as usize, &mut bytes)?;
    Ok(bytes)
}

/// Leaves `data` for `result_read` and returns its length, or -1 for none.
fn give(cx: &mut Cx<'_, Frame>, data: Option<Vec<u8>>) -> i32 {
    match data {
        Some(data) => {
            let len = data.len() as i32;
            cx.data_mut().result = data;
            len
        }
        None => -1,
    }
}

/// The prefix and `after` (none when its length is negative) of a `*_next` call.
fn prefix_after(
    cx: &mut Cx<'_, Frame>,
    (prefix_ptr, prefix_len): (i32, i32),
    (after_ptr, after_len): (i32, i32),
) -> wasmtime::Result<(Vec<u8>, Option<Vec<u8>>)> {
    let prefix = read(cx, prefix_ptr, prefix_len)?;
    let after = if after_len < 0 {
        None
    } else {
        Some(read(cx, after_ptr, after_len)?)
    };
    Ok((prefix, after))
}

fn writable(cx: &Cx<'_, Frame>, what: &str) -> wasmtime::Result<()> {
    if cx.data().read_only {
        return Err(wasmtime::Error::msg(format!(
            "read-only: {what} in a query"
        )));
    }
    Ok(())
}

fn linker(engine: &Engine) -> wasmtime::Result<Linker<Frame>> {
    let mut l = Linker::new(engine);
    let m = "trellis_v1";
    l.func_wrap(m, "input", |mut cx: Cx<'_, Frame>| {
        let input = cx.data().input.clone();
        give(&mut cx, Some(input))
    })?;
    l.func_wrap(m, "result_read", |mut cx: Cx<'_, Frame>, ptr: i32| {
        let data = core::mem::take(&mut cx.data_mut().result);
        memory(&mut cx)?.write(&mut cx, ptr as u32 as usize, &data)?;
        Ok(())
    })?;
    l.func_wrap(
        m,
        "storage_get",
        |mut cx: Cx<'_, Frame>, kp: i32, kl: i32| {
            let key = read(&mut cx, kp, kl)?;
            let value = cx.data().storage.state.get(&key).cloned();
            Ok(give(&mut cx, value))
        },
    )?;
    l.func_wrap(
        m,
        "storage_set",
        |mut cx: Cx<'_, Frame>, kp: i32, kl: i32, vp: i32, vl: i32| {
            writable(&cx, "storage_set")?;
            let (key, value) = (read(&mut cx, kp, kl)?, read(&mut cx, vp, vl)?);
            cx.data_mut().storage.state.insert(key, value);
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        "storage_remove",
        |mut cx: Cx<'_, Frame>, kp: i32, kl: i32| {
            writable(&cx, "storage_remove")?;
            let key = read(&mut cx, kp, kl)?;
            cx.data_mut().storage.state.remove(&key);
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        "storage_next",
        |mut cx: Cx<'_, Frame>, pp: i32, pl: i32, ap: i32, al: i32| {
            let (prefix, after) = prefix_after(&mut cx, (pp, pl), (ap, al))?;
            let found = next_in(&cx.data().storage.state, &prefix, after.as_deref());
            Ok(give(&mut cx, found.map(|entry| codec::encode(&entry))))
        },
    )?;
    l.func_wrap(
        m,
        "index_set",
        |mut cx: Cx<'_, Frame>, kp: i32, kl: i32, vp: i32, vl: i32| {
            writable(&cx, "index_set")?;
            let (key, value) = (read(&mut cx, kp, kl)?, read(&mut cx, vp, vl)?);
            cx.data_mut().storage.index.insert(key, value);
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        "index_remove",
        |mut cx: Cx<'_, Frame>, kp: i32, kl: i32| {
            writable(&cx, "index_remove")?;
            let key = read(&mut cx, kp, kl)?;
            cx.data_mut().storage.index.remove(&key);
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        "index_next",
        |mut cx: Cx<'_, Frame>, pp: i32, pl: i32, ap: i32, al: i32| {
            if !cx.data().read_only {
                return Err(wasmtime::Error::msg(INDEX_READ_IN_CALL));
            }
            let (prefix, after) = prefix_after(&mut cx, (pp, pl), (ap, al))?;
            let found = next_in(&cx.data().storage.index, &prefix, after.as_deref());
            Ok(give(&mut cx, found.map(|entry| codec::encode(&entry))))
        },
    )?;
    l.func_wrap(m, "caller", |mut cx: Cx<'_, Frame>| {
        let caller = cx.data().caller.clone();
        give(&mut cx, Some(caller))
    })?;
    l.func_wrap(m, "block", |mut cx: Cx<'_, Frame>| {
        let block = cx.data().block.clone();
        give(&mut cx, Some(block))
    })?;
    l.func_wrap(
        m,
        "member_roles",
        |mut cx: Cx<'_, Frame>, op: i32, ol: i32| {
            let org = String::from_utf8(read(&mut cx, op, ol)?)?;
            let roles = cx.data().members.get(&org).map(codec::encode);
            Ok(give(&mut cx, roles))
        },
    )?;
    l.func_wrap(m, "emit", |mut cx: Cx<'_, Frame>, p: i32, len: i32| {
        writable(&cx, "emit")?;
        let event = codec::decode(&read(&mut cx, p, len)?).map_err(wasmtime::Error::msg)?;
        cx.data_mut().events.push(event);
        Ok(())
    })?;
    l.func_wrap(
        m,
        "set_output",
        |mut cx: Cx<'_, Frame>, p: i32, len: i32| {
            cx.data_mut().output = Some(read(&mut cx, p, len)?);
            Ok(())
        },
    )?;
    l.func_wrap(m, "set_error", |mut cx: Cx<'_, Frame>, p: i32, len: i32| {
        cx.data_mut().error = Some(read(&mut cx, p, len)?);
        Ok(())
    })?;
    l.func_wrap(
        m,
        "abort",
        |mut cx: Cx<'_, Frame>, p: i32, len: i32| -> wasmtime::Result<()> {
            let message = String::from_utf8_lossy(&read(&mut cx, p, len)?).into_owned();
            Err(wasmtime::Error::msg(format!("abort: {message}")))
        },
    )?;
    l.func_wrap(
        m,
        "blake3",
        |mut cx: Cx<'_, Frame>, p: i32, len: i32, out: i32| {
            let hash = blake3::hash(&read(&mut cx, p, len)?);
            memory(&mut cx)?.write(&mut cx, out as u32 as usize, hash.as_bytes())?;
            Ok(())
        },
    )?;
    Ok(l)
}
