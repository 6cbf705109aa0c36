//! `trellis status`, `trellis block`, `trellis tx`, `trellis validators`,
//! `trellis evidence`, `trellis export`: reading the chain.

use crate::context::Ctx;
use crate::error::{Class, CliError, Result};
use crate::output::{Report, record, table};
use crate::when::format_ms;
use serde_json::json;
use std::path::Path;
use trellis_sdk::Client;
use trellis_sdk::api::{BlockResponse, TxStatus, ValidatorList};
use trellis_types::archive::{ExportHeader, ExportWriter, FORMAT};
use trellis_types::block::VoteKind;
use trellis_types::{DuplicateVote, Event, Hash, Payload, Receipt, ReceiptStatus, SystemOp, Vote};

pub async fn status(ctx: &Ctx) -> Result<Report> {
    let client = ctx.reader()?;
    let s = client.status().await?;
    let text = record([
        ("node", client.endpoint().to_owned()),
        ("chain", s.chain_id.clone()),
        ("genesis", s.genesis_hash.to_hex()),
        ("height", s.status.height.to_string()),
        ("last block", s.status.block_hash.to_hex()),
        ("block time", format_ms(s.status.last_block_time_ms)),
        ("state root", s.status.state_root.to_hex()),
        ("round", s.status.round.to_string()),
        (
            "validator",
            if s.status.validator { "yes" } else { "no" }.into(),
        ),
        (
            "syncing",
            if s.status.syncing { "yes" } else { "no" }.into(),
        ),
        ("peers", s.status.peers.to_string()),
        ("state kept from", s.earliest_state_height.to_string()),
    ]);
    let mut value = serde_json::to_value(&s).map_err(|e| CliError::other(e.to_string()))?;
    value["node"] = json!(client.endpoint());
    Ok(Report::new(text, value))
}

pub async fn validators(ctx: &Ctx) -> Result<Report> {
    let set = ctx.reader()?.validators().await?;
    let mut t = table(["NAME", "ORG", "CONSENSUS KEY", "NODE KEY"]);
    for v in &set.validators {
        t.add_row(vec![
            v.name.clone(),
            v.org.clone(),
            v.consensus_key.to_hex(),
            v.node_key.to_hex(),
        ]);
    }
    let text = format!(
        "{}\na block needs {} of these {} validators' votes",
        t.trim_fmt(),
        set.quorum,
        set.validators.len()
    );
    let value = serde_json::to_value(&set).map_err(|e| CliError::other(e.to_string()))?;
    Ok(Report::new(text, value))
}

pub fn parse_hash(what: &str, s: &str) -> Result<Hash> {
    Hash::from_hex(s.trim())
        .map_err(|_| CliError::usage(format!("`{s}` is not a {what} hash (64 hex digits)")))
}

pub async fn block(ctx: &Ctx, which: &str, verify: bool) -> Result<Report> {
    let client = ctx.reader()?;
    let block = if which == "latest" {
        client.latest_block().await?
    } else if let Ok(height) = which.parse::<u64>() {
        client.block(height).await?
    } else if which.len() >= 64 {
        client.block_by_hash(&parse_hash("block", which)?).await?
    } else {
        return Err(CliError::usage(format!(
            "`{which}` is not `latest`, a height or a block hash"
        )));
    };
    let mut text = block_text(&block);
    let mut value = serde_json::to_value(&block).map_err(|e| CliError::other(e.to_string()))?;
    if verify {
        let height = block.block.header.height;
        trellis_sdk::verify_block(&block, &client.verified_header(height).await?)?;
        text = format!(
            "{text}\n\nverified: its header, which the validators committed, commits to these \
             transactions and receipts"
        );
        value["verified"] = json!({ "height": height, "block_hash": block.hash });
    }
    Ok(Report::new(text, value))
}

fn block_text(b: &BlockResponse) -> String {
    let h = &b.block.header;
    let head = record([
        ("height", h.height.to_string()),
        ("hash", b.hash.to_hex()),
        ("time", format_ms(h.timestamp_ms)),
        ("parent", h.parent.to_hex()),
        ("proposer", h.proposer.to_hex()),
        ("round", h.round.to_string()),
        ("state root", h.state_root.to_hex()),
        ("transactions", b.block.txs.len().to_string()),
        (
            "commit",
            format!(
                "{} precommits (round {})",
                b.commit.votes.len(),
                b.commit.round
            ),
        ),
    ]);
    if b.block.txs.is_empty() {
        return head;
    }
    let mut t = table(["#", "TRANSACTION", "SENDER", "NONCE", "WHAT", "RESULT"]);
    for (i, tx) in b.block.txs.iter().enumerate() {
        let receipt = b.receipts.get(i);
        t.add_row(vec![
            i.to_string(),
            tx.hash().to_hex(),
            short(&tx.tx.sender.to_hex()),
            tx.tx.nonce.to_string(),
            payload_text(&tx.tx.payload),
            receipt.map_or_else(|| "?".into(), result_text),
        ]);
    }
    format!("{head}\n\n{}", t.trim_fmt())
}

fn short(hex: &str) -> String {
    format!("{}…", &hex[..hex.len().min(12)])
}

fn payload_text(p: &Payload) -> String {
    match p {
        Payload::Call {
            contract, method, ..
        } => format!("call {method} on {}", short(&contract.to_hex())),
        Payload::Deploy { .. } => "deploy".into(),
        Payload::System(op) => match op {
            SystemOp::AddKey { key, .. } => format!("add key {}", short(&key.to_hex())),
            SystemOp::RemoveKey { key } => format!("remove key {}", short(&key.to_hex())),
            SystemOp::Remark { data } => format!("remark ({} bytes)", data.0.len()),
            SystemOp::Propose { change, .. } => format!("propose {}", change.kind()),
            SystemOp::Approve { proposal } => {
                format!("approve proposal {}", short(&proposal.to_hex()))
            }
        },
    }
}

fn result_text(r: &Receipt) -> String {
    match (&r.status, &r.error) {
        (ReceiptStatus::Success, _) => {
            let kinds: Vec<&str> = r.events.iter().map(|e| e.kind.as_str()).collect();
            if kinds.is_empty() {
                "ok".into()
            } else {
                format!("ok: {}", kinds.join(", "))
            }
        }
        (ReceiptStatus::Failed, Some(e)) => format!("failed: {}", e.code),
        (ReceiptStatus::Failed, None) => "failed".into(),
    }
}

/// `kind key=value key=value`.
pub fn event_text(e: &Event) -> String {
    let attrs: Vec<String> = e
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("{} {}", e.kind, attrs.join(" "))
}

pub async fn tx(ctx: &Ctx, hash: &str, verify: bool) -> Result<Report> {
    let hash = parse_hash("transaction", hash)?;
    let client = ctx.reader()?;
    if verify {
        return tx_verified(&client, hash).await;
    }
    let Some(status) = client.transaction(&hash).await? else {
        return Err(CliError::new(
            Class::NotFound,
            format!(
                "no transaction {hash} on this node (neither waiting, committed nor dropped lately)"
            ),
        )
        .with_code("not_found"));
    };
    let mut value = serde_json::to_value(&status).map_err(|e| CliError::other(e.to_string()))?;
    value["tx_hash"] = json!(hash.to_hex());
    let text = match &status {
        TxStatus::Pending => record([
            ("transaction", hash.to_hex()),
            ("status", "pending (admitted, not committed yet)".into()),
        ]),
        TxStatus::Committed {
            height,
            index,
            receipt,
        } => committed_text(hash, *height, *index, receipt, None),
        TxStatus::Dropped { reason } => record([
            ("transaction", hash.to_hex()),
            (
                "status",
                format!(
                    "dropped ({}): left the mempool uncommitted, no block may include it",
                    reason.code()
                ),
            ),
        ]),
    };
    Ok(Report::new(text, value))
}

/// `tx --verify`: the committed transaction, once it and its receipt are
/// proven under the header of a block the validators committed.
async fn tx_verified(client: &Client, hash: Hash) -> Result<Report> {
    let Some(proven) = client.transaction_with_proof(&hash).await? else {
        return Err(CliError::new(
            Class::NotFound,
            format!("transaction {hash} is not committed on this node (it may be pending)"),
        )
        .with_code("not_found"));
    };
    let verified = format!(
        "with its receipt, in block {} at height {}, which the validators committed",
        proven.block_hash, proven.height
    );
    let text = committed_text(
        hash,
        proven.height,
        proven.index,
        &proven.receipt,
        Some(verified),
    );
    let value = json!({
        "status": "committed",
        "tx_hash": hash.to_hex(),
        "height": proven.height,
        "index": proven.index,
        "receipt": proven.receipt,
        "tx": proven.tx,
        "verified": { "height": proven.height, "block_hash": proven.block_hash },
    });
    Ok(Report::new(text, value))
}

/// A committed transaction's rows and events, with a `verified` row when proven.
fn committed_text(
    hash: Hash,
    height: u64,
    index: u32,
    receipt: &Receipt,
    verified: Option<String>,
) -> String {
    let mut rows = vec![
        ("transaction", hash.to_hex()),
        ("status", format!("committed at {height}:{index}")),
        ("result", result_text(receipt)),
        ("fuel used", receipt.fuel_used.to_string()),
    ];
    if let Some(e) = &receipt.error {
        rows.push(("error", format!("{}: {}", e.code, e.message)));
    }
    if let Some(verified) = verified {
        rows.push(("verified", verified));
    }
    let mut text = record(rows);
    if !receipt.events.is_empty() {
        let mut t = table(["EVENT", "ATTRIBUTES"]);
        for e in &receipt.events {
            let attrs: Vec<String> = e
                .attributes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            t.add_row(vec![e.kind.clone(), attrs.join("\n")]);
        }
        text.push_str("\n\n");
        text.push_str(&t.trim_fmt());
    }
    text
}

/// Every proof of equivocation the node holds from `from_height` on, page
/// by page, each checked here rather than taken on the node's word: two
/// different votes for one step of this chain, both signed by the key they
/// name. (That the key is a validator's is the reader's to check against
/// the genesis: the API does not serve the validator set.)
pub async fn evidence(ctx: &Ctx, from_height: u64) -> Result<Report> {
    let client = ctx.reader()?;
    let chain_id = client.status().await?.chain_id;
    let validators = client.validators().await?;
    let mut all: Vec<DuplicateVote> = Vec::new();
    let mut after = None;
    loop {
        let page = match &after {
            None => client.evidence(from_height, None).await?,
            Some((height, voter)) => client.evidence(*height, Some(voter)).await?,
        };
        // The node keys each proof by its second vote's height and voter.
        let Some(last) = page.last() else { break };
        let next = (last.second.data.height, last.second.voter);
        if after.as_ref().is_some_and(|before| &next <= before) {
            return Err(CliError::other(
                "the node's pages of evidence do not advance",
            ));
        }
        after = Some(next);
        all.extend(page);
    }
    let checks: Vec<Option<String>> = all
        .iter()
        .map(|p| flaw(p, &chain_id, &validators))
        .collect();
    let mut t = table([
        "HEIGHT",
        "ROUND",
        "STEP",
        "VALIDATOR",
        "FIRST",
        "SECOND",
        "PROOF",
    ]);
    let block = |vote: &Vote| {
        vote.data
            .block
            .map_or_else(|| "nil".to_owned(), |b| short(&b.to_hex()))
    };
    for (proof, flaw) in all.iter().zip(&checks) {
        let data = &proof.second.data;
        t.add_row(vec![
            data.height.to_string(),
            data.round.to_string(),
            match data.kind {
                VoteKind::Prevote => "prevote",
                VoteKind::Precommit => "precommit",
            }
            .to_owned(),
            proof.second.voter.to_hex(),
            block(&proof.first),
            block(&proof.second),
            flaw.as_ref()
                .map_or_else(|| "valid".to_owned(), |why| format!("invalid: {why}")),
        ]);
    }
    let text = if all.is_empty() {
        format!("no evidence of equivocation from height {from_height} on this node")
    } else {
        t.trim_fmt()
    };
    Ok(Report::new(
        text,
        json!({ "evidence": all, "checks": checks }),
    ))
}

/// Why `proof` proves nothing against a validator of chain `chain_id`, if
/// it does not.
fn flaw(proof: &DuplicateVote, chain_id: &str, validators: &ValidatorList) -> Option<String> {
    if let Err(why) = proof.check() {
        return Some(why.to_owned());
    }
    let theirs = &proof.second.data.chain_id;
    if theirs != chain_id {
        return Some(format!("the votes are for chain {theirs}"));
    }
    let voter = &proof.second.voter;
    (!validators.contains(voter)).then(|| format!("{voter} is not a validator's key"))
}

/// `trellis export`: the chain's blocks with their commit certificates,
/// read from a running node, into one file that `trellis-node import-chain`
/// reads (trellis_types::archive).
pub async fn export(ctx: &Ctx, out: &Path, to_height: Option<u64>) -> Result<Report> {
    if out.exists() {
        return Err(CliError::usage(format!(
            "{} exists: an export is never written over a file",
            out.display()
        )));
    }
    let client = ctx.reader()?;
    let status = client.status().await?;
    let head = status.status.height;
    let last = to_height.unwrap_or(head);
    if last > head {
        return Err(CliError::usage(format!(
            "--to-height {last} is above the node's head, {head}"
        )));
    }
    let header = ExportHeader {
        format: FORMAT,
        chain_id: status.chain_id.clone(),
        genesis: status.genesis_hash,
        last,
    };
    let io = |e: std::io::Error| CliError::other(format!("writing {}: {e}", out.display()));
    let mut writer = ExportWriter::create(out, &header).map_err(io)?;
    let mut said = std::time::Instant::now();
    for height in 1..=last {
        let answer = client
            .wait_for_block(height, std::time::Duration::ZERO)
            .await?
            .ok_or_else(|| CliError::other(format!("the node has no block {height}")))?;
        writer.block(&answer.block, &answer.commit).map_err(io)?;
        if said.elapsed() >= std::time::Duration::from_secs(5) {
            eprintln!("exported height {height} of {last}");
            said = std::time::Instant::now();
        }
    }
    let bytes = writer.finish().map_err(io)?;
    let text = format!(
        "exported heights 1 to {last} of {} from {} to {} ({:.1} MiB)",
        header.chain_id,
        client.endpoint(),
        out.display(),
        bytes as f64 / f64::from(1 << 20)
    );
    let value = json!({
        "file": out.display().to_string(),
        "chain_id": header.chain_id,
        "genesis_hash": header.genesis,
        "last": last,
        "bytes": bytes,
        "node": client.endpoint(),
    });
    Ok(Report::new(text, value))
}
