//! Reads beside the load (`--reads N`): what banks, suppliers and regulators
//! ask while the chain is busy, sent open loop at N a second to the nodes
//! that serve readers (the observers, else the load's nodes) and each timed
//! from when it was due, so a node that falls behind shows as latency.
//!
//! In every six reads, two ask for an organisation's holdings (a page of the
//! query index, from a random piece id on), two for a piece's lineage back
//! to its receivable (state reads through the contract), one for a recently
//! committed transaction by hash (the transaction index) and one for a
//! piece's record with its proof, verified as a bank that trusts no single
//! node verifies it (the proof against a header the validators' precommits
//! certify).

use super::engine::refusal_code;
use crate::error::{CliError, Result};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};
use trellis_receivables::ByHolder;
use trellis_sdk::{Client, RetryPolicy};
use trellis_types::{Address, Hash};

/// Most reads `--reads` may ask for a second.
pub const MAX_READS: u32 = 100_000;
/// Pieces in one holdings page.
const PAGE: u32 = 20;
/// Blocks kept to ask about (a transaction of each).
const RECENT_BLOCKS: usize = 256;
/// Reads sent and not yet answered, over all the nodes read; more wait
/// their turn, the wait counted in their latency.
const IN_FLIGHT: usize = 256;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReadKind {
    Holdings,
    Lineage,
    Transaction,
    Proven,
}

impl ReadKind {
    pub const ALL: [ReadKind; 4] = [
        ReadKind::Holdings,
        ReadKind::Lineage,
        ReadKind::Transaction,
        ReadKind::Proven,
    ];

    /// The mix, in the order reads are sent: two holdings, two lineages, a
    /// transaction and a proven piece in every six.
    const CYCLE: [ReadKind; 6] = [
        ReadKind::Holdings,
        ReadKind::Lineage,
        ReadKind::Transaction,
        ReadKind::Holdings,
        ReadKind::Lineage,
        ReadKind::Proven,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ReadKind::Holdings => "holdings",
            ReadKind::Lineage => "lineage",
            ReadKind::Transaction => "transaction",
            ReadKind::Proven => "proven",
        }
    }
}

/// What reads ask about was committed at least this long before, so that a
/// node read that applies blocks a little after the one followed has it.
const SETTLED: Duration = Duration::from_secs(1);

/// One block as the follower saw it: when, its last transaction, and the
/// highest piece id the planner knew of then.
struct BlockSeen {
    at: Instant,
    tx: Hash,
    newest_piece: u64,
}

/// The last blocks the follower saw, newest last: what reads ask about.
#[derive(Default)]
pub struct RecentBlocks(Mutex<VecDeque<BlockSeen>>);

impl RecentBlocks {
    pub fn push(&self, tx: Hash, newest_piece: u64) {
        let mut recent = lock(&self.0);
        if recent.len() == RECENT_BLOCKS {
            recent.pop_front();
        }
        recent.push_back(BlockSeen {
            at: Instant::now(),
            tx,
            newest_piece,
        });
    }

    /// Of the blocks seen at least [`SETTLED`] before `now`: one's
    /// transaction at random, and the highest piece id known by the last.
    fn settled(&self, now: Instant, rng: &mut impl RngExt) -> Option<(Hash, u64)> {
        let recent = lock(&self.0);
        let settled = recent.partition_point(|b| b.at + SETTLED <= now);
        let last = recent.get(settled.checked_sub(1)?)?;
        Some((recent[rng.random_range(0..settled)].tx, last.newest_piece))
    }
}

/// One read as it ended.
#[derive(Debug, Clone)]
pub struct ReadDone {
    pub kind: ReadKind,
    /// When it was due, and how long from then to its answer.
    pub due: Instant,
    pub latency: Duration,
    /// The node's code (or `transport`, `not_found`) when it failed.
    pub failure: Option<String>,
}

/// What the reads are sent to and ask about.
pub struct Readers {
    per_s: u32,
    /// One for each node read, in turn.
    clients: Vec<Client>,
    contract: Address,
    /// Organisations whose holdings are asked for, in turn.
    holders: Vec<String>,
}

impl Readers {
    pub fn new(
        per_s: u32,
        urls: &[String],
        contract: Address,
        holders: Vec<String>,
    ) -> Result<Readers> {
        let clients = urls
            .iter()
            .map(|url| {
                Client::builder()
                    .endpoint(url)
                    .signer(super::regulator())
                    .request_timeout(REQUEST_TIMEOUT)
                    .retry(RetryPolicy::none())
                    .build()
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if holders.is_empty() {
            return Err(CliError::other("no organisation to read the holdings of"));
        }
        Ok(Readers {
            per_s,
            clients,
            contract,
            holders,
        })
    }

    /// Sends reads from the run's start (when `started` says it) for
    /// `duration`, then waits for the last answers; returns every read.
    /// Ends with none if the run never starts.
    pub async fn run(
        self,
        mut started: watch::Receiver<Option<Instant>>,
        duration: Duration,
        recent: Arc<RecentBlocks>,
    ) -> Vec<ReadDone> {
        let start = loop {
            if let Some(start) = *started.borrow_and_update() {
                break start;
            }
            if started.changed().await.is_err() {
                return Vec::new();
            }
        };
        let end = start + duration;
        let every = Duration::from_secs(1).div_f64(f64::from(self.per_s));
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let mut rng = StdRng::from_rng(&mut rand::rng());
        for sent in 0u64.. {
            let due = start + every.mul_f64(sent as f64);
            if due >= end {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
            let client = self.clients[sent as usize % self.clients.len()].clone();
            let kind = ReadKind::CYCLE[sent as usize % ReadKind::CYCLE.len()];
            let settled = recent.settled(Instant::now(), &mut rng);
            let newest = settled.map_or(0, |(_, newest)| newest);
            let ask = match (kind, settled) {
                (ReadKind::Transaction, Some((hash, _))) => Ask::Transaction(hash),
                (ReadKind::Lineage, _) if newest > 0 => Ask::Lineage(rng.random_range(1..=newest)),
                (ReadKind::Proven, _) if newest > 0 => Ask::Proven(rng.random_range(1..=newest)),
                _ => Ask::Holdings(ByHolder {
                    org: self.holders[sent as usize % self.holders.len()].clone(),
                    after: (newest > 0).then(|| rng.random_range(0..newest)),
                    limit: Some(PAGE),
                }),
            };
            let (slots, done_tx, contract) = (slots.clone(), done_tx.clone(), self.contract);
            tokio::spawn(async move {
                let _slot = slots.acquire_owned().await;
                let failure = ask.send(&client, contract).await.err();
                let _ = done_tx.send(ReadDone {
                    kind: ask.kind(),
                    due,
                    latency: due.elapsed(),
                    failure,
                });
            });
        }
        drop(done_tx);
        let mut done = Vec::new();
        while let Some(read) = done_rx.recv().await {
            done.push(read);
        }
        done
    }
}

/// One read's question.
enum Ask {
    Holdings(ByHolder),
    Lineage(u64),
    Transaction(Hash),
    Proven(u64),
}

impl Ask {
    fn kind(&self) -> ReadKind {
        match self {
            Ask::Holdings(_) => ReadKind::Holdings,
            Ask::Lineage(_) => ReadKind::Lineage,
            Ask::Transaction(_) => ReadKind::Transaction,
            Ask::Proven(_) => ReadKind::Proven,
        }
    }

    /// Sends it; the failure's code if it failed.
    async fn send(&self, client: &Client, contract: Address) -> std::result::Result<(), String> {
        let code = |e: trellis_sdk::Error| refusal_code(&e);
        let receivables = client.receivables(contract);
        match self {
            Ask::Holdings(page) => receivables
                .holdings_page(page)
                .await
                .map(drop)
                .map_err(code),
            Ask::Lineage(piece) => receivables.lineage(*piece).await.map(drop).map_err(code),
            Ask::Transaction(hash) => match client.transaction(hash).await.map_err(code)? {
                Some(_) => Ok(()),
                None => Err("not_found".to_owned()),
            },
            Ask::Proven(piece) => match receivables.piece_with_proof(*piece).await {
                Ok(proven) if proven.value.is_some() => Ok(()),
                Ok(_) => Err("not_found".to_owned()),
                Err(e) => Err(code(e)),
            },
        }
    }
}

/// The guard, also after a panic elsewhere (the list stays whole).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ask_about_the_last_blocks_seen_a_second_ago_or_more() {
        let recent = RecentBlocks::default();
        let mut rng = StdRng::seed_from_u64(7);
        let now = Instant::now();
        assert!(recent.settled(now, &mut rng).is_none());
        let hash = |i: usize| {
            let mut bytes = [0; 32];
            bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Hash(bytes)
        };
        for i in 0..RECENT_BLOCKS + 10 {
            recent.push(hash(i), i as u64 * 3);
        }
        // Just seen: none is settled yet.
        assert!(recent.settled(Instant::now(), &mut rng).is_none());
        // A second on, every kept block is, the newest the last one's.
        let later = Instant::now() + SETTLED;
        let kept: Vec<Hash> = (10..RECENT_BLOCKS + 10).map(hash).collect();
        for _ in 0..100 {
            let (tx, newest) = recent.settled(later, &mut rng).expect("settled");
            assert!(kept.contains(&tx));
            assert_eq!(newest, (RECENT_BLOCKS as u64 + 9) * 3);
        }
    }

    #[test]
    fn the_mix_is_two_holdings_two_lineages_a_transaction_and_a_proven_piece_in_six() {
        let count = |kind| ReadKind::CYCLE.iter().filter(|k| **k == kind).count();
        assert_eq!(count(ReadKind::Holdings), 2);
        assert_eq!(count(ReadKind::Lineage), 2);
        assert_eq!(count(ReadKind::Transaction), 1);
        assert_eq!(count(ReadKind::Proven), 1);
    }
}
