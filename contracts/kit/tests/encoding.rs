//! The values that cross the host boundary encode exactly as
//! `docs/contracts.md` says: version byte 1, then postcard (varint lengths and
//! integers, `[u8; 32]` as 32 raw bytes, enums as their variant index).

use trellis_contract::{BlockInfo, Caller, ContractError, ContractEvent, Invocation, Role, codec};

const ROLES: [(Role, trellis_types::Role, u8); 5] = [
    (Role::CoreEnterprise, trellis_types::Role::CoreEnterprise, 0),
    (Role::Supplier, trellis_types::Role::Supplier, 1),
    (Role::Bank, trellis_types::Role::Bank, 2),
    (Role::Regulator, trellis_types::Role::Regulator, 3),
    (Role::Admin, trellis_types::Role::Admin, 4),
];

/// Version byte, then the given body.
fn v1(body: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![1u8];
    for part in body {
        out.extend_from_slice(part);
    }
    out
}

#[test]
fn every_role_encodes_like_the_node_role_as_its_variant_index() {
    assert_eq!(
        ROLES.len(),
        trellis_types::Role::ALL.len(),
        "a role was added: extend the kit's Role and this table"
    );
    for (i, (kit, node, index)) in ROLES.into_iter().enumerate() {
        assert_eq!(
            trellis_types::Role::ALL[i],
            node,
            "order of trellis_types::Role::ALL"
        );
        assert_eq!(codec::encode(&kit), codec::encode(&node), "{kit:?}");
        assert_eq!(codec::encode(&kit), vec![1, index], "{kit:?}");
        assert_eq!(
            codec::decode::<trellis_types::Role>(&codec::encode(&kit)).unwrap(),
            node
        );
        assert_eq!(codec::decode::<Role>(&codec::encode(&node)).unwrap(), kit);
    }
    let kit_all: Vec<Role> = ROLES.iter().map(|r| r.0).collect();
    assert_eq!(
        codec::encode(&kit_all),
        codec::encode(&trellis_types::Role::ALL.to_vec())
    );
    assert!(codec::decode::<Role>(&[1, 5]).is_err(), "no sixth role");
}

#[test]
fn caller_is_raw_account_then_org_then_roles() {
    let caller = Caller {
        account: [7; 32],
        org: "core-acme".into(),
        roles: vec![Role::CoreEnterprise, Role::Admin],
    };
    assert_eq!(
        codec::encode(&caller),
        v1(&[&[7; 32], &[9], b"core-acme", &[2, 0, 4]])
    );
    let anonymous = Caller {
        account: [0; 32],
        org: String::new(),
        roles: vec![],
    };
    assert_eq!(codec::encode(&anonymous), v1(&[&[0; 32], &[0], &[0]]));
}

#[test]
fn block_info_is_chain_id_then_varint_height_and_timestamp() {
    let block = BlockInfo {
        chain_id: "t".into(),
        height: 300,
        timestamp_ms: 1,
    };
    assert_eq!(
        codec::encode(&block),
        v1(&[&[1], b"t", &[0xac, 0x02], &[1]])
    );
}

#[test]
fn invocation_is_method_then_length_prefixed_args() {
    let inv = Invocation {
        method: "get".into(),
        args: vec![1, 0],
    };
    assert_eq!(codec::encode(&inv), v1(&[&[3], b"get", &[2, 1, 0]]));
}

#[test]
fn event_is_kind_then_ordered_attribute_pairs() {
    let event = ContractEvent {
        kind: "k".into(),
        attributes: vec![("a".into(), "1".into()), ("b".into(), "".into())],
    };
    assert_eq!(
        codec::encode(&event),
        v1(&[&[1], b"k", &[2], &[1], b"a", &[1], b"1", &[1], b"b", &[0]])
    );
}

#[test]
fn error_is_code_then_message_and_matches_the_receipt_error() {
    let err = ContractError::new("bad_args", "no");
    assert_eq!(codec::encode(&err), v1(&[&[8], b"bad_args", &[2], b"no"]));
    let receipt_error = trellis_types::ExecError {
        code: "bad_args".into(),
        message: "no".into(),
    };
    assert_eq!(codec::encode(&err), codec::encode(&receipt_error));
}

#[test]
fn storage_entry_and_role_list_are_plain_postcard_tuples_and_sequences() {
    let entry: (Vec<u8>, Vec<u8>) = (b"k".to_vec(), b"vv".to_vec());
    assert_eq!(codec::encode(&entry), v1(&[&[1], b"k", &[2], b"vv"]));
    assert_eq!(codec::encode(&vec![Role::Bank]), v1(&[&[1, 2]]));
}

#[test]
fn boundary_values_reject_non_canonical_input() {
    let inv = Invocation {
        method: "m".into(),
        args: vec![],
    };
    let good = codec::encode(&inv);
    assert_eq!(codec::decode::<Invocation>(&good).unwrap(), inv);
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(codec::decode::<Invocation>(&trailing).is_err());
    let mut wrong_version = good.clone();
    wrong_version[0] = 2;
    assert!(codec::decode::<Invocation>(&wrong_version).is_err());
    // The method length 1 as an over-long varint (0x81 0x00).
    assert!(codec::decode::<Invocation>(&[1, 0x81, 0x00, b'm', 0]).is_err());
}
