//! `trellis events`: committed transactions and their events.
//!
//! With `--follow` it is the SDK's resumable event stream (server-side
//! filters; no gap, no duplicate across reconnections), printed as it comes:
//! one line per transaction, or JSON Lines with `--output json`.
//!
//! Without `--follow` it reads the blocks from `--from` up to the head the
//! node reported when the command started, and ends: the event stream has
//! no "caught up" marker to stop at. The filters are then applied here, with
//! the node's rules (docs/api.md, "The event stream").

use crate::cli::EventsArgs;
use crate::context::Ctx;
use crate::error::{CliError, Result};
use crate::output::{Report, print_stdout};
use futures_util::StreamExt;
use std::collections::HashMap;
use trellis_sdk::api::{CommittedTx, TxPosition};
use trellis_sdk::{Account, Client};
use trellis_types::{PublicKey, ReceiptStatus};

/// Blocks fetched at once when reading a range.
const READ_AHEAD: usize = 8;

pub async fn run(ctx: &Ctx, args: &EventsArgs) -> Result<Option<Report>> {
    let client = ctx.reader()?;
    if args.follow {
        follow(ctx, &client, args).await?;
        return Ok(None);
    }
    let txs = read_range(&client, args).await?;
    let text = if txs.is_empty() {
        "no matching transactions".to_owned()
    } else {
        txs.iter().map(line).collect::<Vec<_>>().join("\n")
    };
    let json = serde_json::to_value(&txs).map_err(|e| CliError::other(e.to_string()))?;
    Ok(Some(Report::new(text, json)))
}

/// One transaction as a line: position, hash, and its events or its error.
pub fn line(tx: &CommittedTx) -> String {
    let what = match (&tx.status, &tx.error) {
        (ReceiptStatus::Failed, Some(e)) => format!("FAILED {}: {}", e.code, e.message),
        (ReceiptStatus::Failed, None) => "FAILED".into(),
        (ReceiptStatus::Success, _) if tx.events.is_empty() => "(no events)".into(),
        (ReceiptStatus::Success, _) => tx
            .events
            .iter()
            .map(super::chain::event_text)
            .collect::<Vec<_>>()
            .join("; "),
    };
    format!("{}  {}  {}", tx.position(), tx.tx_hash, what)
}

async fn follow(ctx: &Ctx, client: &Client, args: &EventsArgs) -> Result<()> {
    let mut builder = client.events();
    if let Some(after) = args.after {
        builder = builder.after(after);
    } else if let Some(from) = args.from {
        builder = builder.from_height(from);
    }
    for kind in &args.kind {
        builder = builder.kind(kind.clone());
    }
    for party in &args.party {
        builder = builder.party(party.clone());
    }
    let mut stream = builder.subscribe().await?;
    crate::output::note("following committed transactions; Ctrl-C stops");
    while let Some(tx) = stream.next().await {
        let tx = tx?;
        if ctx.json() {
            let line = serde_json::to_string(&tx).map_err(|e| CliError::other(e.to_string()))?;
            print_stdout(&line);
        } else {
            print_stdout(&line(&tx));
        }
    }
    Err(CliError::other("the event stream ended"))
}

async fn read_range(client: &Client, args: &EventsArgs) -> Result<Vec<CommittedTx>> {
    let head = client.status().await?.status.height;
    let (from, after) = match args.after {
        Some(after) => (after.height, Some(after)),
        None => (args.from.unwrap_or(1), None),
    };
    let mut matcher = Matcher::new(client.clone(), &args.kind, &args.party);
    let mut out = Vec::new();
    let mut blocks = futures_util::stream::iter(from..=head)
        .map(|h| {
            let client = client.clone();
            async move { client.block(h).await }
        })
        .buffered(READ_AHEAD);
    while let Some(block) = blocks.next().await {
        let block = block?;
        let header = &block.block.header;
        for (i, (stx, receipt)) in block.block.txs.iter().zip(&block.receipts).enumerate() {
            let tx = CommittedTx {
                height: header.height,
                index: u32::try_from(i).unwrap_or(u32::MAX),
                tx_hash: stx.hash(),
                sender: stx.tx.sender,
                status: receipt.status,
                error: receipt.error.clone(),
                events: receipt.events.clone(),
                fuel_used: receipt.fuel_used,
                block_time_ms: header.timestamp_ms,
            };
            if after.is_some_and(|a: TxPosition| tx.position() <= a) {
                continue;
            }
            if matcher.matches(&tx).await? {
                out.push(tx);
            }
        }
    }
    Ok(out)
}

/// The node's event filter rules, applied to transactions read from blocks.
struct Matcher {
    client: Client,
    kinds: Vec<String>,
    parties: Vec<String>,
    party_keys: Vec<PublicKey>,
    orgs: HashMap<PublicKey, Option<String>>,
}

impl Matcher {
    fn new(client: Client, kinds: &[String], parties: &[String]) -> Matcher {
        Matcher {
            client,
            kinds: kinds.to_vec(),
            parties: parties.to_vec(),
            party_keys: parties
                .iter()
                .filter_map(|p| PublicKey::from_hex(p).ok())
                .collect(),
            orgs: HashMap::new(),
        }
    }

    async fn matches(&mut self, tx: &CommittedTx) -> Result<bool> {
        if !self.kinds.is_empty() && !tx.events.iter().any(|e| self.kinds.contains(&e.kind)) {
            return Ok(false);
        }
        if self.parties.is_empty() || self.party_keys.contains(&tx.sender) {
            return Ok(true);
        }
        let named = tx.events.iter().flat_map(|e| &e.attributes).any(|(_, v)| {
            self.parties
                .iter()
                .any(|p| v == p || v.split(':').any(|field| field == p))
        });
        if named {
            return Ok(true);
        }
        let org = self.sender_org(&tx.sender, tx.height).await?;
        Ok(org.is_some_and(|org| self.parties.contains(&org)))
    }

    /// The sender's organisation now, or as of the block for a key removed since.
    async fn sender_org(&mut self, sender: &PublicKey, height: u64) -> Result<Option<String>> {
        if let Some(org) = self.orgs.get(sender) {
            return Ok(org.clone());
        }
        let mut org = self.client.account(sender).await?.map(|a| a.org);
        if org.is_none() {
            let then = self
                .client
                .state(&Account::state_key(sender), Some(height), false)
                .await?;
            org = then
                .value
                .and_then(|v| trellis_types::decode::<Account>(&v).ok())
                .map(|a| a.org);
        }
        self.orgs.insert(*sender, org.clone());
        Ok(org)
    }
}
