//! The counter under the native test host: the kit's worked example.

use trellis_contract::testing::TestHost;
use trellis_contract::{ContractEvent, Role, codec};
use trellis_counter::Counter;

fn chain() -> TestHost {
    let mut host = TestHost::new();
    host.add_member("supplier-b", &[Role::Supplier]);
    host.act_as("supplier-b");
    host
}

fn get(host: &TestHost) -> u64 {
    codec::decode(&host.query::<Counter>("get", &codec::encode(&())).unwrap()).unwrap()
}

#[test]
fn increment_adds_emits_and_is_visible_to_queries() {
    let mut host = chain();
    assert_eq!(get(&host), 0);
    let out = host
        .call::<Counter>("increment", &codec::encode(&5u64))
        .unwrap();
    assert_eq!(codec::decode::<u64>(&out).unwrap(), 5);
    host.call::<Counter>("increment", &codec::encode(&2u64))
        .unwrap();
    assert_eq!(get(&host), 7);
    assert_eq!(
        host.events().last(),
        Some(&ContractEvent {
            kind: "incremented".into(),
            attributes: vec![
                ("org".into(), "supplier-b".into()),
                ("by".into(), "2".into()),
                ("count".into(), "7".into()),
            ],
        })
    );
}

#[test]
fn increment_refuses_non_members_zero_and_overflow_without_side_effects() {
    let mut host = chain();
    host.call::<Counter>("increment", &codec::encode(&u64::MAX))
        .unwrap();
    let events = host.events().len();

    let err = host
        .call::<Counter>("increment", &codec::encode(&1u64))
        .unwrap_err();
    assert_eq!(err.code, "overflow");
    assert_eq!(
        host.call::<Counter>("increment", &codec::encode(&0u64))
            .unwrap_err()
            .code,
        "zero_increment"
    );
    host.act_as("stranger");
    assert_eq!(
        host.call::<Counter>("increment", &codec::encode(&1u64))
            .unwrap_err()
            .code,
        "unauthorised"
    );
    assert_eq!(
        host.call::<Counter>("decrement", &[]).unwrap_err().code,
        "unknown_method"
    );

    assert_eq!(get(&host), u64::MAX);
    assert_eq!(host.events().len(), events);
}
