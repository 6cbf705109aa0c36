//! Storage layout: every key the contract writes, and typed access to it.
//!
//! State (in the state tree, so every value is provable against a block):
//!
//! | key | value |
//! | --- | --- |
//! | `cfg` | [`Params`] (absent: defaults) |
//! | `ctr` | `u64`, the next piece id (absent: 1) |
//! | `p/<id:u64 be>` | [`Piece`] |
//! | `r/<root:u64 be>` | [`Root`] |
//! | `i/<invoice hash:32>` | `u64`, the root the invoice backs (never removed) |
//! | `o/<len:u16 be><org><currency>` | `u128`, the issuer's outstanding in that currency: sum of its live pieces in it |
//! | `l/<len:u16 be><org><currency>` | `u128`, the issuer's credit limit in that currency (absent: 0) |
//!
//! Query index (beside the state, outside its tree: calls keep it, queries
//! read it; each piece it lists is still provable, the list's completeness is not):
//!
//! | key | value |
//! | --- | --- |
//! | `h/<len:u16 be><org><id:u64 be>` | empty: the pieces an org holds (every piece not split) |
//!
//! Ids are big-endian so byte order is id order in prefix scans.

use alloc::vec::Vec;
use trellis_contract::{Host, store};

use crate::error::{Error, Result};
use crate::types::{Params, Piece, PieceId, Root};

pub(crate) const PARAMS: &[u8] = b"cfg";
pub(crate) const COUNTER: &[u8] = b"ctr";
pub(crate) const PIECE: &[u8] = b"p/";
pub(crate) const ROOT: &[u8] = b"r/";
pub(crate) const HOLDER: &[u8] = b"h/";
pub(crate) const INVOICE: &[u8] = b"i/";
pub(crate) const OUTSTANDING: &[u8] = b"o/";
pub(crate) const LIMIT: &[u8] = b"l/";

fn key(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>());
    k.extend_from_slice(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

pub(crate) fn piece_key(id: PieceId) -> Vec<u8> {
    key(PIECE, &[&id.to_be_bytes()])
}

pub(crate) fn root_key(id: PieceId) -> Vec<u8> {
    key(ROOT, &[&id.to_be_bytes()])
}

/// Length-prefixed so that no org's keys are a prefix of another's.
pub(crate) fn holder_prefix(org: &str) -> Vec<u8> {
    let len =
        u16::try_from(org.len()).expect("org ids are shorter than 64 KiB (checked at the door)");
    key(HOLDER, &[&len.to_be_bytes(), org.as_bytes()])
}

pub(crate) fn holder_key(org: &str, id: PieceId) -> Vec<u8> {
    let mut k = holder_prefix(org);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(crate) fn invoice_key(hash: &[u8; 32]) -> Vec<u8> {
    key(INVOICE, &[hash])
}

/// `prefix` ‖ the org, length-prefixed so that no org's keys are a prefix of
/// another's ‖ the currency.
fn credit_key(prefix: &[u8], org: &str, currency: &str) -> Vec<u8> {
    let len =
        u16::try_from(org.len()).expect("org ids are shorter than 64 KiB (checked at the door)");
    key(
        prefix,
        &[&len.to_be_bytes(), org.as_bytes(), currency.as_bytes()],
    )
}

/// The org and currency of a [`credit_key`] under `prefix`.
pub(crate) fn parse_credit_key<'k>(prefix: &[u8], k: &'k [u8]) -> Option<(&'k [u8], &'k [u8])> {
    let rest = k.get(prefix.len()..)?;
    let len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    let org = rest.get(2..2 + len)?;
    Some((org, &rest[2 + len..]))
}

pub(crate) fn outstanding_key(org: &str, currency: &str) -> Vec<u8> {
    credit_key(OUTSTANDING, org, currency)
}

pub(crate) fn limit_key(org: &str, currency: &str) -> Vec<u8> {
    credit_key(LIMIT, org, currency)
}

/// The trailing big-endian id of an index key.
pub(crate) fn trailing_id(key: &[u8]) -> PieceId {
    let tail: [u8; 8] = key[key.len() - 8..]
        .try_into()
        .expect("index keys end in an 8-byte id");
    PieceId::from_be_bytes(tail)
}

pub(crate) fn params(host: &dyn Host) -> Params {
    store::get(host, PARAMS).unwrap_or_default()
}

pub(crate) fn params_set(host: &dyn Host) -> bool {
    host.get(PARAMS).is_some()
}

pub(crate) fn next_id(host: &mut dyn Host) -> PieceId {
    let id: PieceId = store::get(host, COUNTER).unwrap_or(1);
    store::set(host, COUNTER, &(id + 1));
    id
}

pub(crate) fn piece(host: &dyn Host, id: PieceId) -> Result<Piece> {
    store::get(host, &piece_key(id)).ok_or(Error::NotFound(id))
}

pub(crate) fn root(host: &dyn Host, id: PieceId) -> Result<Root> {
    store::get(host, &root_key(id)).ok_or(Error::NotFound(id))
}

pub(crate) fn put_root(host: &mut dyn Host, root: &Root) {
    store::set(host, &root_key(root.id), root);
}

/// Writes a piece that already exists (holder unchanged).
pub(crate) fn put_piece(host: &mut dyn Host, piece: &Piece) {
    store::set(host, &piece_key(piece.id), piece);
}

/// Writes a new piece and indexes it under its holder.
pub(crate) fn insert_piece(host: &mut dyn Host, piece: &Piece) {
    put_piece(host, piece);
    host.index_set(&holder_key(&piece.holder, piece.id), &[]);
}

/// Moves a piece to a new holder, keeping the holder index in step.
pub(crate) fn set_holder(host: &mut dyn Host, piece: &mut Piece, to: &str) {
    host.index_remove(&holder_key(&piece.holder, piece.id));
    piece.holder = to.into();
    host.index_set(&holder_key(&piece.holder, piece.id), &[]);
}

/// Takes a piece out of the holder index (it was split: its children replace it).
pub(crate) fn unindex_holder(host: &mut dyn Host, piece: &Piece) {
    host.index_remove(&holder_key(&piece.holder, piece.id));
}

/// A root's pieces in walk order: each piece, then its children's subtrees
/// in split order.
pub(crate) fn tree(host: &dyn Host, root: PieceId) -> Result<Vec<Piece>> {
    walk(host, Vec::from([root]), usize::MAX)
}

/// Up to `limit` pieces in walk order, from the pieces in `stack` (the next
/// one on top).
pub(crate) fn walk(host: &dyn Host, mut stack: Vec<PieceId>, limit: usize) -> Result<Vec<Piece>> {
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(id) = stack.pop() else { break };
        let p = piece(host, id)?;
        stack.extend(p.children.iter().rev());
        out.push(p);
    }
    Ok(out)
}

/// The walk's stack just after piece `id` of tree `root`: its children, then
/// the younger siblings of it and of each of its ancestors.
pub(crate) fn walk_after(host: &dyn Host, root: PieceId, id: PieceId) -> Result<Vec<PieceId>> {
    let p = piece(host, id)?;
    if p.root != root {
        return Err(Error::BadArgs(alloc::format!(
            "piece {id} is not of root {root}"
        )));
    }
    let mut stack: Vec<PieceId> = p.children.iter().rev().copied().collect();
    let (mut child, mut parent) = (p.id, p.parent);
    while let Some(parent_id) = parent {
        let up = piece(host, parent_id)?;
        let at = up
            .children
            .iter()
            .position(|c| *c == child)
            .expect("a piece is among its parent's children (I2)");
        // Below what is already there: these come after the subtree above.
        stack.splice(0..0, up.children[at + 1..].iter().rev().copied());
        (child, parent) = (up.id, up.parent);
    }
    Ok(stack)
}

pub(crate) fn invoice_root(host: &dyn Host, hash: &[u8; 32]) -> Option<PieceId> {
    store::get(host, &invoice_key(hash))
}

pub(crate) fn outstanding(host: &dyn Host, issuer: &str, currency: &str) -> u128 {
    store::get(host, &outstanding_key(issuer, currency)).unwrap_or(0)
}

pub(crate) fn set_outstanding(host: &mut dyn Host, issuer: &str, currency: &str, value: u128) {
    store::set(host, &outstanding_key(issuer, currency), &value);
}

pub(crate) fn credit_limit(host: &dyn Host, issuer: &str, currency: &str) -> u128 {
    store::get(host, &limit_key(issuer, currency)).unwrap_or(0)
}

/// Releases `amount` of an issuer's outstanding in `currency` (settled or returned paper).
///
/// Outstanding counts every live piece (I6), so it always covers what a live
/// piece releases. Were the books ever wrong, the call traps, and with it the
/// transaction, rather than record a wrong outstanding and carry on.
pub(crate) fn release(host: &mut dyn Host, issuer: &str, currency: &str, amount: u128) {
    let before = outstanding(host, issuer, currency);
    let after = before
        .checked_sub(amount)
        .unwrap_or_else(|| panic!("outstanding {before} does not cover {amount} released"));
    set_outstanding(host, issuer, currency, after);
}
