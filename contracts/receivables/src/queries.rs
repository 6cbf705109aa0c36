//! Read-only requests. They never write; statuses are reported as of the
//! latest block (see [`PieceView`]).

use alloc::vec::Vec;
use trellis_contract::Host;

use crate::error::{Error, Result};
use crate::state;
use crate::types::*;

/// The status a piece has at `now`, counting what no one has recorded yet.
pub fn effective_status(p: &Piece, acceptance_deadline_ms: u64, now: u64) -> Status {
    match p.status {
        Status::PendingAcceptance if now >= acceptance_deadline_ms => Status::Returned,
        Status::Active | Status::Financed if now >= p.overdue_from_ms => Status::Overdue,
        s => s,
    }
}

fn view(host: &dyn Host, p: Piece, now: u64) -> Result<PieceView> {
    let deadline = if p.status == Status::PendingAcceptance {
        state::root(host, p.root)?.acceptance_deadline_ms
    } else {
        u64::MAX
    };
    let status = effective_status(&p, deadline, now);
    Ok(PieceView { piece: p, status })
}

fn now(host: &dyn Host) -> u64 {
    host.block().timestamp_ms
}

pub(crate) fn piece(host: &dyn Host, a: IdRef) -> Result<PieceView> {
    let p = state::piece(host, a.id)?;
    view(host, p, now(host))
}

pub(crate) fn root(host: &dyn Host, a: IdRef) -> Result<Root> {
    state::root(host, a.id)
}

pub(crate) fn pieces_by_holder(host: &dyn Host, a: ByHolder) -> Result<Vec<PieceView>> {
    if a.org.len() > usize::from(u16::MAX) {
        return Err(Error::BadArgs("organisation id too long".into()));
    }
    let after = a.after.map(|id| state::holder_key(&a.org, id));
    page(host, &state::holder_prefix(&a.org), after, a.limit)
}

/// The pieces of one page of the query index: the ids that end the keys
/// under `prefix`, after key `after`, at most `limit` (capped at [`MAX_PAGE`]).
fn page(
    host: &dyn Host,
    prefix: &[u8],
    mut after: Option<Vec<u8>>,
    limit: Option<u32>,
) -> Result<Vec<PieceView>> {
    let limit = page_limit(limit);
    let now = now(host);
    let mut out = Vec::new();
    while out.len() < limit {
        let Some((k, _)) = host.index_next(prefix, after.as_deref()) else {
            break;
        };
        let p = state::piece(host, state::trailing_id(&k))?;
        out.push(view(host, p, now)?);
        after = Some(k);
    }
    Ok(out)
}

pub(crate) fn lineage(host: &dyn Host, a: IdRef) -> Result<Lineage> {
    let now = now(host);
    let mut p = state::piece(host, a.id)?;
    let root = state::root(host, p.root)?;
    let mut path = Vec::with_capacity(usize::from(p.depth) + 1);
    loop {
        let parent = p.parent;
        path.push(view(host, p, now)?);
        match parent {
            Some(id) => p = state::piece(host, id)?,
            None => break,
        }
    }
    Ok(Lineage {
        issuer: root.issuer.clone(),
        root,
        path,
    })
}

/// At most [`MAX_PAGE`] a page; `None` means [`MAX_PAGE`].
fn page_limit(limit: Option<u32>) -> usize {
    limit.unwrap_or(MAX_PAGE).min(MAX_PAGE) as usize
}

fn views(host: &dyn Host, pieces: Vec<Piece>) -> Result<Vec<PieceView>> {
    let now = now(host);
    pieces.into_iter().map(|p| view(host, p, now)).collect()
}

pub(crate) fn tree(host: &dyn Host, a: RootRef) -> Result<Vec<PieceView>> {
    state::root(host, a.root)?;
    views(host, state::tree(host, a.root)?)
}

/// One page of [`tree`], for trees too large to read in one query's fuel.
pub(crate) fn tree_page(host: &dyn Host, a: TreePage) -> Result<Vec<PieceView>> {
    state::root(host, a.root)?;
    let stack = match a.after {
        None => Vec::from([a.root]),
        Some(id) => state::walk_after(host, a.root, id)?,
    };
    views(host, state::walk(host, stack, page_limit(a.limit))?)
}

pub(crate) fn outstanding(host: &dyn Host, a: CreditRef) -> Result<u128> {
    Ok(state::outstanding(host, &a.issuer, &a.currency))
}

pub(crate) fn credit_limit(host: &dyn Host, a: CreditRef) -> Result<u128> {
    Ok(state::credit_limit(host, &a.issuer, &a.currency))
}

pub(crate) fn by_invoice(host: &dyn Host, a: InvoiceRef) -> Result<Option<Root>> {
    state::invoice_root(host, &a.hash)
        .map(|id| state::root(host, id))
        .transpose()
}

pub(crate) fn params(host: &dyn Host) -> Result<Params> {
    Ok(state::params(host))
}
