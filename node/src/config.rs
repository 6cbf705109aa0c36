//! The node's TOML configuration and its key files.
//!
//! Every section and key is optional and has the default written in its doc
//! comment (and in [`EXAMPLE_TOML`], which a test keeps equal to
//! [`NodeConfig::default`]). An unknown key, at any level, is refused with its
//! name, so a typo never silently falls back to a default. [`NodeConfig::load`]
//! resolves relative paths against the config file's directory, so a node
//! behaves the same whatever directory it is started from. Key files hold the
//! 32-byte ed25519 seed as hex and are written readable by the owner only.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use trellis_types::KeyPair;
use zeroize::Zeroizing;

pub use crate::api::Access;
pub use crate::storage::Indexes;

/// A fully commented configuration with every default spelled out.
pub const EXAMPLE_TOML: &str = r#"# Trellis node configuration.
# Every key is optional: the values below are the defaults.
# Relative paths are resolved against the directory of this file.

# Directory of the node's database (and of its generated node key, see `node_key`).
data_dir = "data"

# Genesis file (JSON). Unset: the embedded single-validator dev genesis, whose
# keys are INSECURE (public).
# genesis = "genesis.json"

# File holding the hex seed of this validator's consensus key.
# Unset: the node is an observer and never votes.
# validator_key = "validator.key"

# File holding the hex seed of the node's libp2p identity.
# Unset: `<data_dir>/node.key`, generated on first start.
# node_key = "node.key"

[api]
# Address the HTTP API listens on.
listen = "127.0.0.1:8080"
# Largest request body accepted, in bytes (1 MiB); bounds a batch of
# transactions (POST /v1/transactions/batch) as a whole.
max_body_bytes = 1048576
# Who may read: "members" (each request signed by a member's account key;
# a member sees what concerns its organisation, a regulator everything) or
# "open" (no one is asked, everyone reads everything: only for a node no one
# but one member's own systems can reach). Submissions are open either way:
# a transaction is signed by its sender.
access = "members"

[p2p]
# Multiaddr the peer-to-peer transport listens on.
listen = "/ip4/127.0.0.1/tcp/26656"
# Multiaddrs of other nodes to dial, e.g. "/ip4/10.0.0.2/tcp/26656".
# Only nodes listed in the genesis are accepted, whatever is dialled.
peers = []

[mempool]
# Most bytes of transactions waiting here (256 MiB), beside the genesis's
# count limits; past it, submissions get 429 `mempool_full`.
max_bytes = 268435456

[storage]
# Memory sled, the chain database, may use to cache its pages, in MiB. The
# node's own caches (about 250 MiB), blocks in flight and the mempool come on
# top: a busy node peaked at 1.74 GiB on a 37 GiB store
# (docs/benchmarks.md). More cache buys little speed, as sled caches in 256
# shards of a 256th each.
cache_mib = 256

[index]
# Indexes kept beside the chain, for queries; neither is consensus data. A
# validator that serves no queries may keep neither (an eighth to a sixth of
# its CPU per transaction, docs/benchmarks.md). Fixed when the store is
# created: a stored chain with other indexes is refused.
# Transactions by hash: GET /v1/transactions/{hash} finds committed ones
# (without it, only those still in the mempool; 501 `not_indexed` otherwise).
transactions = true
# Contracts' query indexes: queries that list, such as a holder's pieces
# (without it, such queries fail with 501 `not_indexed`).
queries = true

[consensus]
# Each timeout is 1 to 3600000 ms (an hour); timeout_delta_ms at most that.
# How long to wait for a proposal in round 0, in ms. A proposer spends at
# most a third of it executing transactions, which bounds a busy block's size.
timeout_propose_ms = 1000
# How long to wait for more prevotes after seeing 2f+1 of any kind, in round 0, in ms.
timeout_prevote_ms = 500
# How long to wait for more precommits after seeing 2f+1 of any kind, in round 0, in ms.
timeout_precommit_ms = 500
# Added to each timeout per round, so rounds lengthen until the network catches up, in ms.
timeout_delta_ms = 250

[log]
# "text" for people, "json" for log collectors.
format = "text"
# A tracing EnvFilter directive, e.g. "info" or "info,trellis_node::consensus=debug".
# The RUST_LOG environment variable, when set, takes precedence.
level = "info"
"#;

/// The node's configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Directory of the node's database and generated node key. Default: `"data"`.
    pub data_dir: PathBuf,
    /// Genesis file (JSON). Default: unset, meaning the embedded dev genesis
    /// ([`trellis_genesis::Genesis::dev`], insecure keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub genesis: Option<PathBuf>,
    /// File holding the hex seed of the consensus key. Default: unset, meaning
    /// the node is an observer and never votes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validator_key: Option<PathBuf>,
    /// File holding the hex seed of the libp2p identity. Default: unset, meaning
    /// `<data_dir>/node.key`, generated on first start ([`NodeConfig::node_key_path`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_key: Option<PathBuf>,
    pub api: ApiConfig,
    pub p2p: P2pConfig,
    pub mempool: MempoolConfig,
    pub storage: StorageConfig,
    /// `[index]`: see [`Indexes`].
    pub index: Indexes,
    pub consensus: ConsensusConfig,
    pub log: LogConfig,
}

/// `[api]`: the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address the HTTP API listens on. Default: `"127.0.0.1:8080"`.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes. Default: `1048576` (1 MiB).
    pub max_body_bytes: usize,
    /// Who may read: `"members"` (default), each request signed by a
    /// member's account and each member seeing what concerns it, or
    /// `"open"`, everyone reading everything (docs/api.md, "Who reads what").
    pub access: Access,
}

/// `[p2p]`: the peer-to-peer transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct P2pConfig {
    /// Multiaddr to listen on. Default: `"/ip4/127.0.0.1/tcp/26656"`.
    pub listen: String,
    /// Multiaddrs of other nodes to dial. Default: `[]`. Only nodes whose
    /// identity is in the genesis are accepted, whatever is dialled.
    pub peers: Vec<String>,
}

/// `[mempool]`: this node's limits on waiting transactions (the count limits
/// are the chain's, in the genesis parameters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MempoolConfig {
    /// Most encoded bytes of waiting transactions. Default: `268435456` (256 MiB).
    pub max_bytes: usize,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            max_bytes: crate::mempool::DEFAULT_MAX_BYTES,
        }
    }
}

/// `[storage]`: the chain database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// sled's page cache, in MiB. Default: `256`.
    pub cache_mib: u64,
}

impl StorageConfig {
    pub fn cache_bytes(&self) -> u64 {
        self.cache_mib.saturating_mul(1 << 20)
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            cache_mib: crate::storage::DEFAULT_SLED_CACHE_BYTES >> 20,
        }
    }
}

/// The longest consensus timeout, and the longest increase per round.
const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// `[consensus]`: timeouts. The timeout of round `r` is `base + r * timeout_delta_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsensusConfig {
    /// Wait for a proposal, in ms (round 0). Default: `1000`.
    pub timeout_propose_ms: u64,
    /// Wait for more prevotes after 2f+1 of any kind, in ms (round 0). Default: `500`.
    pub timeout_prevote_ms: u64,
    /// Wait for more precommits after 2f+1 of any kind, in ms (round 0). Default: `500`.
    pub timeout_precommit_ms: u64,
    /// Added to each timeout per round, in ms. Default: `250`.
    pub timeout_delta_ms: u64,
}

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `"text"` or `"json"`. Default: `"text"`.
    pub format: LogFormat,
    /// A tracing `EnvFilter` directive. Default: `"info"`.
    pub level: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("data"),
            genesis: None,
            validator_key: None,
            node_key: None,
            api: ApiConfig::default(),
            p2p: P2pConfig::default(),
            mempool: MempoolConfig::default(),
            storage: StorageConfig::default(),
            index: Indexes::default(),
            consensus: ConsensusConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            access: Access::Members,
        }
    }
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            listen: "/ip4/127.0.0.1/tcp/26656".into(),
            peers: Vec::new(),
        }
    }
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        ConsensusConfig {
            timeout_propose_ms: 1000,
            timeout_prevote_ms: 500,
            timeout_precommit_ms: 500,
            timeout_delta_ms: 250,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Why a configuration or key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key (named in `message`) or a value of the wrong type.
    #[error("invalid configuration{}: {message}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Parse {
        path: Option<PathBuf>,
        message: String,
    },
    #[error("configuration key {key} is invalid: {reason}")]
    Invalid { key: &'static str, reason: String },
    /// Never includes the file's content: it is a secret.
    #[error("key file {} is invalid: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: &'static str },
}

impl NodeConfig {
    /// Parses and checks a configuration. Relative paths are left as written.
    pub fn from_toml(s: &str) -> Result<Self, ConfigError> {
        let config: NodeConfig = toml::from_str(s).map_err(|e| ConfigError::Parse {
            path: None,
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a configuration file and resolves its relative paths against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut config = NodeConfig::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: Some(path.to_owned()),
                message,
            },
            other => other,
        })?;
        config.resolve_paths(path.parent().unwrap_or(Path::new("")));
        Ok(config)
    }

    /// The configuration as TOML; [`NodeConfig::from_toml`] reads it back unchanged.
    pub fn to_toml(&self) -> String {
        // Every field is a string, integer, bool, sequence or table, and the
        // optional ones are skipped when unset: TOML can hold them all.
        toml::to_string(self).expect("NodeConfig always serialises to TOML")
    }

    /// Where the libp2p identity seed lives: `node_key`, or `<data_dir>/node.key`.
    pub fn node_key_path(&self) -> PathBuf {
        self.node_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("node.key"))
    }

    /// Reads the node key from [`NodeConfig::node_key_path`]; when the file does
    /// not exist and `node_key` is unset, generates a fresh key and stores it there.
    pub fn load_or_generate_node_key(&self) -> Result<KeyPair, ConfigError> {
        let path = self.node_key_path();
        if self.node_key.is_some() || path.exists() {
            return read_key_file(&path);
        }
        let key = fresh_key();
        let io = |source| ConfigError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.data_dir).map_err(io)?;
        write_key_file(&path, &key).map_err(io)?;
        Ok(key)
    }

    /// Checks values TOML's types cannot: non-zero limits and timeouts, a usable
    /// log directive, multiaddr-shaped addresses.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.into(),
            })
        };
        if self.api.max_body_bytes == 0 {
            return invalid("api.max_body_bytes", "must be at least 1");
        }
        if self.storage.cache_mib == 0 {
            return invalid("storage.cache_mib", "must be at least 1");
        }
        for (key, value) in [
            (
                "consensus.timeout_propose_ms",
                self.consensus.timeout_propose_ms,
            ),
            (
                "consensus.timeout_prevote_ms",
                self.consensus.timeout_prevote_ms,
            ),
            (
                "consensus.timeout_precommit_ms",
                self.consensus.timeout_precommit_ms,
            ),
        ] {
            if !(1..=MAX_TIMEOUT_MS).contains(&value) {
                return invalid(key, "must be 1 to 3600000 (an hour)");
            }
        }
        if self.consensus.timeout_delta_ms > MAX_TIMEOUT_MS {
            return invalid(
                "consensus.timeout_delta_ms",
                "must be at most 3600000 (an hour)",
            );
        }
        if !is_multiaddr_shaped(&self.p2p.listen) {
            return invalid(
                "p2p.listen",
                "must be a multiaddr such as \"/ip4/0.0.0.0/tcp/26656\"",
            );
        }
        if let Some(peer) = self.p2p.peers.iter().find(|p| !is_multiaddr_shaped(p)) {
            return Err(ConfigError::Invalid {
                key: "p2p.peers",
                reason: format!("{peer:?} is not a multiaddr such as \"/ip4/10.0.0.2/tcp/26656\""),
            });
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::Invalid {
                key: "log.level",
                reason: format!("{:?} is not an EnvFilter directive: {e}", self.log.level),
            });
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.data_dir);
        for p in [
            &mut self.genesis,
            &mut self.validator_key,
            &mut self.node_key,
        ]
        .into_iter()
        .flatten()
        {
            resolve(p);
        }
    }
}

/// A multiaddr is parsed by the transport; here only its shape is checked so a
/// host:port typed by habit is caught when the config is read.
fn is_multiaddr_shaped(s: &str) -> bool {
    s.len() > 1 && s.starts_with('/') && !s.contains(char::is_whitespace)
}

/// Reads a key file: the 32-byte seed as 64 hex digits (optional `0x`, surrounding whitespace ignored).
pub fn read_key_file(path: &Path) -> Result<KeyPair, ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_owned(),
        source,
    };
    // As ssh and PostgreSQL do: a secret others can read is not one.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(ConfigError::KeyFile {
                path: path.to_owned(),
                reason: "other users may read or change it: make it the owner's alone \
                         (chmod 600)",
            });
        }
    }
    // The secret's copies are wiped as they are dropped.
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
    let hex_seed = text.trim();
    let hex_seed = hex_seed.strip_prefix("0x").unwrap_or(hex_seed);
    let mut seed = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_seed, seed.as_mut()).map_err(|_| ConfigError::KeyFile {
        path: path.to_owned(),
        reason: "expected the 32-byte seed as 64 hex digits",
    })?;
    Ok(KeyPair::from_seed(*seed))
}

/// A key from the operating system's randomness.
pub fn fresh_key() -> KeyPair {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, seed.as_mut());
    KeyPair::from_seed(*seed)
}

/// Writes `key`'s seed as hex to `path`, readable by the owner only (0600 on
/// unix). The file is written beside `path` and renamed into place, so a crash
/// never leaves a half-written key and the secret is never world-readable.
pub fn write_key_file(path: &Path, key: &KeyPair) -> std::io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    // A stale one (a crash between write and rename) is removed, not opened:
    // opening it would follow a link planted in its place.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    let seed = Zeroizing::new(key.seed());
    file.write_all(Zeroizing::new(hex::encode(&seed[..])).as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_default_config() {
        assert_eq!(NodeConfig::from_toml("").unwrap(), NodeConfig::default());
    }

    #[test]
    fn example_toml_parses_and_equals_the_defaults() {
        assert_eq!(
            NodeConfig::from_toml(EXAMPLE_TOML).unwrap(),
            NodeConfig::default()
        );
    }

    #[test]
    fn example_toml_mentions_every_key() {
        let text = toml::to_string(&NodeConfig {
            genesis: Some("g".into()),
            validator_key: Some("v".into()),
            node_key: Some("n".into()),
            ..NodeConfig::default()
        })
        .unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        for (key, value) in &table {
            assert!(
                EXAMPLE_TOML.contains(&format!("{key} =")) || value.is_table(),
                "{key}"
            );
            if let Some(section) = value.as_table() {
                assert!(EXAMPLE_TOML.contains(&format!("[{key}]")), "[{key}]");
                for sub in section.keys() {
                    assert!(EXAMPLE_TOML.contains(&format!("\n{sub} =")), "{key}.{sub}");
                }
            }
        }
    }

    #[test]
    fn to_toml_round_trips() {
        assert_eq!(
            NodeConfig::from_toml(&NodeConfig::default().to_toml()).unwrap(),
            NodeConfig::default()
        );
        let custom = NodeConfig {
            data_dir: "/var/lib/trellis".into(),
            genesis: Some("genesis.json".into()),
            validator_key: Some("validator.key".into()),
            node_key: None,
            api: ApiConfig {
                listen: "0.0.0.0:9000".parse().unwrap(),
                max_body_bytes: 42,
                access: Access::Open,
            },
            p2p: P2pConfig {
                listen: "/ip4/0.0.0.0/tcp/1".into(),
                peers: vec![
                    "/ip4/10.0.0.2/tcp/26656".into(),
                    "/dns4/b.example/tcp/26656".into(),
                ],
            },
            mempool: MempoolConfig { max_bytes: 7 },
            storage: StorageConfig { cache_mib: 64 },
            index: Indexes {
                transactions: false,
                queries: true,
            },
            consensus: ConsensusConfig {
                timeout_propose_ms: 1,
                timeout_prevote_ms: 2,
                timeout_precommit_ms: 3,
                timeout_delta_ms: 0,
            },
            log: LogConfig {
                format: LogFormat::Json,
                level: "debug,sled=warn".into(),
            },
        };
        assert_eq!(NodeConfig::from_toml(&custom.to_toml()).unwrap(), custom);
    }

    #[test]
    fn a_partial_section_keeps_the_other_defaults() {
        let c = NodeConfig::from_toml("[api]\nlisten = \"0.0.0.0:1\"\n").unwrap();
        assert_eq!(c.api.listen.port(), 1);
        assert_eq!(c.api.max_body_bytes, ApiConfig::default().max_body_bytes);
        assert_eq!(c.p2p, P2pConfig::default());
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        for (toml, name) in [
            ("datadir = \"x\"", "datadir"),
            ("[api]\nlistn = \"127.0.0.1:1\"", "listn"),
            ("[apii]\nlisten = \"127.0.0.1:1\"", "apii"),
            ("[consensus]\ntimeout_commit_ms = 1", "timeout_commit_ms"),
            ("[log]\nformat = \"text\"\ncolour = true", "colour"),
            ("[index]\ntransaction = false", "transaction"),
        ] {
            let err = NodeConfig::from_toml(toml).unwrap_err();
            assert!(matches!(err, ConfigError::Parse { .. }), "{toml}: {err}");
            assert!(err.to_string().contains(name), "{toml}: {err}");
        }
    }

    #[test]
    fn wrongly_typed_values_are_parse_errors() {
        for toml in [
            "[api]\nlisten = \"localhost\"",
            "[api]\nmax_body_bytes = -1",
            "[log]\nformat = \"yaml\"",
            "data_dir = 3",
        ] {
            assert!(
                matches!(NodeConfig::from_toml(toml), Err(ConfigError::Parse { .. })),
                "{toml}"
            );
        }
    }

    #[test]
    fn out_of_range_values_are_refused_with_their_key() {
        for (toml, key) in [
            ("[api]\nmax_body_bytes = 0", "api.max_body_bytes"),
            ("[storage]\ncache_mib = 0", "storage.cache_mib"),
            (
                "[consensus]\ntimeout_prevote_ms = 0",
                "consensus.timeout_prevote_ms",
            ),
            (
                "[consensus]\ntimeout_propose_ms = 3600001",
                "consensus.timeout_propose_ms",
            ),
            (
                "[consensus]\ntimeout_delta_ms = 18446744073709551615",
                "consensus.timeout_delta_ms",
            ),
            ("[p2p]\nlisten = \"127.0.0.1:26656\"", "p2p.listen"),
            (
                "[p2p]\npeers = [\"/ip4/1.2.3.4/tcp/1\", \"10.0.0.1:26656\"]",
                "p2p.peers",
            ),
            ("[log]\nlevel = \"info,[[\"", "log.level"),
        ] {
            let err = NodeConfig::from_toml(toml).unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { key: k, .. } if k == key),
                "{toml}: {err}"
            );
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn load_resolves_relative_paths_against_the_config_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "genesis = \"../genesis.json\"\nvalidator_key = \"/etc/trellis/v.key\"\nnode_key = \"node.key\"\n",
        )
        .unwrap();
        let c = NodeConfig::load(&path).unwrap();
        assert_eq!(c.data_dir, dir.path().join("data"));
        assert_eq!(c.genesis, Some(dir.path().join("../genesis.json")));
        assert_eq!(c.validator_key, Some(PathBuf::from("/etc/trellis/v.key")));
        assert_eq!(c.node_key_path(), dir.path().join("node.key"));
    }

    #[test]
    fn load_names_the_file_in_its_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let err = NodeConfig::load(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }) && err.to_string().contains("missing.toml"));
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[api]\nlistn = 1\n").unwrap();
        let err = NodeConfig::load(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("listn"), "{err}");
    }

    #[test]
    fn key_files_round_trip_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("validator.key");
        let key = KeyPair::insecure_from_label("config-test");
        write_key_file(&path, &key).unwrap();
        assert_eq!(read_key_file(&path).unwrap().public(), key.public());
        // Overwriting keeps working (the temporary file is renamed away each time).
        write_key_file(&path, &key).unwrap();
        assert!(!dir.path().join("validator.key.tmp").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, format!("  0x{}\r\n", hex::encode(key.seed()))).unwrap();
        assert_eq!(read_key_file(&path).unwrap().public(), key.public());
        // A link planted where the temporary file goes is not followed.
        #[cfg(unix)]
        {
            let victim = dir.path().join("victim");
            std::fs::write(&victim, "untouched").unwrap();
            std::os::unix::fs::symlink(&victim, dir.path().join("validator.key.tmp")).unwrap();
            write_key_file(&path, &key).unwrap();
            assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
            assert_eq!(read_key_file(&path).unwrap().public(), key.public());
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("validator.key");
        write_key_file(&path, &fresh_key()).unwrap();
        for mode in [0o644, 0o640, 0o606] {
            std::fs::set_permissions(&path, PermissionsExt::from_mode(mode)).unwrap();
            let err = read_key_file(&path).unwrap_err();
            assert!(
                matches!(err, ConfigError::KeyFile { .. }) && err.to_string().contains("chmod 600"),
                "{mode:o}: {err}"
            );
        }
        std::fs::set_permissions(&path, PermissionsExt::from_mode(0o400)).unwrap();
        read_key_file(&path).expect("the owner's alone");
    }

    #[test]
    fn malformed_key_files_are_refused_without_echoing_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        for content in ["", "abcd", &"zz".repeat(32), &"ab".repeat(33)] {
            std::fs::write(&path, content).unwrap();
            #[cfg(unix)]
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            let err = read_key_file(&path).unwrap_err();
            assert!(
                matches!(err, ConfigError::KeyFile { .. }),
                "{content:?}: {err}"
            );
            assert!(content.is_empty() || !err.to_string().contains(content));
        }
    }

    #[test]
    fn a_missing_node_key_is_generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let c = NodeConfig {
            data_dir: dir.path().join("data"),
            ..NodeConfig::default()
        };
        let first = c.load_or_generate_node_key().unwrap();
        assert!(dir.path().join("data/node.key").exists());
        assert_eq!(
            c.load_or_generate_node_key().unwrap().public(),
            first.public()
        );
        // A configured key file that is missing is an error, not a new identity.
        let configured = NodeConfig {
            node_key: Some(dir.path().join("nope.key")),
            ..c
        };
        assert!(matches!(
            configured.load_or_generate_node_key(),
            Err(ConfigError::Io { .. })
        ));
    }
}
