use super::has_peers;
use trellis_genesis::{Genesis, NetworkSpec, NodeKeys};
use trellis_types::{KeyPair, PublicKey};

fn network(validators: usize, observers: usize) -> (Genesis, Vec<NodeKeys>) {
    trellis_genesis::build(&NetworkSpec {
        validators,
        observers,
        ..NetworkSpec::local()
    })
    .unwrap()
}

fn consensus(node: &NodeKeys) -> Option<PublicKey> {
    node.consensus.as_ref().map(KeyPair::public)
}

#[test]
fn a_lone_validator_runs_alone_whatever_its_node_key() {
    let (genesis, nodes) = network(1, 0);
    let generated = KeyPair::from_seed([7; 32]).public();
    for node_key in [nodes[0].node.public(), generated] {
        let alone = has_peers(&genesis, &node_key, consensus(&nodes[0]).as_ref());
        assert!(!alone.unwrap(), "node key {node_key}");
    }
}

#[test]
fn every_member_of_a_network_has_peers() {
    let (genesis, nodes) = network(3, 1);
    for node in &nodes {
        let peers = has_peers(&genesis, &node.node.public(), consensus(node).as_ref());
        assert!(peers.unwrap(), "{}", node.name);
    }
    // A validator's node may follow the chain without its consensus key.
    assert!(has_peers(&genesis, &nodes[0].node.public(), None).unwrap());
}

#[test]
fn a_node_key_the_genesis_does_not_name_is_refused_beside_other_members() {
    let (genesis, nodes) = network(2, 1);
    let stranger = KeyPair::from_seed([7; 32]).public();
    let error = has_peers(&genesis, &stranger, consensus(&nodes[0]).as_ref())
        .unwrap_err()
        .to_string();
    let named = nodes[0].node.public().to_string();
    assert!(
        error.contains(&named) && error.contains(&nodes[0].name),
        "{error}"
    );
    let error = has_peers(&genesis, &stranger, None)
        .unwrap_err()
        .to_string();
    assert!(error.contains("for no member node"), "{error}");
    // Another member's node key is not this validator's either.
    let observer = nodes[2].node.public();
    assert!(has_peers(&genesis, &observer, consensus(&nodes[0]).as_ref()).is_err());
}
