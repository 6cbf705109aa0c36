//! `trellis-node localnet`: a whole network on this host in one command.
//!
//! Generates the genesis and node directories (or reuses them when they are
//! already there for the same numbers of validators and observers), starts one
//! node process per validator and observer on loopback ports, and stops them
//! all on Ctrl-C or SIGTERM.
//! If a node exits on its own, the others are stopped too and the command
//! fails, pointing at that node's log.

use crate::config::NodeConfig;
use crate::storage::Indexes;
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::time::Duration;
use tokio::process::{Child, Command};
use trellis_genesis::{Genesis, NetworkSpec};

pub struct LocalnetOptions {
    /// The `trellis-node` executable to start for each node.
    pub exe: PathBuf,
    pub dir: PathBuf,
    pub validators: usize,
    /// Non-voting nodes that follow the chain; they take the ports after the validators'.
    pub observers: usize,
    /// What validators keep; observers keep both indexes (they serve the queries).
    pub validator_indexes: Indexes,
    pub base_api_port: u16,
    pub base_p2p_port: u16,
}

/// Writes the network into `dir` unless it already holds one with these
/// numbers of validators and observers whose validators keep these indexes.
/// Returns the nodes' config files, validators' then observers'.
pub fn prepare(options: &LocalnetOptions) -> anyhow::Result<Vec<PathBuf>> {
    let genesis_path = options.dir.join("genesis.json");
    if genesis_path.exists() {
        let genesis = Genesis::load(&genesis_path)?;
        let held = (genesis.validators.len(), genesis.observers.len());
        if held != (options.validators, options.observers) {
            bail!(
                "{} holds a network of {} validators and {} observers, not {} and {}: \
                 remove it or pick another --dir",
                options.dir.display(),
                held.0,
                held.1,
                options.validators,
                options.observers
            );
        }
        let names = genesis.validators.iter().map(|v| &v.name);
        let configs: Vec<PathBuf> = names
            .chain(genesis.observers.iter().map(|o| &o.name))
            .map(|name| options.dir.join(name).join("config.toml"))
            .collect();
        for path in &configs[..options.validators] {
            let kept = NodeConfig::load(path)?.index;
            if kept != options.validator_indexes {
                bail!(
                    "{} holds validators configured with [index] {kept}, not {}: \
                     remove it or pick another --dir",
                    options.dir.display(),
                    options.validator_indexes
                );
            }
        }
        return Ok(configs);
    }
    let spec = NetworkSpec {
        chain_id: "trellis-local".into(),
        seed: "trellis-local".into(),
        validators: options.validators,
        observers: options.observers,
        genesis_time_ms: trellis_genesis::DEV_GENESIS_TIME_MS,
    };
    Ok(crate::generate::write_network(
        &spec,
        &options.dir,
        options.base_api_port,
        options.base_p2p_port,
        options.validator_indexes,
        false,
    )?)
}

/// Runs the network until `shutdown` resolves or a node exits.
pub async fn run(
    options: LocalnetOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let configs = prepare(&options)?;
    let mut children = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let dir = config.parent().context("config file has a directory")?;
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let log = dir.join("node.log");
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(&options.exe)
            .arg("--config")
            .arg(config)
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", options.exe.display()))?;
        println!(
            "{name}: API http://127.0.0.1:{}  log {}",
            options.base_api_port as usize + i,
            log.display()
        );
        children.push((dir.to_path_buf(), child));
    }
    println!(
        "validators: {}, observers: {}; Ctrl-C stops them all.",
        options.validators, options.observers
    );

    let exited = wait_any(&mut children);
    tokio::pin!(shutdown);
    let failure = tokio::select! {
        _ = &mut shutdown => None,
        (dir, status) = exited => Some((dir, status)),
    };
    stop_all(&mut children).await;
    match failure {
        None => Ok(()),
        Some((dir, status)) => bail!(
            "a node exited ({status}); see {}",
            dir.join("node.log").display()
        ),
    }
}

/// Resolves when any child exits, with its directory and exit status.
async fn wait_any(children: &mut [(PathBuf, Child)]) -> (PathBuf, String) {
    loop {
        for (dir, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return (dir.clone(), status.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks every node to stop (SIGTERM), waits a while, then kills what is left.
async fn stop_all(children: &mut [(PathBuf, Child)]) {
    for (_, child) in children.iter() {
        if let Some(pid) = child.id() {
            terminate(pid);
        }
    }
    for (_, child) in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

fn terminate(pid: u32) {
    // std offers only SIGKILL; nodes shut down cleanly on SIGTERM.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}
