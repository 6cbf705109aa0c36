//! Nodes the bench starts itself (`--start`): one `trellis-node --dev`, or a
//! local network of N validators (and observers, if asked) written by
//! `trellis-node genesis generate` and started one process per node — what
//! `trellis-node localnet` does, but as the bench's own children, so their
//! pids are known for the CPU and memory figures and they stop when the
//! bench ends (also on error and Ctrl-C). Data and logs live in a temporary
//! directory.

use crate::cli::BenchIndexes;
use crate::devnode::{DevNodeProcess, free_ports, tail};
use crate::error::{Class, CliError, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A validator network opens its API and commits its first block well within this.
const START_DEADLINE: Duration = Duration::from_secs(90);

/// What `--start` started: the validators' API URLs (where the load goes), the
/// observers' (where reads go), and every node's pid and data directory,
/// validators then observers.
pub struct Started {
    pub urls: Vec<String>,
    pub observer_urls: Vec<String>,
    pub pids: Vec<u32>,
    pub data_dirs: Vec<PathBuf>,
    _dev: Option<DevNodeProcess>,
    _net: Option<LocalNet>,
}

/// The arguments that make node `node` (0 first; validators, then observers)
/// keep the indexes `indexes` asks for. Observers keep both.
fn index_args(indexes: BenchIndexes, node: usize, validators: usize) -> &'static [&'static str] {
    match (indexes, node) {
        _ if node >= validators => &[],
        (BenchIndexes::All, _) | (BenchIndexes::First, 0) => &[],
        _ => &["--no-indexes"],
    }
}

/// Starts `binary --dev`, or a network of `validators` and `observers` when
/// more than one validator. Observers keep both indexes whatever `indexes` says.
pub async fn start(
    binary: &Path,
    validators: usize,
    observers: usize,
    indexes: BenchIndexes,
) -> Result<Started> {
    if validators <= 1 {
        let node = DevNodeProcess::start_with(binary, index_args(indexes, 0, 1)).await?;
        return Ok(Started {
            urls: vec![node.url().to_owned()],
            observer_urls: Vec::new(),
            pids: vec![node.pid()],
            data_dirs: vec![node.data_dir()],
            _dev: Some(node),
            _net: None,
        });
    }
    let net = LocalNet::start(binary, validators, observers, indexes).await?;
    Ok(Started {
        urls: net.urls[..validators].to_vec(),
        observer_urls: net.urls[validators..].to_vec(),
        pids: net.children.iter().map(Child::id).collect(),
        data_dirs: net.data_dirs.clone(),
        _dev: None,
        _net: Some(net),
    })
}

struct LocalNet {
    /// Validators then observers, as the three lists below.
    names: Vec<String>,
    children: Vec<Child>,
    urls: Vec<String>,
    data_dirs: Vec<PathBuf>,
    /// Removed after the children are killed (fields drop after `drop`).
    _dir: tempfile::TempDir,
}

impl LocalNet {
    async fn start(
        binary: &Path,
        validators: usize,
        observers: usize,
        indexes: BenchIndexes,
    ) -> Result<LocalNet> {
        let count = u16::try_from(validators + observers)
            .map_err(|_| CliError::usage("--validators and --observers are too many"))?;
        let dir = tempfile::Builder::new()
            .prefix("trellis-bench-")
            .tempdir()
            .map_err(|e| CliError::other(format!("creating a temporary directory: {e}")))?;
        let api = free_ports(count, None)?;
        let p2p = free_ports(count, Some((api, count)))?;
        let net_dir = dir.path().join("net");
        let generated = Command::new(binary)
            .args([
                "genesis",
                "generate",
                "--validators",
                &validators.to_string(),
                "--observers",
                &observers.to_string(),
            ])
            .arg("--out")
            .arg(&net_dir)
            .args(["--base-api-port", &api.to_string()])
            .args(["--base-p2p-port", &p2p.to_string()])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| unreachable(format!("running {}: {e}", binary.display())))?;
        if !generated.status.success() {
            return Err(unreachable(format!(
                "`trellis-node genesis generate` failed:\n{}",
                String::from_utf8_lossy(&generated.stderr)
            )));
        }
        let names = (0..validators)
            .map(|i| format!("validator-{i}"))
            .chain((0..observers).map(|i| format!("observer-{i}")));
        let mut net = LocalNet {
            names: names.collect(),
            children: Vec::new(),
            urls: Vec::new(),
            data_dirs: Vec::new(),
            _dir: dir,
        };
        for i in 0..count {
            let node_dir = net_dir.join(&net.names[usize::from(i)]);
            let log = std::fs::File::create(node_dir.join("node.log"))
                .map_err(|e| CliError::other(format!("creating a node log: {e}")))?;
            let log_err = log
                .try_clone()
                .map_err(|e| CliError::other(e.to_string()))?;
            let child = Command::new(binary)
                .arg("--config")
                .arg(node_dir.join("config.toml"))
                .args(index_args(indexes, usize::from(i), validators))
                .current_dir(&node_dir)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .map_err(|e| unreachable(format!("starting {}: {e}", binary.display())))?;
            net.children.push(child);
            net.urls.push(format!("http://127.0.0.1:{}", api + i));
            // `data_dir = "data"` in the generated config, beside it.
            net.data_dirs.push(node_dir.join("data"));
        }
        net.wait_first_block(&net_dir).await?;
        Ok(net)
    }

    /// Waits until every node answers and the first block is committed.
    async fn wait_first_block(&mut self, net_dir: &Path) -> Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        let clients = self
            .urls
            .iter()
            .map(|url| {
                trellis_sdk::Client::builder()
                    .endpoint(url)
                    .request_timeout(Duration::from_secs(2))
                    .retry(trellis_sdk::RetryPolicy::none())
                    .build()
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        loop {
            for (i, child) in self.children.iter_mut().enumerate() {
                if let Ok(Some(status)) = child.try_wait() {
                    let name = &self.names[i];
                    let log = std::fs::read_to_string(net_dir.join(name).join("node.log"))
                        .unwrap_or_default();
                    return Err(unreachable(format!(
                        "{name} exited ({status}); its log:\n{}",
                        tail(&log)
                    )));
                }
            }
            let mut ready = 0;
            for client in &clients {
                if let Ok(status) = client.status().await
                    && status.status.height >= 1
                {
                    ready += 1;
                }
            }
            if ready == clients.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(unreachable(format!(
                    "the local network did not commit a block within {START_DEADLINE:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for LocalNet {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

fn unreachable(message: String) -> CliError {
    CliError::new(Class::Unreachable, message)
}

/// The disk space the files under `dir` take (allocated blocks, so sparse
/// or preallocated files count as what they hold on disk); `None` if `dir`
/// cannot be read. A file that goes away while it is walked (a node renames
/// and removes its redo file each block) is skipped.
pub fn disk_bytes(dir: &Path) -> Option<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        total += if meta.is_dir() {
            disk_bytes(&entry.path()).unwrap_or(0)
        } else {
            meta.blocks() * 512
        };
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_use_counts_the_files_of_every_subdirectory() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(disk_bytes(dir.path()), Some(0));
        std::fs::write(dir.path().join("a"), vec![1u8; 100_000]).expect("write");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/b"), vec![2u8; 50_000]).expect("write");
        let bytes = disk_bytes(dir.path()).expect("readable");
        // Whole blocks: at least the bytes written, at most a block more each.
        assert!((150_000..=150_000 + 2 * 65_536).contains(&bytes), "{bytes}");
        assert_eq!(disk_bytes(&dir.path().join("missing")), None);
    }
}
