//! The runtime against hand-written WAT modules, adversarial ones included,
//! over real sled storage. Every module is compiled from text here; the node
//! itself accepts only binary modules.

use super::host::{FUNCTIONS, MAX_MESSAGE_BYTES};
use super::*;
use crate::execution::keys;
use crate::state::Writes;
use crate::storage::Storage;
use crate::storage::tests::{commit, stage};
use tempfile::TempDir;
use trellis_types::{EventSource, encode};

const LIMITS: Limits = Limits {
    fuel: 1_000_000,
    memory_bytes: 1024 * 1024,
};

/// The imports every test module may use, with the ABI's signatures.
const IMPORTS: &str = r#"
  (import "trellis_v1" "input" (func $input (result i32)))
  (import "trellis_v1" "result_read" (func $result_read (param i32)))
  (import "trellis_v1" "storage_get" (func $storage_get (param i32 i32) (result i32)))
  (import "trellis_v1" "storage_set" (func $storage_set (param i32 i32 i32 i32)))
  (import "trellis_v1" "storage_remove" (func $storage_remove (param i32 i32)))
  (import "trellis_v1" "storage_next" (func $storage_next (param i32 i32 i32 i32) (result i32)))
  (import "trellis_v1" "caller" (func $caller (result i32)))
  (import "trellis_v1" "block" (func $block (result i32)))
  (import "trellis_v1" "member_roles" (func $member_roles (param i32 i32) (result i32)))
  (import "trellis_v1" "emit" (func $emit (param i32 i32)))
  (import "trellis_v1" "set_output" (func $set_output (param i32 i32)))
  (import "trellis_v1" "set_error" (func $set_error (param i32 i32)))
  (import "trellis_v1" "abort" (func $abort (param i32 i32)))
  (import "trellis_v1" "blake3" (func $blake3 (param i32 i32 i32)))
  (import "trellis_v1" "index_set" (func $index_set (param i32 i32 i32 i32)))
  (import "trellis_v1" "index_remove" (func $index_remove (param i32 i32)))
  (import "trellis_v1" "index_next" (func $index_next (param i32 i32 i32 i32) (result i32)))
"#;

/// A module with the ABI imports, one page of memory and the given body,
/// which must define `$call` and `$query` (both `(result i32)`).
fn module(body: &str) -> Vec<u8> {
    let text = format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  {body}
  (export "call" (func $call))
  (export "query" (func $query)))"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("test module does not parse: {e}\n{text}"))
}

/// `call` runs `call_body`, `query` returns 0.
pub(crate) fn call_module(call_body: &str) -> Vec<u8> {
    module(&format!(
        "(func $call (result i32) {call_body})\n(func $query (result i32) (i32.const 0))"
    ))
}

/// Bytes as a WAT data string.
fn data(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

struct Fixture {
    _dir: TempDir,
    storage: Storage,
    vm: Vm,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = Storage::open(dir.path()).expect("open storage");
        Fixture {
            _dir: dir,
            storage,
            vm: Vm::new(),
        }
    }

    fn view(&self) -> StateView {
        StateView::new(self.storage.clone(), Writes::new())
    }

    fn env(&self) -> CallEnv {
        CallEnv {
            contract: Address([7; 32]),
            caller: Caller {
                account: [1; 32],
                org: "core-acme".into(),
                roles: vec![Role::CoreEnterprise],
            },
            block: BlockInfo {
                chain_id: "test".into(),
                height: 5,
                timestamp_ms: 1_000,
            },
            limits: LIMITS,
        }
    }

    /// Validates `code`, then runs `entry` with `invocation` over `view`.
    fn run_in(
        &self,
        code: &[u8],
        entry: Entry,
        invocation: &Invocation,
        view: &mut StateView,
    ) -> Outcome {
        let hash = self
            .vm
            .validate(code, LIMITS)
            .unwrap_or_else(|e| panic!("the test module should be valid: {e}"));
        self.vm
            .run(&hash, entry, invocation, &self.env(), view)
            .expect("no storage failure")
    }

    fn call(&self, code: &[u8]) -> Outcome {
        self.run_in(code, Entry::Call, &invocation(), &mut self.view())
    }

    fn query(&self, code: &[u8]) -> Outcome {
        self.run_in(code, Entry::Query, &invocation(), &mut self.view())
    }
}

fn invocation() -> Invocation {
    Invocation {
        method: "go".into(),
        args: vec![1, 2, 3],
    }
}

#[track_caller]
fn assert_fails(outcome: &Outcome, code: &str, message_part: &str) {
    match &outcome.result {
        Err(e) => {
            assert_eq!(e.code, code, "{e:?}");
            assert!(
                e.message.contains(message_part),
                "message {:?} lacks {message_part:?}",
                e.message
            );
        }
        Ok(out) => panic!("expected {code}, the call succeeded with {out:?}"),
    }
    assert!(outcome.writes.is_empty(), "a failed call kept writes");
    assert!(outcome.events.is_empty(), "a failed call kept events");
}

fn output(outcome: &Outcome) -> &[u8] {
    match &outcome.result {
        Ok(out) => out,
        Err(e) => panic!("the call failed: {e:?}"),
    }
}

// ---------------------------------------------------------------------------
// Deploy-time checks

#[test]
fn a_module_importing_every_host_function_with_its_abi_signature_is_valid() {
    let imports: String = FUNCTIONS
        .iter()
        .map(|(name, params, returns)| {
            let params = " i32".repeat(*params);
            let result = if *returns { "(result i32)" } else { "" };
            format!("(import \"trellis_v1\" \"{name}\" (func (param{params}) {result}))\n")
        })
        .collect();
    let code = wat::parse_str(format!(
        r#"(module {imports}
          (memory (export "memory") 1)
          (func (export "call") (result i32) (i32.const 0))
          (func (export "query") (result i32) (i32.const 0)))"#
    ))
    .unwrap();
    Vm::new().validate(&code, LIMITS).unwrap();
}

#[track_caller]
fn assert_invalid(code: &[u8], reason_part: &str) {
    match Vm::new().validate(code, LIMITS) {
        Err(InvalidModule(reason)) => assert!(
            reason.contains(reason_part),
            "reason {reason:?} lacks {reason_part:?}"
        ),
        Ok(_) => panic!("the module was accepted"),
    }
}

#[test]
fn malformed_and_text_modules_are_invalid() {
    assert_invalid(b"\0asm\x01\0\0\0garbage", "not a valid module");
    assert_invalid(b"", "not a valid module");
    // Text is for tests: the node accepts only the binary format.
    assert_invalid(
        br#"(module (memory (export "memory") 1))"#,
        "not a valid module",
    );
}

#[test]
fn modules_without_the_required_exports_are_invalid() {
    let no_call = wat::parse_str(
        r#"(module (memory (export "memory") 1)
           (func (export "query") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    assert_invalid(&no_call, "`call: () -> i32`");
    let no_memory = wat::parse_str(
        r#"(module (memory 1)
           (func (export "call") (result i32) (i32.const 0))
           (func (export "query") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    assert_invalid(&no_memory, "memory");
    let wrong_type = wat::parse_str(
        r#"(module (memory (export "memory") 1)
           (func (export "call") (param i32) (result i32) (i32.const 0))
           (func (export "query") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    assert_invalid(&wrong_type, "`call: () -> i32`");
}

#[test]
fn modules_importing_anything_but_the_host_api_are_invalid() {
    let env_foo = wat::parse_str(
        r#"(module (import "env" "foo" (func))
           (memory (export "memory") 1)
           (func (export "call") (result i32) (i32.const 0))
           (func (export "query") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    assert_invalid(&env_foo, "`env.foo`");
    let unknown = wat::parse_str(
        r#"(module (import "trellis_v1" "clock" (func (result i64)))
           (memory (export "memory") 1)
           (func (export "call") (result i32) (i32.const 0))
           (func (export "query") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    assert_invalid(&unknown, "does not have");
    let bad_signature = wat::parse_str(
        r#"(module (import "trellis_v1" "storage_get" (func (param i32) (result i32)))
           (memory (export "memory") 1)
           (func (export "call") (result i32) (i32.const 0))
           (func (export "query") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    assert_invalid(&bad_signature, "(i32, i32) -> i32");
    let imported_memory = wat::parse_str(
        r#"(module (import "trellis_v1" "memory" (memory 1))
           (func (export "call") (result i32) (i32.const 0))
           (func (export "query") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    assert_invalid(&imported_memory, "trellis_v1.memory");
}

#[test]
fn modules_using_disabled_proposals_are_invalid() {
    let simd = wat::parse_str(
        r#"(module (memory (export "memory") 1)
           (func (export "call") (result i32)
             (drop (i32x4.splat (i32.const 1))) (i32.const 0))
           (func (export "query") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    assert_invalid(&simd, "not a valid module");
    let shared = wat::parse_str(
        r#"(module (memory (export "memory") 1 1 shared)
           (func (export "call") (result i32) (i32.const 0))
           (func (export "query") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    assert_invalid(&shared, "not a valid module");
}

#[test]
fn a_module_starting_with_more_memory_than_a_call_may_use_is_invalid() {
    let pages = LIMITS.memory_bytes / host::WASM_PAGE_BYTES + 1;
    let code = wat::parse_str(format!(
        r#"(module (memory (export "memory") {pages})
           (func (export "call") (result i32) (i32.const 0))
           (func (export "query") (result i32) (i32.const 0)))"#
    ))
    .unwrap();
    assert_invalid(&code, "bytes of memory");
}

// ---------------------------------------------------------------------------
// Limits

#[test]
fn an_infinite_loop_runs_out_of_fuel_at_the_same_point_every_time() {
    let code = call_module("(loop $l (br $l)) (i32.const 0)");
    let first = Fixture::new().call(&code);
    assert_fails(&first, codes::OUT_OF_FUEL, "fuel");
    assert_eq!(first.fuel_used, LIMITS.fuel);
    let second = Fixture::new().call(&code);
    assert_eq!(second.result, first.result);
    assert_eq!(second.fuel_used, first.fuel_used);
}

#[test]
fn host_calls_are_charged_and_can_exhaust_fuel() {
    // Writes in a loop: each storage_set costs far more than the loop's instructions.
    let code = call_module(
        r#"(loop $l
             (call $storage_set (i32.const 0) (i32.const 4) (i32.const 0) (i32.const 100))
             (br $l))
           (i32.const 0)"#,
    );
    let outcome = Fixture::new().call(&code);
    assert_fails(&outcome, codes::OUT_OF_FUEL, "fuel");
    assert_eq!(outcome.fuel_used, LIMITS.fuel);

    let one_write = call_module(
        r#"(call $storage_set (i32.const 0) (i32.const 4) (i32.const 0) (i32.const 100))
           (i32.const 0)"#,
    );
    let outcome = Fixture::new().call(&one_write);
    let host_cost = host::fuel::BASE
        + host::fuel::STORAGE_WRITE
        + host::fuel::STORAGE_WRITE_PER_BYTE * 104
        + host::fuel::PER_BYTE * 104;
    assert!(
        outcome.fuel_used >= host_cost && outcome.fuel_used < host_cost + 50,
        "fuel used {} for one write costing {host_cost}",
        outcome.fuel_used
    );
}

#[test]
fn a_completed_call_reports_the_same_fuel_every_time() {
    let code = call_module(
        r#"(local $i i32)
           (loop $l
             (local.set $i (i32.add (local.get $i) (i32.const 1)))
             (br_if $l (i32.lt_u (local.get $i) (i32.const 1000))))
           (i32.const 0)"#,
    );
    let a = Fixture::new().call(&code);
    let b = Fixture::new().call(&code);
    output(&a);
    assert!(a.fuel_used > 1000);
    assert_eq!(a.fuel_used, b.fuel_used);
}

#[test]
fn growing_memory_past_the_limit_is_out_of_memory() {
    let code = call_module(r#"(loop $l (drop (memory.grow (i32.const 1))) (br $l)) (i32.const 0)"#);
    let outcome = Fixture::new().call(&code);
    assert_fails(&outcome, codes::OUT_OF_MEMORY, "bytes a call may use");
    assert!(outcome.fuel_used < LIMITS.fuel);

    // Growing within the limit works and reports the old size.
    let within = call_module(
        r#"(i32.store (i32.const 0) (memory.grow (i32.const 3)))
           (call $set_output (i32.const 0) (i32.const 4))
           (i32.const 0)"#,
    );
    assert_eq!(output(&Fixture::new().call(&within)), 1u32.to_le_bytes());
}

/// A module whose `call` recurses without end through `$deep`, whose frame
/// has `locals` extra i64 locals and pushes `pushes` values before recursing.
pub(crate) fn recursion_module(locals: usize, pushes: usize) -> Vec<u8> {
    let pushes_code = "(i64.const 1)".repeat(pushes);
    let drops = "(drop)".repeat(pushes);
    module(&format!(
        r#"(func $deep (param i64) (result i64) {decl}
             {pushes_code}
             (i64.add (call $deep (i64.add (local.get 0) (i64.const 1))) (i64.const 1))
             {drops})
           (func $call (result i32) (drop (call $deep (i64.const 0))) (i32.const 0))
           (func $query (result i32) (i32.const 0))"#,
        decl = if locals == 0 {
            String::new()
        } else {
            format!("(local {})", "i64 ".repeat(locals))
        },
    ))
}

/// Endless recursion ends in `stack_exhausted` at the deterministic frame
/// budget, never at the native stack (whose depth depends on the machine
/// code), whatever the frames look like; and identically every time.
#[test]
fn deep_recursion_stops_at_the_frame_budget_whatever_the_frame() {
    let fixture = Fixture::new();
    let env = CallEnv {
        limits: Limits {
            fuel: 100_000_000,
            ..LIMITS
        },
        ..fixture.env()
    };
    for (locals, pushes) in [(0, 0), (16, 0), (400, 0), (0, 300), (3_000, 0), (20_000, 0)] {
        let code = recursion_module(locals, pushes);
        let hash = fixture.vm.validate(&code, LIMITS).unwrap();
        let run = || {
            fixture
                .vm
                .run(&hash, Entry::Call, &invocation(), &env, &mut fixture.view())
                .unwrap()
        };
        let first = run();
        assert_fails(&first, codes::STACK_EXHAUSTED, "frame units");
        let second = run();
        assert_eq!(
            second.result, first.result,
            "{locals} locals, {pushes} pushes"
        );
        assert_eq!(second.fuel_used, first.fuel_used);
    }
}

#[test]
fn recursion_within_the_budget_runs_through_calls_and_tables() {
    // Depth 500 of a small frame, half of it through call_indirect.
    let code = module(
        r#"(type $t (func (param i32) (result i32)))
           (table 1 funcref)
           (elem (i32.const 0) $down)
           (func $down (param i32) (result i32)
             (if (result i32) (i32.eqz (local.get 0))
               (then (i32.const 0))
               (else (i32.add (i32.const 1)
                 (if (result i32) (i32.and (local.get 0) (i32.const 1))
                   (then (call $down (i32.sub (local.get 0) (i32.const 1))))
                   (else (call_indirect (type $t) (i32.sub (local.get 0) (i32.const 1)) (i32.const 0))))))))
           (func $call (result i32)
             (i32.store (i32.const 0) (call $down (i32.const 500)))
             (call $set_output (i32.const 0) (i32.const 4))
             (i32.const 0))
           (func $query (result i32) (i32.const 0))"#,
    );
    assert_eq!(output(&Fixture::new().call(&code)), 500u32.to_le_bytes());
}

#[test]
fn a_module_exporting_the_frame_counter_name_is_refused() {
    let code = module(
        r#"(global $g (export "__trellis_frames") (mut i32) (i32.const 0))
           (func $call (result i32) (i32.const 0))
           (func $query (result i32) (i32.const 0))"#,
    );
    let err = Vm::new().validate(&code, LIMITS).unwrap_err();
    assert!(err.0.contains("reserves"), "{err}");
}

// ---------------------------------------------------------------------------
// Guest pointers

#[test]
fn pointers_outside_memory_trap_instead_of_panicking() {
    for (body, part) in [
        (
            "(drop (call $storage_get (i32.const 65530) (i32.const 100)))",
            "outside the contract's 65536-byte memory",
        ),
        (
            "(drop (call $storage_get (i32.const -1) (i32.const 2)))",
            "outside",
        ),
        (
            "(drop (call $storage_get (i32.const 0) (i32.const -5)))",
            "negative length",
        ),
        (
            "(call $set_output (i32.const 0) (i32.const 2147483647))",
            "",
        ),
        (
            "(drop (call $input)) (call $result_read (i32.const 65535))",
            "outside",
        ),
        (
            "(call $blake3 (i32.const 0) (i32.const 4) (i32.const 65520))",
            "outside",
        ),
        (
            "(drop (call $storage_next (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -2)))",
            "negative length",
        ),
    ] {
        let outcome = Fixture::new().call(&call_module(&format!("{body} (i32.const 0)")));
        match &outcome.result {
            Err(e) => {
                assert!(
                    e.code == codes::TRAP || e.code == codes::OUT_OF_FUEL,
                    "{body}: {e:?}"
                );
                assert!(e.message.contains(part), "{body}: {e:?}");
            }
            Ok(_) => panic!("{body} succeeded"),
        }
    }
}

#[test]
fn a_wasm_out_of_bounds_access_traps() {
    let code = call_module("(drop (i32.load (i32.const 70000))) (i32.const 0)");
    assert_fails(
        &Fixture::new().call(&code),
        codes::TRAP,
        "out of bounds memory access",
    );
}

// ---------------------------------------------------------------------------
// Isolation between calls

#[test]
fn each_call_starts_from_the_modules_own_memory_whatever_the_last_one_wrote() {
    // Outputs the data segment's bytes, a byte past it, and the memory's size
    // in pages; then overwrites both bytes, grows the memory and writes into
    // the new page. Pooled slots are reused, so the second call runs in the
    // memory the first one dirtied.
    let code = module(
        r#"(func $call (result i32)
             (i32.store8 (i32.const 200) (i32.load8_u (i32.const 100)))
             (i32.store8 (i32.const 201) (i32.load8_u (i32.const 101)))
             (i32.store8 (i32.const 202) (i32.load8_u (i32.const 102)))
             (i32.store8 (i32.const 203) (i32.load8_u (i32.const 60000)))
             (i32.store8 (i32.const 204) (memory.size))
             (i32.store8 (i32.const 100) (i32.const 88))
             (i32.store8 (i32.const 60000) (i32.const 255))
             (drop (memory.grow (i32.const 1)))
             (i32.store8 (i32.const 65546) (i32.const 238))
             (call $set_output (i32.const 200) (i32.const 5))
             (i32.const 0))
           (func $query (result i32) (i32.const 0))
           (data (i32.const 100) "abc")"#,
    );
    let fixture = Fixture::new();
    for call in 0..3 {
        assert_eq!(output(&fixture.call(&code)), b"abc\x00\x01", "call {call}");
    }
}

// ---------------------------------------------------------------------------
// Determinism of floats

#[test]
fn nan_results_are_canonical_and_the_same_on_fresh_vms() {
    let code = call_module(
        r#"(i32.store (i32.const 0)
             (i32.reinterpret_f32 (f32.div (f32.const 0) (f32.const 0))))
           (i32.store (i32.const 4)
             (i32.reinterpret_f32 (f32.add (f32.const nan:0x200001) (f32.const 1))))
           (i64.store (i32.const 8)
             (i64.reinterpret_f64 (f64.sqrt (f64.const -1))))
           (i64.store (i32.const 16)
             (i64.reinterpret_f64 (f64.mul (f64.const -nan:0x4000000000001) (f64.const 2))))
           (call $set_output (i32.const 0) (i32.const 24))
           (i32.const 0)"#,
    );
    let a = Fixture::new().call(&code);
    let b = Fixture::new().call(&code);
    assert_eq!(output(&a), output(&b));
    let out = output(&a);
    let f32_at = |i: usize| u32::from_le_bytes(out[i..i + 4].try_into().unwrap());
    let f64_at = |i: usize| u64::from_le_bytes(out[i..i + 8].try_into().unwrap());
    assert_eq!(f32_at(0), 0x7fc0_0000);
    assert_eq!(f32_at(4), 0x7fc0_0000);
    assert_eq!(f64_at(8), 0x7ff8_0000_0000_0000);
    assert_eq!(f64_at(16), 0x7ff8_0000_0000_0000);
}

// ---------------------------------------------------------------------------
// The host API

#[test]
fn input_caller_and_block_arrive_canonically_encoded() {
    let echo = |import: &str| {
        call_module(&format!(
            r#"(local $n i32)
               (local.set $n (call ${import}))
               (call $result_read (i32.const 0))
               (call $set_output (i32.const 0) (local.get $n))
               (i32.const 0)"#
        ))
    };
    let fixture = Fixture::new();
    let env = fixture.env();
    assert_eq!(output(&fixture.call(&echo("input"))), encode(&invocation()));
    assert_eq!(output(&fixture.call(&echo("caller"))), encode(&env.caller));
    assert_eq!(output(&fixture.call(&echo("block"))), encode(&env.block));
}

#[test]
fn storage_reads_see_committed_state_the_block_so_far_and_the_calls_own_writes() {
    let fixture = Fixture::new();
    let prefix = keys::contract_data(&fixture.env().contract);
    let full = |k: &str| [prefix.as_slice(), k.as_bytes()].concat();
    let mut committed = Writes::new();
    committed.insert(full("a"), Some(b"committed".to_vec()));
    committed.insert(full("b"), Some(b"committed".to_vec()));
    // Another contract's key with the same name is invisible.
    committed.insert(
        [keys::contract_data(&Address([8; 32])), b"c".to_vec()].concat(),
        Some(b"other".to_vec()),
    );
    commit(&fixture.storage, vec![], committed);
    let mut pending = Writes::new();
    pending.insert(full("b"), Some(b"pending".to_vec()));
    let mut view = StateView::new(fixture.storage.clone(), pending);

    // Outputs get(a) ++ get(b) ++ [get(c) == -1], after writing a.
    let code = call_module(
        r#"(local $n i32) (local $at i32)
           (call $storage_set (i32.const 0) (i32.const 1) (i32.const 8) (i32.const 3))
           (local.set $at (i32.const 100))
           (local.set $n (call $storage_get (i32.const 0) (i32.const 1)))
           (call $result_read (local.get $at))
           (local.set $at (i32.add (local.get $at) (local.get $n)))
           (local.set $n (call $storage_get (i32.const 1) (i32.const 1)))
           (call $result_read (local.get $at))
           (local.set $at (i32.add (local.get $at) (local.get $n)))
           (i32.store8 (local.get $at)
             (i32.eq (call $storage_get (i32.const 2) (i32.const 1)) (i32.const -1)))
           (call $set_output (i32.const 100) (i32.sub (i32.add (local.get $at) (i32.const 1)) (i32.const 100)))
           (i32.const 0))
         (data (i32.const 0) "abc")
         (data (i32.const 8) "own""#,
    );
    let outcome = fixture.run_in(&code, Entry::Call, &invocation(), &mut view);
    assert_eq!(output(&outcome), b"ownpending\x01");
    assert_eq!(
        outcome.writes,
        Writes::from([(full("a"), Some(b"own".to_vec()))])
    );
    // The view comes back as it went in: applying the writes is the caller's job.
    assert_eq!(view.pending().len(), 1);
}

/// A module whose `call` and `query` scan everything under `prefix` with
/// `next` (`storage_next` or `index_next`) and output the entries they got,
/// each as the encoded `(key, value)` pair.
fn scanner(next: &str, prefix: &[u8]) -> Vec<u8> {
    let scan = format!(
        r#"(local $n i32) (local $out i32) (local $after i32) (local $after_len i32)
           (local.set $out (i32.const 4096))
           (local.set $after_len (i32.const -1))
           (block $done
             (loop $next
               (local.set $n (call ${next} (i32.const 0) (i32.const {plen})
                                           (local.get $after) (local.get $after_len)))
               (br_if $done (i32.eq (local.get $n) (i32.const -1)))
               (call $result_read (local.get $out))
               ;; The entry is: version byte, key length (one byte here), key, value.
               (local.set $after (i32.add (local.get $out) (i32.const 2)))
               (local.set $after_len (i32.load8_u (i32.add (local.get $out) (i32.const 1))))
               (local.set $out (i32.add (local.get $out) (local.get $n)))
               (br $next)))
           (call $set_output (i32.const 4096) (i32.sub (local.get $out) (i32.const 4096)))
           (i32.const 0)"#,
        plen = prefix.len(),
    );
    module(&format!(
        "(func $call (result i32) {scan})\n(func $query (result i32) {scan})\n(data (i32.const 0) \"{}\")",
        data(prefix)
    ))
}

/// Encoded `(key, value)` entries, as [`scanner`] outputs them.
fn entries(pairs: &[(&str, &str)]) -> Vec<u8> {
    pairs
        .iter()
        .flat_map(|(k, v)| encode(&(k.as_bytes().to_vec(), v.as_bytes().to_vec())))
        .collect()
}

#[test]
fn storage_next_merges_layers_in_key_order_skipping_deletions() {
    let fixture = Fixture::new();
    let prefix = keys::contract_data(&fixture.env().contract);
    let full = |k: &str| [prefix.as_slice(), k.as_bytes()].concat();
    let mut committed = Writes::new();
    for k in ["p1", "p3", "p5", "p7", "q0", "o9"] {
        committed.insert(full(k), Some(format!("c-{k}").into_bytes()));
    }
    commit(&fixture.storage, vec![], committed);
    let mut pending = Writes::new();
    pending.insert(full("p2"), Some(b"b-p2".to_vec()));
    pending.insert(full("p3"), None);
    pending.insert(full("p5"), Some(b"b-p5".to_vec()));
    let mut view = StateView::new(fixture.storage.clone(), pending);

    let scan = scanner("storage_next", b"p");
    let outcome = fixture.run_in(&scan, Entry::Call, &invocation(), &mut view);
    let expected = entries(&[
        ("p1", "c-p1"),
        ("p2", "b-p2"),
        ("p5", "b-p5"),
        ("p7", "c-p7"),
    ]);
    assert_eq!(output(&outcome), expected.as_slice());
}

#[test]
fn calls_write_the_query_index_apart_from_state_and_only_queries_read_it() {
    let fixture = Fixture::new();
    let contract = fixture.env().contract;
    let in_state = |k: &str| [keys::contract_data(&contract), k.as_bytes().to_vec()].concat();
    let in_index = |k: &str| [keys::contract_index(&contract), k.as_bytes().to_vec()].concat();
    let mut committed = Writes::new();
    committed.insert(in_index("h0"), Some(b"old".to_vec()));
    committed.insert(in_index("h2"), Some(b"kept".to_vec()));
    // A state key of the same name is not in the index, nor another contract's index.
    committed.insert(in_state("h1"), Some(b"state".to_vec()));
    committed.insert(
        [keys::contract_index(&Address([8; 32])), b"h3".to_vec()].concat(),
        Some(b"other".to_vec()),
    );
    commit(&fixture.storage, vec![], committed);

    // A call sets h1 and removes h0, in the index only.
    let code = call_module(
        r#"(call $index_set (i32.const 0) (i32.const 2) (i32.const 8) (i32.const 3))
           (call $index_remove (i32.const 2) (i32.const 2))
           (i32.const 0))
         (data (i32.const 0) "h1h0")
         (data (i32.const 8) "new""#,
    );
    let outcome = fixture.call(&code);
    output(&outcome);
    assert_eq!(
        outcome.writes,
        Writes::from([
            (in_index("h0"), None),
            (in_index("h1"), Some(b"new".to_vec())),
        ])
    );

    // A query over the block's writes lists the index as they leave it.
    let scan = scanner("index_next", b"h");
    let mut view = StateView::new(fixture.storage.clone(), outcome.writes);
    let listed = fixture.run_in(&scan, Entry::Query, &invocation(), &mut view);
    assert_eq!(
        output(&listed),
        entries(&[("h1", "new"), ("h2", "kept")]).as_slice()
    );

    // A call may not read it: what a call does follows from authenticated state alone.
    assert_fails(
        &fixture.call(&scan),
        codes::TRAP,
        "index_next is only for queries",
    );
}

/// `next_under` against a plain model of the layers (sled, two staged blocks,
/// the block's writes so far, the call's), over many shapes.
#[test]
fn next_under_agrees_with_a_model_of_the_merged_layers() {
    // A small deterministic generator: reproducible from the seed in a failure message.
    let mut seed: u64 = 0x5eed;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let key = |r: u64| vec![b'a' + (r % 3) as u8, b'a' + (r / 3 % 3) as u8];
    for round in 0..40 {
        let fixture = Fixture::new();
        let mut model = std::collections::BTreeMap::new();
        let mut committed = Writes::new();
        for _ in 0..rand(8) {
            let k = key(rand(9));
            committed.insert(k.clone(), Some(vec![0, round]));
            model.insert(k, vec![0, round]);
        }
        commit(&fixture.storage, vec![], committed);
        let mut layers = [Writes::new(), Writes::new(), Writes::new(), Writes::new()];
        for (level, layer) in layers.iter_mut().enumerate() {
            for _ in 0..rand(8) {
                let k = key(rand(9));
                if rand(2) == 0 {
                    layer.insert(k.clone(), None);
                    model.remove(&k);
                } else {
                    let v = vec![level as u8 + 1, round];
                    layer.insert(k.clone(), Some(v.clone()));
                    model.insert(k, v);
                }
            }
        }
        let [older, newer, pending, top] = layers;
        let _staged = [older, newer].map(|writes| stage(&fixture.storage, vec![], writes).1);
        let view = StateView::new(fixture.storage.clone(), pending);
        for prefix in [&b""[..], b"a", b"b", b"ab", b"c"] {
            let mut after: Option<Vec<u8>> = if rand(3) == 0 {
                Some(b"a".to_vec())
            } else {
                None
            };
            let expected: Vec<_> = model
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .filter(|(k, _)| after.as_ref().is_none_or(|a| k.as_slice() > a.as_slice()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut got = Vec::new();
            while let Some((k, v)) = view.next_under(&top, prefix, after.as_deref()).unwrap() {
                after = Some(k.clone());
                got.push((k, v));
            }
            assert_eq!(got, expected, "round {round}, prefix {prefix:?}");
        }
    }
}

#[test]
fn member_roles_reads_organisation_records() {
    let fixture = Fixture::new();
    let mut state = Writes::new();
    state.insert(
        keys::organisation("bank-first"),
        Some(encode(&trellis_types::Organisation {
            id: "bank-first".into(),
            name: "First Bank".into(),
            roles: vec![Role::Bank, Role::Admin],
        })),
    );
    commit(&fixture.storage, vec![], state);
    let code = call_module(
        r#"(local $n i32)
           (local.set $n (call $member_roles (i32.const 0) (i32.const 10)))
           (call $result_read (i32.const 100))
           (i32.store (i32.add (i32.const 100) (local.get $n))
             (call $member_roles (i32.const 16) (i32.const 6)))
           (call $set_output (i32.const 100) (i32.add (local.get $n) (i32.const 4)))
           (i32.const 0))
         (data (i32.const 0) "bank-first")
         (data (i32.const 16) "nobody""#,
    );
    let outcome = fixture.call(&code);
    let mut expected = encode(&vec![Role::Bank, Role::Admin]);
    expected.extend_from_slice(&(-1i32).to_le_bytes());
    assert_eq!(output(&outcome), expected.as_slice());
}

#[test]
fn events_and_blake3() {
    let event = ContractEvent {
        kind: "issued".into(),
        attributes: vec![("amount".into(), "100".into())],
    };
    let bytes = encode(&event);
    let code = call_module(&format!(
        r#"(call $emit (i32.const 0) (i32.const {len}))
           (call $blake3 (i32.const 0) (i32.const {len}) (i32.const 512))
           (call $set_output (i32.const 512) (i32.const 32))
           (i32.const 0))
         (data (i32.const 0) "{data}""#,
        len = bytes.len(),
        data = data(&bytes),
    ));
    let fixture = Fixture::new();
    let outcome = fixture.call(&code);
    assert_eq!(output(&outcome), blake3::hash(&bytes).as_bytes());
    assert_eq!(
        outcome.events,
        vec![Event {
            source: EventSource::Contract(fixture.env().contract),
            kind: "issued".into(),
            attributes: vec![("amount".into(), "100".into())],
        }]
    );
}

#[test]
fn a_contract_error_drops_writes_and_events() {
    let error = encode(&ContractError {
        code: "insufficient_amount".into(),
        message: "amount below the minimum".into(),
    });
    let event = encode(&ContractEvent {
        kind: "k".into(),
        attributes: vec![],
    });
    let code = call_module(&format!(
        r#"(call $storage_set (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 1))
           (call $emit (i32.const 512) (i32.const {elen}))
           (call $set_error (i32.const 256) (i32.const {len}))
           (i32.const 1))
         (data (i32.const 256) "{error}")
         (data (i32.const 512) "{event}""#,
        len = error.len(),
        error = data(&error),
        elen = event.len(),
        event = data(&event),
    ));
    let outcome = Fixture::new().call(&code);
    assert_fails(&outcome, "insufficient_amount", "amount below the minimum");
    assert!(outcome.fuel_used > 0);
}

#[test]
fn a_contract_error_message_is_cut_to_its_bound_in_the_receipt() {
    let error = encode(&ContractError {
        code: "too_long".into(),
        message: "é".repeat(3 * MAX_MESSAGE_BYTES),
    });
    let code = call_module(&format!(
        r#"(call $set_error (i32.const 0) (i32.const {len})) (i32.const 1))
         (data (i32.const 0) "{error}""#,
        len = error.len(),
        error = data(&error),
    ));
    let failure = Fixture::new().call(&code).result.unwrap_err();
    assert_eq!(failure.code, "too_long");
    // Cut at a character boundary: two-byte characters, so 1,024 bytes.
    assert_eq!(failure.message, "é".repeat(MAX_MESSAGE_BYTES / 2));
}

#[test]
fn a_non_zero_return_without_a_well_formed_error_is_a_trap() {
    let no_error = call_module("(i32.const 2)");
    assert_fails(
        &Fixture::new().call(&no_error),
        codes::TRAP,
        "without calling set_error",
    );
    let bad_code = encode(&ContractError {
        code: "Not Allowed!".into(),
        message: String::new(),
    });
    let code = call_module(&format!(
        r#"(call $set_error (i32.const 0) (i32.const {len})) (i32.const 1))
         (data (i32.const 0) "{bytes}""#,
        len = bad_code.len(),
        bytes = data(&bad_code),
    ));
    assert_fails(&Fixture::new().call(&code), codes::TRAP, "[a-z0-9_]");
    let garbage = call_module(
        "(call $set_error (i32.const 0) (i32.const 3)) (i32.const 1))\n(data (i32.const 0) \"\\07\\ff\\ff\"",
    );
    assert_fails(&Fixture::new().call(&garbage), codes::TRAP, "undecodable");
}

#[test]
fn abort_and_unreachable_trap_with_their_reasons() {
    let code = call_module(
        r#"(call $abort (i32.const 0) (i32.const 13)) (i32.const 0))
         (data (i32.const 0) "split failed!""#,
    );
    assert_fails(
        &Fixture::new().call(&code),
        codes::TRAP,
        "contract aborted: split failed!",
    );
    let long = call_module("(call $abort (i32.const 0) (i32.const 60000)) (i32.const 0)");
    let outcome = Fixture::new().call(&long);
    assert!(outcome.result.unwrap_err().message.len() <= MAX_MESSAGE_BYTES + 32);
    let unreachable = call_module("(unreachable)");
    assert_fails(
        &Fixture::new().call(&unreachable),
        codes::TRAP,
        "unreachable",
    );
}

#[test]
fn a_query_cannot_write_or_emit() {
    for body in [
        "(call $storage_set (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 1))",
        "(call $storage_remove (i32.const 0) (i32.const 1))",
        "(call $index_set (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 1))",
        "(call $index_remove (i32.const 0) (i32.const 1))",
        "(call $emit (i32.const 0) (i32.const 1))",
    ] {
        let code = module(&format!(
            "(func $call (result i32) (i32.const 0))\n(func $query (result i32) {body} (i32.const 0))"
        ));
        assert_fails(
            &Fixture::new().query(&code),
            codes::TRAP,
            "not allowed in a query",
        );
    }
}

#[test]
fn the_view_comes_back_after_any_outcome() {
    let fixture = Fixture::new();
    let mut pending = Writes::new();
    pending.insert(b"k".to_vec(), Some(b"v".to_vec()));
    for body in [
        "(unreachable)",
        "(loop $l (br $l)) (i32.const 0)",
        "(i32.const 0)",
    ] {
        let mut view = StateView::new(fixture.storage.clone(), pending.clone());
        fixture.run_in(&call_module(body), Entry::Call, &invocation(), &mut view);
        assert_eq!(view.pending(), &pending, "{body}");
    }
}

/// A counter contract in WAT, for execution, chain and API tests. It dispatches on
/// the first letter of the method (the input is: version byte, name length, name ...):
/// `call`: `inc` adds `step` to the u64 under `count`, emits `incremented` and
/// outputs the new value; `fail` writes, then refuses with `refused`; `loop`
/// never ends; `who` outputs the encoded caller. `query`: `get` outputs the
/// stored count (empty when unset); `write` tries to write.
pub(crate) fn counter_module(step: u64) -> Vec<u8> {
    let event = encode(&ContractEvent {
        kind: "incremented".into(),
        attributes: vec![("by".into(), step.to_string())],
    });
    let error = encode(&ContractError {
        code: "refused".into(),
        message: "the counter refuses".into(),
    });
    module(&format!(
        r#"(func $method (result i32)
             (drop (call $input))
             (call $result_read (i32.const 1024))
             (i32.load8_u (i32.const 1026)))
           (func $load (result i64)
             (if (result i64) (i32.eq (call $storage_get (i32.const 0) (i32.const 5)) (i32.const -1))
               (then (i64.const 0))
               (else (call $result_read (i32.const 2048)) (i64.load (i32.const 2048)))))
           (func $call (result i32) (local $m i32) (local $n i32)
             (local.set $m (call $method))
             (if (i32.eq (local.get $m) (i32.const 0x69)) ;; inc
               (then
                 (i64.store (i32.const 2048) (i64.add (call $load) (i64.const {step})))
                 (call $storage_set (i32.const 0) (i32.const 5) (i32.const 2048) (i32.const 8))
                 (call $emit (i32.const 64) (i32.const {event_len}))
                 (call $set_output (i32.const 2048) (i32.const 8))
                 (return (i32.const 0))))
             (if (i32.eq (local.get $m) (i32.const 0x66)) ;; fail
               (then
                 (call $storage_set (i32.const 0) (i32.const 5) (i32.const 0) (i32.const 8))
                 (call $set_error (i32.const 256) (i32.const {error_len}))
                 (return (i32.const 1))))
             (if (i32.eq (local.get $m) (i32.const 0x6c)) ;; loop
               (then (loop $l (br $l))))
             (if (i32.eq (local.get $m) (i32.const 0x77)) ;; who
               (then
                 (local.set $n (call $caller))
                 (call $result_read (i32.const 4096))
                 (call $set_output (i32.const 4096) (local.get $n))
                 (return (i32.const 0))))
             (unreachable))
           (func $query (result i32) (local $m i32)
             (local.set $m (call $method))
             (if (i32.eq (local.get $m) (i32.const 0x67)) ;; get
               (then
                 (if (i32.ne (call $storage_get (i32.const 0) (i32.const 5)) (i32.const -1))
                   (then
                     (call $result_read (i32.const 2048))
                     (call $set_output (i32.const 2048) (i32.const 8))))
                 (return (i32.const 0))))
             (if (i32.eq (local.get $m) (i32.const 0x77)) ;; write
               (then (call $storage_set (i32.const 0) (i32.const 5) (i32.const 0) (i32.const 5))))
             (unreachable))
           (data (i32.const 0) "count")
           (data (i32.const 64) "{event}")
           (data (i32.const 256) "{error}")"#,
        event_len = event.len(),
        event = data(&event),
        error_len = error.len(),
        error = data(&error),
    ))
}

#[test]
fn a_call_that_finds_every_instance_slot_taken_is_busy_and_gets_no_outcome() {
    let mut fixture = Fixture::new();
    fixture.vm = Vm::with_concurrent_calls(1);
    let code = call_module("(i32.const 0)");
    let hash = fixture.vm.validate(&code, LIMITS).unwrap();
    // Hold the only slot with an instance of our own, as a concurrent call would.
    let pre = fixture.vm.cached(&hash).unwrap();
    let state = HostState::new(Entry::Call, &fixture.env(), Vec::new(), fixture.view());
    let mut store = Store::new(&fixture.vm.engine, state);
    let _held = pre.instantiate(&mut store).expect("the first slot is free");

    let result = fixture.vm.run(
        &hash,
        Entry::Call,
        &invocation(),
        &fixture.env(),
        &mut fixture.view(),
    );
    assert!(
        matches!(result, Err(StorageError::Busy(_))),
        "{:?}",
        result.map(|o| o.result)
    );
    drop(store);
    let outcome = fixture.call(&code);
    assert_eq!(
        outcome.result,
        Ok(Vec::new()),
        "the freed slot serves the next call"
    );
}
