//! `trellis-node genesis generate`: writes a runnable dev/test network to a directory.
//!
//! [`write_network`] lays out `genesis.json` and one directory per node with its
//! `config.toml` and key files, ready for `trellis-node --config <dir>/config.toml`.
//! The output is a pure function of its arguments: the same seed gives
//! byte-identical files. Every node gets its own loopback ports and dials all
//! the others. It never overwrites a non-empty directory unless told to. The
//! keys are derived from a public seed (see `trellis_genesis::network`): the
//! result is for development and tests and must never guard value.

use crate::config::{ApiConfig, NodeConfig, P2pConfig, write_key_file};
use crate::storage::Indexes;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use trellis_genesis::{GenesisError, NetworkSpec, build};

/// Why a network could not be written.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("invalid network: {0}")]
    Genesis(#[from] GenesisError),
    #[error("{} is not empty; choose another directory or pass --force to overwrite", path.display())]
    OutDirNotEmpty { path: PathBuf },
    #[error(
        "{what} ports {base}..{base}+{count} do not fit: the base must be at least 1 and the last port at most 65535"
    )]
    PortsOutOfRange {
        what: &'static str,
        base: u16,
        count: usize,
    },
    #[error("API ports {api}.. and p2p ports {p2p}.. overlap for {count} nodes")]
    PortsOverlap { api: u16, p2p: u16, count: usize },
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes the network of `spec` to `out_dir` and returns each node's
/// `config.toml` path (validators first, then observers, in genesis order).
///
/// Node `i` (in that order) gets API `127.0.0.1:(base_api_port + i)` and p2p
/// `/ip4/127.0.0.1/tcp/(base_p2p_port + i)`. Validators keep
/// `validator_indexes`, observers both indexes (they are the nodes that serve
/// queries). With `force`, files of the same name in `out_dir` are
/// overwritten; anything else there (an older node's directory or `data/`) is
/// left alone.
pub fn write_network(
    spec: &NetworkSpec,
    out_dir: &Path,
    base_api_port: u16,
    base_p2p_port: u16,
    validator_indexes: Indexes,
    force: bool,
) -> Result<Vec<PathBuf>, GenerateError> {
    let (genesis, nodes) = build(spec)?;
    let count = nodes.len();
    let api_ports = ports("API", base_api_port, count)?;
    let p2p_ports = ports("p2p", base_p2p_port, count)?;
    let (api, p2p) = (usize::from(base_api_port), usize::from(base_p2p_port));
    if api < p2p + count && p2p < api + count {
        return Err(GenerateError::PortsOverlap {
            api: base_api_port,
            p2p: base_p2p_port,
            count,
        });
    }
    if !force && is_non_empty_dir(out_dir)? {
        return Err(GenerateError::OutDirNotEmpty {
            path: out_dir.to_owned(),
        });
    }

    create_dir(out_dir)?;
    write(
        &out_dir.join("genesis.json"),
        genesis.to_json_pretty().as_bytes(),
    )?;

    let p2p_addrs: Vec<String> = p2p_ports
        .iter()
        .map(|port| format!("/ip4/127.0.0.1/tcp/{port}"))
        .collect();
    let mut configs = Vec::with_capacity(count);
    for (i, (keys, api_port)) in nodes.iter().zip(api_ports).enumerate() {
        let dir = out_dir.join(&keys.name);
        create_dir(&dir)?;
        let config = NodeConfig {
            data_dir: PathBuf::from("data"),
            genesis: Some(PathBuf::from("../genesis.json")),
            validator_key: keys
                .consensus
                .as_ref()
                .map(|_| PathBuf::from("validator.key")),
            node_key: Some(PathBuf::from("node.key")),
            api: ApiConfig {
                listen: SocketAddr::from((Ipv4Addr::LOCALHOST, api_port)),
                ..ApiConfig::default()
            },
            p2p: P2pConfig {
                listen: p2p_addrs[i].clone(),
                peers: p2p_addrs
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, a)| a.clone())
                    .collect(),
            },
            index: match keys.consensus {
                Some(_) => validator_indexes,
                None => Indexes::default(),
            },
            ..NodeConfig::default()
        };
        let role = if keys.consensus.is_some() {
            "validator"
        } else {
            "observer"
        };
        let text = format!(
            "# Node {name} ({role}) of chain {chain}, written by `trellis-node genesis generate`.\n\
             # INSECURE: its keys derive from a public seed; never let them guard value.\n\
             # Every key is documented in docs/operator.md.\n\n{body}",
            name = keys.name,
            chain = genesis.chain_id,
            body = config.to_toml(),
        );
        let path = dir.join("config.toml");
        write(&path, text.as_bytes())?;
        if let Some(consensus) = &keys.consensus {
            write_key(&dir.join("validator.key"), consensus)?;
        }
        write_key(&dir.join("node.key"), &keys.node)?;
        configs.push(path);
    }
    Ok(configs)
}

/// The ports `base, base + 1, ..` of `count` nodes, all within 1..=65535.
fn ports(what: &'static str, base: u16, count: usize) -> Result<Vec<u16>, GenerateError> {
    let out_of_range = || GenerateError::PortsOutOfRange { what, base, count };
    if base == 0 {
        return Err(out_of_range());
    }
    (0..count)
        .map(|i| {
            u16::try_from(i)
                .ok()
                .and_then(|i| base.checked_add(i))
                .ok_or_else(out_of_range)
        })
        .collect()
}

fn is_non_empty_dir(path: &Path) -> Result<bool, GenerateError> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(GenerateError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn create_dir(path: &Path) -> Result<(), GenerateError> {
    std::fs::create_dir_all(path).map_err(|source| GenerateError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), GenerateError> {
    std::fs::write(path, bytes).map_err(|source| GenerateError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_key(path: &Path, key: &trellis_types::KeyPair) -> Result<(), GenerateError> {
    write_key_file(path, key).map_err(|source| GenerateError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::read_key_file;
    use std::collections::BTreeSet;
    use trellis_genesis::Genesis;

    fn spec() -> NetworkSpec {
        NetworkSpec {
            observers: 1,
            ..NetworkSpec::local()
        }
    }

    /// [`write_network`] with every node keeping both indexes.
    fn write_default(
        spec: &NetworkSpec,
        out: &Path,
        api: u16,
        p2p: u16,
        force: bool,
    ) -> Result<Vec<PathBuf>, GenerateError> {
        write_network(spec, out, api, p2p, Indexes::default(), force)
    }

    /// Every file under `dir`, relative path to content, for byte comparison.
    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let content = std::fs::read(&path).unwrap();
                    out.push((path.strip_prefix(dir).unwrap().to_owned(), content));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn writes_a_runnable_layout_whose_keys_match_the_genesis() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("net");
        let configs = write_default(&spec(), &out, 18080, 26656, false).unwrap();
        assert_eq!(configs.len(), 5);

        let genesis = Genesis::load(&out.join("genesis.json")).unwrap();
        assert_eq!(genesis, build(&spec()).unwrap().0);

        let mut api_ports = BTreeSet::new();
        let mut p2p_addrs = BTreeSet::new();
        for (i, path) in configs.iter().enumerate() {
            let dir = path.parent().unwrap();
            let config = NodeConfig::load(path).unwrap();
            assert_eq!(config.data_dir, dir.join("data"));
            assert_eq!(config.genesis, Some(dir.join("../genesis.json")));
            assert_eq!(
                Genesis::load(config.genesis.as_ref().unwrap()).unwrap(),
                genesis
            );
            assert_eq!(config.api.listen.ip(), Ipv4Addr::LOCALHOST);
            assert!(api_ports.insert(config.api.listen.port()));
            assert!(p2p_addrs.insert(config.p2p.listen.clone()));
            assert_eq!(config.p2p.peers.len(), configs.len() - 1);
            assert!(!config.p2p.peers.contains(&config.p2p.listen));

            assert_eq!(config.index, Indexes::default());
            let node_key = read_key_file(&config.node_key_path()).unwrap().public();
            if let Some(v) = genesis.validators.get(i) {
                assert_eq!(dir.file_name().unwrap(), v.name.as_str());
                let consensus = read_key_file(config.validator_key.as_ref().unwrap()).unwrap();
                assert_eq!(consensus.public(), v.consensus_key);
                assert_eq!(node_key, v.node_key);
            } else {
                let o = &genesis.observers[i - genesis.validators.len()];
                assert_eq!(dir.file_name().unwrap(), o.name.as_str());
                assert_eq!(config.validator_key, None);
                assert!(!dir.join("validator.key").exists());
                assert_eq!(node_key, o.node_key);
            }
        }
        assert_eq!(api_ports, (18080..18085).collect());
        let every_peer: BTreeSet<_> = configs
            .iter()
            .flat_map(|p| NodeConfig::load(p).unwrap().p2p.peers)
            .collect();
        assert_eq!(every_peer, p2p_addrs, "each node is dialled by the others");
    }

    #[test]
    fn validators_can_be_written_without_indexes_while_observers_keep_both() {
        let tmp = tempfile::tempdir().unwrap();
        let configs =
            write_network(&spec(), tmp.path(), 18080, 26656, Indexes::NONE, false).unwrap();
        let kept: Vec<_> = configs
            .iter()
            .map(|path| {
                let config = NodeConfig::load(path).unwrap();
                (config.validator_key.is_some(), config.index)
            })
            .collect();
        let validator = (true, Indexes::NONE);
        let observer = (false, Indexes::default());
        assert_eq!(kept, [validator, validator, validator, validator, observer]);
        let text = std::fs::read_to_string(&configs[0]).unwrap();
        assert!(
            text.contains("[index]\ntransactions = false\nqueries = false"),
            "{text}"
        );
    }

    #[test]
    fn the_same_seed_gives_byte_identical_files() {
        let tmp = tempfile::tempdir().unwrap();
        write_default(&spec(), &tmp.path().join("a"), 18080, 26656, false).unwrap();
        write_default(&spec(), &tmp.path().join("b"), 18080, 26656, false).unwrap();
        assert_eq!(
            snapshot(&tmp.path().join("a")),
            snapshot(&tmp.path().join("b"))
        );

        let other = NetworkSpec {
            seed: "other".into(),
            ..spec()
        };
        write_default(&other, &tmp.path().join("c"), 18080, 26656, false).unwrap();
        assert_ne!(
            snapshot(&tmp.path().join("a")),
            snapshot(&tmp.path().join("c"))
        );
    }

    #[test]
    fn a_non_empty_directory_is_only_overwritten_with_force() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
        let err = write_default(&spec(), tmp.path(), 18080, 26656, false).unwrap_err();
        assert!(matches!(err, GenerateError::OutDirNotEmpty { .. }), "{err}");
        assert!(!tmp.path().join("genesis.json").exists());

        write_default(&spec(), tmp.path(), 18080, 26656, true).unwrap();
        assert!(tmp.path().join("genesis.json").exists());
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("notes.txt")).unwrap(),
            "mine"
        );

        // An existing empty directory needs no force.
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        write_default(&spec(), &empty, 18080, 26656, false).unwrap();
    }

    #[test]
    fn ports_must_fit_and_not_overlap() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("net");
        let err = write_default(&spec(), &out, 65533, 26656, false).unwrap_err();
        assert!(
            matches!(err, GenerateError::PortsOutOfRange { what: "API", .. }),
            "{err}"
        );
        let err = write_default(&spec(), &out, 18080, 0, false).unwrap_err();
        assert!(
            matches!(err, GenerateError::PortsOutOfRange { what: "p2p", .. }),
            "{err}"
        );
        let err = write_default(&spec(), &out, 18080, 18084, false).unwrap_err();
        assert!(matches!(err, GenerateError::PortsOverlap { .. }), "{err}");
        assert!(
            !out.exists(),
            "nothing is written when the arguments are refused"
        );
        // The very last port is usable.
        write_default(&spec(), &out, 65531, 26656, false).unwrap();
    }

    #[test]
    fn an_invalid_spec_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let no_validators = NetworkSpec {
            validators: 0,
            ..spec()
        };
        let err = write_default(&no_validators, tmp.path(), 18080, 26656, false).unwrap_err();
        assert!(
            matches!(err, GenerateError::Genesis(GenesisError::NoValidators)),
            "{err}"
        );
    }
}
