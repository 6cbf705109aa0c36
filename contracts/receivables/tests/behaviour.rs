//! The rules of each method, one behaviour per test.

mod common;

use common::*;
use trellis_receivables::*;

#[test]
fn only_an_admin_initialises_and_only_once() {
    let mut c = Chain::new();
    c.refuse(CORE, "init", &Params::default(), "not_admin");
    c.refuse(
        ADMIN,
        "init",
        &Params {
            max_depth: 0,
            ..Params::default()
        },
        "bad_args",
    );
    c.refuse(
        ADMIN,
        "init",
        &Params {
            min_piece_amount: 0,
            ..Params::default()
        },
        "bad_args",
    );
    c.call::<_, ()>(
        ADMIN,
        "init",
        &Params {
            max_depth: 4,
            ..Params::default()
        },
    );
    c.refuse(ADMIN, "init", &Params::default(), "already_initialized");
    c.call::<_, ()>(ADMIN, "set_params", &Params::default());
    let p: Params = c.query("params", &());
    assert_eq!(p, Params::default());
}

#[test]
fn issue_checks_the_issuer_the_recipient_and_the_dates() {
    let mut c = Chain::new();
    c.limit(CORE, 10_000 * UNIT);
    let ok = c.issue_args(T1, 1_000 * UNIT, "INV-A");
    c.refuse(T1, "issue", &ok, "wrong_role");
    c.refuse(BANK, "issue", &ok, "wrong_role");
    c.refuse(
        CORE,
        "issue",
        &Issue {
            to: CORE.into(),
            ..ok.clone()
        },
        "same_party",
    );
    c.refuse(
        CORE,
        "issue",
        &Issue {
            to: OUTSIDER.into(),
            ..ok.clone()
        },
        "not_member",
    );
    c.refuse(
        CORE,
        "issue",
        &Issue {
            to: REGULATOR.into(),
            ..ok.clone()
        },
        "wrong_role",
    );
    c.refuse(
        CORE,
        "issue",
        &Issue {
            amount: 0,
            ..ok.clone()
        },
        "zero_amount",
    );
    c.refuse(
        CORE,
        "issue",
        &Issue {
            amount: 99 * UNIT,
            ..ok.clone()
        },
        "below_minimum",
    );
    c.refuse(
        CORE,
        "issue",
        &Issue {
            maturity_ms: c.now(),
            ..ok.clone()
        },
        "maturity_in_past",
    );
    c.refuse(
        CORE,
        "issue",
        &Issue {
            maturity_ms: c.now() + 7 * DAY,
            ..ok.clone()
        },
        "maturity_too_soon",
    );
    c.refuse(
        CORE,
        "issue",
        &Issue {
            currency: "cny".into(),
            ..ok.clone()
        },
        "bad_args",
    );
    c.refuse(
        CORE,
        "issue",
        &Issue {
            invoice_hash: [0; 32],
            ..ok.clone()
        },
        "bad_args",
    );
    c.refuse(CORE2, "issue", &ok, "credit_limit_exceeded");
    let id: PieceId = c.call(CORE, "issue", &ok);
    let root: Root = c.query("root", &IdRef { id });
    assert_eq!(
        root.acceptance_deadline_ms,
        c.now() + Params::default().acceptance_window_ms
    );
    assert_eq!(root.terms, ok.terms);
}

#[test]
fn only_the_first_holder_accepts_or_rejects_and_only_while_pending() {
    let mut c = Chain::new();
    c.limit(CORE, 10_000 * UNIT);
    let id = c.issue(T1, 1_000 * UNIT, "INV-A");
    c.refuse(T2, "accept", &PieceRef { piece: id }, "not_holder");
    c.refuse(CORE, "reject", &PieceRef { piece: id }, "not_holder");
    c.refuse(
        T1,
        "transfer",
        &Transfer {
            piece: id,
            to: T2.into(),
        },
        "not_active",
    );
    c.call::<_, ()>(T1, "accept", &PieceRef { piece: id });
    c.refuse(T1, "accept", &PieceRef { piece: id }, "not_pending");
    c.refuse(T1, "reject", &PieceRef { piece: id }, "not_pending");
    c.refuse(T1, "accept", &PieceRef { piece: 999 }, "not_found");
}

#[test]
fn a_pending_root_past_its_deadline_reads_as_returned_and_anyone_can_expire_it() {
    let mut c = Chain::new();
    c.limit(CORE, 1_000 * UNIT);
    let id = c.issue(T1, 1_000 * UNIT, "INV-A");
    c.advance(Params::default().acceptance_window_ms);
    let v = c.piece(id);
    assert_eq!(
        (v.piece.status, v.status),
        (Status::PendingAcceptance, Status::Returned)
    );
    // Its credit stays reserved until someone records the return.
    c.refuse(
        CORE,
        "issue",
        &c.issue_args(T2, 1_000 * UNIT, "INV-B"),
        "credit_limit_exceeded",
    );
    c.call::<_, ()>(REGULATOR, "expire", &PieceRef { piece: id });
    let v = c.piece(id);
    assert_eq!(
        (v.piece.status, v.piece.holder.as_str()),
        (Status::Returned, CORE)
    );
    c.call::<_, PieceId>(CORE, "issue", &c.issue_args(T2, 1_000 * UNIT, "INV-B"));
}

#[test]
fn transfer_is_for_the_holder_to_a_member_that_can_hold() {
    let mut c = Chain::new();
    let id = c.active(T1, 1_000 * UNIT, "INV-A");
    c.refuse(
        T2,
        "transfer",
        &Transfer {
            piece: id,
            to: T3.into(),
        },
        "not_holder",
    );
    c.refuse(
        CORE,
        "transfer",
        &Transfer {
            piece: id,
            to: T3.into(),
        },
        "not_holder",
    );
    c.refuse(
        T1,
        "transfer",
        &Transfer {
            piece: id,
            to: T1.into(),
        },
        "same_party",
    );
    c.refuse(
        T1,
        "transfer",
        &Transfer {
            piece: id,
            to: OUTSIDER.into(),
        },
        "not_member",
    );
    c.refuse(
        T1,
        "transfer",
        &Transfer {
            piece: id,
            to: REGULATOR.into(),
        },
        "wrong_role",
    );
    c.transfer(T1, id, BANK);
    c.transfer(BANK, id, T3);
    let held: Vec<PieceView> = c.query(
        "pieces_by_holder",
        &ByHolder {
            org: T3.into(),
            after: None,
            limit: None,
        },
    );
    assert_eq!(held.len(), 1);
    let none: Vec<PieceView> = c.query(
        "pieces_by_holder",
        &ByHolder {
            org: T1.into(),
            after: None,
            limit: None,
        },
    );
    assert!(none.is_empty());
}

#[test]
fn pieces_past_maturity_only_settle() {
    let mut c = Chain::new();
    let id = c.active(T1, 1_000 * UNIT, "INV-A");
    c.advance(180 * DAY);
    c.refuse(
        T1,
        "transfer",
        &Transfer {
            piece: id,
            to: T2.into(),
        },
        "matured",
    );
    c.refuse(
        T1,
        "split",
        &Split {
            piece: id,
            parts: vec![(T2.into(), 100 * UNIT)],
        },
        "matured",
    );
    let terms = Terms {
        price: Some(UNIT),
        annual_rate_bps: None,
        expires_ms: c.now() + DAY,
    };
    c.refuse(
        BANK,
        "offer_financing",
        &OfferFinancing { piece: id, terms },
        "matured",
    );
}

#[test]
fn split_children_keep_the_lineage_and_the_parent_retires() {
    let mut c = Chain::new();
    let root = c.active(T1, 1_000 * UNIT, "INV-A");
    let kids = c.split(T1, root, &[(T2, 300 * UNIT), (T3, 200 * UNIT)]);
    assert_eq!(kids.len(), 3);
    assert_eq!(c.piece(root).status, Status::Split);
    let amounts: Vec<(String, u128)> = kids
        .iter()
        .map(|k| c.piece(*k).piece)
        .map(|p| (p.holder, p.amount))
        .collect();
    assert_eq!(
        amounts,
        vec![
            (T2.into(), 300 * UNIT),
            (T3.into(), 200 * UNIT),
            (T1.into(), 500 * UNIT)
        ]
    );
    for k in &kids {
        let p = c.piece(*k).piece;
        assert_eq!(
            (p.root, p.parent, p.depth, p.issuer.as_str()),
            (root, Some(root), 1, CORE)
        );
        assert_eq!(p.invoice_hash, invoice("INV-A"));
    }
    c.refuse(
        T1,
        "split",
        &Split {
            piece: root,
            parts: vec![(T2.into(), 100 * UNIT)],
        },
        "not_active",
    );
    c.refuse(
        T2,
        "split",
        &Split {
            piece: kids[1],
            parts: vec![(T2.into(), 100 * UNIT)],
        },
        "not_holder",
    );
    c.refuse(
        T3,
        "split",
        &Split {
            piece: kids[1],
            parts: vec![(OUTSIDER.into(), 100 * UNIT)],
        },
        "not_member",
    );
}

#[test]
fn a_discounted_price_rounds_the_discount_down_over_whole_days() {
    // 150 days exactly: 15,000,000 * 350 * 150 / 3,650,000 = 215,753.42...
    assert_eq!(
        discounted_price(15_000_000, 350, 150 * DAY, 0),
        Some(15_000_000 - 215_753)
    );
    // One millisecond into a day counts the whole day.
    assert_eq!(
        discounted_price(15_000_000, 350, 150 * DAY, 1),
        discounted_price(15_000_000, 350, 150 * DAY, 0)
    );
    assert_eq!(
        discounted_price(15_000_000, 350, 149 * DAY + 1, 0),
        discounted_price(15_000_000, 350, 150 * DAY, 0)
    );
    assert_eq!(discounted_price(1_000, 0, 365 * DAY, 0), Some(1_000));
    // 100 % for a year takes everything: refused, not a zero price.
    assert_eq!(discounted_price(1_000, 10_000, 365 * DAY, 0), None);
    // Huge amounts neither overflow nor lose the exact floor.
    let big = u128::MAX / 2;
    let d = discounted_price(big, 350, 150 * DAY, 0).expect("price");
    assert!(d < big && d > big / 2);
}

#[test]
fn a_bank_offer_is_accepted_by_the_holder_at_the_terms_it_saw() {
    let mut c = Chain::new();
    let id = c.active(T1, 1_000 * UNIT, "INV-A");
    let terms = c.rate_terms(500, 3 * DAY);
    c.refuse(
        T1,
        "offer_financing",
        &OfferFinancing {
            piece: id,
            terms: terms.clone(),
        },
        "not_bank",
    );
    c.call::<_, ()>(
        BANK,
        "offer_financing",
        &OfferFinancing {
            piece: id,
            terms: terms.clone(),
        },
    );
    c.refuse(
        BANK,
        "accept_financing",
        &AcceptFinancing {
            piece: id,
            bank: BANK.into(),
            terms: terms.clone(),
            payment_ref: "P".into(),
        },
        "not_party",
    );
    c.refuse(
        T2,
        "accept_financing",
        &AcceptFinancing {
            piece: id,
            bank: BANK.into(),
            terms: terms.clone(),
            payment_ref: "P".into(),
        },
        "not_party",
    );
    // The bank withdraws and re-offers worse terms; the holder's old acceptance does not match.
    c.call::<_, ()>(BANK, "cancel_financing", &PieceRef { piece: id });
    let worse = c.rate_terms(900, 3 * DAY);
    c.call::<_, ()>(
        BANK,
        "offer_financing",
        &OfferFinancing {
            piece: id,
            terms: worse.clone(),
        },
    );
    c.refuse(
        T1,
        "accept_financing",
        &AcceptFinancing {
            piece: id,
            bank: BANK.into(),
            terms,
            payment_ref: "P".into(),
        },
        "terms_mismatch",
    );
    c.refuse(
        T1,
        "accept_financing",
        &AcceptFinancing {
            piece: id,
            bank: BANK.into(),
            terms: worse.clone(),
            payment_ref: String::new(),
        },
        "bad_args",
    );
    let f: Financing = c.call(
        T1,
        "accept_financing",
        &AcceptFinancing {
            piece: id,
            bank: BANK.into(),
            terms: worse,
            payment_ref: "P".into(),
        },
    );
    assert_eq!(
        f.price,
        discounted_price(1_000 * UNIT, 900, c.piece(id).piece.maturity_ms, c.now()).unwrap()
    );
    assert_eq!(f.annual_rate_bps, Some(900));
}

/// The holder names the bank whose offer it accepts: if that bank withdraws
/// and another offers the very same terms in between, the acceptance is
/// refused rather than selling the piece to a bank the holder did not choose.
#[test]
fn a_holder_accepts_the_offer_of_the_bank_it_named_only() {
    let mut c = Chain::new();
    let id = c.active(T1, 1_000 * UNIT, "INV-A");
    let terms = c.rate_terms(500, 3 * DAY);
    let offer = OfferFinancing {
        piece: id,
        terms: terms.clone(),
    };
    c.call::<_, ()>(BANK, "offer_financing", &offer);
    c.call::<_, ()>(BANK, "cancel_financing", &PieceRef { piece: id });
    c.call::<_, ()>(BANK2, "offer_financing", &offer);
    let accept = |bank: &str| AcceptFinancing {
        piece: id,
        bank: bank.into(),
        terms: terms.clone(),
        payment_ref: "P".into(),
    };
    c.refuse(T1, "accept_financing", &accept(BANK), "bank_mismatch");
    assert_eq!(c.piece(id).piece.holder, T1);
    let f: Financing = c.call(T1, "accept_financing", &accept(BANK2));
    assert_eq!(
        (f.bank.as_str(), c.piece(id).piece.holder.as_str()),
        (BANK2, BANK2)
    );
}

#[test]
fn the_holder_can_decline_an_unsolicited_offer_that_would_pin_its_piece() {
    let mut c = Chain::new();
    let id = c.active(T1, 1_000 * UNIT, "INV-A");
    let long = c.price_terms(500 * UNIT, 170 * DAY);
    c.call::<_, ()>(
        BANK,
        "offer_financing",
        &OfferFinancing {
            piece: id,
            terms: long,
        },
    );
    c.refuse(T2, "cancel_financing", &PieceRef { piece: id }, "not_party");
    c.call::<_, ()>(T1, "cancel_financing", &PieceRef { piece: id });
    c.refuse(T1, "cancel_financing", &PieceRef { piece: id }, "no_offer");
    c.transfer(T1, id, T2);
}

#[test]
fn a_banks_unasked_offer_lapses_when_the_holder_moves_splits_or_asks_elsewhere() {
    let mut c = Chain::new();
    let terms = c.rate_terms(500, 30 * DAY);
    let offer = |piece| OfferFinancing {
        piece,
        terms: terms.clone(),
    };
    // The kinds of the events since `from`, and who a cancellation names.
    let since = |c: &Chain, from: usize| -> Vec<(String, Option<String>)> {
        c.host.events()[from..]
            .iter()
            .map(|e| {
                let by = e.attributes.iter().find(|(k, _)| k == "by");
                (e.kind.clone(), by.map(|(_, v)| v.clone()))
            })
            .collect()
    };
    let cancelled_by_t1 = ("financing_cancelled".to_string(), Some(T1.to_string()));

    // A transfer: the offer goes, reported cancelled by the old holder.
    let a = c.active(T1, 1_000 * UNIT, "INV-A");
    c.call::<_, ()>(BANK, "offer_financing", &offer(a));
    c.refuse(BANK2, "offer_financing", &offer(a), "offer_open");
    let from = c.host.events().len();
    c.transfer(T1, a, T2);
    assert_eq!(
        since(&c, from),
        [cancelled_by_t1.clone(), ("transferred".into(), None)]
    );
    assert_eq!(c.piece(a).piece.offer, None);

    // A split: the parent's offer goes with it; its children carry none.
    let b = c.active(T1, 1_000 * UNIT, "INV-B");
    c.call::<_, ()>(BANK, "offer_financing", &offer(b));
    let from = c.host.events().len();
    let children = c.split(T1, b, &[(T2, 400 * UNIT)]);
    assert_eq!(
        since(&c, from),
        [cancelled_by_t1.clone(), ("split".into(), None)]
    );
    assert_eq!(c.piece(b).piece.offer, None);
    for child in children {
        assert_eq!(c.piece(child).piece.offer, None);
    }

    // A request to another bank replaces the unasked offer.
    let d = c.active(T1, 1_000 * UNIT, "INV-D");
    c.call::<_, ()>(BANK, "offer_financing", &offer(d));
    let request = RequestFinancing {
        piece: d,
        bank: BANK2.into(),
        terms: terms.clone(),
    };
    let from = c.host.events().len();
    c.call::<_, ()>(T1, "request_financing", &request);
    assert_eq!(
        since(&c, from),
        [cancelled_by_t1, ("financing_requested".into(), None)]
    );
    let o = c
        .piece(d)
        .piece
        .offer
        .expect("the request is the offer now");
    assert_eq!((o.initiator, o.bank.as_str()), (Initiator::Holder, BANK2));

    // An expired offer is dropped without a word.
    let e = c.active(T1, 1_000 * UNIT, "INV-E");
    c.call::<_, ()>(BANK, "offer_financing", &offer(e));
    c.advance(30 * DAY);
    let from = c.host.events().len();
    c.transfer(T1, e, T3);
    assert_eq!(since(&c, from), [("transferred".into(), None)]);

    // What the holder asked for still holds the piece until it withdraws it.
    let f = c.active(T1, 1_000 * UNIT, "INV-F");
    c.call::<_, ()>(
        T1,
        "request_financing",
        &RequestFinancing {
            piece: f,
            terms: c.rate_terms(500, DAY),
            ..request
        },
    );
    let to_t2 = Transfer {
        piece: f,
        to: T2.into(),
    };
    c.refuse(T1, "transfer", &to_t2, "offer_open");
    c.refuse(
        T1,
        "split",
        &Split {
            piece: f,
            parts: vec![(T2.into(), 400 * UNIT)],
        },
        "offer_open",
    );
    c.call::<_, ()>(T1, "cancel_financing", &PieceRef { piece: f });
    c.call::<_, ()>(T1, "transfer", &to_t2);
}

#[test]
fn financing_terms_must_be_sane() {
    let mut c = Chain::new();
    let id = c.active(T1, 1_000 * UNIT, "INV-A");
    let maturity = c.piece(id).piece.maturity_ms;
    let now = c.now();
    let req = |terms: Terms| RequestFinancing {
        piece: id,
        bank: BANK.into(),
        terms,
    };
    let t = |price, rate, expires_ms| Terms {
        price,
        annual_rate_bps: rate,
        expires_ms,
    };
    c.refuse(
        T1,
        "request_financing",
        &req(t(None, None, now + DAY)),
        "bad_terms",
    );
    c.refuse(
        T1,
        "request_financing",
        &req(t(Some(UNIT), Some(100), now + DAY)),
        "bad_terms",
    );
    c.refuse(
        T1,
        "request_financing",
        &req(t(Some(0), None, now + DAY)),
        "bad_terms",
    );
    c.refuse(
        T1,
        "request_financing",
        &req(t(Some(1_000 * UNIT + 1), None, now + DAY)),
        "bad_terms",
    );
    c.refuse(
        T1,
        "request_financing",
        &req(t(None, Some(10_001), now + DAY)),
        "bad_terms",
    );
    c.refuse(
        T1,
        "request_financing",
        &req(t(Some(UNIT), None, now)),
        "bad_terms",
    );
    c.refuse(
        T1,
        "request_financing",
        &req(t(Some(UNIT), None, maturity)),
        "bad_terms",
    );
    c.refuse(
        T1,
        "request_financing",
        &RequestFinancing {
            piece: id,
            bank: T2.into(),
            terms: t(Some(UNIT), None, now + DAY),
        },
        "not_bank",
    );
    c.refuse(
        T2,
        "request_financing",
        &req(t(Some(UNIT), None, now + DAY)),
        "not_holder",
    );
    c.call::<_, ()>(
        T1,
        "request_financing",
        &req(t(Some(990 * UNIT), None, now + DAY)),
    );
    c.refuse(
        BANK2,
        "accept_financing",
        &AcceptFinancing {
            piece: id,
            bank: BANK.into(),
            terms: t(Some(990 * UNIT), None, now + DAY),
            payment_ref: "P".into(),
        },
        "not_party",
    );
}

#[test]
fn frozen_pieces_stand_still_until_an_admin_unfreezes_them() {
    let mut c = Chain::new();
    let root = c.active(T1, 1_000 * UNIT, "INV-A");
    let kids = c.split(T1, root, &[(T2, 400 * UNIT)]);
    let reason = FreezePiece {
        piece: kids[0],
        reason: "court order 2023-117".into(),
    };
    c.refuse(T2, "freeze", &reason, "not_admin");
    c.refuse(
        ADMIN,
        "freeze",
        &FreezePiece {
            piece: root,
            reason: "x".into(),
        },
        "not_active",
    );
    c.call::<_, ()>(ADMIN, "freeze", &reason);
    c.refuse(ADMIN, "freeze", &reason, "frozen");
    c.refuse(
        T2,
        "transfer",
        &Transfer {
            piece: kids[0],
            to: T3.into(),
        },
        "frozen",
    );
    c.refuse(
        T2,
        "split",
        &Split {
            piece: kids[0],
            parts: vec![(T3.into(), 100 * UNIT)],
        },
        "frozen",
    );
    let terms = c.price_terms(300 * UNIT, DAY);
    c.refuse(
        BANK,
        "offer_financing",
        &OfferFinancing {
            piece: kids[0],
            terms,
        },
        "frozen",
    );

    // At maturity the root cannot be settled in one go; the unfrozen piece can.
    c.advance(180 * DAY);
    c.refuse(
        CORE,
        "settle",
        &Settle {
            root,
            payment_ref: "P".into(),
        },
        "frozen",
    );
    c.refuse(
        CORE,
        "settle_piece",
        &SettlePiece {
            piece: kids[0],
            payment_ref: "P".into(),
        },
        "frozen",
    );
    c.call::<_, Payout>(
        CORE,
        "settle_piece",
        &SettlePiece {
            piece: kids[1],
            payment_ref: "P-1".into(),
        },
    );
    c.refuse(T2, "unfreeze", &PieceRef { piece: kids[0] }, "not_admin");
    c.call::<_, ()>(ADMIN, "unfreeze", &PieceRef { piece: kids[0] });
    c.refuse(
        ADMIN,
        "unfreeze",
        &PieceRef { piece: kids[0] },
        "not_frozen",
    );
    let paid: Vec<Payout> = c.call(
        CORE,
        "settle",
        &Settle {
            root,
            payment_ref: "P-2".into(),
        },
    );
    assert_eq!(
        paid,
        vec![Payout {
            piece: kids[0],
            to: T2.into(),
            amount: 400 * UNIT
        }]
    );
}

#[test]
fn unpaid_pieces_become_overdue_after_grace_and_give_recourse() {
    let mut c = Chain::new();
    let root = c.active(T1, 1_000 * UNIT, "INV-A");
    let kids = c.split(T1, root, &[(T2, 400 * UNIT)]);
    let maturity = c.piece(root).piece.maturity_ms;
    let grace = Params::default().grace_period_ms;
    c.host.set_block(10, maturity);
    c.call::<_, Payout>(
        CORE,
        "settle_piece",
        &SettlePiece {
            piece: kids[0],
            payment_ref: "P-1".into(),
        },
    );
    c.host.set_block(11, maturity + grace - 1);
    c.refuse(OUTSIDER, "mark_overdue", &RootRef { root }, "not_overdue");
    assert_eq!(c.piece(kids[1]).status, Status::Active);
    c.host.set_block(12, maturity + grace);
    assert_eq!(
        c.piece(kids[1]).status,
        Status::Overdue,
        "queries see it before anyone records it"
    );
    let marked: Vec<PieceId> = c.call(OUTSIDER, "mark_overdue", &RootRef { root });
    assert_eq!(marked, vec![kids[1]]);
    c.refuse(OUTSIDER, "mark_overdue", &RootRef { root }, "nothing_to_do");
    let r: Root = c.query("root", &IdRef { id: root });
    assert!(r.recourse);
    // A late payment still settles it.
    let paid: Vec<Payout> = c.call(
        CORE,
        "settle",
        &Settle {
            root,
            payment_ref: "LATE".into(),
        },
    );
    assert_eq!(
        paid,
        vec![Payout {
            piece: kids[1],
            to: T1.into(),
            amount: 600 * UNIT
        }]
    );
    assert_eq!(c.outstanding(CORE), 0);
}

#[test]
fn pieces_by_holder_pages_in_id_order() {
    let mut c = Chain::new();
    let root = c.active(T1, 10_000 * UNIT, "INV-A");
    let kids = c.split(T1, root, &[(T2, 100 * UNIT); 10]);
    let page = |c: &Chain, after, limit| -> Vec<PieceId> {
        let v: Vec<PieceView> = c.query(
            "pieces_by_holder",
            &ByHolder {
                org: T2.into(),
                after,
                limit: Some(limit),
            },
        );
        v.into_iter().map(|v| v.piece.id).collect()
    };
    assert_eq!(page(&c, None, 4), kids[..4]);
    assert_eq!(page(&c, Some(kids[3]), 4), kids[4..8]);
    assert_eq!(page(&c, Some(kids[7]), 4), kids[8..10]);
}

#[test]
fn single_pieces_become_overdue_one_call_at_a_time() {
    let mut c = Chain::new();
    let root = c.active(T1, 1_000 * UNIT, "INV-A");
    let kids = c.split(T1, root, &[(T2, 400 * UNIT)]);
    let maturity = c.piece(root).piece.maturity_ms;
    let grace = Params::default().grace_period_ms;
    let one = |piece| PieceRef { piece };
    c.host.set_block(10, maturity + grace - 1);
    c.refuse(OUTSIDER, "mark_overdue_piece", &one(kids[0]), "not_overdue");
    c.host.set_block(11, maturity + grace);
    c.refuse(OUTSIDER, "mark_overdue_piece", &one(root), "not_active");
    c.call::<_, ()>(OUTSIDER, "mark_overdue_piece", &one(kids[0]));
    assert_eq!(c.piece(kids[0]).piece.status, Status::Overdue);
    assert_eq!(
        c.piece(kids[1]).piece.status,
        Status::Active,
        "only the one named"
    );
    let r: Root = c.query("root", &IdRef { id: root });
    assert!(r.recourse);
    c.refuse(OUTSIDER, "mark_overdue_piece", &one(kids[0]), "not_active");
    // The whole-root call marks what is left.
    let marked: Vec<PieceId> = c.call(OUTSIDER, "mark_overdue", &RootRef { root });
    assert_eq!(marked, vec![kids[1]]);
}

#[test]
fn a_tree_pages_in_walk_order_with_retired_pieces() {
    let mut c = Chain::new();
    let root = c.active(T1, 10_000 * UNIT, "INV-A");
    let kids = c.split(T1, root, &[(T2, 400 * UNIT); 10]);
    let grandkids = c.split(T2, kids[0], &[(T3, 200 * UNIT)]);
    let deepest = c.split(T3, grandkids[0], &[(T3, 100 * UNIT)]);
    let later = c.split(T2, kids[3], &[(T3, 100 * UNIT)]);
    let page = |c: &Chain, after, limit| -> Vec<PieceId> {
        let v: Vec<PieceView> = c.query(
            "tree_page",
            &TreePage {
                root,
                after,
                limit: Some(limit),
            },
        );
        v.into_iter().map(|v| v.piece.id).collect()
    };
    let whole: Vec<PieceId> = {
        let v: Vec<PieceView> = c.query("tree", &RootRef { root });
        v.into_iter().map(|v| v.piece.id).collect()
    };
    // Each piece, then the subtrees split from it, whatever the ids' order.
    let mut expected = vec![root, kids[0], grandkids[0]];
    expected.extend(&deepest);
    expected.extend([grandkids[1], kids[1], kids[2], kids[3]]);
    expected.extend(&later);
    expected.extend(&kids[4..]);
    assert_eq!(
        whole, expected,
        "the root, the retired parents and every child"
    );
    // Pages of every size resume in the right place, within a subtree or
    // climbing out of one.
    for limit in 1..=7 {
        let mut paged: Vec<PieceId> = Vec::new();
        let mut after = None;
        loop {
            let next = page(&c, after, limit);
            paged.extend(&next);
            if next.len() < limit as usize {
                break;
            }
            after = next.last().copied();
        }
        assert_eq!(paged, whole, "pages of {limit}");
    }
    let other = c.active(T1, 1_000 * UNIT, "INV-B");
    let v: Result<Vec<PieceView>, _> = c
        .host
        .query::<Receivables>(
            "tree_page",
            &trellis_contract::codec::encode(&TreePage {
                root,
                after: Some(other),
                limit: None,
            }),
        )
        .map(|out| trellis_contract::codec::decode(&out).unwrap());
    assert_eq!(
        v.unwrap_err().code,
        "bad_args",
        "a page after another root's piece"
    );
    let v: Result<Vec<PieceView>, _> = c
        .host
        .query::<Receivables>(
            "tree_page",
            &trellis_contract::codec::encode(&TreePage {
                root: 999,
                after: None,
                limit: None,
            }),
        )
        .map(|out| trellis_contract::codec::decode(&out).unwrap());
    assert_eq!(v.unwrap_err().code, "not_found");
}

#[test]
fn unknown_methods_and_malformed_arguments_are_refused() {
    let mut c = Chain::new();
    c.host.act_as(T1);
    let e = c.host.call::<Receivables>("mint", &[]).unwrap_err();
    assert_eq!(e.code, "unknown_method");
    let e = c
        .host
        .call::<Receivables>("transfer", &[1, 2, 3])
        .unwrap_err();
    assert_eq!(e.code, "bad_args");
    let e = c.host.query::<Receivables>("piece", &[]).unwrap_err();
    assert_eq!(e.code, "bad_args");
}

/// A frozen piece stands still for every party: a pending root can be neither
/// accepted, rejected nor expired, and a bank's offer made before the freeze
/// cannot be taken up.
#[test]
fn a_frozen_piece_can_be_neither_accepted_nor_returned_nor_financed() {
    let mut c = Chain::new();
    c.limit(CORE, 10_000 * UNIT);
    let pending = c.issue(T1, 1_000 * UNIT, "INV-P");
    let hold = |piece| FreezePiece {
        piece,
        reason: "disputed delivery".into(),
    };
    c.call::<_, ()>(ADMIN, "freeze", &hold(pending));
    let piece = PieceRef { piece: pending };
    c.refuse(T1, "accept", &piece, "frozen");
    c.refuse(T1, "reject", &piece, "frozen");
    c.advance(8 * DAY);
    c.refuse(T2, "expire", &piece, "frozen");

    let offered = c.active(T2, 1_000 * UNIT, "INV-O");
    let terms = c.rate_terms(500, 3 * DAY);
    c.call::<_, ()>(
        BANK,
        "offer_financing",
        &OfferFinancing {
            piece: offered,
            terms: terms.clone(),
        },
    );
    c.call::<_, ()>(ADMIN, "freeze", &hold(offered));
    c.refuse(
        T2,
        "accept_financing",
        &AcceptFinancing {
            piece: offered,
            bank: BANK.into(),
            terms,
            payment_ref: "P".into(),
        },
        "frozen",
    );
}

#[test]
fn only_an_admin_sets_the_params() {
    let mut c = Chain::new();
    let stricter = Params {
        max_depth: 2,
        ..Params::default()
    };
    for org in [CORE, T1, BANK] {
        c.refuse(org, "set_params", &stricter, "not_admin");
    }
    c.call::<_, ()>(ADMIN, "set_params", &stricter);
    assert_eq!(c.query::<_, Params>("params", &()).max_depth, 2);
}

/// Windows of no time are refused: no grace period would let anyone mark
/// a receivable overdue in the very block its issuer may first pay it.
#[test]
fn params_with_no_acceptance_window_or_no_grace_period_are_refused() {
    let mut c = Chain::new();
    for params in [
        Params {
            grace_period_ms: 0,
            ..Params::default()
        },
        Params {
            acceptance_window_ms: 0,
            ..Params::default()
        },
    ] {
        c.refuse(ADMIN, "set_params", &params, "bad_args");
    }
    assert_eq!(c.query::<_, Params>("params", &()), Params::default());
}

/// The grace period is part of a receivable's terms, fixed when it is
/// issued: an admin shortening it later changes new paper only, and no piece
/// already out becomes overdue earlier than its terms said.
#[test]
fn a_receivables_grace_period_is_fixed_at_issue() {
    let mut c = Chain::new();
    let old = c.active(T1, 1_000 * UNIT, "INV-OLD");
    let grace = Params::default().grace_period_ms;
    let least_grace = Params {
        grace_period_ms: 1,
        ..Params::default()
    };
    c.call::<_, ()>(ADMIN, "set_params", &least_grace);
    let new = c.active(T2, 1_000 * UNIT, "INV-NEW");
    let (old_maturity, new_maturity) = (
        c.piece(old).piece.maturity_ms,
        c.piece(new).piece.maturity_ms,
    );
    assert_eq!(c.piece(old).piece.overdue_from_ms, old_maturity + grace);
    assert_eq!(c.piece(new).piece.overdue_from_ms, new_maturity + 1);

    c.host.set_block(10, old_maturity.max(new_maturity) + 1);
    c.call::<_, Vec<PieceId>>(OUTSIDER, "mark_overdue", &RootRef { root: new });
    assert_eq!(
        c.piece(old).status,
        Status::Active,
        "still within its grace"
    );
    c.refuse(
        OUTSIDER,
        "mark_overdue",
        &RootRef { root: old },
        "not_overdue",
    );
    c.host.set_block(11, old_maturity + grace);
    assert_eq!(c.piece(old).status, Status::Overdue);
    c.call::<_, Vec<PieceId>>(OUTSIDER, "mark_overdue", &RootRef { root: old });
}
