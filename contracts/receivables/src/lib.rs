//! The receivables contract: supply-chain receivables as trees of pieces.
//!
//! A core enterprise issues a receivable (the root piece) to a supplier
//! against an invoice hash and within its credit limit; the supplier accepts
//! it, then holders transfer, split and finance pieces until the issuer
//! settles every live piece at maturity. The logic sees the chain only through
//! [`trellis_contract::Host`], so it runs unchanged in wasmtime and in native
//! tests. [`invariants::check_invariants`] states DESIGN.md's I1–I6 as code.
//!
//! Methods, arguments and results: see [`Receivables`]. Storage layout: see
//! the `state` module. Error codes: [`Error::code`].

#![no_std]

extern crate alloc;
// Natively (tests, tools) the cdylib needs std's allocator and panic handler;
// in wasm the kit provides both. The code itself uses only `core` and `alloc`.
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

mod error;
pub mod invariants;
mod ops;
mod queries;
mod state;
pub mod types;

use alloc::vec::Vec;
use trellis_contract::{Contract, ContractResult, Host, args, ret};

pub use error::Error;
pub use invariants::check_invariants;
pub use ops::discounted_price;
pub use queries::effective_status;
pub use types::*;

/// The key of piece `id`'s record among the contract's own keys, for
/// clients that read it with a proof. Native builds only: the contract's
/// committed code stays as it was built.
#[cfg(not(target_arch = "wasm32"))]
pub fn piece_key(id: PieceId) -> Vec<u8> {
    state::piece_key(id)
}

/// The contract. Calls (`method`: argument type → result type):
///
/// | method | args | returns |
/// | --- | --- | --- |
/// | `init` | [`Params`] | `()` |
/// | `set_params` | [`Params`] | `()` |
/// | `set_credit_limit` | [`SetCreditLimit`] | `()` |
/// | `issue` | [`Issue`] | [`PieceId`] |
/// | `accept`, `reject`, `expire` | [`PieceRef`] | `()` |
/// | `transfer` | [`Transfer`] | `()` |
/// | `split` | [`Split`] | `Vec<PieceId>` (parts in order, then the remainder) |
/// | `request_financing` | [`RequestFinancing`] | `()` |
/// | `offer_financing` | [`OfferFinancing`] | `()` |
/// | `accept_financing` | [`AcceptFinancing`] | [`Financing`] |
/// | `cancel_financing` | [`PieceRef`] | `()` |
/// | `settle` | [`Settle`] | `Vec<Payout>` |
/// | `settle_piece` | [`SettlePiece`] | [`Payout`] |
/// | `mark_overdue` | [`RootRef`] | `Vec<PieceId>` (pieces marked) |
/// | `mark_overdue_piece` | [`PieceRef`] | `()` |
/// | `freeze` | [`FreezePiece`] | `()` |
/// | `unfreeze` | [`PieceRef`] | `()` |
///
/// Queries:
///
/// | method | args | returns |
/// | --- | --- | --- |
/// | `piece` | [`IdRef`] | [`PieceView`] |
/// | `root` | [`IdRef`] | [`Root`] |
/// | `pieces_by_holder` | [`ByHolder`] | `Vec<PieceView>` |
/// | `lineage` | [`IdRef`] | [`Lineage`] |
/// | `tree` | [`RootRef`] | `Vec<PieceView>` |
/// | `tree_page` | [`TreePage`] | `Vec<PieceView>` (at most [`MAX_PAGE`]) |
/// | `outstanding` | [`CreditRef`] | `u128` |
/// | `credit_limit` | [`CreditRef`] | `u128` |
/// | `by_invoice` | [`InvoiceRef`] | `Option<Root>` |
/// | `params` | `()` | [`Params`] |
/// | `may_read` | `Vec<u8>` (a key of the contract's state) | `bool` |
///
/// Queries run as the member whose signed request asked the node and show
/// it what concerns it: a piece to its holder, its issuer and the bank of
/// its open offer or financing (with its lineage); a holder's list to that
/// holder; a tree to its issuer; credit figures to the issuer, banks and
/// admins; everything to a regulator. A piece the caller may not see is
/// `not_found`. `may_read` tells the node which of the contract's raw state
/// keys that member may read with their proofs.
pub struct Receivables;

impl Contract for Receivables {
    fn call(host: &mut dyn Host, method: &str, a: &[u8]) -> ContractResult<Vec<u8>> {
        Ok(match method {
            "init" => ret(&ops::init(host, args(a)?)?)?,
            "set_params" => ret(&ops::set_params(host, args(a)?)?)?,
            "set_credit_limit" => ret(&ops::set_credit_limit(host, args(a)?)?)?,
            "issue" => ret(&ops::issue(host, args(a)?)?)?,
            "accept" => ret(&ops::accept(host, args(a)?)?)?,
            "reject" => ret(&ops::reject(host, args(a)?)?)?,
            "expire" => ret(&ops::expire(host, args(a)?)?)?,
            "transfer" => ret(&ops::transfer(host, args(a)?)?)?,
            "split" => ret(&ops::split(host, args(a)?)?)?,
            "request_financing" => ret(&ops::request_financing(host, args(a)?)?)?,
            "offer_financing" => ret(&ops::offer_financing(host, args(a)?)?)?,
            "accept_financing" => ret(&ops::accept_financing(host, args(a)?)?)?,
            "cancel_financing" => ret(&ops::cancel_financing(host, args(a)?)?)?,
            "settle" => ret(&ops::settle(host, args(a)?)?)?,
            "settle_piece" => ret(&ops::settle_piece(host, args(a)?)?)?,
            "mark_overdue" => ret(&ops::mark_overdue(host, args(a)?)?)?,
            "mark_overdue_piece" => ret(&ops::mark_overdue_piece(host, args(a)?)?)?,
            "freeze" => ret(&ops::freeze(host, args(a)?)?)?,
            "unfreeze" => ret(&ops::unfreeze(host, args(a)?)?)?,
            other => return Err(Error::UnknownMethod(other.into()).into()),
        })
    }

    fn query(host: &dyn Host, method: &str, a: &[u8]) -> ContractResult<Vec<u8>> {
        Ok(match method {
            "piece" => ret(&queries::piece(host, args(a)?)?)?,
            "root" => ret(&queries::root(host, args(a)?)?)?,
            "pieces_by_holder" => ret(&queries::pieces_by_holder(host, args(a)?)?)?,
            "lineage" => ret(&queries::lineage(host, args(a)?)?)?,
            "tree" => ret(&queries::tree(host, args(a)?)?)?,
            "tree_page" => ret(&queries::tree_page(host, args(a)?)?)?,
            "outstanding" => ret(&queries::outstanding(host, args(a)?)?)?,
            "credit_limit" => ret(&queries::credit_limit(host, args(a)?)?)?,
            "by_invoice" => ret(&queries::by_invoice(host, args(a)?)?)?,
            "params" => {
                args::<()>(a)?;
                ret(&queries::params(host)?)?
            }
            "may_read" => ret(&queries::may_read(host, &args::<Vec<u8>>(a)?))?,
            other => return Err(Error::UnknownMethod(other.into()).into()),
        })
    }
}

#[cfg(target_arch = "wasm32")]
trellis_contract::export_contract!(Receivables);
