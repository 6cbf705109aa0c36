//! DESIGN.md's invariants, checked over the whole stored state: I1, I2, I5
//! and I6, and I3 as far as stored state shows it. I4 (who may act) is about
//! transactions, not state: the behaviour, audit and property tests check it.
//!
//! Tests call [`check_invariants`] after every step. It reads everything, so
//! it is for tests and audits, not for calls.
//!
//! Definitions used below. A piece is **live** while it is a current claim on
//! its issuer: pending acceptance, active, financed or overdue. It is
//! **retired** once split (its children replace it), settled (paid) or
//! returned (never became a claim). Leaves are the pieces not split.
//!
//! Params bounds (minimum amount, maximum depth) are checked against the
//! params stored now; raising them later makes older pieces fail the check,
//! so the tests that use the checker never tighten params mid-run.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use trellis_contract::{Host, codec, store};

use crate::state::{self, COUNTER, HOLDER, INVOICE, LIMIT, OUTSTANDING, PIECE, ROOT};
use crate::types::*;

fn decode<T: serde::Serialize + serde::de::DeserializeOwned>(
    what: &str,
    k: &[u8],
    v: &[u8],
) -> Result<T, String> {
    codec::decode(v).map_err(|e| format!("{what} at {k:?} does not decode: {e}"))
}

fn id_after(prefix: &[u8], k: &[u8]) -> Result<PieceId, String> {
    let rest = &k[prefix.len()..];
    let bytes: [u8; 8] = rest
        .try_into()
        .map_err(|_| format!("malformed key {k:?}"))?;
    Ok(PieceId::from_be_bytes(bytes))
}

/// The issuer and currency of an outstanding or limit key.
fn issuer_currency(prefix: &[u8], k: &[u8]) -> Result<(String, String), String> {
    let (org, currency) =
        state::parse_credit_key(prefix, k).ok_or_else(|| format!("malformed key {k:?}"))?;
    let text =
        |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| format!("key {k:?} is not UTF-8"));
    Ok((text(org)?, text(currency)?))
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Checks the invariants above and the consistency of every index; the first violation
/// found is returned as a sentence naming the records involved.
pub fn check_invariants(host: &dyn Host) -> Result<(), String> {
    let params = state::params(host);
    let next_id: PieceId = store::get(host, COUNTER).unwrap_or(1);

    let mut pieces: BTreeMap<PieceId, Piece> = BTreeMap::new();
    for (k, v) in store::scan(host, PIECE) {
        let id = id_after(PIECE, &k)?;
        let p: Piece = decode("piece", &k, &v)?;
        ensure!(p.id == id, "piece stored under {id} has id {}", p.id);
        ensure!(
            id >= 1 && id < next_id,
            "piece {id} is outside the issued ids 1..{next_id}"
        );
        pieces.insert(id, p);
    }
    let mut roots: BTreeMap<PieceId, Root> = BTreeMap::new();
    for (k, v) in store::scan(host, ROOT) {
        let id = id_after(ROOT, &k)?;
        let r: Root = decode("root", &k, &v)?;
        ensure!(r.id == id, "root stored under {id} has id {}", r.id);
        roots.insert(id, r);
    }

    let mut children: BTreeMap<PieceId, Vec<PieceId>> = BTreeMap::new();
    let mut by_root: BTreeMap<PieceId, Vec<&Piece>> = BTreeMap::new();
    for p in pieces.values() {
        if let Some(parent) = p.parent {
            children.entry(parent).or_default().push(p.id);
        }
        by_root.entry(p.root).or_default().push(p);
    }

    // I2 lineage, I5 split rules, and the per-piece shape of I3.
    for p in pieces.values() {
        let r = roots
            .get(&p.root)
            .ok_or_else(|| format!("piece {} names root {} which does not exist", p.id, p.root))?;
        ensure!(
            p.issuer == r.issuer
                && p.currency == r.currency
                && p.maturity_ms == r.maturity_ms
                && p.overdue_from_ms == r.overdue_from_ms
                && p.invoice_hash == r.invoice_hash,
            "piece {} disagrees with its root {} on issuer, currency, maturity, overdue date or invoice",
            p.id,
            r.id
        );
        ensure!(p.amount > 0, "I5: piece {} has a zero amount", p.id);
        ensure!(
            p.amount >= params.min_piece_amount,
            "I5: piece {} ({}) is below the minimum {}",
            p.id,
            p.amount,
            params.min_piece_amount
        );
        ensure!(
            p.depth <= params.max_depth,
            "I5: piece {} has depth {} > {}",
            p.id,
            p.depth,
            params.max_depth
        );
        match p.parent {
            None => {
                ensure!(
                    p.id == p.root && p.depth == 0,
                    "I2: piece {} has no parent but is not a root of depth 0",
                    p.id
                );
                ensure!(
                    p.amount == r.face_value,
                    "root piece {} amount differs from face value",
                    p.id
                );
            }
            Some(parent_id) => {
                let parent = pieces.get(&parent_id).ok_or_else(|| {
                    format!("I2: piece {} has a missing parent {parent_id}", p.id)
                })?;
                ensure!(
                    parent_id < p.id,
                    "I2: piece {} is older than its parent {parent_id}",
                    p.id
                );
                ensure!(
                    parent.root == p.root,
                    "I2: piece {} and its parent {parent_id} have different roots",
                    p.id
                );
                ensure!(
                    parent.depth + 1 == p.depth,
                    "I2: piece {} depth {} is not its parent's + 1",
                    p.id,
                    p.depth
                );
                ensure!(
                    parent.status == Status::Split,
                    "I2: piece {} has a parent {parent_id} that was not split",
                    p.id
                );
            }
        }
        // Walk up: parents have smaller ids, so this ends at a root or fails.
        let mut cur = p;
        let mut steps = 0u32;
        while let Some(parent) = cur.parent {
            cur = &pieces[&parent];
            steps += 1;
        }
        ensure!(
            cur.id == p.root && steps == u32::from(p.depth),
            "I2: piece {} does not lead back to root {}",
            p.id,
            p.root
        );

        let kids = children.get(&p.id).map(Vec::as_slice).unwrap_or(&[]);
        if p.status == Status::Split {
            ensure!(
                (2..=MAX_PARTS).contains(&kids.len()),
                "I5: piece {} was split into {} pieces",
                p.id,
                kids.len()
            );
            let sum: u128 = kids.iter().map(|k| pieces[k].amount).sum();
            ensure!(
                sum == p.amount,
                "I1: children of piece {} sum to {sum}, not {}",
                p.id,
                p.amount
            );
            ensure!(
                p.financing.is_none(),
                "I3: financed piece {} was split",
                p.id
            );
        } else {
            ensure!(
                kids.is_empty(),
                "piece {} has children but is {:?}",
                p.id,
                p.status
            );
        }

        if let Some(o) = &p.offer {
            ensure!(
                p.status == Status::Active,
                "I3: piece {} is {:?} with a financing offer",
                p.id,
                p.status
            );
            ensure!(
                o.holder == p.holder,
                "I3: piece {} changed holder under an offer",
                p.id
            );
            ensure!(
                o.bank != p.holder,
                "piece {} has an offer from its own holder",
                p.id
            );
            ensure!(
                o.terms.expires_ms < p.maturity_ms,
                "piece {} has an offer expiring after maturity",
                p.id
            );
        }
        match p.status {
            Status::Financed => ensure!(
                p.financing.is_some(),
                "piece {} is financed without a record",
                p.id
            ),
            Status::Settled | Status::Overdue => {}
            _ => ensure!(
                p.financing.is_none(),
                "I3: piece {} is {:?} with a financing record",
                p.id,
                p.status
            ),
        }
        if let Some(f) = &p.financing {
            ensure!(
                f.price > 0 && f.price <= p.amount,
                "piece {} was financed at {} for {}",
                p.id,
                f.price,
                p.amount
            );
            ensure!(
                f.seller != f.bank,
                "piece {} was financed by its own holder",
                p.id
            );
        }
        ensure!(
            (p.status == Status::Settled) == p.settlement.is_some(),
            "piece {} is {:?} with settlement {:?}",
            p.id,
            p.status,
            p.settlement
        );
        if let Some(s) = &p.settlement {
            ensure!(
                s.amount == p.amount && s.paid_to == p.holder,
                "piece {} settlement disagrees with the piece",
                p.id
            );
        }
        ensure!(
            p.frozen.is_none() || p.status.is_live(),
            "piece {} is frozen while {:?}",
            p.id,
            p.status
        );
        ensure!(
            (p.status == Status::PendingAcceptance || p.status == Status::Returned)
                == (p.parent.is_none() && r.accepted_ms.is_none()),
            "piece {} is {:?} but its root's acceptance is {:?}",
            p.id,
            p.status,
            r.accepted_ms
        );
    }

    // I1 conservation per root.
    for r in roots.values() {
        let root_piece = pieces
            .get(&r.id)
            .ok_or_else(|| format!("root {} has no root piece", r.id))?;
        ensure!(
            root_piece.parent.is_none(),
            "root {} points at a non-root piece",
            r.id
        );
        let mut live = 0u128;
        let mut settled = 0u128;
        let mut returned = 0u128;
        for p in by_root.get(&r.id).into_iter().flatten() {
            match p.status {
                Status::Split => {}
                Status::Settled => settled += p.amount,
                Status::Returned => returned += p.amount,
                _ => live += p.amount,
            }
        }
        ensure!(
            settled == r.settled,
            "I1: root {} records {} settled, pieces say {settled}",
            r.id,
            r.settled
        );
        ensure!(
            live + settled + returned == r.face_value,
            "I1: root {}: live {live} + settled {settled} + returned {returned} != face value {}",
            r.id,
            r.face_value
        );
        ensure!(
            (returned > 0) == r.returned_ms.is_some()
                && (returned == 0 || returned == r.face_value),
            "root {} is partly returned or its return is not recorded",
            r.id
        );
    }

    // I3: one invoice hash backs one root, and every root is in the index.
    let mut invoices = 0usize;
    for (k, v) in store::scan(host, INVOICE) {
        let root_id: PieceId = decode("invoice index", &k, &v)?;
        let r = roots
            .get(&root_id)
            .ok_or_else(|| format!("I3: invoice index points at missing root {root_id}"))?;
        ensure!(
            k[INVOICE.len()..] == r.invoice_hash,
            "I3: invoice index entry for root {root_id} has the wrong hash"
        );
        invoices += 1;
    }
    ensure!(
        invoices == roots.len(),
        "I3: {} roots but {invoices} invoice index entries",
        roots.len()
    );

    // Children lists: exactly the pieces naming each piece as parent, in
    // split order (ids are given in that order), so a walk from each root
    // finds every piece of it once.
    for p in pieces.values() {
        let kids = children.get(&p.id).map(Vec::as_slice).unwrap_or(&[]);
        ensure!(
            p.children == kids,
            "piece {} lists children {:?}, but {:?} name it as parent",
            p.id,
            p.children,
            kids
        );
    }

    // Holder index: every piece not split, under its holder.
    let held: BTreeSet<Vec<u8>> = store::scan_index(host, HOLDER)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let expected: BTreeSet<Vec<u8>> = pieces
        .values()
        .filter(|p| p.status != Status::Split)
        .map(|p| state::holder_key(&p.holder, p.id))
        .collect();
    ensure!(
        held == expected,
        "the holder index does not match the pieces' holders"
    );

    // I6: outstanding, per issuer and currency, is the sum of live pieces and
    // within the limit in that currency.
    let mut recomputed: BTreeMap<(String, String), u128> = BTreeMap::new();
    for p in pieces.values().filter(|p| p.status.is_live()) {
        *recomputed
            .entry((p.issuer.clone(), p.currency.clone()))
            .or_default() += p.amount;
    }
    let mut stored: BTreeMap<(String, String), u128> = BTreeMap::new();
    for (k, v) in store::scan(host, OUTSTANDING) {
        let amount: u128 = decode("outstanding", &k, &v)?;
        if amount > 0 {
            stored.insert(issuer_currency(OUTSTANDING, &k)?, amount);
        }
    }
    ensure!(
        stored == recomputed,
        "I6: stored outstanding {stored:?} != recomputed {recomputed:?}"
    );
    let mut limits: BTreeMap<(String, String), u128> = BTreeMap::new();
    for (k, v) in store::scan(host, LIMIT) {
        limits.insert(issuer_currency(LIMIT, &k)?, decode("limit", &k, &v)?);
    }
    for ((issuer, currency), amount) in &stored {
        let limit = limits
            .get(&(issuer.clone(), currency.clone()))
            .copied()
            .unwrap_or(0);
        ensure!(
            *amount <= limit,
            "I6: {issuer} has {amount} {currency} outstanding over its limit {limit}"
        );
    }
    Ok(())
}
