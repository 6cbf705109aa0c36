//! The genesis document: who the members are, who validates, and the chain's rules.
//!
//! A [`Genesis`] read through [`Genesis::from_json`] or [`Genesis::load`] has
//! passed [`Genesis::validate`]: ids and names are well formed and unique,
//! every key is a canonical, non-weak ed25519 point used for exactly one job,
//! every validator and observer belongs to a listed organisation, and the
//! chain parameters are in range. Nothing is normalised: the document is
//! taken exactly as written, because [`Genesis::hash`] (the parent of block 1)
//! covers it byte for byte through the canonical encoding.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use trellis_types::member::{is_id, roles_are_canonical};
use trellis_types::{
    Account, Address, Bytes, ChainParams, Domain, Hash, KeyPair, OrgId, Organisation, PublicKey,
    Role, SignatureError, codec,
};

/// The seeds of the embedded networks' node keys (`crate::NetworkSpec`):
/// public, so keys derived from them guard nothing.
const PUBLIC_SEEDS: [&str; 2] = ["trellis-dev", "trellis-local"];

/// Longest chain id accepted, in bytes. It is inside every signed transaction.
pub const MAX_CHAIN_ID_LEN: usize = 64;
pub use trellis_types::member::MAX_ID_LEN;
/// Smallest contract memory limit that makes sense: one WASM page.
const WASM_PAGE_BYTES: u64 = 64 * 1024;

/// The genesis of a Trellis chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// Every transaction names it; one signed for another chain is void here.
    pub chain_id: String,
    /// Unix milliseconds: the timestamp of block 0. Block 1 must be stamped later.
    pub genesis_time_ms: u64,
    /// True when the keys were derived from public labels ([`crate::build`]).
    /// A node started on such a genesis must log a loud warning.
    pub insecure_dev_keys: bool,
    pub params: ChainParams,
    pub organisations: Vec<GenesisOrganisation>,
    /// The initial validator set; each has one vote.
    pub validators: Vec<GenesisValidator>,
    /// Non-voting nodes allowed to connect and follow the chain.
    pub observers: Vec<GenesisObserver>,
    /// Contracts deployed at genesis, in order, at height 0.
    pub contracts: Vec<GenesisContract>,
}

/// A member organisation with its roles and account keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisOrganisation {
    /// Lowercase ASCII letters, digits and `-`, e.g. `core-acme`.
    pub id: OrgId,
    /// Display name.
    pub name: String,
    /// At least one; sorted in [`Role`] order (core_enterprise, supplier, bank,
    /// regulator, admin) and without duplicates.
    pub roles: Vec<Role>,
    pub accounts: Vec<GenesisAccount>,
}

/// An account key of an organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    pub key: PublicKey,
    /// May add and remove keys of its own organisation.
    pub org_admin: bool,
    /// What the key is for, e.g. `core-acme/ops`. Informational; with
    /// `insecure_dev_keys` it is also what [`crate::dev_account`] derives the key from.
    pub label: String,
}

/// A voting node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisValidator {
    /// Unique among validators and observers; lowercase letters, digits, `-` and `_`.
    pub name: String,
    /// The organisation that runs it.
    pub org: OrgId,
    /// Signs proposals and votes.
    pub consensus_key: PublicKey,
    /// The node's libp2p ed25519 identity; the peer allow-list is made of these.
    pub node_key: PublicKey,
}

/// A non-voting node that follows the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisObserver {
    /// Unique among validators and observers; lowercase letters, digits, `-` and `_`.
    pub name: String,
    pub org: OrgId,
    /// The node's libp2p ed25519 identity.
    pub node_key: PublicKey,
}

/// A contract deployed at genesis. Its code is not in the document: the node
/// ships it and checks it hashes (plain blake3 of the module) to `code_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisContract {
    pub name: String,
    /// Hash of the WASM code.
    pub code_hash: Hash,
    pub salt: Hash,
    /// A genesis account; with `code_hash` and `salt` it fixes the address.
    pub deployer: PublicKey,
    /// Calls made right after deployment, in order, by `deployer` at height 0
    /// (e.g. `init`, then setting credit limits). Any failure refuses the genesis.
    #[serde(default)]
    pub calls: Vec<GenesisCall>,
}

/// One contract call made at genesis: a method and its canonically encoded arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisCall {
    pub method: String,
    /// Hex in JSON.
    pub args: Bytes,
}

impl GenesisContract {
    pub fn address(&self) -> Address {
        Address::derive(&self.deployer, &self.code_hash, &self.salt)
    }
}

/// Why a genesis was refused.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("cannot read genesis file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("genesis is not valid (line {line}, column {column}): {message}")]
    Parse {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("chain id {chain_id:?} is invalid: {reason}")]
    InvalidChainId {
        chain_id: String,
        reason: &'static str,
    },
    #[error(
        "organisation id {org:?} is invalid: use 1 to {MAX_ID_LEN} lowercase ASCII letters, digits and '-'"
    )]
    InvalidOrgId { org: String },
    #[error("organisation {org:?} has an empty name")]
    EmptyOrgName { org: OrgId },
    #[error("organisation {org:?} is listed twice")]
    DuplicateOrg { org: OrgId },
    #[error("organisation {org:?} has no roles")]
    NoRoles { org: OrgId },
    #[error(
        "roles of organisation {org:?} must be listed once each, in the order core_enterprise, supplier, bank, regulator, admin"
    )]
    UnsortedRoles { org: OrgId },
    #[error("no organisation has the admin role, so membership could never change")]
    NoAdmin,
    #[error("{owner} has an unusable key {key}: {reason}")]
    InvalidKey {
        owner: String,
        key: PublicKey,
        reason: SignatureError,
    },
    #[error("key {key} is used twice: by {first} and by {second}; every key has one job")]
    DuplicateKey {
        key: PublicKey,
        first: String,
        second: String,
    },
    #[error("there are no validators")]
    NoValidators,
    #[error(
        "node name {name:?} is invalid: use 1 to {MAX_ID_LEN} lowercase ASCII letters, digits, '-' and '_'"
    )]
    InvalidNodeName { name: String },
    #[error("node name {name:?} is used twice")]
    DuplicateNodeName { name: String },
    #[error("{owner} belongs to organisation {org:?}, which is not in the genesis")]
    UnknownOrg { owner: String, org: OrgId },
    #[error("chain parameter {param} = {value} is out of range: {rule}")]
    ParamOutOfRange {
        param: &'static str,
        value: u64,
        rule: &'static str,
    },
    #[error("contract name {name:?} is empty or used twice")]
    InvalidContractName { name: String },
    #[error("contract {contract:?} is deployed by {deployer}, which is not a genesis account")]
    UnknownDeployer {
        contract: String,
        deployer: PublicKey,
    },
    #[error(
        "{owner} has a dev key that anyone can derive from its public label ({label:?}), \
         and the genesis does not say insecure_dev_keys: replace the key with one made \
         by its owner (`trellis-node keygen`, `trellis keys new`)"
    )]
    DevKey { owner: String, label: String },
}

impl Genesis {
    /// Parses and validates a genesis document.
    pub fn from_json(s: &str) -> Result<Genesis, GenesisError> {
        let genesis: Genesis = serde_json::from_str(s).map_err(|e| GenesisError::Parse {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        genesis.validate()?;
        Ok(genesis)
    }

    /// Reads, parses and validates the genesis file at `path`.
    pub fn load(path: &Path) -> Result<Genesis, GenesisError> {
        let text = std::fs::read_to_string(path).map_err(|source| GenesisError::Io {
            path: path.to_owned(),
            source,
        })?;
        Genesis::from_json(&text)
    }

    /// Pretty JSON with a trailing newline; [`Genesis::from_json`] reads it back unchanged.
    pub fn to_json_pretty(&self) -> String {
        // Every field is a string, integer, bool, sequence or struct: JSON can hold them all.
        let mut s = serde_json::to_string_pretty(self).expect("genesis always serialises to JSON");
        s.push('\n');
        s
    }

    /// The genesis hash: [`Domain::Genesis`] over the canonical encoding.
    /// It is the parent of block 1, so two nodes agree on it or share no chain.
    pub fn hash(&self) -> Hash {
        Domain::Genesis.hash(&codec::encode(self))
    }

    /// The embedded single-validator dev genesis (chain `trellis-dev`, insecure keys).
    pub fn dev() -> Genesis {
        Genesis::from_json(include_str!("../dev.json")).expect(
            "embedded dev.json is valid: pinned by embedded_genesis_files_match_the_generator",
        )
    }

    /// The embedded four-validator local genesis (chain `trellis-local`, insecure keys).
    pub fn local() -> Genesis {
        Genesis::from_json(include_str!("../local-4.json")).expect(
            "embedded local-4.json is valid: pinned by embedded_genesis_files_match_the_generator",
        )
    }

    /// The member organisations, as the node stores them in genesis state.
    pub fn organisations(&self) -> Vec<Organisation> {
        self.organisations
            .iter()
            .map(|o| Organisation {
                id: o.id.clone(),
                name: o.name.clone(),
                roles: o.roles.clone(),
            })
            .collect()
    }

    /// Every account key with its organisation, as the node stores them in genesis state.
    pub fn accounts(&self) -> Vec<Account> {
        self.organisations
            .iter()
            .flat_map(|o| {
                o.accounts.iter().map(|a| Account {
                    key: a.key,
                    org: o.id.clone(),
                    org_admin: a.org_admin,
                })
            })
            .collect()
    }

    /// The consensus keys of the validator set, in genesis order.
    pub fn validator_keys(&self) -> Vec<PublicKey> {
        self.validators.iter().map(|v| v.consensus_key).collect()
    }

    /// The node identities allowed to connect: validators' then observers'.
    pub fn node_keys(&self) -> Vec<PublicKey> {
        self.validators
            .iter()
            .map(|v| v.node_key)
            .chain(self.observers.iter().map(|o| o.node_key))
            .collect()
    }

    /// Checks everything listed in the module header; the first problem found is returned.
    pub fn validate(&self) -> Result<(), GenesisError> {
        validate_chain_id(&self.chain_id)?;
        if self.genesis_time_ms > MAX_GENESIS_TIME_MS {
            return Err(GenesisError::ParamOutOfRange {
                param: "genesis_time_ms",
                value: self.genesis_time_ms,
                rule: "must be before the year 10000",
            });
        }
        validate_params(&self.params)?;

        let mut keys = KeyRegistry::default();
        let mut orgs = BTreeSet::new();
        let mut has_admin = false;
        for org in &self.organisations {
            if !is_id(&org.id, false) {
                return Err(GenesisError::InvalidOrgId {
                    org: org.id.clone(),
                });
            }
            if org.name.trim().is_empty() {
                return Err(GenesisError::EmptyOrgName {
                    org: org.id.clone(),
                });
            }
            if !orgs.insert(org.id.as_str()) {
                return Err(GenesisError::DuplicateOrg {
                    org: org.id.clone(),
                });
            }
            if org.roles.is_empty() {
                return Err(GenesisError::NoRoles {
                    org: org.id.clone(),
                });
            }
            if !roles_are_canonical(&org.roles) {
                return Err(GenesisError::UnsortedRoles {
                    org: org.id.clone(),
                });
            }
            has_admin |= org.roles.contains(&Role::Admin);
            for account in &org.accounts {
                keys.add(account.key, || {
                    format!("account {:?} of {:?}", account.label, org.id)
                })?;
            }
        }
        if !has_admin {
            return Err(GenesisError::NoAdmin);
        }

        if self.validators.is_empty() {
            return Err(GenesisError::NoValidators);
        }
        let mut names = BTreeSet::new();
        let nodes = self
            .validators
            .iter()
            .map(|v| (&v.name, &v.org, "validator"))
            .chain(self.observers.iter().map(|o| (&o.name, &o.org, "observer")));
        for (name, org, kind) in nodes {
            if !is_id(name, true) {
                return Err(GenesisError::InvalidNodeName { name: name.clone() });
            }
            if !names.insert(name.as_str()) {
                return Err(GenesisError::DuplicateNodeName { name: name.clone() });
            }
            if !orgs.contains(org.as_str()) {
                return Err(GenesisError::UnknownOrg {
                    owner: format!("{kind} {name:?}"),
                    org: org.clone(),
                });
            }
        }
        for v in &self.validators {
            keys.add(v.consensus_key, || {
                format!("consensus key of validator {:?}", v.name)
            })?;
            keys.add(v.node_key, || format!("node key of validator {:?}", v.name))?;
        }
        for o in &self.observers {
            keys.add(o.node_key, || format!("node key of observer {:?}", o.name))?;
        }

        let accounts: BTreeSet<PublicKey> = self
            .organisations
            .iter()
            .flat_map(|o| o.accounts.iter().map(|a| a.key))
            .collect();
        let mut contracts = BTreeSet::new();
        for c in &self.contracts {
            if c.name.trim().is_empty() || !contracts.insert(c.name.as_str()) {
                return Err(GenesisError::InvalidContractName {
                    name: c.name.clone(),
                });
            }
            if !accounts.contains(&c.deployer) {
                return Err(GenesisError::UnknownDeployer {
                    contract: c.name.clone(),
                    deployer: c.deployer,
                });
            }
        }
        if !self.insecure_dev_keys {
            self.refuse_dev_keys()?;
        }
        Ok(())
    }

    /// A genesis that does not say its keys are insecure holds none that
    /// [`crate::build`] derives from public labels: an account, validator or
    /// observer key left over from a generated genesis would let anyone sign
    /// for it.
    fn refuse_dev_keys(&self) -> Result<(), GenesisError> {
        let derived = |label: String, key: &PublicKey, owner: &dyn Fn() -> String| {
            if KeyPair::insecure_from_label(&label).public() == *key {
                Err(GenesisError::DevKey {
                    owner: owner(),
                    label,
                })
            } else {
                Ok(())
            }
        };
        for org in &self.organisations {
            for account in &org.accounts {
                let owner = || format!("account {:?} of {}", account.label, org.id);
                derived(format!("account/{}", account.label), &account.key, &owner)?;
                derived(format!("account/{}/ops", org.id), &account.key, &owner)?;
            }
        }
        for seed in PUBLIC_SEEDS {
            for v in &self.validators {
                let owner = || format!("validator {}", v.name);
                derived(
                    format!("{seed}/{}/consensus", v.name),
                    &v.consensus_key,
                    &owner,
                )?;
                derived(format!("{seed}/{}/node", v.name), &v.node_key, &owner)?;
            }
            for o in &self.observers {
                let owner = || format!("observer {}", o.name);
                derived(format!("{seed}/{}/node", o.name), &o.node_key, &owner)?;
            }
        }
        Ok(())
    }
}

/// Every key seen so far, with who uses it, so a clash names both users.
#[derive(Default)]
struct KeyRegistry {
    seen: BTreeMap<PublicKey, String>,
}

impl KeyRegistry {
    fn add(&mut self, key: PublicKey, owner: impl Fn() -> String) -> Result<(), GenesisError> {
        key.verifying_key()
            .map_err(|reason| GenesisError::InvalidKey {
                owner: owner(),
                key,
                reason,
            })?;
        if let Some(first) = self.seen.get(&key) {
            return Err(GenesisError::DuplicateKey {
                key,
                first: first.clone(),
                second: owner(),
            });
        }
        self.seen.insert(key, owner());
        Ok(())
    }
}

fn validate_chain_id(chain_id: &str) -> Result<(), GenesisError> {
    let reason = if chain_id.is_empty() {
        "it is empty"
    } else if chain_id.len() > MAX_CHAIN_ID_LEN {
        "it is longer than 64 bytes"
    } else if !chain_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        "use only ASCII letters, digits, '-', '_' and '.'"
    } else {
        return Ok(());
    };
    Err(GenesisError::InvalidChainId {
        chain_id: chain_id.to_owned(),
        reason,
    })
}

/// The largest block: it travels in one frame, whose length is a u32.
const MAX_BLOCK_BYTES: u64 = 1 << 30;
/// The longest wait for a block.
const MAX_INTERVAL_MS: u64 = 3_600_000;
/// The last millisecond of the year 9999: chain time stays far from overflow.
const MAX_GENESIS_TIME_MS: u64 = 253_402_300_799_999;

fn validate_params(p: &ChainParams) -> Result<(), GenesisError> {
    let check = |ok: bool, param: &'static str, value: u64, rule: &'static str| {
        if ok {
            Ok(())
        } else {
            Err(GenesisError::ParamOutOfRange { param, value, rule })
        }
    };
    check(
        p.max_block_txs > 0,
        "max_block_txs",
        p.max_block_txs.into(),
        "must be at least 1",
    )?;
    check(
        (1..=MAX_BLOCK_BYTES).contains(&p.max_block_bytes),
        "max_block_bytes",
        p.max_block_bytes,
        "must be 1 to 1073741824 (1 GiB): a block travels in one frame",
    )?;
    check(
        p.max_tx_bytes > 0,
        "max_tx_bytes",
        p.max_tx_bytes.into(),
        "must be at least 1",
    )?;
    check(
        u64::from(p.max_tx_bytes) <= p.max_block_bytes,
        "max_tx_bytes",
        p.max_tx_bytes.into(),
        "must not exceed max_block_bytes, or the largest transaction fits in no block",
    )?;
    check(
        p.block_interval_ms > 0,
        "block_interval_ms",
        p.block_interval_ms,
        "must be at least 1",
    )?;
    check(
        (p.block_interval_ms..=MAX_INTERVAL_MS).contains(&p.idle_block_interval_ms),
        "idle_block_interval_ms",
        p.idle_block_interval_ms,
        "must be at least block_interval_ms and at most 3600000 (an hour)",
    )?;
    check(
        p.max_nonce_gap > 0,
        "max_nonce_gap",
        p.max_nonce_gap,
        "must be at least 1, or no transaction is admitted",
    )?;
    check(
        u64::from(p.mempool_per_sender) >= p.max_nonce_gap,
        "mempool_per_sender",
        p.mempool_per_sender.into(),
        "must be at least max_nonce_gap, or a sender whose queue is full of later \
         nonces could not send the one they wait for",
    )?;
    check(
        p.max_expiry_ms > 0,
        "max_expiry_ms",
        p.max_expiry_ms,
        "must be at least 1",
    )?;
    check(
        p.mempool_capacity > 0,
        "mempool_capacity",
        p.mempool_capacity.into(),
        "must be at least 1",
    )?;
    check(
        p.mempool_per_sender > 0 && p.mempool_per_sender <= p.mempool_capacity,
        "mempool_per_sender",
        p.mempool_per_sender.into(),
        "must be between 1 and mempool_capacity",
    )?;
    check(
        p.fuel_per_call > 0,
        "fuel_per_call",
        p.fuel_per_call,
        "must be at least 1",
    )?;
    check(
        (WASM_PAGE_BYTES..=trellis_types::params::MAX_CONTRACT_MEMORY_BYTES)
            .contains(&p.max_memory_bytes),
        "max_memory_bytes",
        p.max_memory_bytes,
        "must be between one WASM page (65536) and 268435456 (256 MiB)",
    )?;
    check(
        p.max_call_depth > 0,
        "max_call_depth",
        p.max_call_depth.into(),
        "must be at least 1",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{NetworkSpec, build, dev_account};

    fn sample() -> Genesis {
        let spec = NetworkSpec {
            observers: 2,
            ..NetworkSpec::local()
        };
        build(&spec).expect("local spec builds").0
    }

    fn refused(mutate: impl FnOnce(&mut Genesis)) -> GenesisError {
        let mut g = sample();
        mutate(&mut g);
        g.validate().expect_err("mutated genesis must be refused")
    }

    fn org<'a>(g: &'a mut Genesis, id: &str) -> &'a mut GenesisOrganisation {
        g.organisations
            .iter_mut()
            .find(|o| o.id == id)
            .expect("sample has the org")
    }

    /// The identity point: a valid encoding of a small-order (weak) key.
    const WEAK: PublicKey = {
        let mut k = [0u8; 32];
        k[0] = 1;
        PublicKey(k)
    };

    #[test]
    fn json_round_trips_and_keeps_the_hash() {
        let g = sample();
        let json = g.to_json_pretty();
        let back = Genesis::from_json(&json).expect("own output parses");
        assert_eq!(back, g);
        assert_eq!(back.hash(), g.hash());
        assert_eq!(back.to_json_pretty(), json);
    }

    #[test]
    fn hash_is_stable_across_canonical_encode_and_decode() {
        let g = sample();
        let bytes = codec::encode(&g);
        let back: Genesis = codec::decode(&bytes).expect("canonical bytes decode");
        assert_eq!(back, g);
        assert_eq!(back.hash(), g.hash());
        assert_eq!(codec::encode(&back), bytes);
    }

    #[test]
    fn hash_changes_with_any_field() {
        let g = sample();
        let mut later = g.clone();
        later.genesis_time_ms += 1;
        assert_ne!(later.hash(), g.hash());
        let mut fewer = g.clone();
        fewer.observers.pop();
        assert_ne!(fewer.hash(), g.hash());
    }

    #[test]
    fn unknown_field_is_refused_by_name() {
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json_pretty()).unwrap();
        v["validator_count"] = 4.into();
        let err = Genesis::from_json(&v.to_string()).unwrap_err();
        assert!(matches!(err, GenesisError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("validator_count"), "{err}");

        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json_pretty()).unwrap();
        v["organisations"][0]["accounts"][0]["admin"] = true.into();
        let err = Genesis::from_json(&v.to_string()).unwrap_err();
        assert!(err.to_string().contains("`admin`"), "{err}");

        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json_pretty()).unwrap();
        v["params"]["block_size"] = 1.into();
        let err = Genesis::from_json(&v.to_string()).unwrap_err();
        assert!(err.to_string().contains("block_size"), "{err}");
    }

    #[test]
    fn missing_field_and_bad_hex_are_parse_errors() {
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json_pretty()).unwrap();
        v.as_object_mut().unwrap().remove("validators");
        let err = Genesis::from_json(&v.to_string()).unwrap_err();
        assert!(err.to_string().contains("validators"), "{err}");

        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json_pretty()).unwrap();
        v["validators"][0]["node_key"] = "abcd".into();
        assert!(matches!(
            Genesis::from_json(&v.to_string()),
            Err(GenesisError::Parse { .. })
        ));
    }

    #[test]
    fn from_json_validates() {
        let mut g = sample();
        g.validators.clear();
        let err = Genesis::from_json(&g.to_json_pretty()).unwrap_err();
        assert!(matches!(err, GenesisError::NoValidators), "{err}");
    }

    #[test]
    fn chain_id_must_be_present_short_and_plain() {
        for bad in ["", "has space", "ünï", &"x".repeat(65)] {
            let err = refused(|g| g.chain_id = bad.to_owned());
            assert!(
                matches!(err, GenesisError::InvalidChainId { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn organisation_ids_must_be_well_formed_and_unique() {
        for bad in ["", "Core-Acme", "core/acme", "core acme"] {
            let err = refused(|g| g.organisations[1].id = bad.to_owned());
            assert!(
                matches!(err, GenesisError::InvalidOrgId { .. }),
                "{bad:?}: {err}"
            );
        }
        let err = refused(|g| g.organisations[2].id = g.organisations[1].id.clone());
        assert!(
            matches!(err, GenesisError::DuplicateOrg { ref org } if org == "core-acme"),
            "{err}"
        );
        let err = refused(|g| g.organisations[1].name = " ".into());
        assert!(matches!(err, GenesisError::EmptyOrgName { .. }), "{err}");
    }

    #[test]
    fn organisation_without_roles_is_refused() {
        let err = refused(|g| org(g, "regulator").roles.clear());
        assert!(
            matches!(err, GenesisError::NoRoles { ref org } if org == "regulator"),
            "{err}"
        );
    }

    #[test]
    fn roles_must_be_sorted_and_unique() {
        let err = refused(|g| org(g, "core-acme").roles = vec![Role::Bank, Role::CoreEnterprise]);
        assert!(matches!(err, GenesisError::UnsortedRoles { .. }), "{err}");
        let err = refused(|g| org(g, "bank-first").roles = vec![Role::Bank, Role::Bank]);
        assert!(matches!(err, GenesisError::UnsortedRoles { .. }), "{err}");
    }

    #[test]
    fn a_genesis_without_admins_is_refused() {
        let err = refused(|g| org(g, "consortium").roles = vec![Role::Regulator]);
        assert!(matches!(err, GenesisError::NoAdmin), "{err}");
    }

    #[test]
    fn account_keys_must_be_unique_across_organisations() {
        let err = refused(|g| {
            let k = org(g, "core-acme").accounts[0].key;
            org(g, "supplier-t2").accounts[0].key = k;
        });
        let GenesisError::DuplicateKey { first, second, .. } = &err else {
            panic!("{err}")
        };
        assert!(
            first.contains("core-acme") && second.contains("supplier-t2"),
            "{err}"
        );
    }

    #[test]
    fn a_key_may_not_be_both_an_account_and_a_node_key() {
        let err = refused(|g| g.validators[0].node_key = g.organisations[0].accounts[0].key);
        assert!(matches!(err, GenesisError::DuplicateKey { .. }), "{err}");
        let err = refused(|g| g.validators[1].consensus_key = g.validators[0].consensus_key);
        assert!(matches!(err, GenesisError::DuplicateKey { .. }), "{err}");
        let err = refused(|g| g.observers[1].node_key = g.validators[2].node_key);
        assert!(matches!(err, GenesisError::DuplicateKey { .. }), "{err}");
    }

    #[test]
    fn weak_and_malformed_keys_are_refused() {
        let err = refused(|g| g.organisations[0].accounts[0].key = WEAK);
        assert!(
            matches!(
                err,
                GenesisError::InvalidKey {
                    reason: SignatureError::WeakKey,
                    ..
                }
            ),
            "{err}"
        );
        // About half of all y coordinates have no point on the curve.
        let off_curve = (2u8..)
            .map(|y| {
                let mut k = [0u8; 32];
                k[0] = y;
                PublicKey(k)
            })
            .find(|k| k.verifying_key() == Err(SignatureError::MalformedKey))
            .expect("some small y is off the curve");
        let err = refused(|g| g.validators[0].consensus_key = off_curve);
        assert!(
            matches!(
                err,
                GenesisError::InvalidKey {
                    reason: SignatureError::MalformedKey,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("validator-0"), "{err}");
        let err = refused(|g| g.observers[0].node_key = WEAK);
        assert!(matches!(err, GenesisError::InvalidKey { .. }), "{err}");
    }

    #[test]
    fn a_genesis_without_validators_is_refused() {
        let err = refused(|g| g.validators.clear());
        assert!(matches!(err, GenesisError::NoValidators), "{err}");
    }

    #[test]
    fn nodes_must_belong_to_a_listed_organisation() {
        let err = refused(|g| g.validators[0].org = "nobody".into());
        assert!(
            matches!(err, GenesisError::UnknownOrg { ref org, .. } if org == "nobody"),
            "{err}"
        );
        let err = refused(|g| g.observers[0].org = "nobody".into());
        assert!(err.to_string().contains("observer"), "{err}");
    }

    #[test]
    fn node_names_must_be_path_safe_and_unique() {
        for bad in ["", "../x", "Validator", "a b"] {
            let err = refused(|g| g.validators[0].name = bad.into());
            assert!(
                matches!(err, GenesisError::InvalidNodeName { .. }),
                "{bad:?}: {err}"
            );
        }
        let err = refused(|g| g.observers[0].name = g.validators[0].name.clone());
        assert!(
            matches!(err, GenesisError::DuplicateNodeName { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_genesis_that_does_not_say_its_keys_are_insecure_holds_no_dev_key() {
        let mut g = sample();
        g.insecure_dev_keys = false;
        let err = g.validate().expect_err("the generated keys are public");
        assert!(
            matches!(&err, GenesisError::DevKey { label, .. } if label == "account/consortium/ops"),
            "{err}"
        );
        // Every key replaced by one its owner made: valid.
        let mut n = 0u8;
        let mut fresh = || {
            n += 1;
            KeyPair::from_seed(*blake3::hash(&[b'k', n]).as_bytes()).public()
        };
        let deployer = g.contracts[0].deployer;
        for org in &mut g.organisations {
            for account in &mut org.accounts {
                let key = fresh();
                if account.key == deployer {
                    for c in &mut g.contracts {
                        c.deployer = key;
                    }
                }
                account.key = key;
            }
        }
        let mut owned = g.clone();
        for v in &mut owned.validators {
            (v.consensus_key, v.node_key) = (fresh(), fresh());
        }
        for o in &mut owned.observers {
            o.node_key = fresh();
        }
        owned
            .validate()
            .expect("no key derivable from a public label");
        // A validator's key left from the generator is found too.
        let err = g
            .validate()
            .expect_err("validator keys from the public seed");
        assert!(
            matches!(&err, GenesisError::DevKey { owner, .. } if owner.starts_with("validator ")),
            "{err}"
        );
    }

    #[test]
    fn params_out_of_range_are_refused_by_name() {
        type Mutation = fn(&mut ChainParams);
        let cases: [(&str, Mutation); 17] = [
            ("max_block_txs", |p| p.max_block_txs = 0),
            ("max_block_bytes", |p| p.max_block_bytes = 0),
            ("max_block_bytes", |p| p.max_block_bytes = u64::MAX),
            ("max_tx_bytes", |p| p.max_tx_bytes = 0),
            ("max_tx_bytes", |p| {
                p.max_tx_bytes = (p.max_block_bytes + 1) as u32
            }),
            ("block_interval_ms", |p| p.block_interval_ms = 0),
            ("idle_block_interval_ms", |p| {
                p.idle_block_interval_ms = p.block_interval_ms - 1
            }),
            ("idle_block_interval_ms", |p| {
                p.idle_block_interval_ms = MAX_INTERVAL_MS + 1
            }),
            ("max_nonce_gap", |p| p.max_nonce_gap = 0),
            ("mempool_per_sender", |p| {
                p.mempool_per_sender = (p.max_nonce_gap - 1) as u32
            }),
            ("max_expiry_ms", |p| p.max_expiry_ms = 0),
            ("mempool_capacity", |p| p.mempool_capacity = 0),
            ("mempool_per_sender", |p| {
                p.mempool_per_sender = p.mempool_capacity + 1
            }),
            ("fuel_per_call", |p| p.fuel_per_call = 0),
            ("max_memory_bytes", |p| p.max_memory_bytes = 1024),
            ("max_memory_bytes", |p| p.max_memory_bytes = 512 << 20),
            ("max_call_depth", |p| p.max_call_depth = 0),
        ];
        for (name, mutate) in cases {
            let err = refused(|g| mutate(&mut g.params));
            assert!(
                matches!(err, GenesisError::ParamOutOfRange { param, .. } if param == name),
                "{name}: {err}"
            );
        }
        let err = refused(|g| g.genesis_time_ms = u64::MAX);
        assert!(
            matches!(
                err,
                GenesisError::ParamOutOfRange {
                    param: "genesis_time_ms",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn contracts_need_a_unique_name_and_a_genesis_deployer() {
        let contract = |name: &str, deployer: PublicKey| GenesisContract {
            name: name.into(),
            code_hash: Domain::Genesis.hash(b"code"),
            salt: Hash::ZERO,
            deployer,
            calls: vec![],
        };
        let admin = dev_account("consortium/ops").public();
        let mut g = sample();
        g.contracts = vec![contract("receivables", admin)];
        g.validate()
            .expect("a contract deployed by an account is fine");

        let err = refused(|g| g.contracts = vec![contract("a", admin), contract("a", admin)]);
        assert!(
            matches!(err, GenesisError::InvalidContractName { .. }),
            "{err}"
        );
        let stranger = dev_account("stranger/ops").public();
        let err = refused(|g| g.contracts = vec![contract("a", stranger)]);
        assert!(matches!(err, GenesisError::UnknownDeployer { .. }), "{err}");
    }

    #[test]
    fn load_reports_the_missing_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.json");
        let err = Genesis::load(&path).unwrap_err();
        assert!(matches!(err, GenesisError::Io { .. }));
        assert!(err.to_string().contains("nope.json"), "{err}");
    }

    #[test]
    fn organisations_and_accounts_reflect_the_document() {
        let g = Genesis::dev();
        let orgs = g.organisations();
        assert_eq!(orgs.len(), 7);
        let acme = orgs.iter().find(|o| o.id == "core-acme").unwrap();
        assert!(acme.has_role(Role::CoreEnterprise));
        let accounts = g.accounts();
        assert_eq!(accounts.len(), 7);
        let ops = dev_account("core-acme/ops").public();
        assert!(
            accounts
                .iter()
                .any(|a| a.key == ops && a.org == "core-acme" && a.org_admin)
        );
        assert_eq!(g.validator_keys().len(), 1);
        assert_eq!(g.node_keys(), vec![g.validators[0].node_key]);
    }
}
