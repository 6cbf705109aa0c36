//! The state-changing methods.
//!
//! Every method checks everything first and writes only once it cannot fail,
//! so a refused call leaves storage and events untouched even on a host that
//! does not roll back (the node does too, as a second line). Each successful
//! change emits one event. Time is the block's `timestamp_ms`.

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use trellis_contract::{Caller, ContractEvent, Host, Role, store};

use crate::error::{Error, Result};
use crate::state;
use crate::types::*;

struct Ctx {
    caller: Caller,
    now: u64,
    params: Params,
}

fn ctx(host: &dyn Host) -> Ctx {
    Ctx {
        caller: host.caller(),
        now: host.block().timestamp_ms,
        params: state::params(host),
    }
}

fn emit(host: &mut dyn Host, kind: &str, attributes: &[(&str, String)]) {
    host.emit(ContractEvent {
        kind: kind.into(),
        attributes: attributes
            .iter()
            .map(|(k, v)| ((*k).into(), v.clone()))
            .collect(),
    });
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

// ---- checks shared by several methods ----

fn require_admin(cx: &Ctx) -> Result<()> {
    if cx.caller.has_role(Role::Admin) {
        Ok(())
    } else {
        Err(Error::NotAdmin)
    }
}

fn check_text(what: &str, s: &str, max: usize, allow_empty: bool) -> Result<()> {
    if (!allow_empty && s.is_empty()) || s.len() > max {
        return Err(Error::BadArgs(format!(
            "{what} must be {}at most {max} bytes",
            if allow_empty { "" } else { "1 to " }
        )));
    }
    Ok(())
}

fn check_org_id(org: &str) -> Result<()> {
    check_text("an organisation id", org, 128, false)
}

fn check_currency(c: &str) -> Result<()> {
    let ok = (3..=12).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::BadArgs(
            "currency must be 3 to 12 upper-case letters or digits".into(),
        ))
    }
}

/// Roles that may hold receivables; a regulator or a bare admin may not.
fn can_hold(roles: &[Role]) -> bool {
    roles
        .iter()
        .any(|r| matches!(r, Role::Supplier | Role::Bank | Role::CoreEnterprise))
}

/// The roles of `org`, which must be a member.
fn member(host: &dyn Host, org: &str) -> Result<Vec<Role>> {
    check_org_id(org)?;
    host.member_roles(org)
        .ok_or_else(|| Error::NotMember(org.into()))
}

fn require_holder_capable(host: &dyn Host, org: &str) -> Result<Vec<Role>> {
    let roles = member(host, org)?;
    if !can_hold(&roles) {
        return Err(Error::WrongRole(
            "the recipient must be a supplier, bank or core enterprise",
        ));
    }
    Ok(roles)
}

fn require_holder(cx: &Ctx, p: &Piece) -> Result<()> {
    if cx.caller.org == p.holder {
        Ok(())
    } else {
        Err(Error::NotHolder)
    }
}

fn not_active(status: Status) -> Error {
    Error::NotActive(match status {
        Status::PendingAcceptance => "the piece has not been accepted",
        Status::Active => "the piece is active",
        Status::Financed => "the piece is financed",
        Status::Split => "the piece was split; its children replace it",
        Status::Settled => "the piece is settled",
        Status::Overdue => "the piece is overdue: it can only be settled",
        Status::Returned => "the piece was returned to its issuer",
    })
}

/// An offer counts as open until its expiry; an expired one is dead weight
/// that any state change of the piece clears.
fn open_offer(p: &Piece, now: u64) -> Option<&Offer> {
    p.offer.as_ref().filter(|o| now < o.terms.expires_ms)
}

/// An open offer the holder asked for (`request_financing`) holds the piece
/// still until it is accepted, withdrawn or expires: the bank may accept at any
/// moment. A bank's unsolicited offer does not: it lapses when the holder
/// moves or splits the piece or asks for financing (see [`lapse_offer`]), so
/// a bank re-offering each time the holder declines cannot pin a piece until
/// maturity.
fn require_no_request_open(cx: &Ctx, p: &Piece) -> Result<()> {
    match open_offer(p, cx.now) {
        Some(o) if o.initiator == Initiator::Holder => Err(Error::OfferOpen),
        _ => Ok(()),
    }
}

/// What an unfinanced active piece needs before it is split or financed.
fn require_active_unfinanced(cx: &Ctx, p: &Piece) -> Result<()> {
    if p.frozen.is_some() {
        return Err(Error::Frozen);
    }
    match p.status {
        Status::Active => {}
        Status::Financed => return Err(Error::AlreadyFinanced),
        s => return Err(not_active(s)),
    }
    if cx.now >= p.maturity_ms {
        return Err(Error::Matured);
    }
    Ok(())
}

/// Clears a piece's offer as `by` acts on the piece (its holder moving it, or
/// its issuer settling it, anyone marking it overdue); an open one is reported
/// cancelled by `by`, so the bank's systems see it go.
fn lapse_offer(host: &mut dyn Host, now: u64, p: &mut Piece, by: &str) {
    let Some(offer) = p.offer.take() else {
        return;
    };
    if now < offer.terms.expires_ms {
        emit(
            host,
            "financing_cancelled",
            &[
                ("piece", p.id.to_string()),
                ("issuer", p.issuer.clone()),
                ("holder", offer.holder),
                ("by", by.into()),
                ("bank", offer.bank),
            ],
        );
    }
}

/// The price of a piece discounted at `rate_bps` a year from `now_ms` to
/// maturity, on an actual/365 basis with whole days rounded up:
/// `amount - floor(amount * rate_bps * days / 3_650_000)`. The discount is
/// rounded down, so rounding never costs the seller more than it owes
/// (at most one minor unit in the seller's favour). `None` when the discount
/// would swallow the whole amount.
pub fn discounted_price(
    amount: u128,
    rate_bps: u32,
    maturity_ms: u64,
    now_ms: u64,
) -> Option<u128> {
    const D: u128 = 365 * 10_000;
    let days = u128::from(maturity_ms.saturating_sub(now_ms).div_ceil(MS_PER_DAY));
    let rd = u128::from(rate_bps) * days;
    // amount = q*D + r, so floor(amount*rd/D) = q*rd + floor(r*rd/D) exactly,
    // without the overflow of amount*rd.
    let discount = (amount / D)
        .checked_mul(rd)?
        .checked_add((amount % D) * rd / D)?;
    amount.checked_sub(discount).filter(|&price| price > 0)
}

fn price_of(terms: &Terms, p: &Piece, now: u64) -> Result<u128> {
    match (terms.price, terms.annual_rate_bps) {
        (Some(price), None) => Ok(price),
        (None, Some(rate)) => discounted_price(p.amount, rate, p.maturity_ms, now)
            .ok_or(Error::BadTerms("the discount would take the whole amount")),
        _ => Err(Error::BadTerms(
            "give exactly one of a price or an annual rate",
        )),
    }
}

fn check_terms(cx: &Ctx, terms: &Terms, p: &Piece) -> Result<()> {
    if let Some(rate) = terms.annual_rate_bps
        && rate > MAX_RATE_BPS
    {
        return Err(Error::BadTerms("the annual rate may be at most 10000 bps"));
    }
    let price = price_of(terms, p, cx.now)?;
    if price == 0 || price > p.amount {
        return Err(Error::BadTerms(
            "the price must be more than zero and at most the piece's amount",
        ));
    }
    if terms.expires_ms <= cx.now || terms.expires_ms >= p.maturity_ms {
        return Err(Error::BadTerms(
            "the offer must expire in the future and before maturity",
        ));
    }
    Ok(())
}

// ---- administration ----

fn check_params(p: &Params) -> Result<()> {
    if p.min_piece_amount == 0 {
        return Err(Error::BadArgs("min_piece_amount must be at least 1".into()));
    }
    if p.max_depth == 0 || p.max_depth > MAX_DEPTH_CAP {
        return Err(Error::BadArgs(format!(
            "max_depth must be 1 to {MAX_DEPTH_CAP}"
        )));
    }
    if p.acceptance_window_ms == 0 || p.acceptance_window_ms > MAX_WINDOW_MS {
        return Err(Error::BadArgs(
            "acceptance_window_ms must be 1 ms to 366 days".into(),
        ));
    }
    // At least 1 ms: with none, a receivable could be marked overdue in the
    // very block in which its issuer may first pay it.
    if p.grace_period_ms == 0 || p.grace_period_ms > MAX_WINDOW_MS {
        return Err(Error::BadArgs(
            "grace_period_ms must be 1 ms to 366 days".into(),
        ));
    }
    Ok(())
}

fn write_params(host: &mut dyn Host, kind: &str, p: &Params) {
    store::set(host, state::PARAMS, p);
    emit(
        host,
        kind,
        &[
            ("min_piece_amount", p.min_piece_amount.to_string()),
            ("max_depth", p.max_depth.to_string()),
            ("acceptance_window_ms", p.acceptance_window_ms.to_string()),
            ("grace_period_ms", p.grace_period_ms.to_string()),
        ],
    );
}

pub(crate) fn init(host: &mut dyn Host, p: Params) -> Result<()> {
    let cx = ctx(host);
    require_admin(&cx)?;
    if state::params_set(host) {
        return Err(Error::AlreadyInitialized);
    }
    check_params(&p)?;
    write_params(host, "initialized", &p);
    Ok(())
}

pub(crate) fn set_params(host: &mut dyn Host, p: Params) -> Result<()> {
    let cx = ctx(host);
    require_admin(&cx)?;
    check_params(&p)?;
    write_params(host, "params_set", &p);
    Ok(())
}

pub(crate) fn set_credit_limit(host: &mut dyn Host, a: SetCreditLimit) -> Result<()> {
    let cx = ctx(host);
    require_admin(&cx)?;
    member(host, &a.issuer)?;
    check_currency(&a.currency)?;
    // I6 holds at every moment, so a limit cannot be cut below what is already
    // out; cutting it to the outstanding amount stops new issuance at once.
    let outstanding = state::outstanding(host, &a.issuer, &a.currency);
    if a.limit < outstanding {
        return Err(Error::LimitBelowOutstanding { outstanding });
    }
    store::set(host, &state::limit_key(&a.issuer, &a.currency), &a.limit);
    emit(
        host,
        "credit_limit_set",
        &[
            ("issuer", a.issuer),
            ("currency", a.currency),
            ("limit", a.limit.to_string()),
        ],
    );
    Ok(())
}

// ---- issuance and acceptance ----

pub(crate) fn issue(host: &mut dyn Host, a: Issue) -> Result<PieceId> {
    let cx = ctx(host);
    if !cx.caller.has_role(Role::CoreEnterprise) {
        return Err(Error::WrongRole(
            "only a core enterprise may issue receivables",
        ));
    }
    check_currency(&a.currency)?;
    check_text("terms", &a.terms, MAX_TERMS_LEN, true)?;
    if a.invoice_hash == [0; 32] {
        return Err(Error::BadArgs("the invoice hash is all zeroes".into()));
    }
    if a.to == cx.caller.org {
        return Err(Error::SameParty);
    }
    require_holder_capable(host, &a.to)?;
    if a.amount == 0 {
        return Err(Error::ZeroAmount);
    }
    if a.amount < cx.params.min_piece_amount {
        return Err(Error::BelowMinimum {
            amount: a.amount,
            min: cx.params.min_piece_amount,
        });
    }
    if a.maturity_ms <= cx.now {
        return Err(Error::MaturityInPast);
    }
    let acceptance_deadline_ms = cx.now.saturating_add(cx.params.acceptance_window_ms);
    if a.maturity_ms <= acceptance_deadline_ms {
        return Err(Error::MaturityTooSoon {
            acceptance_deadline_ms,
        });
    }
    if let Some(root) = state::invoice_root(host, &a.invoice_hash) {
        return Err(Error::InvoiceUsed(root));
    }
    let issuer = cx.caller.org.clone();
    // Per currency: amounts in different currencies are never added up.
    let outstanding = state::outstanding(host, &issuer, &a.currency);
    let limit = state::credit_limit(host, &issuer, &a.currency);
    let after = outstanding
        .checked_add(a.amount)
        .filter(|&after| after <= limit);
    let Some(after) = after else {
        return Err(Error::CreditLimitExceeded {
            outstanding,
            amount: a.amount,
            limit,
        });
    };

    // The grace period in force now is part of this paper's terms.
    let overdue_from_ms = a.maturity_ms.saturating_add(cx.params.grace_period_ms);
    let id = state::next_id(host);
    let piece = Piece {
        id,
        root: id,
        parent: None,
        issuer: issuer.clone(),
        holder: a.to.clone(),
        amount: a.amount,
        currency: a.currency.clone(),
        maturity_ms: a.maturity_ms,
        overdue_from_ms,
        invoice_hash: a.invoice_hash,
        status: Status::PendingAcceptance,
        depth: 0,
        created_ms: cx.now,
        offer: None,
        financing: None,
        settlement: None,
        frozen: None,
        children: Vec::new(),
    };
    let root = Root {
        id,
        issuer: issuer.clone(),
        first_holder: a.to.clone(),
        face_value: a.amount,
        currency: a.currency.clone(),
        maturity_ms: a.maturity_ms,
        overdue_from_ms,
        invoice_hash: a.invoice_hash,
        terms: a.terms,
        created_ms: cx.now,
        acceptance_deadline_ms,
        accepted_ms: None,
        returned_ms: None,
        settled: 0,
        recourse: false,
    };
    state::insert_piece(host, &piece);
    state::put_root(host, &root);
    store::set(host, &state::invoice_key(&a.invoice_hash), &id);
    state::set_outstanding(host, &issuer, &a.currency, after);
    emit(
        host,
        "issued",
        &[
            ("piece", id.to_string()),
            ("issuer", issuer),
            ("to", a.to),
            ("amount", a.amount.to_string()),
            ("currency", a.currency),
            ("maturity_ms", a.maturity_ms.to_string()),
            ("invoice_hash", hex(&a.invoice_hash)),
            ("acceptance_deadline_ms", acceptance_deadline_ms.to_string()),
        ],
    );
    Ok(id)
}

fn pending_root(host: &dyn Host, id: PieceId) -> Result<(Piece, Root)> {
    let p = state::piece(host, id)?;
    if p.status != Status::PendingAcceptance {
        return Err(Error::NotPending);
    }
    let r = state::root(host, p.root)?;
    Ok((p, r))
}

pub(crate) fn accept(host: &mut dyn Host, a: PieceRef) -> Result<()> {
    let cx = ctx(host);
    let (mut p, mut r) = pending_root(host, a.piece)?;
    require_holder(&cx, &p)?;
    if p.frozen.is_some() {
        return Err(Error::Frozen);
    }
    if cx.now >= r.acceptance_deadline_ms {
        return Err(Error::AcceptanceExpired);
    }
    p.status = Status::Active;
    r.accepted_ms = Some(cx.now);
    state::put_piece(host, &p);
    state::put_root(host, &r);
    emit(
        host,
        "accepted",
        &[
            ("piece", p.id.to_string()),
            ("issuer", p.issuer),
            ("holder", p.holder),
        ],
    );
    Ok(())
}

/// Hands a pending root back to its issuer and releases its credit. The
/// invoice hash stays recorded as used: the same invoice cannot be issued
/// again, so a rejected receivable cannot come back as a second one.
fn return_root(host: &mut dyn Host, now: u64, mut p: Piece, mut r: Root, reason: &str) {
    let issuer = p.issuer.clone();
    let from = p.holder.clone();
    p.status = Status::Returned;
    state::set_holder(host, &mut p, &issuer);
    r.returned_ms = Some(now);
    state::release(host, &issuer, &p.currency, p.amount);
    state::put_piece(host, &p);
    state::put_root(host, &r);
    emit(
        host,
        "returned",
        &[
            ("piece", p.id.to_string()),
            ("issuer", issuer),
            ("from", from),
            ("reason", reason.into()),
        ],
    );
}

pub(crate) fn reject(host: &mut dyn Host, a: PieceRef) -> Result<()> {
    let cx = ctx(host);
    let (p, r) = pending_root(host, a.piece)?;
    require_holder(&cx, &p)?;
    if p.frozen.is_some() {
        return Err(Error::Frozen);
    }
    let reason = if cx.now >= r.acceptance_deadline_ms {
        "expired"
    } else {
        "rejected"
    };
    return_root(host, cx.now, p, r, reason);
    Ok(())
}

pub(crate) fn expire(host: &mut dyn Host, a: PieceRef) -> Result<()> {
    let cx = ctx(host);
    let (p, r) = pending_root(host, a.piece)?;
    if cx.now < r.acceptance_deadline_ms {
        return Err(Error::NotExpired {
            acceptance_deadline_ms: r.acceptance_deadline_ms,
        });
    }
    if p.frozen.is_some() {
        return Err(Error::Frozen);
    }
    return_root(host, cx.now, p, r, "expired");
    Ok(())
}

// ---- moving pieces ----

pub(crate) fn transfer(host: &mut dyn Host, a: Transfer) -> Result<()> {
    let cx = ctx(host);
    let mut p = state::piece(host, a.piece)?;
    require_holder(&cx, &p)?;
    if p.frozen.is_some() {
        return Err(Error::Frozen);
    }
    if !matches!(p.status, Status::Active | Status::Financed) {
        return Err(not_active(p.status));
    }
    if cx.now >= p.maturity_ms {
        return Err(Error::Matured);
    }
    require_no_request_open(&cx, &p)?;
    if a.to == p.holder {
        return Err(Error::SameParty);
    }
    let roles = require_holder_capable(host, &a.to)?;
    // A financed piece is a bank's asset: it may be sold on to another bank
    // (refinancing, securitisation) but never back into the supply chain,
    // where it could be financed a second time.
    if p.status == Status::Financed && !roles.contains(&Role::Bank) {
        return Err(Error::WrongRole(
            "a financed piece may only be transferred to a bank",
        ));
    }
    let from = p.holder.clone();
    lapse_offer(host, cx.now, &mut p, &cx.caller.org);
    state::set_holder(host, &mut p, &a.to);
    state::put_piece(host, &p);
    emit(
        host,
        "transferred",
        &[
            ("piece", p.id.to_string()),
            ("issuer", p.issuer.clone()),
            ("from", from),
            ("to", a.to),
        ],
    );
    Ok(())
}

pub(crate) fn split(host: &mut dyn Host, a: Split) -> Result<Vec<PieceId>> {
    let cx = ctx(host);
    // Bound the work before looking at the parts.
    if a.parts.len() > MAX_PARTS {
        return Err(Error::TooManyParts { max: MAX_PARTS });
    }
    let mut p = state::piece(host, a.piece)?;
    require_holder(&cx, &p)?;
    require_active_unfinanced(&cx, &p)?;
    require_no_request_open(&cx, &p)?;
    if a.parts.is_empty() {
        return Err(Error::BadArgs("a split needs at least one part".into()));
    }
    let depth = p.depth + 1;
    if depth > cx.params.max_depth {
        return Err(Error::TooDeep {
            max_depth: cx.params.max_depth,
        });
    }
    let min = cx.params.min_piece_amount;
    let mut sum: u128 = 0;
    for (org, amount) in &a.parts {
        if *amount == 0 {
            return Err(Error::ZeroAmount);
        }
        if *amount < min {
            return Err(Error::BelowMinimum {
                amount: *amount,
                min,
            });
        }
        require_holder_capable(host, org)?;
        sum = sum.checked_add(*amount).ok_or(Error::AmountsExceedPiece {
            sum: u128::MAX,
            amount: p.amount,
        })?;
    }
    if sum > p.amount {
        return Err(Error::AmountsExceedPiece {
            sum,
            amount: p.amount,
        });
    }
    let remainder = p.amount - sum;
    if remainder > 0 && remainder < min {
        return Err(Error::BelowMinimum {
            amount: remainder,
            min,
        });
    }
    let children = a.parts.len() + usize::from(remainder > 0);
    if children > MAX_PARTS {
        return Err(Error::TooManyParts { max: MAX_PARTS });
    }
    if children < 2 {
        return Err(Error::BadArgs(
            "a split must create at least two pieces; use transfer to move a whole piece".into(),
        ));
    }

    let mut outs: Vec<(Org, u128)> = a.parts;
    if remainder > 0 {
        outs.push((p.holder.clone(), remainder));
    }
    lapse_offer(host, cx.now, &mut p, &cx.caller.org);
    let mut ids = Vec::with_capacity(outs.len());
    let mut attributes = alloc::vec![
        ("piece", p.id.to_string()),
        ("issuer", p.issuer.clone()),
        ("holder", p.holder.clone()),
    ];
    for (org, amount) in outs {
        let id = state::next_id(host);
        let child = Piece {
            id,
            root: p.root,
            parent: Some(p.id),
            issuer: p.issuer.clone(),
            holder: org.clone(),
            amount,
            currency: p.currency.clone(),
            maturity_ms: p.maturity_ms,
            overdue_from_ms: p.overdue_from_ms,
            invoice_hash: p.invoice_hash,
            status: Status::Active,
            depth,
            created_ms: cx.now,
            offer: None,
            financing: None,
            settlement: None,
            frozen: None,
            children: Vec::new(),
        };
        state::insert_piece(host, &child);
        attributes.push(("child", format!("{id}:{org}:{amount}")));
        ids.push(id);
    }
    state::unindex_holder(host, &p);
    p.status = Status::Split;
    p.children = ids.clone();
    state::put_piece(host, &p);
    emit(host, "split", &attributes);
    Ok(ids)
}

// ---- financing ----

pub(crate) fn request_financing(host: &mut dyn Host, a: RequestFinancing) -> Result<()> {
    let cx = ctx(host);
    let mut p = state::piece(host, a.piece)?;
    require_holder(&cx, &p)?;
    require_active_unfinanced(&cx, &p)?;
    require_no_request_open(&cx, &p)?;
    if a.bank == p.holder {
        return Err(Error::SameParty);
    }
    if !member(host, &a.bank)?.contains(&Role::Bank) {
        return Err(Error::NotBank(a.bank));
    }
    check_terms(&cx, &a.terms, &p)?;
    lapse_offer(host, cx.now, &mut p, &cx.caller.org);
    p.offer = Some(Offer {
        initiator: Initiator::Holder,
        holder: p.holder.clone(),
        bank: a.bank.clone(),
        terms: a.terms,
        created_ms: cx.now,
    });
    state::put_piece(host, &p);
    emit(host, "financing_requested", &offer_attributes(&p));
    Ok(())
}

pub(crate) fn offer_financing(host: &mut dyn Host, a: OfferFinancing) -> Result<()> {
    let cx = ctx(host);
    if !cx.caller.has_role(Role::Bank) {
        return Err(Error::NotBank(cx.caller.org));
    }
    let mut p = state::piece(host, a.piece)?;
    if cx.caller.org == p.holder {
        return Err(Error::SameParty);
    }
    require_active_unfinanced(&cx, &p)?;
    // First come: a bank does not replace another's offer, nor one the holder asked for.
    if open_offer(&p, cx.now).is_some() {
        return Err(Error::OfferOpen);
    }
    check_terms(&cx, &a.terms, &p)?;
    p.offer = Some(Offer {
        initiator: Initiator::Bank,
        holder: p.holder.clone(),
        bank: cx.caller.org.clone(),
        terms: a.terms,
        created_ms: cx.now,
    });
    state::put_piece(host, &p);
    emit(host, "financing_offered", &offer_attributes(&p));
    Ok(())
}

fn offer_attributes(p: &Piece) -> Vec<(&'static str, String)> {
    let o = p
        .offer
        .as_ref()
        .expect("called right after an offer is recorded");
    let mut attrs = alloc::vec![
        ("piece", p.id.to_string()),
        ("issuer", p.issuer.clone()),
        ("holder", o.holder.clone()),
        ("bank", o.bank.clone()),
        ("expires_ms", o.terms.expires_ms.to_string()),
    ];
    if let Some(price) = o.terms.price {
        attrs.push(("price", price.to_string()));
    }
    if let Some(rate) = o.terms.annual_rate_bps {
        attrs.push(("annual_rate_bps", rate.to_string()));
    }
    attrs
}

pub(crate) fn accept_financing(host: &mut dyn Host, a: AcceptFinancing) -> Result<Financing> {
    let cx = ctx(host);
    let mut p = state::piece(host, a.piece)?;
    let offer = p.offer.clone().ok_or(Error::NoOffer)?;
    // Only the side that did not make the offer accepts it; only a bank funds.
    match offer.initiator {
        Initiator::Holder => {
            if cx.caller.org != offer.bank {
                return Err(Error::NotParty);
            }
            if !cx.caller.has_role(Role::Bank) {
                return Err(Error::NotBank(cx.caller.org));
            }
        }
        Initiator::Bank => {
            if cx.caller.org != p.holder {
                return Err(Error::NotParty);
            }
        }
    }
    // Offers are cleared whenever the holder changes, so a mismatch means a
    // stale offer: refuse it rather than sell someone else's piece.
    if offer.holder != p.holder {
        return Err(Error::NoOffer);
    }
    if cx.now >= offer.terms.expires_ms {
        return Err(Error::OfferExpired);
    }
    if a.bank != offer.bank {
        return Err(Error::BankMismatch(offer.bank));
    }
    if a.terms != offer.terms {
        return Err(Error::TermsMismatch);
    }
    check_text("payment_ref", &a.payment_ref, MAX_REF_LEN, false)?;
    if p.frozen.is_some() {
        return Err(Error::Frozen);
    }
    match p.status {
        Status::Active => {}
        Status::Financed => return Err(Error::AlreadyFinanced),
        s => return Err(not_active(s)),
    }
    if cx.now >= p.maturity_ms {
        return Err(Error::Matured);
    }
    if !member(host, &offer.bank)?.contains(&Role::Bank) {
        return Err(Error::NotBank(offer.bank));
    }
    let price = price_of(&offer.terms, &p, cx.now)?;
    debug_assert!(
        price > 0 && price <= p.amount,
        "a financing price is within (0, amount]"
    );

    let seller = p.holder.clone();
    let financing = Financing {
        bank: offer.bank.clone(),
        seller: seller.clone(),
        price,
        annual_rate_bps: offer.terms.annual_rate_bps,
        payment_ref: a.payment_ref.clone(),
        financed_ms: cx.now,
    };
    p.offer = None;
    p.status = Status::Financed;
    p.financing = Some(financing.clone());
    state::set_holder(host, &mut p, &offer.bank);
    state::put_piece(host, &p);
    let mut attrs = alloc::vec![
        ("piece", p.id.to_string()),
        ("issuer", p.issuer.clone()),
        ("seller", seller),
        ("bank", offer.bank),
        ("amount", p.amount.to_string()),
        ("price", price.to_string()),
        ("payment_ref", a.payment_ref),
    ];
    if let Some(rate) = offer.terms.annual_rate_bps {
        attrs.push(("annual_rate_bps", rate.to_string()));
    }
    emit(host, "financed", &attrs);
    Ok(financing)
}

/// Withdraws (by its initiator) or declines (by its counterparty) a financing
/// offer. Letting the holder decline matters: an open offer blocks moves, so
/// a bank's unsolicited offer must not be able to pin a piece in place.
pub(crate) fn cancel_financing(host: &mut dyn Host, a: PieceRef) -> Result<()> {
    let cx = ctx(host);
    let mut p = state::piece(host, a.piece)?;
    let offer = p.offer.take().ok_or(Error::NoOffer)?;
    if cx.caller.org != offer.holder && cx.caller.org != offer.bank {
        return Err(Error::NotParty);
    }
    state::put_piece(host, &p);
    emit(
        host,
        "financing_cancelled",
        &[
            ("piece", p.id.to_string()),
            ("issuer", p.issuer),
            ("holder", offer.holder),
            ("by", cx.caller.org),
            ("bank", offer.bank),
        ],
    );
    Ok(())
}

// ---- settlement and default ----

fn settle_one(
    host: &mut dyn Host,
    now: u64,
    p: &mut Piece,
    r: &mut Root,
    payment_ref: &str,
) -> Payout {
    debug_assert!(matches!(
        p.status,
        Status::Active | Status::Financed | Status::Overdue
    ));
    let payout = Payout {
        piece: p.id,
        to: p.holder.clone(),
        amount: p.amount,
    };
    p.status = Status::Settled;
    p.offer = None;
    p.settlement = Some(Settlement {
        payment_ref: payment_ref.into(),
        paid_to: p.holder.clone(),
        amount: p.amount,
        settled_ms: now,
    });
    r.settled = r
        .settled
        .checked_add(p.amount)
        .expect("settled never exceeds the face value");
    debug_assert!(
        r.settled <= r.face_value,
        "settled {} exceeds face value {}",
        r.settled,
        r.face_value
    );
    state::release(host, &p.issuer, &p.currency, p.amount);
    state::put_piece(host, p);
    payout
}

fn emit_settled(host: &mut dyn Host, root: &Root, payment_ref: &str, payouts: &[Payout]) {
    let mut attrs = alloc::vec![
        ("root", root.id.to_string()),
        ("issuer", root.issuer.clone()),
        ("payment_ref", payment_ref.into())
    ];
    for pay in payouts {
        attrs.push(("payout", format!("{}:{}:{}", pay.piece, pay.to, pay.amount)));
    }
    emit(host, "settled", &attrs);
}

fn require_settleable(cx: &Ctx, r: &Root) -> Result<()> {
    if cx.caller.org != r.issuer {
        return Err(Error::NotIssuer);
    }
    if cx.now < r.maturity_ms {
        return Err(Error::NotMatured {
            maturity_ms: r.maturity_ms,
        });
    }
    Ok(())
}

/// Pays every live piece of a root to its holder. All or nothing: if any live
/// piece is frozen the whole settlement is refused (settle the others with
/// `settle_piece`), so a hold is never silently stepped around.
pub(crate) fn settle(host: &mut dyn Host, a: Settle) -> Result<Vec<Payout>> {
    let cx = ctx(host);
    let mut r = state::root(host, a.root)?;
    require_settleable(&cx, &r)?;
    check_text("payment_ref", &a.payment_ref, MAX_REF_LEN, false)?;
    let mut due = Vec::new();
    for p in state::tree(host, r.id)? {
        match p.status {
            Status::PendingAcceptance => return Err(not_active(p.status)),
            Status::Active | Status::Financed | Status::Overdue => {
                if p.frozen.is_some() {
                    return Err(Error::Frozen);
                }
                due.push(p);
            }
            Status::Split | Status::Settled | Status::Returned => {}
        }
    }
    if due.is_empty() {
        return Err(Error::NothingToDo);
    }
    let payouts: Vec<Payout> = due
        .iter_mut()
        .map(|p| settle_one(host, cx.now, p, &mut r, &a.payment_ref))
        .collect();
    state::put_root(host, &r);
    emit_settled(host, &r, &a.payment_ref, &payouts);
    Ok(payouts)
}

pub(crate) fn settle_piece(host: &mut dyn Host, a: SettlePiece) -> Result<Payout> {
    let cx = ctx(host);
    let mut p = state::piece(host, a.piece)?;
    let mut r = state::root(host, p.root)?;
    require_settleable(&cx, &r)?;
    check_text("payment_ref", &a.payment_ref, MAX_REF_LEN, false)?;
    if p.frozen.is_some() {
        return Err(Error::Frozen);
    }
    if !matches!(
        p.status,
        Status::Active | Status::Financed | Status::Overdue
    ) {
        return Err(not_active(p.status));
    }
    let payout = settle_one(host, cx.now, &mut p, &mut r, &a.payment_ref);
    state::put_root(host, &r);
    emit_settled(host, &r, &a.payment_ref, core::slice::from_ref(&payout));
    Ok(payout)
}

/// Records default: from maturity plus grace, anyone may mark the unpaid
/// pieces of a root overdue, which also gives their holders recourse.
/// Frozen pieces are marked too: a hold stops movement, not the calendar.
pub(crate) fn mark_overdue(host: &mut dyn Host, a: RootRef) -> Result<Vec<PieceId>> {
    let cx = ctx(host);
    let mut r = state::root(host, a.root)?;
    let overdue_from_ms = r.overdue_from_ms;
    if cx.now < overdue_from_ms {
        return Err(Error::NotOverdue { overdue_from_ms });
    }
    let mut due = Vec::new();
    for p in state::tree(host, r.id)? {
        if matches!(p.status, Status::Active | Status::Financed) {
            due.push(p);
        }
    }
    if due.is_empty() {
        return Err(Error::NothingToDo);
    }
    let mut marked = Vec::with_capacity(due.len());
    let mut holders = BTreeSet::new();
    for mut p in due {
        p.status = Status::Overdue;
        p.offer = None;
        state::put_piece(host, &p);
        marked.push(p.id);
        holders.insert(p.holder);
    }
    r.recourse = true;
    state::put_root(host, &r);
    emit_overdue(host, &r, &marked, holders);
    Ok(marked)
}

/// [`mark_overdue`] for one piece, for trees too large to mark in one call.
pub(crate) fn mark_overdue_piece(host: &mut dyn Host, a: PieceRef) -> Result<()> {
    let cx = ctx(host);
    let mut p = state::piece(host, a.piece)?;
    let mut r = state::root(host, p.root)?;
    let overdue_from_ms = p.overdue_from_ms;
    if cx.now < overdue_from_ms {
        return Err(Error::NotOverdue { overdue_from_ms });
    }
    if !matches!(p.status, Status::Active | Status::Financed) {
        return Err(not_active(p.status));
    }
    p.status = Status::Overdue;
    p.offer = None;
    state::put_piece(host, &p);
    r.recourse = true;
    state::put_root(host, &r);
    emit_overdue(host, &r, &[p.id], BTreeSet::from([p.holder]));
    Ok(())
}

/// Names the root's issuer and each holder once (in order, as every node
/// must emit the same bytes), so each sees the default on its stream.
fn emit_overdue(host: &mut dyn Host, r: &Root, pieces: &[PieceId], holders: BTreeSet<Org>) {
    let mut attrs = alloc::vec![("root", r.id.to_string()), ("issuer", r.issuer.clone())];
    attrs.extend(pieces.iter().map(|id| ("piece", id.to_string())));
    attrs.extend(holders.into_iter().map(|org| ("holder", org)));
    emit(host, "overdue", &attrs);
}

// ---- holds ----

pub(crate) fn freeze(host: &mut dyn Host, a: FreezePiece) -> Result<()> {
    let cx = ctx(host);
    require_admin(&cx)?;
    check_text("reason", &a.reason, MAX_REASON_LEN, false)?;
    let mut p = state::piece(host, a.piece)?;
    if p.frozen.is_some() {
        return Err(Error::Frozen);
    }
    if !p.status.is_live() {
        return Err(not_active(p.status));
    }
    p.frozen = Some(Freeze {
        reason: a.reason.clone(),
        by: cx.caller.org.clone(),
        frozen_ms: cx.now,
    });
    state::put_piece(host, &p);
    emit(
        host,
        "frozen",
        &[
            ("piece", p.id.to_string()),
            ("issuer", p.issuer),
            ("holder", p.holder),
            ("by", cx.caller.org),
            ("reason", a.reason),
        ],
    );
    Ok(())
}

pub(crate) fn unfreeze(host: &mut dyn Host, a: PieceRef) -> Result<()> {
    let cx = ctx(host);
    require_admin(&cx)?;
    let mut p = state::piece(host, a.piece)?;
    if p.frozen.take().is_none() {
        return Err(Error::NotFrozen);
    }
    state::put_piece(host, &p);
    emit(
        host,
        "unfrozen",
        &[
            ("piece", p.id.to_string()),
            ("issuer", p.issuer),
            ("holder", p.holder),
            ("by", cx.caller.org),
        ],
    );
    Ok(())
}
