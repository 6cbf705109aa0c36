//! The committed `genesis/contracts/counter.wasm`, run through wasmtime on
//! the kit's test host (`trellis_contract::testing::WasmContract`): the kit's
//! guest side (imports, result buffer, allocator, panic handler,
//! `export_contract!`) works end to end. The node's own VM is tested in
//! `node/src/vm`.

use std::sync::OnceLock;

use trellis_contract::testing::{TestHost, WasmContract};
use trellis_contract::{ContractError, ContractResult, Role, codec};

const WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../genesis/contracts/counter.wasm"
);

struct Chain {
    host: TestHost,
}

impl Chain {
    fn new() -> Self {
        let mut host = TestHost::new();
        host.add_member("supplier-b", &[Role::Supplier])
            .act_as("supplier-b");
        Chain { host }
    }

    fn module() -> &'static WasmContract {
        // Compiling is the slow part: once per process.
        static MODULE: OnceLock<WasmContract> = OnceLock::new();
        MODULE.get_or_init(|| {
            let bytes = std::fs::read(WASM)
                .expect("genesis/contracts/counter.wasm exists (contracts/build.sh)");
            WasmContract::new(&bytes).expect("counter.wasm compiles")
        })
    }

    /// Runs an export with raw input bytes.
    fn run(&mut self, export: &str, input: Vec<u8>) -> ContractResult<Vec<u8>> {
        match export {
            "query" => self.host.query_wasm_input(Self::module(), input),
            _ => self.host.call_wasm_input(Self::module(), input),
        }
    }

    fn invoke(&mut self, export: &str, method: &str, args: Vec<u8>) -> ContractResult<Vec<u8>> {
        match export {
            "query" => self.host.query_wasm(Self::module(), method, &args),
            _ => self.host.call_wasm(Self::module(), method, &args),
        }
    }
}

fn expect_ok(outcome: ContractResult<Vec<u8>>) -> Vec<u8> {
    outcome.unwrap_or_else(|e| panic!("expected success, got {e:?}"))
}

fn expect_err(outcome: ContractResult<Vec<u8>>) -> ContractError {
    match outcome {
        Err(e) if e.code != "trap" => e,
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
    assert_eq!(chain.host.events().len(), 2);
    assert_eq!(
        chain.host.events()[1].attributes[2],
        ("count".into(), "7".into())
    );
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
    assert!(chain.host.storage().is_empty() && chain.host.events().is_empty());
}

#[test]
fn a_panic_aborts_with_its_message() {
    let mut chain = Chain::new();
    chain
        .host
        .exec(|h| {
            h.set(b"count", &[0xff]);
            Ok(())
        })
        .unwrap();
    match chain.invoke("call", "increment", codec::encode(&1u64)) {
        Err(e) if e.code == "trap" => assert!(
            e.message.contains("abort: stored record does not decode"),
            "{}",
            e.message
        ),
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
