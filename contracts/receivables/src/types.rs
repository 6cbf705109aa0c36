//! Records, arguments and results: the contract's wire API.
//!
//! Everything here crosses the host boundary in the canonical encoding, so a
//! field added, removed or reordered is a breaking change for the SDK.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Pieces are numbered from 1 by one counter shared by every root.
pub type PieceId = u64;
/// An organisation id, as in `Caller::org`.
pub type Org = String;

/// Most parts (children, counting the remainder) one split may create.
pub const MAX_PARTS: usize = 16;
/// Highest `max_depth` an admin may configure.
pub const MAX_DEPTH_CAP: u8 = 32;
/// Highest annual discount rate accepted in financing terms (100 %).
pub const MAX_RATE_BPS: u32 = 10_000;
pub const MS_PER_DAY: u64 = 86_400_000;
/// Longest acceptance window and grace period an admin may configure.
pub const MAX_WINDOW_MS: u64 = 366 * MS_PER_DAY;
pub const MAX_TERMS_LEN: usize = 1024;
pub const MAX_REF_LEN: usize = 128;
pub const MAX_REASON_LEN: usize = 256;
/// Most pieces one `pieces_by_holder` page returns.
pub const MAX_PAGE: u32 = 200;

/// Contract-wide settings, set by an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Smallest amount any piece (root, part or remainder) may have.
    pub min_piece_amount: u128,
    /// Deepest a piece may sit below its root (the root has depth 0).
    pub max_depth: u8,
    /// How long the first holder has to accept an issued root.
    pub acceptance_window_ms: u64,
    /// How long after maturity unsettled pieces become overdue.
    pub grace_period_ms: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            min_piece_amount: 10_000, // 100.00 in a two-decimal currency
            max_depth: 8,
            acceptance_window_ms: 7 * MS_PER_DAY,
            grace_period_ms: 3 * MS_PER_DAY,
        }
    }
}

/// Where a piece is in its life. Frozen and "financing offered" are not
/// statuses of their own: they overlay a status (`Piece::frozen`,
/// `Piece::offer`) so that lifting them restores exactly what was there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Issued root waiting for its first holder.
    PendingAcceptance,
    /// A claim on the issuer that its holder may move, split or finance.
    Active,
    /// Sold to a bank; held by a bank until settlement.
    Financed,
    /// Retired: replaced by its children.
    Split,
    /// Retired: paid by the issuer.
    Settled,
    /// Unpaid past maturity plus grace; the root's recourse flag is set.
    Overdue,
    /// Retired: rejected by, or not accepted in time by, its first holder.
    Returned,
}

impl Status {
    /// Live pieces are the issuer's current obligations: they count towards
    /// its outstanding amount and towards a root's conservation sum.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            Status::PendingAcceptance | Status::Active | Status::Financed | Status::Overdue
        )
    }
}

/// Financing terms: exactly one of a fixed price or an annual discount rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    pub price: Option<u128>,
    pub annual_rate_bps: Option<u32>,
    /// The offer can be accepted strictly before this time.
    pub expires_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Initiator {
    /// `request_financing`: the holder asks a named bank.
    Holder,
    /// `offer_financing`: a bank offers to the holder.
    Bank,
}

/// An open financing offer on a piece, bound to the holder it was made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub initiator: Initiator,
    pub holder: Org,
    pub bank: Org,
    pub terms: Terms,
    pub created_ms: u64,
}

/// How a piece was financed; kept for the rest of the piece's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Financing {
    pub bank: Org,
    /// The holder that sold the piece to the bank.
    pub seller: Org,
    /// What the bank pays the seller, in the piece's currency's minor units.
    pub price: u128,
    pub annual_rate_bps: Option<u32>,
    pub payment_ref: String,
    pub financed_ms: u64,
}

/// How a piece was paid at maturity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub payment_ref: String,
    pub paid_to: Org,
    pub amount: u128,
    pub settled_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    pub reason: String,
    pub by: Org,
    pub frozen_ms: u64,
}

/// One piece of a receivable tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub id: PieceId,
    pub root: PieceId,
    pub parent: Option<PieceId>,
    pub issuer: Org,
    pub holder: Org,
    pub amount: u128,
    pub currency: String,
    pub maturity_ms: u64,
    /// Maturity plus the grace period in force when the receivable was
    /// issued: from then an unpaid piece is overdue. Fixed at issue, so a
    /// later `set_params` never changes the terms of paper already out.
    pub overdue_from_ms: u64,
    pub invoice_hash: [u8; 32],
    /// Stored status; see [`PieceView::status`] for the status as of now.
    pub status: Status,
    pub depth: u8,
    pub created_ms: u64,
    pub offer: Option<Offer>,
    pub financing: Option<Financing>,
    pub settlement: Option<Settlement>,
    pub frozen: Option<Freeze>,
    /// The pieces a split made of this one, in the order `split` returned
    /// them; empty unless split. A root's pieces are found by walking these
    /// down from the root piece, so no index of them is kept.
    pub children: Vec<PieceId>,
}

/// What is recorded once per receivable (per root piece).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    pub id: PieceId,
    pub issuer: Org,
    /// Whom it was issued to (the root piece's holder changes on return).
    pub first_holder: Org,
    pub face_value: u128,
    pub currency: String,
    pub maturity_ms: u64,
    /// As [`Piece::overdue_from_ms`], the same for every piece of the root.
    pub overdue_from_ms: u64,
    pub invoice_hash: [u8; 32],
    pub terms: String,
    pub created_ms: u64,
    pub acceptance_deadline_ms: u64,
    pub accepted_ms: Option<u64>,
    pub returned_ms: Option<u64>,
    /// Sum of the amounts of its settled pieces.
    pub settled: u128,
    /// Set by `mark_overdue`: holders of unpaid pieces have recourse.
    pub recourse: bool,
}

/// A piece with its status as of the block being read: a pending root past
/// its acceptance deadline reads `Returned`, an unpaid live piece past its
/// `overdue_from_ms` reads `Overdue`, even before anyone records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceView {
    pub piece: Piece,
    pub status: Status,
}

/// A piece's ancestry: `path[0]` is the piece, the last entry its root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    pub issuer: Org,
    pub root: Root,
    pub path: Vec<PieceView>,
}

/// One payment owed by a settlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
    pub piece: PieceId,
    pub to: Org,
    pub amount: u128,
}

// ---- call arguments ----

/// A core enterprise's credit limit in one currency, in its minor units. Each
/// currency has its own limit (absent: 0): amounts in different currencies
/// are never added up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetCreditLimit {
    pub issuer: Org,
    pub currency: String,
    pub limit: u128,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    pub to: Org,
    pub amount: u128,
    pub currency: String,
    pub maturity_ms: u64,
    pub invoice_hash: [u8; 32],
    pub terms: String,
}

/// Arguments of `accept`, `reject`, `expire`, `cancel_financing`, `unfreeze`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceRef {
    pub piece: PieceId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub piece: PieceId,
    pub to: Org,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub piece: PieceId,
    pub parts: Vec<(Org, u128)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFinancing {
    pub piece: PieceId,
    pub bank: Org,
    pub terms: Terms,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferFinancing {
    pub piece: PieceId,
    pub terms: Terms,
}

/// `bank` and `terms` must equal the open offer's: the accepting party
/// confirms what it agrees to, and with whom, so an offer withdrawn and
/// remade in between, on worse terms or by another bank on the same ones,
/// cannot be accepted by mistake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptFinancing {
    pub piece: PieceId,
    pub bank: Org,
    pub terms: Terms,
    pub payment_ref: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settle {
    pub root: PieceId,
    pub payment_ref: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlePiece {
    pub piece: PieceId,
    pub payment_ref: String,
}

/// Arguments of `mark_overdue` and the `tree` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootRef {
    pub root: PieceId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreezePiece {
    pub piece: PieceId,
    pub reason: String,
}

// ---- query arguments ----

/// Arguments of the `piece`, `lineage` and `root` queries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRef {
    pub id: PieceId,
}

/// A page of the pieces an organisation holds, in id order after `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByHolder {
    pub org: Org,
    pub after: Option<PieceId>,
    /// At most [`MAX_PAGE`]; `None` means [`MAX_PAGE`].
    pub limit: Option<u32>,
}

/// A page of a root's pieces (retired ones included) in walk order (each
/// piece followed by its children's subtrees, in split order, starting at the
/// root piece), after piece `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreePage {
    pub root: PieceId,
    pub after: Option<PieceId>,
    /// At most [`MAX_PAGE`]; `None` means [`MAX_PAGE`].
    pub limit: Option<u32>,
}

/// Arguments of the `outstanding` and `credit_limit` queries: an issuer's
/// figure in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditRef {
    pub issuer: Org,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceRef {
    pub hash: [u8; 32],
}
