//! Read-only requests. They never write; statuses are reported as of the
//! latest block (see [`PieceView`]).
//!
//! Each shows the caller (the member whose signed request asked the node)
//! only what concerns it: a piece to its holder, its issuer and the bank of
//! its open offer or financing, with its lineage back to the root; a
//! holder's list to that holder; a whole tree to its issuer; credit
//! figures to the issuer, banks and admins. A regulator sees everything. A
//! piece the caller may not see is reported as not found, so no one learns
//! that it exists.

use alloc::vec::Vec;
use trellis_contract::{Caller, Host, Role};

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

fn is_regulator(caller: &Caller) -> bool {
    caller.has_role(Role::Regulator)
}

/// Whether `caller` may see piece `p` (see the module's doc).
fn may_see(caller: &Caller, p: &Piece) -> bool {
    let org = caller.org.as_str();
    is_regulator(caller)
        || p.holder == org
        || p.issuer == org
        || p.offer.as_ref().is_some_and(|o| o.bank == org)
        || p.financing.as_ref().is_some_and(|f| f.bank == org)
}

/// Piece `id`, if the caller may see it; else not found, as if it did not exist.
fn visible_piece(host: &dyn Host, id: PieceId) -> Result<Piece> {
    let p = state::piece(host, id)?;
    if may_see(&host.caller(), &p) {
        Ok(p)
    } else {
        Err(Error::NotFound(id))
    }
}

/// Nothing if the caller is `org` itself or has one of `roles` (a regulator
/// always may); else `not_visible` saying `why`.
fn own_or_role(host: &dyn Host, org: &str, roles: &[Role], why: &'static str) -> Result<()> {
    let caller = host.caller();
    if caller.org == org || is_regulator(&caller) || roles.iter().any(|r| caller.has_role(*r)) {
        Ok(())
    } else {
        Err(Error::NotVisible(why))
    }
}

pub(crate) fn piece(host: &dyn Host, a: IdRef) -> Result<PieceView> {
    let p = visible_piece(host, a.id)?;
    view(host, p, now(host))
}

/// A root's record, for whoever may see its root piece.
pub(crate) fn root(host: &dyn Host, a: IdRef) -> Result<Root> {
    let root = state::root(host, a.id)?;
    visible_piece(host, root.id)?;
    Ok(root)
}

pub(crate) fn pieces_by_holder(host: &dyn Host, a: ByHolder) -> Result<Vec<PieceView>> {
    if a.org.len() > usize::from(u16::MAX) {
        return Err(Error::BadArgs("organisation id too long".into()));
    }
    own_or_role(host, &a.org, &[], "a member lists only its own holdings")?;
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

/// A piece the caller may see, with the pieces it came from up to the root.
pub(crate) fn lineage(host: &dyn Host, a: IdRef) -> Result<Lineage> {
    let now = now(host);
    let mut p = visible_piece(host, a.id)?;
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

/// Root `id`, if the caller issued it or is a regulator; else not found.
fn issued_root(host: &dyn Host, id: PieceId) -> Result<Root> {
    let root = state::root(host, id)?;
    let caller = host.caller();
    if root.issuer == caller.org || is_regulator(&caller) {
        Ok(root)
    } else {
        Err(Error::NotFound(id))
    }
}

pub(crate) fn tree(host: &dyn Host, a: RootRef) -> Result<Vec<PieceView>> {
    issued_root(host, a.root)?;
    views(host, state::tree(host, a.root)?)
}

/// One page of [`tree`], for trees too large to read in one query's fuel.
pub(crate) fn tree_page(host: &dyn Host, a: TreePage) -> Result<Vec<PieceView>> {
    issued_root(host, a.root)?;
    let stack = match a.after {
        None => Vec::from([a.root]),
        Some(id) => state::walk_after(host, a.root, id)?,
    };
    views(host, state::walk(host, stack, page_limit(a.limit))?)
}

/// Who sees an issuer's credit figures besides itself: those who lend on
/// them and those who set the limits.
const CREDIT_READERS: [Role; 2] = [Role::Bank, Role::Admin];

fn may_read_credit(host: &dyn Host, issuer: &str) -> Result<()> {
    let why = "credit figures are for the issuer, banks and admins";
    own_or_role(host, issuer, &CREDIT_READERS, why)
}

pub(crate) fn outstanding(host: &dyn Host, a: CreditRef) -> Result<u128> {
    may_read_credit(host, &a.issuer)?;
    Ok(state::outstanding(host, &a.issuer, &a.currency))
}

pub(crate) fn credit_limit(host: &dyn Host, a: CreditRef) -> Result<u128> {
    may_read_credit(host, &a.issuer)?;
    Ok(state::credit_limit(host, &a.issuer, &a.currency))
}

/// The root an invoice backs: a bank's check against double financing. A
/// core enterprise learns only of its own roots (`None` for another's, as
/// for an unused invoice).
pub(crate) fn by_invoice(host: &dyn Host, a: InvoiceRef) -> Result<Option<Root>> {
    let caller = host.caller();
    let lender = caller.has_role(Role::Bank) || is_regulator(&caller);
    if !lender && !caller.has_role(Role::CoreEnterprise) {
        return Err(Error::NotVisible(
            "invoice look-ups are for banks, regulators and issuers",
        ));
    }
    let Some(id) = state::invoice_root(host, &a.hash) else {
        return Ok(None);
    };
    let root = state::root(host, id)?;
    Ok((lender || root.issuer == caller.org).then_some(root))
}

/// Whether the caller may read `key` of the contract's state directly, with
/// its proof (`GET /v1/state`): a piece's or a root's record where it may
/// see the (root) piece, and the parameters; the rest (credit figures,
/// invoices, counters) only a regulator, the queries above serving others.
pub(crate) fn may_read(host: &dyn Host, key: &[u8]) -> bool {
    let sees_piece = |rest: &[u8]| {
        <[u8; 8]>::try_from(rest)
            .is_ok_and(|id| visible_piece(host, PieceId::from_be_bytes(id)).is_ok())
    };
    // A root's id is its root piece's.
    if let Some(rest) = key
        .strip_prefix(state::PIECE)
        .or(key.strip_prefix(state::ROOT))
    {
        return sees_piece(rest);
    }
    key == state::PARAMS || is_regulator(&host.caller())
}

pub(crate) fn params(host: &dyn Host) -> Result<Params> {
    Ok(state::params(host))
}
