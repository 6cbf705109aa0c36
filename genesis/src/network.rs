//! Deterministic dev/test networks: a genesis and every node's keys from a seed.
//!
//! [`build`] is a pure function of its [`NetworkSpec`]: the same spec gives
//! byte-identical output, and every key is derived with
//! [`KeyPair::insecure_from_label`] from a *public* label, so the result is
//! marked `insecure_dev_keys` and must never guard value. The labels are:
//!
//! - member account `{org}/ops`: `account/{org}/ops` (no seed, see [`dev_account`]);
//! - validator `i` (0-based, named `validator-{i}`): `{seed}/validator-{i}/consensus`
//!   and `{seed}/validator-{i}/node`;
//! - observer `i` (named `observer-{i}`): `{seed}/observer-{i}/node`.

use crate::format::{
    Genesis, GenesisAccount, GenesisCall, GenesisContract, GenesisError, GenesisObserver,
    GenesisOrganisation, GenesisValidator,
};
use trellis_types::{Bytes, ChainParams, Hash, KeyPair, Role, encode};

/// 2026-01-01T00:00:00Z in unix milliseconds: block 0 of the embedded genesis files.
pub const DEV_GENESIS_TIME_MS: u64 = 1_767_225_600_000;

/// The members of every generated network: `(id, name, roles)`.
const MEMBERS: [(&str, &str, &[Role]); 7] = [
    ("consortium", "Trellis Consortium", &[Role::Admin]),
    ("core-acme", "Acme Manufacturing", &[Role::CoreEnterprise]),
    ("supplier-t1", "Tier-1 Supplier", &[Role::Supplier]),
    ("supplier-t2", "Tier-2 Supplier", &[Role::Supplier]),
    ("supplier-t3", "Tier-3 Supplier", &[Role::Supplier]),
    ("bank-first", "First Bank", &[Role::Bank]),
    ("regulator", "Regulator", &[Role::Regulator]),
];

/// Validators are run by these organisations in turn (validator `i` by entry `i % 3`),
/// as in production: the consortium, the banks and the large core enterprises.
const VALIDATOR_ORGS: [&str; 3] = ["consortium", "bank-first", "core-acme"];

/// Observers (non-voting nodes) are run by the suppliers in turn.
const OBSERVER_ORGS: [&str; 3] = ["supplier-t1", "supplier-t2", "supplier-t3"];

/// What network to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    pub chain_id: String,
    /// Public seed of the validator and observer keys. Not a secret: anyone
    /// who knows it has the keys.
    pub seed: String,
    /// Number of validators, at least 1.
    pub validators: usize,
    /// Number of observer (non-voting) nodes.
    pub observers: usize,
    /// Timestamp of block 0, unix milliseconds.
    pub genesis_time_ms: u64,
}

impl NetworkSpec {
    /// The spec of the embedded `dev.json`: one validator.
    pub fn dev() -> NetworkSpec {
        NetworkSpec {
            chain_id: "trellis-dev".into(),
            seed: "trellis-dev".into(),
            validators: 1,
            observers: 0,
            genesis_time_ms: DEV_GENESIS_TIME_MS,
        }
    }

    /// The spec of the embedded `local-4.json`: four validators.
    pub fn local() -> NetworkSpec {
        NetworkSpec {
            chain_id: "trellis-local".into(),
            seed: "trellis-local".into(),
            validators: 4,
            observers: 0,
            genesis_time_ms: DEV_GENESIS_TIME_MS,
        }
    }
}

/// The secret keys of one generated node. Holds secret material: keep out of logs.
#[derive(Debug, Clone)]
pub struct NodeKeys {
    /// Same as the genesis validator/observer name, e.g. `validator-0`.
    pub name: String,
    /// The consensus key; `None` for an observer.
    pub consensus: Option<KeyPair>,
    /// The libp2p identity.
    pub node: KeyPair,
}

/// Chain parameters of generated networks: the defaults, but an empty block
/// every second instead of every five, so a dev chain visibly advances.
pub fn dev_params() -> ChainParams {
    ChainParams {
        idle_block_interval_ms: 1_000,
        ..ChainParams::default()
    }
}

/// The INSECURE key of a generated member account, by its genesis label,
/// e.g. `dev_account("core-acme/ops")`.
///
/// Account keys do not depend on the network seed, so one key works on the dev
/// chain, the local net and any generated network; a transaction still names
/// its chain id, so it cannot be replayed from one of them onto another.
pub fn dev_account(label: &str) -> KeyPair {
    KeyPair::insecure_from_label(&format!("account/{label}"))
}

/// Builds the genesis of a dev/test network and the keys of its nodes
/// (validators first, then observers, in genesis order).
///
/// Fails only when the result would not validate, e.g. with no validators or
/// an invalid chain id.
pub fn build(spec: &NetworkSpec) -> Result<(Genesis, Vec<NodeKeys>), GenesisError> {
    let organisations = MEMBERS
        .iter()
        .map(|&(id, name, roles)| {
            let label = format!("{id}/ops");
            GenesisOrganisation {
                id: id.to_owned(),
                name: name.to_owned(),
                roles: roles.to_vec(),
                accounts: vec![GenesisAccount {
                    key: dev_account(&label).public(),
                    org_admin: true,
                    label,
                }],
            }
        })
        .collect();

    let seed = &spec.seed;
    let mut nodes = Vec::with_capacity(spec.validators + spec.observers);
    let mut validators = Vec::with_capacity(spec.validators);
    for i in 0..spec.validators {
        let name = format!("validator-{i}");
        let consensus = KeyPair::insecure_from_label(&format!("{seed}/{name}/consensus"));
        let node = KeyPair::insecure_from_label(&format!("{seed}/{name}/node"));
        validators.push(GenesisValidator {
            name: name.clone(),
            org: VALIDATOR_ORGS[i % VALIDATOR_ORGS.len()].to_owned(),
            consensus_key: consensus.public(),
            node_key: node.public(),
        });
        nodes.push(NodeKeys {
            name,
            consensus: Some(consensus),
            node,
        });
    }
    let mut observers = Vec::with_capacity(spec.observers);
    for i in 0..spec.observers {
        let name = format!("observer-{i}");
        let node = KeyPair::insecure_from_label(&format!("{seed}/{name}/node"));
        observers.push(GenesisObserver {
            name: name.clone(),
            org: OBSERVER_ORGS[i % OBSERVER_ORGS.len()].to_owned(),
            node_key: node.public(),
        });
        nodes.push(NodeKeys {
            name,
            consensus: None,
            node,
        });
    }

    let genesis = Genesis {
        chain_id: spec.chain_id.clone(),
        genesis_time_ms: spec.genesis_time_ms,
        insecure_dev_keys: true,
        params: dev_params(),
        organisations,
        validators,
        observers,
        contracts: vec![receivables_contract()],
    };
    genesis.validate()?;
    Ok((genesis, nodes))
}

/// Credit limit of `core-acme` on dev and local chains, in
/// [`DEV_CREDIT_CURRENCY`]: 50,000,000.00 in minor units.
pub const DEV_CREDIT_LIMIT: u128 = 5_000_000_000;
/// The currency of [`DEV_CREDIT_LIMIT`]; `core-acme` has no credit in others.
pub const DEV_CREDIT_CURRENCY: &str = "CNY";

/// The receivables contract every dev and local chain starts with, deployed
/// by `consortium/ops` and set up for demos: a 10 s acceptance window and a
/// 60 s grace period (so a receivable can mature minutes after issue), and a
/// credit limit for `core-acme`.
fn receivables_contract() -> GenesisContract {
    let code = crate::contract_code("receivables")
        .expect("the receivables module is built into this crate");
    let params = trellis_receivables::Params {
        acceptance_window_ms: 10_000,
        grace_period_ms: 60_000,
        ..trellis_receivables::Params::default()
    };
    let limit = trellis_receivables::SetCreditLimit {
        issuer: "core-acme".into(),
        currency: DEV_CREDIT_CURRENCY.into(),
        limit: DEV_CREDIT_LIMIT,
    };
    GenesisContract {
        name: "receivables".into(),
        code_hash: Hash(*blake3::hash(code).as_bytes()),
        salt: Hash::ZERO,
        deployer: dev_account("consortium/ops").public(),
        calls: vec![
            GenesisCall {
                method: "init".into(),
                args: Bytes(encode(&params)),
            },
            GenesisCall {
                method: "set_credit_limit".into(),
                args: Bytes(encode(&limit)),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn embedded_genesis_files_match_the_generator() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let bless = std::env::var_os("TRELLIS_BLESS").is_some_and(|v| v == "1");
        for (file, spec) in [
            ("dev.json", NetworkSpec::dev()),
            ("local-4.json", NetworkSpec::local()),
        ] {
            let path = dir.join(file);
            let expected = build(&spec)
                .expect("embedded specs build")
                .0
                .to_json_pretty();
            if bless {
                std::fs::write(&path, &expected).expect("genesis/ is writable when blessing");
                continue;
            }
            let actual = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                actual == expected,
                "genesis/{file} differs from build(&NetworkSpec::{}()); if the change is \
                 intended, regenerate with: TRELLIS_BLESS=1 cargo test -p trellis-genesis \
                 embedded_genesis_files_match_the_generator",
                file.split(['.', '-']).next().unwrap_or(file),
            );
        }
        if !bless {
            assert_eq!(Genesis::dev(), build(&NetworkSpec::dev()).unwrap().0);
            assert_eq!(Genesis::local(), build(&NetworkSpec::local()).unwrap().0);
        }
    }

    #[test]
    fn embedded_genesis_have_the_documented_shape() {
        let dev = Genesis::dev();
        assert_eq!(dev.chain_id, "trellis-dev");
        assert!(dev.insecure_dev_keys);
        assert_eq!(dev.validators.len(), 1);
        assert_eq!(dev.params.idle_block_interval_ms, 1_000);
        let local = Genesis::local();
        assert_eq!(local.chain_id, "trellis-local");
        assert_eq!(local.validators.len(), 4);
        assert_eq!(
            local.organisations, dev.organisations,
            "same members in dev and local"
        );
        let ids: Vec<_> = local.organisations.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "consortium",
                "core-acme",
                "supplier-t1",
                "supplier-t2",
                "supplier-t3",
                "bank-first",
                "regulator"
            ]
        );
        let orgs: Vec<_> = local.validators.iter().map(|v| v.org.as_str()).collect();
        assert_eq!(
            orgs,
            ["consortium", "bank-first", "core-acme", "consortium"]
        );
        assert_ne!(dev.hash(), local.hash());
    }

    #[test]
    fn build_is_deterministic_in_the_seed() {
        let spec = NetworkSpec {
            observers: 2,
            ..NetworkSpec::local()
        };
        let (a, ka) = build(&spec).unwrap();
        let (b, kb) = build(&spec).unwrap();
        assert_eq!(a.to_json_pretty(), b.to_json_pretty());
        let seeds = |k: &[NodeKeys]| {
            k.iter()
                .map(|n| (n.consensus.as_ref().map(KeyPair::seed), n.node.seed()))
                .collect::<Vec<_>>()
        };
        assert_eq!(seeds(&ka), seeds(&kb));
    }

    #[test]
    fn a_different_seed_gives_different_node_keys_and_the_same_accounts() {
        let spec = NetworkSpec::local();
        let (a, _) = build(&spec).unwrap();
        let (b, _) = build(&NetworkSpec {
            seed: "other".into(),
            ..spec
        })
        .unwrap();
        for (va, vb) in a.validators.iter().zip(&b.validators) {
            assert_ne!(va.consensus_key, vb.consensus_key);
            assert_ne!(va.node_key, vb.node_key);
        }
        assert_eq!(a.accounts(), b.accounts());
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn node_keys_match_the_genesis() {
        let (g, keys) = build(&NetworkSpec {
            observers: 4,
            ..NetworkSpec::local()
        })
        .unwrap();
        assert_eq!(keys.len(), 8);
        for (v, k) in g.validators.iter().zip(&keys) {
            assert_eq!(v.name, k.name);
            assert_eq!(
                Some(v.consensus_key),
                k.consensus.as_ref().map(KeyPair::public)
            );
            assert_eq!(v.node_key, k.node.public());
        }
        for (o, k) in g.observers.iter().zip(&keys[4..]) {
            assert_eq!(o.name, k.name);
            assert!(k.consensus.is_none());
            assert_eq!(o.node_key, k.node.public());
            assert!(o.org.starts_with("supplier-"));
        }
    }

    #[test]
    fn dev_account_gives_the_key_in_the_genesis() {
        for g in [Genesis::dev(), Genesis::local()] {
            for org in &g.organisations {
                for a in &org.accounts {
                    assert_eq!(dev_account(&a.label).public(), a.key, "{}", a.label);
                }
            }
        }
    }

    #[test]
    fn build_refuses_a_network_without_validators() {
        let err = build(&NetworkSpec {
            validators: 0,
            ..NetworkSpec::dev()
        })
        .unwrap_err();
        assert!(matches!(err, GenesisError::NoValidators), "{err}");
        let err = build(&NetworkSpec {
            chain_id: String::new(),
            ..NetworkSpec::dev()
        })
        .unwrap_err();
        assert!(matches!(err, GenesisError::InvalidChainId { .. }), "{err}");
    }
}
