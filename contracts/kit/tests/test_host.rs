//! The test host behaves like the node: failed calls leave nothing behind,
//! panics are traps, queries are read-only, iteration is in key order.

use trellis_contract::testing::{TestHost, account_of, caller_from, regulator_reader};
use trellis_contract::{
    Contract, ContractError, ContractEvent, ContractResult, Host, Role, args, codec, ret, store,
};

/// Writes and emits, then does what the method says.
struct Probe;

impl Contract for Probe {
    fn call(host: &mut dyn Host, method: &str, input: &[u8]) -> ContractResult<Vec<u8>> {
        let value: u64 = args(input)?;
        store::set(host, b"value", &value);
        host.remove(b"doomed");
        host.emit(ContractEvent {
            kind: "wrote".into(),
            attributes: vec![("value".into(), value.to_string())],
        });
        match method {
            "ok" => ret(&value),
            "fail" => Err(ContractError::new("refused", "as asked")),
            "panic" => panic!("boom at {value}"),
            "decode_garbage" => {
                host.set(b"garbage", &[0xff]);
                let _: Option<u64> = store::get(host, b"garbage");
                ret(&())
            }
            _ => Err(ContractError::new("unknown_method", method)),
        }
    }

    fn query(host: &dyn Host, method: &str, _input: &[u8]) -> ContractResult<Vec<u8>> {
        match method {
            "value" => ret(&store::get::<u64>(host, b"value")),
            "caller" => ret(&host.caller()),
            "block" => ret(&host.block()),
            "roles" => ret(&host.member_roles("bank-a")),
            _ => Err(ContractError::new("unknown_method", method)),
        }
    }
}

fn seeded() -> TestHost {
    let mut host = TestHost::new();
    host.set_caller(caller_from("core-acme", &[Role::CoreEnterprise]));
    host.exec(|h| {
        h.set(b"doomed", b"still here");
        Ok(())
    })
    .unwrap();
    host
}

#[test]
fn successful_call_commits_writes_and_events() {
    let mut host = seeded();
    let out = host.call::<Probe>("ok", &codec::encode(&7u64)).unwrap();
    assert_eq!(codec::decode::<u64>(&out).unwrap(), 7);
    assert_eq!(
        host.storage().get(&b"value"[..]),
        Some(&codec::encode(&7u64))
    );
    assert!(!host.storage().contains_key(&b"doomed"[..]));
    assert_eq!(host.events().len(), 1);
    assert_eq!(host.take_events()[0].kind, "wrote");
    assert!(host.events().is_empty());
}

#[test]
fn failed_call_rolls_back_writes_removals_and_events() {
    let mut host = seeded();
    let before = host.storage().clone();
    let err = host
        .call::<Probe>("fail", &codec::encode(&7u64))
        .unwrap_err();
    assert_eq!(err, ContractError::new("refused", "as asked"));
    assert_eq!(host.storage(), &before);
    assert!(host.events().is_empty());
}

#[test]
fn panicking_call_rolls_back_and_surfaces_as_trap() {
    let mut host = seeded();
    let before = host.storage().clone();
    let err = host
        .call::<Probe>("panic", &codec::encode(&7u64))
        .unwrap_err();
    assert_eq!(err.code, "trap");
    assert_eq!(err.message, "boom at 7");
    assert_eq!(host.storage(), &before);
    assert!(host.events().is_empty());
    // The host is still usable afterwards.
    host.call::<Probe>("ok", &codec::encode(&8u64)).unwrap();
    assert_eq!(host.events().len(), 1);
}

#[test]
fn undecodable_stored_record_traps_and_rolls_back() {
    let mut host = seeded();
    let err = host
        .call::<Probe>("decode_garbage", &codec::encode(&7u64))
        .unwrap_err();
    assert_eq!(err.code, "trap");
    assert!(
        err.message.starts_with("stored record does not decode"),
        "{}",
        err.message
    );
    assert!(!host.storage().contains_key(&b"garbage"[..]));
}

#[test]
fn malformed_args_are_a_bad_args_error() {
    let mut host = seeded();
    let err = host.call::<Probe>("ok", b"\x01\xff\xff").unwrap_err();
    assert_eq!(err.code, "bad_args");
    assert!(host.events().is_empty());
}

#[test]
fn query_cannot_write_remove_or_emit() {
    let host = seeded();
    let before = host.storage().clone();
    let err = host.read_raw(|h| {
        h.set(b"x", b"y");
        Ok(())
    });
    assert_eq!(
        err.unwrap_err(),
        ContractError::new("trap", "read-only: storage_set in a query")
    );
    let err = host.read_raw(|h| {
        h.remove(b"doomed");
        Ok(())
    });
    assert_eq!(
        err.unwrap_err(),
        ContractError::new("trap", "read-only: storage_remove in a query")
    );
    let err = host.read_raw(|h| {
        h.emit(ContractEvent {
            kind: "nope".into(),
            attributes: vec![],
        });
        Ok(())
    });
    assert_eq!(
        err.unwrap_err(),
        ContractError::new("trap", "read-only: emit in a query")
    );
    assert_eq!(host.storage(), &before);
    assert!(host.events().is_empty());
}

#[test]
fn query_sees_committed_state_the_reader_and_the_latest_block() {
    let mut host = seeded();
    host.add_member("bank-a", &[Role::Bank, Role::Admin, Role::Bank]);
    host.set_block(10, 1_000).advance(500);
    host.call::<Probe>("ok", &codec::encode(&3u64)).unwrap();

    let value: Option<u64> = codec::decode(&host.query::<Probe>("value", &[]).unwrap()).unwrap();
    assert_eq!(value, Some(3));
    let caller: trellis_contract::Caller =
        codec::decode(&host.query::<Probe>("caller", &[]).unwrap()).unwrap();
    assert_eq!(caller, regulator_reader(), "a regulator unless set");
    host.read_as("bank-a");
    let caller: trellis_contract::Caller =
        codec::decode(&host.query::<Probe>("caller", &[]).unwrap()).unwrap();
    assert_eq!(caller, caller_from("bank-a", &[Role::Bank, Role::Admin]));
    let block: trellis_contract::BlockInfo =
        codec::decode(&host.query::<Probe>("block", &[]).unwrap()).unwrap();
    assert_eq!((block.height, block.timestamp_ms), (11, 1_500));
    let roles: Option<Vec<Role>> =
        codec::decode(&host.query::<Probe>("roles", &[]).unwrap()).unwrap();
    assert_eq!(
        roles,
        Some(vec![Role::Bank, Role::Admin]),
        "sorted and deduplicated"
    );
}

#[test]
fn calls_see_the_set_caller_and_members() {
    let mut host = TestHost::new();
    host.add_member("supplier-b", &[Role::Supplier]);
    host.act_as("supplier-b");
    assert_eq!(host.caller().account, account_of("supplier-b"));
    let seen = host
        .exec(|h| {
            Ok((
                h.caller(),
                h.member_roles("supplier-b"),
                h.member_roles("stranger"),
            ))
        })
        .unwrap();
    assert_eq!(seen.0, caller_from("supplier-b", &[Role::Supplier]));
    assert_eq!(seen.1, Some(vec![Role::Supplier]));
    assert_eq!(seen.2, None);
    assert_ne!(account_of("supplier-b"), account_of("supplier-c"));
}

#[test]
fn blake3_is_the_real_hash() {
    let host = TestHost::new();
    let hash = host.read(|h| Ok(h.blake3(b"abc"))).unwrap();
    // blake3("abc") from the BLAKE3 reference test vectors.
    assert_eq!(
        hash,
        [
            0x64, 0x37, 0xb3, 0xac, 0x38, 0x46, 0x51, 0x33, 0xff, 0xb6, 0x3b, 0x75, 0x27, 0x3a,
            0x8d, 0xb5, 0x48, 0xc5, 0x58, 0x46, 0x5d, 0x79, 0xdb, 0x03, 0xfd, 0x35, 0x9c, 0x6c,
            0xd5, 0xbd, 0x9d, 0x85,
        ]
    );
}

#[test]
fn scan_returns_exactly_the_prefix_in_byte_order() {
    let mut host = TestHost::new();
    let keys: [&[u8]; 9] = [
        b"p/b", b"p/a", b"p", b"p/\xff", b"p/a/1", b"o", b"p0", b"q", b"p/\x00",
    ];
    host.exec(|h| {
        for k in keys {
            h.set(k, k);
        }
        Ok(())
    })
    .unwrap();
    let scanned = host.read(|h| Ok(store::scan(h, b"p/"))).unwrap();
    let got: Vec<&[u8]> = scanned.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(
        got,
        vec![&b"p/\x00"[..], b"p/a", b"p/a/1", b"p/b", b"p/\xff"]
    );
    assert!(scanned.iter().all(|(k, v)| k == v));

    let all = host.read(|h| Ok(store::scan(h, b""))).unwrap();
    let mut sorted = keys.map(|k| k.to_vec()).to_vec();
    sorted.sort();
    assert_eq!(all.into_iter().map(|(k, _)| k).collect::<Vec<_>>(), sorted);
    assert!(host.read(|h| Ok(store::scan(h, b"zz"))).unwrap().is_empty());
}

#[test]
fn next_honours_an_after_bound_outside_the_prefix() {
    let mut host = TestHost::new();
    host.exec(|h| {
        for k in [&b"a"[..], b"m/1", b"m/2", b"z"] {
            h.set(k, b"");
        }
        Ok(())
    })
    .unwrap();
    let first = |after: &[u8]| {
        host.read(|h| Ok(h.next(b"m/", Some(after)).map(|(k, _)| k)))
            .unwrap()
    };
    assert_eq!(
        first(b"a"),
        Some(b"m/1".to_vec()),
        "bound before the prefix"
    );
    assert_eq!(first(b"m/1"), Some(b"m/2".to_vec()));
    assert_eq!(first(b"m/2"), None);
    assert_eq!(first(b"n"), None, "bound past the prefix");
}

#[test]
fn the_query_index_is_written_by_calls_apart_from_state_and_read_by_queries() {
    let mut host = seeded();
    host.exec(|h| {
        h.index_set(b"h/1", b"");
        h.index_set(b"h/2", b"two");
        h.index_set(b"value", b"index, not state");
        Ok(())
    })
    .unwrap();
    assert_eq!(host.storage().get(&b"value"[..]), None);
    // A failed call's index writes go with it.
    let err = host.exec(|h| -> ContractResult<()> {
        h.index_remove(b"h/1");
        Err(ContractError::new("refused", "as asked"))
    });
    assert_eq!(err.unwrap_err().code, "refused");
    let listed = host.read(|h| Ok(store::scan_index(h, b"h/"))).unwrap();
    assert_eq!(
        listed,
        vec![
            (b"h/1".to_vec(), Vec::new()),
            (b"h/2".to_vec(), b"two".to_vec())
        ]
    );
    assert_eq!(host.index().len(), 3);

    // Calls do not read it, queries do not write it.
    let read_in_call = host.exec(|h| Ok(h.index_next(b"h/", None)));
    assert_eq!(read_in_call.unwrap_err().code, "trap");
    let written_in_query = host.read_raw(|h| {
        h.index_set(b"h/3", b"");
        Ok(())
    });
    assert_eq!(written_in_query.unwrap_err().code, "trap");
    assert_eq!(host.index().len(), 3);
}
