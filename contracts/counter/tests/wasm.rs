//! The committed `genesis/contracts/counter.wasm`, run under a minimal
//! wasmtime host of ABI v1: the kit's guest side (imports, result buffer,
//! allocator, panic handler, `export_contract!`) works end to end. The node's
//! own VM is tested in `node/src/vm`; this host only needs to be faithful
//! enough to exercise the guest.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use trellis_contract::testing::caller_from;
use trellis_contract::{BlockInfo, ContractError, ContractEvent, Invocation, Role, codec};
use wasmtime::{Caller, Engine, Linker, Memory, Module, Store};

const WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../genesis/contracts/counter.wasm"
);

#[derive(Default)]
struct State {
    input: Vec<u8>,
    result: Vec<u8>,
    storage: BTreeMap<Vec<u8>, Vec<u8>>,
    members: BTreeMap<String, Vec<Role>>,
    caller: Vec<u8>,
    read_only: bool,
    events: Vec<ContractEvent>,
    output: Option<Vec<u8>>,
    error: Option<Vec<u8>>,
}

type Cx<'a> = Caller<'a, State>;

fn memory(cx: &mut Cx<'_>) -> Memory {
    cx.get_export("memory")
        .and_then(|e| e.into_memory())
        .expect("exports memory")
}

fn read(cx: &mut Cx<'_>, ptr: i32, len: i32) -> Vec<u8> {
    let mem = memory(cx);
    mem.data(&*cx)[ptr as u32 as usize..][..len as usize].to_vec()
}

fn give(cx: &mut Cx<'_>, data: Option<Vec<u8>>) -> i32 {
    match data {
        Some(d) => {
            let len = d.len() as i32;
            cx.data_mut().result = d;
            len
        }
        None => -1,
    }
}

fn writable(cx: &Cx<'_>) -> wasmtime::Result<()> {
    if cx.data().read_only {
        Err(wasmtime::Error::msg("read-only"))
    } else {
        Ok(())
    }
}

fn linker(engine: &Engine) -> Linker<State> {
    let mut l = Linker::new(engine);
    let m = "trellis_v1";
    l.func_wrap(m, "input", |mut cx: Cx<'_>| {
        let input = cx.data().input.clone();
        give(&mut cx, Some(input))
    })
    .unwrap();
    l.func_wrap(m, "result_read", |mut cx: Cx<'_>, ptr: i32| {
        let (mem, data) = (memory(&mut cx), std::mem::take(&mut cx.data_mut().result));
        mem.write(&mut cx, ptr as u32 as usize, &data)
            .map_err(wasmtime::Error::msg)
    })
    .unwrap();
    l.func_wrap(m, "storage_get", |mut cx: Cx<'_>, kp: i32, kl: i32| {
        let key = read(&mut cx, kp, kl);
        let value = cx.data().storage.get(&key).cloned();
        give(&mut cx, value)
    })
    .unwrap();
    l.func_wrap(
        m,
        "storage_set",
        |mut cx: Cx<'_>, kp: i32, kl: i32, vp: i32, vl: i32| {
            writable(&cx)?;
            let (key, value) = (read(&mut cx, kp, kl), read(&mut cx, vp, vl));
            cx.data_mut().storage.insert(key, value);
            Ok(())
        },
    )
    .unwrap();
    l.func_wrap(m, "storage_remove", |mut cx: Cx<'_>, kp: i32, kl: i32| {
        writable(&cx)?;
        let key = read(&mut cx, kp, kl);
        cx.data_mut().storage.remove(&key);
        Ok(())
    })
    .unwrap();
    l.func_wrap(
        m,
        "storage_next",
        |mut cx: Cx<'_>, pp: i32, pl: i32, ap: i32, al: i32| {
            let prefix = read(&mut cx, pp, pl);
            let after = (al != -1).then(|| read(&mut cx, ap, al));
            let found = cx
                .data()
                .storage
                .iter()
                .find(|(k, _)| k.starts_with(&prefix) && after.as_ref().is_none_or(|a| *k > a))
                .map(|(k, v)| codec::encode(&(k.clone(), v.clone())));
            give(&mut cx, found)
        },
    )
    .unwrap();
    l.func_wrap(m, "caller", |mut cx: Cx<'_>| {
        let caller = cx.data().caller.clone();
        give(&mut cx, Some(caller))
    })
    .unwrap();
    l.func_wrap(m, "block", |mut cx: Cx<'_>| {
        let block = BlockInfo {
            chain_id: "wasm-test".into(),
            height: 1,
            timestamp_ms: 0,
        };
        give(&mut cx, Some(codec::encode(&block)))
    })
    .unwrap();
    l.func_wrap(m, "member_roles", |mut cx: Cx<'_>, op: i32, ol: i32| {
        let org = String::from_utf8(read(&mut cx, op, ol)).unwrap();
        let roles = cx.data().members.get(&org).map(codec::encode);
        give(&mut cx, roles)
    })
    .unwrap();
    l.func_wrap(m, "emit", |mut cx: Cx<'_>, p: i32, len: i32| {
        writable(&cx)?;
        let event = codec::decode(&read(&mut cx, p, len)).map_err(wasmtime::Error::msg)?;
        cx.data_mut().events.push(event);
        Ok(())
    })
    .unwrap();
    l.func_wrap(m, "set_output", |mut cx: Cx<'_>, p: i32, len: i32| {
        cx.data_mut().output = Some(read(&mut cx, p, len));
    })
    .unwrap();
    l.func_wrap(m, "set_error", |mut cx: Cx<'_>, p: i32, len: i32| {
        cx.data_mut().error = Some(read(&mut cx, p, len));
    })
    .unwrap();
    l.func_wrap(
        m,
        "abort",
        |mut cx: Cx<'_>, p: i32, len: i32| -> wasmtime::Result<()> {
            let message = String::from_utf8(read(&mut cx, p, len)).map_err(wasmtime::Error::msg)?;
            Err(wasmtime::Error::msg(format!("abort: {message}")))
        },
    )
    .unwrap();
    l.func_wrap(
        m,
        "blake3",
        |_: Cx<'_>, _: i32, _: i32, _: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg("the counter does not hash"))
        },
    )
    .unwrap();
    l
}

/// What one export call did.
#[derive(Debug)]
enum Outcome {
    Ok(Vec<u8>),
    Err(ContractError),
    Trap(String),
}

struct Chain {
    engine: Engine,
    module: Module,
    linker: Linker<State>,
    storage: BTreeMap<Vec<u8>, Vec<u8>>,
    members: BTreeMap<String, Vec<Role>>,
    events: Vec<ContractEvent>,
}

impl Chain {
    fn new() -> Self {
        // Compiling is the slow part (wasmtime is unoptimised in test builds): once per process.
        static COMPILED: OnceLock<(Engine, Module)> = OnceLock::new();
        let (engine, module) = COMPILED.get_or_init(|| {
            let engine = Engine::default();
            let bytes = std::fs::read(WASM)
                .expect("genesis/contracts/counter.wasm exists (contracts/build.sh)");
            let module = Module::new(&engine, bytes).expect("counter.wasm compiles");
            (engine, module)
        });
        let (engine, module) = (engine.clone(), module.clone());
        let linker = linker(&engine);
        let mut members = BTreeMap::new();
        members.insert("supplier-b".to_string(), vec![Role::Supplier]);
        Chain {
            engine,
            module,
            linker,
            storage: BTreeMap::new(),
            members,
            events: vec![],
        }
    }

    /// Runs an export on a fresh instance; commits writes and events only on success.
    fn run(&mut self, export: &str, input: Vec<u8>) -> Outcome {
        let read_only = export == "query";
        let caller = if read_only {
            caller_from("", &[])
        } else {
            caller_from("supplier-b", &[Role::Supplier])
        };
        let state = State {
            input,
            storage: self.storage.clone(),
            members: self.members.clone(),
            caller: codec::encode(&caller),
            read_only,
            ..State::default()
        };
        let mut store = Store::new(&self.engine, state);
        let instance = self
            .linker
            .instantiate(&mut store, &self.module)
            .expect("instantiates");
        let entry = instance
            .get_typed_func::<(), i32>(&mut store, export)
            .expect("export is () -> i32");
        let outcome = match entry.call(&mut store, ()) {
            Ok(0) => Outcome::Ok(store.data().output.clone().unwrap_or_default()),
            Ok(_) => Outcome::Err(
                codec::decode(
                    store
                        .data()
                        .error
                        .as_ref()
                        .expect("set_error before non-zero"),
                )
                .unwrap(),
            ),
            Err(trap) => Outcome::Trap(format!("{trap:#}")),
        };
        if matches!(outcome, Outcome::Ok(_)) && !read_only {
            let state = store.into_data();
            self.storage = state.storage;
            self.events.extend(state.events);
        }
        outcome
    }

    fn invoke(&mut self, export: &str, method: &str, args: Vec<u8>) -> Outcome {
        self.run(
            export,
            codec::encode(&Invocation {
                method: method.into(),
                args,
            }),
        )
    }
}

fn expect_ok(outcome: Outcome) -> Vec<u8> {
    match outcome {
        Outcome::Ok(out) => out,
        other => panic!("expected success, got {other:?}"),
    }
}

fn expect_err(outcome: Outcome) -> ContractError {
    match outcome {
        Outcome::Err(e) => e,
        other => panic!("expected a contract error, got {other:?}"),
    }
}

#[test]
fn increment_and_get_run_in_wasm() {
    let mut chain = Chain::new();
    let out = expect_ok(chain.invoke("call", "increment", codec::encode(&5u64)));
    assert_eq!(codec::decode::<u64>(&out).unwrap(), 5);
    expect_ok(chain.invoke("call", "increment", codec::encode(&2u64)));
    let got = expect_ok(chain.invoke("query", "get", codec::encode(&())));
    assert_eq!(codec::decode::<u64>(&got).unwrap(), 7);
    assert_eq!(chain.events.len(), 2);
    assert_eq!(chain.events[1].attributes[2], ("count".into(), "7".into()));
}

#[test]
fn a_malformed_invocation_is_bad_invocation() {
    let mut chain = Chain::new();
    assert_eq!(
        expect_err(chain.run("call", vec![1, 0xff])).code,
        "bad_invocation"
    );
    assert_eq!(
        expect_err(chain.run("query", vec![])).code,
        "bad_invocation"
    );
}

#[test]
fn contract_errors_come_back_through_set_error() {
    let mut chain = Chain::new();
    assert_eq!(
        expect_err(chain.invoke("call", "nope", vec![])).code,
        "unknown_method"
    );
    assert_eq!(
        expect_err(chain.invoke("call", "increment", vec![1, 0xff])).code,
        "bad_args"
    );
    assert_eq!(
        expect_err(chain.invoke("call", "increment", codec::encode(&0u64))).code,
        "zero_increment"
    );
    assert!(chain.storage.is_empty() && chain.events.is_empty());
}

#[test]
fn a_panic_aborts_with_its_message() {
    let mut chain = Chain::new();
    chain.storage.insert(b"count".to_vec(), vec![0xff]);
    match chain.invoke("call", "increment", codec::encode(&1u64)) {
        Outcome::Trap(message) => {
            assert!(
                message.contains("abort: stored record does not decode"),
                "{message}"
            )
        }
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn large_inputs_grow_memory_through_the_allocator() {
    let mut chain = Chain::new();
    // 4 MiB of arguments: several times the module's initial memory.
    let err = expect_err(chain.invoke("call", "increment", vec![7; 4 << 20]));
    assert_eq!(err.code, "bad_args");
}
