//! `trellis-node`: runs a Trellis node, and the operator's helper commands.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use trellis_genesis::{Genesis, NetworkSpec};
use trellis_node::archive;
use trellis_node::config::{self, Access, ApiConfig, Indexes, LogFormat, NodeConfig};
use trellis_node::storage::{Storage, StorageError};
use trellis_types::{Bytes, Payload, SystemOp, Transaction};

/// mimalloc rather than the system allocator: a block allocates and frees
/// hundreds of thousands of small objects across the driver, the block writer
/// and the API's threads, where glibc's per-thread arenas cost the node both
/// time and resident memory that is not returned.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`,
/// mimalloc.h; libmimalloc-sys has no constant for it). Checked by a test.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps memory the node frees for its own reuse instead of handing it back
/// to the OS a second later (mimalloc's default). Every block allocates and
/// frees the same few hundred megabytes; given back, each reuse faulted the
/// pages in again and the kernel zeroed them, 2 MiB at a time where they were
/// huge pages: about 9 % of the node's CPU per operation (docs/benchmarks.md,
/// "Freed memory kept"). The cost: resident memory stays at the heap's peak.
/// An operator's `MIMALLOC_PURGE_DELAY` (milliseconds) still wins.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an integer option; mimalloc reads it when it next purges.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
    }
}

#[derive(Parser)]
#[command(name = "trellis-node", version, about = "Run a Trellis node", long_about = None)]
#[command(
    after_help = "Examples:\n  trellis-node --dev                       single validator on the embedded dev genesis\n  trellis-node localnet --validators 4      four validators on this host; Ctrl-C stops all\n  trellis-node --config node0/config.toml   a node of a generated network\n  trellis-node genesis generate --validators 4 --out localnet"
)]
struct Cli {
    /// Run a single validator on the embedded dev genesis (insecure keys), data in ./trellis-dev-data.
    #[arg(long, conflicts_with = "config")]
    dev: bool,
    /// The node's TOML configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Override the data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Override the API listen address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    api_listen: Option<std::net::SocketAddr>,
    /// Override `[api] access`: `members` (reads signed by a member's account,
    /// each member seeing what concerns it) or `open` (everyone reads
    /// everything; the dev node's default, as its keys are public).
    #[arg(long, value_enum)]
    api_access: Option<Access>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    /// Keep no transaction or query index (`[index]` both false): a validator
    /// that serves no queries. Fixed when the store is created.
    #[arg(long)]
    no_indexes: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a network on this host: generate it (or reuse it) and start every node.
    Localnet {
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// Non-voting nodes that follow the chain and serve its API, as a
        /// supplier's or a regulator's own node would.
        #[arg(long, default_value_t = 0)]
        observers: usize,
        /// Validators keep no transaction or query index; observers keep both
        /// and serve the queries (docs/operator.md, "Indexes").
        #[arg(long)]
        no_validator_indexes: bool,
        /// Where the genesis and node directories live (created if missing).
        #[arg(long, default_value = "localnet")]
        dir: PathBuf,
        #[arg(long, default_value_t = 8080)]
        base_api_port: u16,
        #[arg(long, default_value_t = 26656)]
        base_p2p_port: u16,
    },
    /// Remove the state tree's old versions from a stopped node's store,
    /// keeping the state of its latest heights and every block, receipt and
    /// index. State queries at earlier heights then answer 410 `pruned`.
    PruneState {
        #[command(flatten)]
        store: StoreArgs,
        /// How many of the latest heights keep their state, the head's included.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        keep: u64,
    },
    /// Write a stopped node's blocks, each with the certificate that
    /// committed it, to one file (docs/operator.md, "Export and import"):
    /// a backup without sled's files, and the way across a storage layout
    /// change.
    ExportChain {
        #[command(flatten)]
        store: StoreArgs,
        /// The file to write; an existing file is never replaced.
        #[arg(long)]
        out: PathBuf,
    },
    /// Import an export into a stopped node's store (created if new),
    /// executing and checking every block again: each must carry a
    /// certificate of the genesis's validators and reach the state root its
    /// header names. Blocks already in the store must be the export's; an
    /// interrupted import carries on when run again.
    ImportChain {
        #[command(flatten)]
        store: StoreArgs,
        /// The export to read.
        #[arg(long)]
        from: PathBuf,
        /// The chain's genesis, with `--data-dir` (default: the embedded dev
        /// genesis); `--config` names its own.
        #[arg(long, conflicts_with_all = ["dev", "config"])]
        genesis: Option<PathBuf>,
    },
    /// Genesis files and node directories.
    #[command(subcommand)]
    Genesis(GenesisCommand),
    /// Make a node's key from the operating system's randomness, as each
    /// member does for a production network: a validator's consensus key
    /// (`validator_key`) or a node's libp2p key (`node_key`). Written
    /// readable by its owner only; prints its public key for the genesis
    /// (`consensus_key`, `node_key`).
    Keygen {
        /// Where to write it. An existing file is never replaced.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key of a key file, for the genesis.
    PublicKey {
        /// A validator or node key file (its seed as 64 hex digits).
        file: PathBuf,
    },
    /// Sign a dev-chain transaction with an insecure dev key and print it as the
    /// JSON body of `POST /v1/transactions`.
    DevTx {
        #[command(subcommand)]
        op: DevOp,
        /// Dev account label, e.g. core-acme/ops.
        #[arg(long, default_value = "core-acme/ops", global = true)]
        account: String,
        /// The account's next nonce (GET /v1/state/... shows it; starts at 0).
        #[arg(long, default_value_t = 0, global = true)]
        nonce: u64,
        /// Chain id to sign for.
        #[arg(long, default_value = "trellis-dev", global = true)]
        chain_id: String,
    },
}

/// The stopped node whose store a command works on.
#[derive(clap::Args)]
#[group(id = "store", required = true, multiple = false)]
struct StoreArgs {
    /// The dev node (data in ./trellis-dev-data, the embedded dev genesis).
    #[arg(long)]
    dev: bool,
    /// The node this configuration file describes (its data directory,
    /// genesis and indexes).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The node whose data directory this is (otherwise configured by default).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl StoreArgs {
    /// The node configuration these arguments name: `--config`'s, or the
    /// default one in the data directory given.
    fn node_config(self) -> anyhow::Result<NodeConfig> {
        match (self.config, self.data_dir) {
            (Some(path), _) => Ok(NodeConfig::load(&path)?),
            (None, data_dir) => Ok(NodeConfig {
                data_dir: data_dir.unwrap_or_else(|| PathBuf::from(DEV_DATA_DIR)),
                ..NodeConfig::default()
            }),
        }
    }
}

#[derive(Subcommand)]
enum GenesisCommand {
    /// Write a genesis and one directory per node (keys, config) for N validators on this host.
    Generate {
        #[arg(long, default_value_t = 4)]
        validators: usize,
        #[arg(long, default_value_t = 0)]
        observers: usize,
        /// Keys are derived from this seed: same seed, same files. Insecure: for local networks.
        #[arg(long, default_value = "trellis-local")]
        seed: String,
        #[arg(long, default_value = "trellis-local")]
        chain_id: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 8080)]
        base_api_port: u16,
        #[arg(long, default_value_t = 26656)]
        base_p2p_port: u16,
        /// Validators' configs keep no transaction or query index; observers'
        /// keep both.
        #[arg(long)]
        no_validator_indexes: bool,
        /// Overwrite files in a non-empty output directory.
        #[arg(long)]
        force: bool,
    },
    /// Print the embedded dev genesis as JSON.
    Dev,
}

#[derive(Subcommand)]
enum DevOp {
    /// Record a note on chain.
    Remark { text: String },
}

fn main() -> anyhow::Result<()> {
    keep_freed_memory();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Genesis(cmd)) => genesis_command(cmd),
        Some(Command::Localnet {
            validators,
            observers,
            no_validator_indexes,
            dir,
            base_api_port,
            base_p2p_port,
        }) => {
            let options = trellis_node::localnet::LocalnetOptions {
                exe: std::env::current_exe().context("locating the trellis-node executable")?,
                dir,
                validators,
                observers,
                validator_indexes: validator_indexes(no_validator_indexes),
                base_api_port,
                base_p2p_port,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(trellis_node::localnet::run(options, shutdown_signal()))
        }
        Some(Command::DevTx {
            op,
            account,
            nonce,
            chain_id,
        }) => {
            let key = trellis_genesis::dev_account(&account);
            let payload = match op {
                DevOp::Remark { text } => Payload::System(SystemOp::Remark {
                    data: Bytes(text.into_bytes()),
                }),
            };
            let tx = Transaction {
                chain_id,
                sender: key.public(),
                nonce,
                expires_at_ms: trellis_node::node::now_ms() + 10 * 60 * 1000,
                payload,
            }
            .sign(&key);
            println!(
                "{{\"signed_tx\":\"{}\"}}",
                hex::encode(trellis_types::encode(&tx))
            );
            Ok(())
        }
        Some(Command::Keygen { out }) => {
            if out.exists() {
                anyhow::bail!(
                    "{} exists: a key is never replaced; move it aside first if that is meant",
                    out.display()
                );
            }
            let key = config::fresh_key();
            config::write_key_file(&out, &key)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{}", key.public());
            Ok(())
        }
        Some(Command::PublicKey { file }) => {
            println!("{}", config::read_key_file(&file)?.public());
            Ok(())
        }
        Some(Command::PruneState { store, keep }) => {
            prune_state(&store.node_config()?.data_dir, keep)
        }
        Some(Command::ExportChain { store, out }) => export_chain(store.node_config()?, &out),
        Some(Command::ImportChain {
            store,
            from,
            genesis,
        }) => {
            let config = store.node_config()?;
            let genesis = match genesis.as_ref().or(config.genesis.as_ref()) {
                Some(path) => Genesis::load(path)?,
                None => Genesis::dev(),
            };
            import_chain(config, &genesis, &from)
        }
        None => run_node(cli),
    }
}

/// Where the dev node keeps its data unless told otherwise.
const DEV_DATA_DIR: &str = "trellis-dev-data";

/// `e`, met `doing` something to `store`; sled's lock said as what to do about it.
fn store_error(e: StorageError, doing: &str, store: &Path) -> anyhow::Error {
    match e {
        StorageError::Io(sled::Error::Io(io))
            if io.to_string().contains("could not acquire lock") =>
        {
            anyhow::anyhow!("{} is in use: stop the node first", store.display())
        }
        e => anyhow::Error::new(e).context(format!("{doing} {}", store.display())),
    }
}

fn prune_state(data_dir: &Path, keep: u64) -> anyhow::Result<()> {
    let store = data_dir.join("chain");
    eprintln!("pruning {} ...", store.display());
    let report = trellis_node::storage::prune_state(&store, keep)
        .map_err(|e| store_error(e, "pruning", &store))?;
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    println!(
        "kept the state of heights {} to {}: {} tree nodes and {} values of height {}, {} records besides; {:.1} MiB -> {:.1} MiB",
        report.kept_from,
        report.height,
        report.tree.nodes,
        report.tree.leaves,
        report.kept_from,
        report.records,
        mib(report.bytes_before),
        mib(report.bytes_after),
    );
    Ok(())
}

fn export_chain(config: NodeConfig, out: &Path) -> anyhow::Result<()> {
    let store = config.data_dir.join("chain");
    // Opening creates a store: none is made where there was none.
    anyhow::ensure!(
        store.join("db").exists(),
        "{} holds no chain",
        store.display()
    );
    let storage = Storage::open(&store).map_err(|e| store_error(e, "opening", &store))?;
    eprintln!("exporting {} ...", store.display());
    let report = archive::export_chain(&storage, out)?;
    println!(
        "exported heights 1 to {} of {} to {} ({:.1} MiB)",
        report.header.last,
        report.header.chain_id,
        out.display(),
        report.bytes as f64 / f64::from(1 << 20)
    );
    Ok(())
}

fn import_chain(config: NodeConfig, genesis: &Genesis, from: &Path) -> anyhow::Result<()> {
    // The export is checked against the genesis before any store is made.
    let export = archive::Export::open(from, genesis)?;
    let last = export.header().last;
    let store = config.data_dir.join("chain");
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let storage = Storage::open_with(&store, config.storage.cache_bytes(), config.index)
        .map_err(|e| store_error(e, "opening", &store))?;
    eprintln!("importing {} into {} ...", from.display(), store.display());
    let mut said = std::time::Instant::now();
    let report = export.import_into(&storage, genesis, |height| {
        if said.elapsed() >= std::time::Duration::from_secs(5) {
            eprintln!("imported height {height} of {last}");
            said = std::time::Instant::now();
        }
    })?;
    println!(
        "{}: {} blocks imported, {} already in the store; head {} (state root {})",
        genesis.chain_id,
        report.imported,
        report.present,
        report.head.height,
        report.head.state_root
    );
    Ok(())
}

/// What `--no-validator-indexes` asks validators to keep.
fn validator_indexes(none: bool) -> Indexes {
    if none {
        Indexes::NONE
    } else {
        Indexes::default()
    }
}

fn genesis_command(cmd: GenesisCommand) -> anyhow::Result<()> {
    match cmd {
        GenesisCommand::Generate {
            validators,
            observers,
            seed,
            chain_id,
            out,
            base_api_port,
            base_p2p_port,
            no_validator_indexes,
            force,
        } => {
            let spec = NetworkSpec {
                chain_id,
                seed,
                validators,
                observers,
                genesis_time_ms: trellis_genesis::DEV_GENESIS_TIME_MS,
            };
            let configs = trellis_node::generate::write_network(
                &spec,
                &out,
                base_api_port,
                base_p2p_port,
                validator_indexes(no_validator_indexes),
                force,
            )?;
            for c in configs {
                println!("{}", c.display());
            }
            Ok(())
        }
        GenesisCommand::Dev => {
            print!("{}", Genesis::dev().to_json_pretty());
            Ok(())
        }
    }
}

fn run_node(cli: Cli) -> anyhow::Result<()> {
    let (mut config, genesis, validator_key) = if cli.dev {
        let (genesis, nodes) = trellis_genesis::build(&NetworkSpec::dev())?;
        let key = nodes.into_iter().find_map(|n| n.consensus);
        let config = NodeConfig {
            data_dir: PathBuf::from(DEV_DATA_DIR),
            api: ApiConfig {
                access: Access::Open,
                ..ApiConfig::default()
            },
            ..NodeConfig::default()
        };
        (config, genesis, key)
    } else {
        let path = cli
            .config
            .clone()
            .context("give --dev or --config <file> (see --help)")?;
        let config = NodeConfig::load(&path)?;
        let genesis = match &config.genesis {
            Some(p) => Genesis::load(p)?,
            None => Genesis::dev(),
        };
        let key = config
            .validator_key
            .as_deref()
            .map(config::read_key_file)
            .transpose()?;
        (config, genesis, key)
    };
    if let Some(dir) = cli.data_dir {
        config.data_dir = dir;
    }
    if let Some(addr) = cli.api_listen {
        config.api.listen = addr;
    }
    if let Some(access) = cli.api_access {
        config.api.access = access;
    }
    if cli.no_indexes {
        config.index = Indexes::NONE;
    }
    if cli.log_json {
        config.log.format = LogFormat::Json;
    }
    init_logging(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(trellis_node::node::blocking_threads())
        .build()?;
    runtime.block_on(trellis_node::node::run(
        config,
        genesis,
        validator_key,
        shutdown_signal(),
    ))
}

fn init_logging(config: &NodeConfig) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directive) => tracing_subscriber::EnvFilter::try_new(directive)?,
        Err(_) => tracing_subscriber::EnvFilter::try_new(&config.log.level)?,
    };
    // Colours only for a terminal: not as escape codes in a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_keeps_freed_memory_through_mimallocs_purge_delay_option() {
        // SAFETY: reads an integer option.
        let purge_delay = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // 1,000 ms is purge_delay's default and no other option's: the
        // constant names the option it means.
        assert_eq!(purge_delay(), 1000);
        keep_freed_memory();
        assert_eq!(purge_delay(), -1);
    }
}
