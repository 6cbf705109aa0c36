//! One test per flaw published audits have found in receivable / supply-chain
//! finance contracts, showing this contract refuses it.

mod common;

use common::*;
use trellis_receivables::*;

fn parts(list: &[(&str, u128)]) -> Vec<(String, u128)> {
    list.iter().map(|(o, a)| ((*o).to_string(), *a)).collect()
}

#[test]
fn split_refuses_more_parts_than_the_gas_bound() {
    let mut c = Chain::new();
    let root = c.active(T1, 10_000 * UNIT, "INV-A");
    let seventeen = parts(&[(T2, 100 * UNIT); 17]);
    c.refuse(
        T1,
        "split",
        &Split {
            piece: root,
            parts: seventeen,
        },
        "too_many_parts",
    );
    // Sixteen parts plus a remainder would be seventeen pieces too.
    let sixteen_and_rest = parts(&[(T2, 100 * UNIT); 16]);
    c.refuse(
        T1,
        "split",
        &Split {
            piece: root,
            parts: sixteen_and_rest,
        },
        "too_many_parts",
    );
    // A huge list is refused before any part is looked at.
    let huge = parts(&vec![(T2, 0); 10_000]);
    c.refuse(
        T1,
        "split",
        &Split {
            piece: root,
            parts: huge,
        },
        "too_many_parts",
    );
    let kids = c.split(T1, root, &[(T2, 100 * UNIT); 15]);
    assert_eq!(kids.len(), 16);
    assert_eq!(c.piece(kids[15]).piece.amount, 8_500 * UNIT);
}

#[test]
fn split_refuses_to_go_deeper_than_max_depth() {
    let mut c = Chain::new();
    c.call::<_, ()>(
        ADMIN,
        "init",
        &Params {
            max_depth: 3,
            ..Params::default()
        },
    );
    let mut piece = c.active(T1, 1_000 * UNIT, "INV-A");
    for _ in 0..3 {
        piece = c.split(T1, piece, &[(T1, 100 * UNIT)])[1];
    }
    assert_eq!(c.piece(piece).piece.depth, 3);
    let more = Split {
        piece,
        parts: parts(&[(T2, 100 * UNIT)]),
    };
    c.refuse(T1, "split", &more, "too_deep");
}

#[test]
fn split_refuses_zero_amount_and_dust_parts() {
    let mut c = Chain::new();
    let root = c.active(T1, 1_000 * UNIT, "INV-A");
    c.refuse(
        T1,
        "split",
        &Split {
            piece: root,
            parts: parts(&[(T2, 0)]),
        },
        "zero_amount",
    );
    c.refuse(
        T1,
        "split",
        &Split {
            piece: root,
            parts: parts(&[(T2, 500 * UNIT), (T3, 0)]),
        },
        "zero_amount",
    );
    c.refuse(
        T1,
        "split",
        &Split {
            piece: root,
            parts: parts(&[(T2, 1)]),
        },
        "below_minimum",
    );
    // A remainder below the minimum would be dust too.
    c.refuse(
        T1,
        "split",
        &Split {
            piece: root,
            parts: parts(&[(T2, 1_000 * UNIT - 1)]),
        },
        "below_minimum",
    );
    c.refuse(
        T1,
        "split",
        &Split {
            piece: root,
            parts: parts(&[(T2, 600 * UNIT), (T3, 600 * UNIT)]),
        },
        "amounts_exceed_piece",
    );
    c.refuse(
        T1,
        "split",
        &Split {
            piece: root,
            parts: parts(&[(T2, u128::MAX), (T3, u128::MAX)]),
        },
        "amounts_exceed_piece",
    );
    c.refuse(
        T1,
        "split",
        &Split {
            piece: root,
            parts: vec![],
        },
        "bad_args",
    );
    // One part for the whole amount is a transfer, not a split.
    c.refuse(
        T1,
        "split",
        &Split {
            piece: root,
            parts: parts(&[(T2, 1_000 * UNIT)]),
        },
        "bad_args",
    );
}

#[test]
fn a_stale_offer_cannot_be_accepted_after_the_piece_changes_hands() {
    let mut c = Chain::new();
    let piece = c.active(T1, 1_000 * UNIT, "INV-A");
    // The bank offers to tier 1, unasked; tier 1 pays tier 2 with the piece
    // while the offer is still open, and the offer lapses with the move.
    let terms = c.price_terms(990 * UNIT, DAY);
    c.call::<_, ()>(
        BANK,
        "offer_financing",
        &OfferFinancing {
            piece,
            terms: terms.clone(),
        },
    );
    c.transfer(T1, piece, T2);
    // Neither the new holder nor the old one can take the bank's old offer.
    let accept = AcceptFinancing {
        piece,
        bank: BANK.into(),
        terms: terms.clone(),
        payment_ref: "P-1".into(),
    };
    c.refuse(T2, "accept_financing", &accept, "no_offer");
    c.refuse(T1, "accept_financing", &accept, "no_offer");

    // The same with a request: tier 2 asks the bank, it lapses, tier 2 transfers.
    let terms = c.price_terms(990 * UNIT, DAY);
    c.call::<_, ()>(
        T2,
        "request_financing",
        &RequestFinancing {
            piece,
            bank: BANK.into(),
            terms: terms.clone(),
        },
    );
    c.advance(DAY);
    c.refuse(
        BANK,
        "accept_financing",
        &AcceptFinancing {
            piece,
            bank: BANK.into(),
            terms: terms.clone(),
            payment_ref: "P-2".into(),
        },
        "offer_expired",
    );
    c.transfer(T2, piece, T3);
    c.refuse(
        BANK,
        "accept_financing",
        &AcceptFinancing {
            piece,
            bank: BANK.into(),
            terms,
            payment_ref: "P-2".into(),
        },
        "no_offer",
    );
    assert_eq!(c.piece(piece).piece.holder, T3);
}

#[test]
fn a_piece_under_a_financing_offer_cannot_be_split_so_the_bank_never_buys_a_dead_piece() {
    let mut c = Chain::new();
    let piece = c.active(T1, 1_000 * UNIT, "INV-A");
    let terms = c.rate_terms(400, 5 * DAY);
    c.call::<_, ()>(
        T1,
        "request_financing",
        &RequestFinancing {
            piece,
            bank: BANK.into(),
            terms: terms.clone(),
        },
    );
    c.refuse(
        T1,
        "split",
        &Split {
            piece,
            parts: parts(&[(T2, 300 * UNIT)]),
        },
        "offer_open",
    );
    c.refuse(
        T1,
        "transfer",
        &Transfer {
            piece,
            to: T2.into(),
        },
        "offer_open",
    );
    c.refuse(
        BANK2,
        "offer_financing",
        &OfferFinancing {
            piece,
            terms: terms.clone(),
        },
        "offer_open",
    );
    c.refuse(
        T1,
        "request_financing",
        &RequestFinancing {
            piece,
            bank: BANK2.into(),
            terms: terms.clone(),
        },
        "offer_open",
    );
    let f: Financing = c.call(
        BANK,
        "accept_financing",
        &AcceptFinancing {
            piece,
            bank: BANK.into(),
            terms,
            payment_ref: "P-1".into(),
        },
    );
    assert_eq!(c.piece(piece).status, Status::Financed);
    assert_eq!(f.bank, BANK);
}

#[test]
fn a_financed_piece_cannot_be_financed_again_even_after_moving_between_banks() {
    let mut c = Chain::new();
    let piece = c.active(T1, 1_000 * UNIT, "INV-A");
    let terms = c.price_terms(980 * UNIT, 5 * DAY);
    c.call::<_, ()>(
        BANK,
        "offer_financing",
        &OfferFinancing {
            piece,
            terms: terms.clone(),
        },
    );
    c.call::<_, Financing>(
        T1,
        "accept_financing",
        &AcceptFinancing {
            piece,
            bank: BANK.into(),
            terms: terms.clone(),
            payment_ref: "P-1".into(),
        },
    );
    c.refuse(
        BANK2,
        "offer_financing",
        &OfferFinancing {
            piece,
            terms: terms.clone(),
        },
        "already_financed",
    );
    c.refuse(
        BANK,
        "request_financing",
        &RequestFinancing {
            piece,
            bank: BANK2.into(),
            terms: terms.clone(),
        },
        "already_financed",
    );
    c.refuse(
        BANK,
        "split",
        &Split {
            piece,
            parts: parts(&[(BANK2, 100 * UNIT)]),
        },
        "already_financed",
    );
    // Back into the supply chain, where it could be discounted twice: no.
    c.refuse(
        BANK,
        "transfer",
        &Transfer {
            piece,
            to: T1.into(),
        },
        "wrong_role",
    );
    c.transfer(BANK, piece, BANK2);
    c.refuse(
        BANK,
        "offer_financing",
        &OfferFinancing { piece, terms },
        "already_financed",
    );
    let v = c.piece(piece);
    assert_eq!(
        (v.status, v.piece.holder.as_str()),
        (Status::Financed, BANK2)
    );
    assert_eq!(v.piece.financing.map(|f| f.bank), Some(BANK.to_string()));
}

#[test]
fn only_the_issuer_can_settle() {
    let mut c = Chain::new();
    let root = c.active(T1, 1_000 * UNIT, "INV-A");
    let kids = c.split(T1, root, &[(T2, 400 * UNIT)]);
    c.advance(181 * DAY);
    for org in [T1, T2, BANK, ADMIN, CORE2, REGULATOR] {
        c.refuse(
            org,
            "settle",
            &Settle {
                root,
                payment_ref: "X".into(),
            },
            "not_issuer",
        );
        c.refuse(
            org,
            "settle_piece",
            &SettlePiece {
                piece: kids[0],
                payment_ref: "X".into(),
            },
            "not_issuer",
        );
    }
    c.call::<_, Payout>(
        CORE,
        "settle_piece",
        &SettlePiece {
            piece: kids[0],
            payment_ref: "PAY-1".into(),
        },
    );
    let rest: Vec<Payout> = c.call(
        CORE,
        "settle",
        &Settle {
            root,
            payment_ref: "PAY-2".into(),
        },
    );
    assert_eq!(
        rest,
        vec![Payout {
            piece: kids[1],
            to: T1.into(),
            amount: 600 * UNIT
        }]
    );
    c.refuse(
        CORE,
        "settle",
        &Settle {
            root,
            payment_ref: "PAY-3".into(),
        },
        "nothing_to_do",
    );
}

#[test]
fn settlement_before_maturity_is_refused() {
    let mut c = Chain::new();
    let root = c.active(T1, 1_000 * UNIT, "INV-A");
    let maturity = c.piece(root).piece.maturity_ms;
    c.host.set_block(2, maturity - 1);
    c.refuse(
        CORE,
        "settle",
        &Settle {
            root,
            payment_ref: "X".into(),
        },
        "not_matured",
    );
    c.refuse(
        CORE,
        "settle_piece",
        &SettlePiece {
            piece: root,
            payment_ref: "X".into(),
        },
        "not_matured",
    );
    c.host.set_block(3, maturity);
    c.call::<_, Vec<Payout>>(
        CORE,
        "settle",
        &Settle {
            root,
            payment_ref: "X".into(),
        },
    );
}

#[test]
fn an_invoice_hash_cannot_be_reused_after_rejection_or_expiry() {
    let mut c = Chain::new();
    c.limit(CORE, 10_000 * UNIT);
    let a = c.issue(T1, 1_000 * UNIT, "INV-A");
    c.call::<_, ()>(T1, "reject", &PieceRef { piece: a });
    assert_eq!(c.piece(a).status, Status::Returned);
    assert_eq!(c.outstanding(CORE), 0);
    let reissue = c.issue_args(T2, 1_000 * UNIT, "INV-A");
    c.refuse(CORE, "issue", &reissue, "invoice_used");
    c.refuse(CORE2, "issue", &reissue, "invoice_used");

    let b = c.issue(T1, 1_000 * UNIT, "INV-B");
    c.refuse(OUTSIDER, "expire", &PieceRef { piece: b }, "not_expired");
    c.advance(Params::default().acceptance_window_ms);
    c.refuse(T1, "accept", &PieceRef { piece: b }, "acceptance_expired");
    assert_eq!(
        c.piece(b).status,
        Status::Returned,
        "queries already treat it as returned"
    );
    c.call::<_, ()>(OUTSIDER, "expire", &PieceRef { piece: b });
    let reissue = c.issue_args(T1, 1_000 * UNIT, "INV-B");
    c.refuse(CORE, "issue", &reissue, "invoice_used");
}

#[test]
fn many_small_issues_cannot_bypass_the_credit_limit() {
    let mut c = Chain::new();
    c.limit(CORE, 10_000 * UNIT);
    for i in 0..10 {
        c.issue(T1, 1_000 * UNIT, &format!("INV-{i}"));
    }
    assert_eq!(c.outstanding(CORE), 10_000 * UNIT);
    let one_more = c.issue_args(T2, 1_000 * UNIT, "INV-10");
    c.refuse(CORE, "issue", &one_more, "credit_limit_exceeded");
    // Splitting and moving pieces does not free credit; settling or a return does.
    c.call::<_, ()>(T1, "accept", &PieceRef { piece: 1 });
    c.split(T1, 1, &[(T2, 500 * UNIT)]);
    c.refuse(CORE, "issue", &one_more, "credit_limit_exceeded");
    c.call::<_, ()>(T1, "reject", &PieceRef { piece: 2 });
    c.call::<_, PieceId>(CORE, "issue", &one_more);
    // A limit cannot be cut below what is out, and overflow does not wrap.
    c.refuse(
        ADMIN,
        "set_credit_limit",
        &SetCreditLimit {
            issuer: CORE.into(),
            currency: "CNY".into(),
            limit: 0,
        },
        "limit_below_outstanding",
    );
    c.limit(CORE, u128::MAX);
    let huge = c.issue_args(T2, u128::MAX, "INV-11");
    c.refuse(CORE, "issue", &huge, "credit_limit_exceeded");
}

/// A limit is a value in one currency: 10,000 CNY of credit does not allow
/// 10,000 USD (or 10,000 of any other currency's units), and what is out in
/// one currency does not use up another's limit.
#[test]
fn a_credit_limit_covers_its_own_currency_only() {
    let mut c = Chain::new();
    c.limit(CORE, 10_000 * UNIT);
    let usd = Issue {
        currency: "USD".into(),
        ..c.issue_args(T1, 1_000 * UNIT, "INV-USD-1")
    };
    c.refuse(CORE, "issue", &usd, "credit_limit_exceeded");
    c.call::<_, ()>(
        ADMIN,
        "set_credit_limit",
        &SetCreditLimit {
            issuer: CORE.into(),
            currency: "USD".into(),
            limit: 1_000 * UNIT,
        },
    );
    c.call::<_, PieceId>(CORE, "issue", &usd);
    c.issue(T1, 10_000 * UNIT, "INV-CNY-1");
    let usd_figure = |c: &Chain, method: &str| -> u128 {
        c.query(
            method,
            &CreditRef {
                issuer: CORE.into(),
                currency: "USD".into(),
            },
        )
    };
    assert_eq!(usd_figure(&c, "outstanding"), 1_000 * UNIT);
    assert_eq!(usd_figure(&c, "credit_limit"), 1_000 * UNIT);
    assert_eq!(c.outstanding(CORE), 10_000 * UNIT, "CNY, counted apart");
    let more_usd = Issue {
        currency: "USD".into(),
        ..c.issue_args(T1, 1_000 * UNIT, "INV-USD-2")
    };
    c.refuse(CORE, "issue", &more_usd, "credit_limit_exceeded");
}

#[test]
fn books_that_do_not_cover_a_settlement_stop_it_rather_than_go_wrong() {
    // The built module, as deployed: natively a debug build's assertions
    // would stop the call whatever the release build does.
    let mut c = Chain::on_wasm();
    let piece = c.active(T1, 1_000 * UNIT, "INV-A");
    // Corrupt the issuer's outstanding to less than the live piece: the
    // contract's own state key, `o/` ‖ org length ‖ org ‖ currency.
    let mut key = b"o/".to_vec();
    key.extend((CORE.len() as u16).to_be_bytes());
    key.extend(CORE.as_bytes());
    key.extend(b"CNY");
    c.host
        .exec(|h| {
            trellis_contract::store::set(h, &key, &(999 * UNIT));
            Ok(())
        })
        .expect("a raw write");
    assert_eq!(c.outstanding(CORE), 999 * UNIT);
    c.advance(180 * DAY);
    let settle = Settle {
        root: piece,
        payment_ref: "PAY".into(),
    };
    c.refuse(CORE, "settle", &settle, "trap");
    assert_eq!(c.piece(piece).status, Status::Active);
}
