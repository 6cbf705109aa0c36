//! `trellis receivable …`: the receivables contract's calls and queries.
//!
//! Inputs are checked before any key is loaded or anything is signed, so a
//! mistyped amount or date is a usage error (exit 2) that costs nothing.

use crate::amount::{format_money, format_rate, parse_money, parse_rate};
use crate::cli::{FinanceCommand, IssueArgs, ReceivableCommand, TermsArgs};
use crate::context::Ctx;
use crate::error::{Class, CliError, Result};
use crate::output::{
    Report, lineage_json, lineage_line, money_json, piece_json, piece_rows, piece_text,
    pieces_table, record, table,
};
use crate::when::{format_ms, now_ms, parse_when};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use trellis_receivables as rcv;
use trellis_receivables::{PieceId, PieceView};
use trellis_sdk::{Committed, Receivables};

/// Financing offers default to this long, or to just before maturity if sooner.
const DEFAULT_OFFER_MS: u64 = 7 * rcv::MS_PER_DAY;

pub async fn run(ctx: &Ctx, command: &ReceivableCommand) -> Result<Report> {
    use ReceivableCommand as C;
    match command {
        C::Issue(args) => issue(ctx, args).await,
        C::Accept { piece } => {
            let r = writer(ctx)?;
            let c = r.accept(*piece).await?;
            Ok(done(
                &c,
                format!("accepted receivable #{piece}"),
                json!({"piece": piece}),
            ))
        }
        C::Reject { piece } => {
            let r = writer(ctx)?;
            let c = r.reject(*piece).await?;
            Ok(done(
                &c,
                format!("rejected receivable #{piece}; it is returned to its issuer"),
                json!({"piece": piece}),
            ))
        }
        C::Transfer { piece, to } => {
            let r = writer(ctx)?;
            let c = r
                .transfer(&rcv::Transfer {
                    piece: *piece,
                    to: to.clone(),
                })
                .await?;
            Ok(done(
                &c,
                format!("transferred piece #{piece} to {to}"),
                json!({"piece": piece, "to": to}),
            ))
        }
        C::Split { piece, parts } => split(ctx, *piece, parts).await,
        C::Finance(f) => finance(ctx, f).await,
        C::Settle {
            root,
            piece,
            payment_ref,
        } => settle(ctx, *root, *piece, payment_ref).await,
        C::Show { piece, verify } => {
            let r = reader(ctx)?;
            if *verify {
                return show_verified(&r, *piece).await;
            }
            let view = r.piece(*piece).await?;
            let now = now_ms();
            Ok(Report::new(piece_text(&view, now), piece_json(&view, now)))
        }
        C::Lineage { piece } => lineage(ctx, *piece).await,
        C::Tree { root } => tree(ctx, *root).await,
        C::Holdings { org } => holdings(ctx, org.as_deref()).await,
        C::Freeze { piece, reason } => {
            let r = writer(ctx)?;
            let c = r
                .freeze(&rcv::FreezePiece {
                    piece: *piece,
                    reason: reason.clone(),
                })
                .await?;
            Ok(done(
                &c,
                format!("froze piece #{piece}: {reason}"),
                json!({"piece": piece, "reason": reason}),
            ))
        }
        C::Unfreeze { piece } => {
            let r = writer(ctx)?;
            let c = r.unfreeze(*piece).await?;
            Ok(done(
                &c,
                format!("unfroze piece #{piece}"),
                json!({"piece": piece}),
            ))
        }
    }
}

fn writer(ctx: &Ctx) -> Result<Receivables> {
    Ok(ctx.receivables(&ctx.writer()?))
}

fn reader(ctx: &Ctx) -> Result<Receivables> {
    Ok(ctx.receivables(&ctx.reader()?))
}

/// Where a transaction landed, for JSON.
pub fn commit_json<T>(c: &Committed<T>) -> Value {
    json!({
        "tx_hash": c.tx_hash.to_hex(),
        "height": c.height,
        "index": c.index,
        "block_time": format_ms(c.block_time_ms),
    })
}

/// A call's report: a sentence, the commit, and `fields` merged into the JSON.
fn done<T>(c: &Committed<T>, sentence: String, mut fields: Value) -> Report {
    fields["transaction"] = commit_json(c);
    Report::new(
        format!(
            "{sentence}\n  transaction {} committed at {}:{}",
            c.tx_hash, c.height, c.index
        ),
        fields,
    )
}

async fn issue(ctx: &Ctx, a: &IssueArgs) -> Result<Report> {
    let money = parse_money(&a.amount, a.currency.as_deref())?;
    let maturity_ms = parse_when(&a.maturity, now_ms())?;
    let (invoice_hash, document) = invoice(a)?;
    let r = writer(ctx)?;
    let c = r
        .issue(&rcv::Issue {
            to: a.to.clone(),
            amount: money.minor,
            currency: money.currency.clone(),
            maturity_ms,
            invoice_hash,
            terms: a.terms.clone(),
        })
        .await?;
    let piece = c.value;
    let deadline = c
        .events()
        .iter()
        .find(|e| e.kind == "issued")
        .and_then(|e| {
            e.attributes
                .iter()
                .find(|(k, _)| k == "acceptance_deadline_ms")
        })
        .and_then(|(_, v)| v.parse::<u64>().ok());
    let mut rows = vec![
        ("to", a.to.clone()),
        ("amount", money.display()),
        ("maturity", format_ms(maturity_ms)),
        ("invoice", document.clone()),
        ("invoice hash", hex::encode(invoice_hash)),
    ];
    if let Some(d) = deadline {
        rows.push(("accept by", format_ms(d)));
    }
    let text = format!("issued receivable #{piece}\n{}", record(rows));
    Ok(done(
        &c,
        text,
        json!({
            "piece": piece,
            "to": a.to,
            "amount": money_json(money.minor, &money.currency),
            "maturity": format_ms(maturity_ms),
            "maturity_ms": maturity_ms,
            "invoice": document,
            "invoice_hash": hex::encode(invoice_hash),
            "acceptance_deadline": deadline.map(format_ms),
            "acceptance_deadline_ms": deadline,
        }),
    ))
}

/// The invoice hash, and how it was given (for the report).
fn invoice(a: &IssueArgs) -> Result<([u8; 32], String)> {
    if let Some(text) = &a.invoice {
        return Ok((trellis_sdk::invoice_hash(text.as_bytes()), text.clone()));
    }
    if let Some(file) = &a.invoice_file {
        let bytes = std::fs::read(file).map_err(|e| {
            CliError::new(Class::Key, format!("invoice file {}: {e}", file.display()))
                .with_code("file")
        })?;
        return Ok((
            trellis_sdk::invoice_hash(&bytes),
            format!("file {}", file.display()),
        ));
    }
    let hex_hash = a.invoice_hash.as_deref().unwrap_or_default();
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hex_hash.trim().trim_start_matches("0x"), &mut hash).map_err(|_| {
        CliError::usage(format!(
            "--invoice-hash `{hex_hash}` is not 32 bytes of hex (64 digits)"
        ))
    })?;
    Ok((hash, format!("hash {}", hex::encode(hash))))
}

async fn split(ctx: &Ctx, piece: PieceId, parts: &[String]) -> Result<Report> {
    let mut parsed = Vec::with_capacity(parts.len());
    for part in parts {
        let (org, amount) = part.split_once('=').ok_or_else(|| {
            CliError::usage(format!(
                "--part `{part}` is not ORG=AMOUNT, e.g. supplier-t2=400,000.00"
            ))
        })?;
        parsed.push((org.trim().to_owned(), amount.trim().to_owned()));
    }
    let reads = reader(ctx)?;
    let view = reads.piece(piece).await?;
    let currency = view.piece.currency.clone();
    let mut amounts = Vec::with_capacity(parsed.len());
    for (org, amount) in parsed {
        amounts.push((org, parse_money(&amount, Some(&currency))?.minor));
    }
    let r = writer(ctx)?;
    let c = r
        .split(&rcv::Split {
            piece,
            parts: amounts.clone(),
        })
        .await?;
    let sum: u128 = amounts.iter().map(|(_, a)| a).sum();
    let mut outs = amounts;
    if sum < view.piece.amount {
        outs.push((view.piece.holder.clone(), view.piece.amount - sum));
    }
    let mut t = table(["NEW PIECE", "HOLDER", "AMOUNT"]);
    let mut pieces = Vec::new();
    for (id, (org, amount)) in c.value.iter().zip(&outs) {
        t.add_row(vec![
            format!("#{id}"),
            org.clone(),
            format_money(*amount, &currency),
        ]);
        pieces.push(json!({"piece": id, "holder": org, "amount": money_json(*amount, &currency)}));
    }
    let text = format!(
        "split piece #{piece} ({}) into {} pieces\n{}",
        format_money(view.piece.amount, &currency),
        c.value.len(),
        t.trim_fmt()
    );
    Ok(done(&c, text, json!({"piece": piece, "pieces": pieces})))
}

/// The terms of a request or an offer, from the options and the piece.
fn terms(t: &TermsArgs, view: &PieceView) -> Result<rcv::Terms> {
    let now = now_ms();
    let (price, annual_rate_bps) = match (&t.rate, &t.price) {
        (Some(rate), _) => (None, Some(parse_rate(rate)?)),
        (None, Some(price)) => (
            Some(parse_money(price, Some(&view.piece.currency))?.minor),
            None,
        ),
        (None, None) => return Err(CliError::usage("give --rate or --price")),
    };
    let expires_ms = match &t.expires {
        Some(when) => parse_when(when, now)?,
        None => now
            .saturating_add(DEFAULT_OFFER_MS)
            .min(view.piece.maturity_ms.saturating_sub(1_000)),
    };
    Ok(rcv::Terms {
        price,
        annual_rate_bps,
        expires_ms,
    })
}

fn terms_text(terms: &rcv::Terms, view: &PieceView) -> String {
    let currency = &view.piece.currency;
    match (terms.price, terms.annual_rate_bps) {
        (Some(price), _) => format!("price {}", format_money(price, currency)),
        (None, Some(rate)) => {
            let now =
                rcv::discounted_price(view.piece.amount, rate, view.piece.maturity_ms, now_ms())
                    .map_or_else(String::new, |p| {
                        format!(" (price if accepted now: {})", format_money(p, currency))
                    });
            format!("{} a year{now}", format_rate(rate))
        }
        (None, None) => "no terms".into(),
    }
}

fn terms_json(terms: &rcv::Terms, currency: &str) -> Value {
    json!({
        "price": terms.price.map(|p| money_json(p, currency)),
        "annual_rate_bps": terms.annual_rate_bps,
        "expires": format_ms(terms.expires_ms),
        "expires_ms": terms.expires_ms,
    })
}

async fn finance(ctx: &Ctx, command: &FinanceCommand) -> Result<Report> {
    match command {
        FinanceCommand::Request {
            piece,
            bank,
            terms: t,
        } => {
            let view = reader(ctx)?.piece(*piece).await?;
            let terms = terms(t, &view)?;
            let r = writer(ctx)?;
            let c = r
                .request_financing(&rcv::RequestFinancing {
                    piece: *piece,
                    bank: bank.clone(),
                    terms: terms.clone(),
                })
                .await?;
            Ok(done(
                &c,
                format!(
                    "asked {bank} to finance piece #{piece} ({}) at {}, open until {}",
                    format_money(view.piece.amount, &view.piece.currency),
                    terms_text(&terms, &view),
                    format_ms(terms.expires_ms)
                ),
                json!({"piece": piece, "bank": bank, "terms": terms_json(&terms, &view.piece.currency)}),
            ))
        }
        FinanceCommand::Offer { piece, terms: t } => {
            let view = reader(ctx)?.piece(*piece).await?;
            let terms = terms(t, &view)?;
            let r = writer(ctx)?;
            let c = r
                .offer_financing(&rcv::OfferFinancing {
                    piece: *piece,
                    terms: terms.clone(),
                })
                .await?;
            Ok(done(
                &c,
                format!(
                    "offered {} to finance piece #{piece} ({}) at {}, open until {}",
                    view.piece.holder,
                    format_money(view.piece.amount, &view.piece.currency),
                    terms_text(&terms, &view),
                    format_ms(terms.expires_ms)
                ),
                json!({"piece": piece, "holder": view.piece.holder, "terms": terms_json(&terms, &view.piece.currency)}),
            ))
        }
        FinanceCommand::Accept {
            piece,
            payment_ref,
            rate,
            price,
            bank,
        } => {
            let view = reader(ctx)?.piece(*piece).await?;
            let currency = view.piece.currency.clone();
            // The contract accepts only the open offer's exact bank and
            // terms; with --bank/--rate/--price we send what the caller
            // expects, so an offer that changed is refused (bank_mismatch,
            // terms_mismatch) rather than taken.
            let Some(offer) = view.piece.offer.clone() else {
                return Err(CliError::new(
                    Class::Failed,
                    format!("piece #{piece} has no open financing offer"),
                )
                .with_code("no_offer"));
            };
            let mut terms = offer.terms.clone();
            if let Some(rate) = rate {
                terms.annual_rate_bps = Some(parse_rate(rate)?);
                terms.price = None;
            }
            if let Some(price) = price {
                terms.price = Some(parse_money(price, Some(&currency))?.minor);
                terms.annual_rate_bps = None;
            }
            let r = writer(ctx)?;
            let c = r
                .accept_financing(&rcv::AcceptFinancing {
                    piece: *piece,
                    bank: bank.clone().unwrap_or(offer.bank),
                    terms,
                    payment_ref: payment_ref.clone(),
                })
                .await?;
            let f = &c.value;
            let discount = view.piece.amount.saturating_sub(f.price);
            let rate = f
                .annual_rate_bps
                .map_or_else(String::new, |r| format!(" at {} a year", format_rate(r)));
            Ok(done(
                &c,
                format!(
                    "piece #{piece} financed: {} pays {} {}{rate} for {} due {} (discount {}); {} now holds it",
                    f.bank,
                    f.seller,
                    format_money(f.price, &currency),
                    format_money(view.piece.amount, &currency),
                    format_ms(view.piece.maturity_ms),
                    format_money(discount, &currency),
                    f.bank,
                ),
                json!({
                    "piece": piece,
                    "bank": f.bank,
                    "seller": f.seller,
                    "amount": money_json(view.piece.amount, &currency),
                    "price": money_json(f.price, &currency),
                    "discount": money_json(discount, &currency),
                    "annual_rate_bps": f.annual_rate_bps,
                    "payment_ref": f.payment_ref,
                }),
            ))
        }
        FinanceCommand::Cancel { piece } => {
            let r = writer(ctx)?;
            let c = r.cancel_financing(*piece).await?;
            Ok(done(
                &c,
                format!("cancelled the financing offer on piece #{piece}"),
                json!({"piece": piece}),
            ))
        }
    }
}

async fn settle(
    ctx: &Ctx,
    root: Option<PieceId>,
    piece: Option<PieceId>,
    payment_ref: &str,
) -> Result<Report> {
    let r = writer(ctx)?;
    let (c, payouts, id) = match (root, piece) {
        (_, Some(piece)) => {
            let c = r
                .settle_piece(&rcv::SettlePiece {
                    piece,
                    payment_ref: payment_ref.into(),
                })
                .await?;
            let payout = c.value.clone();
            (c.map(|_| ()), vec![payout], piece)
        }
        (Some(root), None) => {
            let c = r
                .settle(&rcv::Settle {
                    root,
                    payment_ref: payment_ref.into(),
                })
                .await?;
            let payouts = c.value.clone();
            (c.map(|_| ()), payouts, root)
        }
        (None, None) => return Err(CliError::usage("give a ROOT or --piece PIECE")),
    };
    let currency = r.piece(id).await?.piece.currency;
    let (text, json) = payouts_report(&payouts, &currency);
    Ok(done(
        &c,
        format!("settled #{id} (payment {payment_ref})\n{text}"),
        json!({"settled": id, "payment_ref": payment_ref, "payouts": json}),
    ))
}

/// Who was paid what: a table (with a total) and its JSON.
pub fn payouts_report(payouts: &[rcv::Payout], currency: &str) -> (String, Value) {
    let mut t = table(["PIECE", "PAID TO", "AMOUNT"]);
    let mut total = 0u128;
    for p in payouts {
        total = total.saturating_add(p.amount);
        t.add_row(vec![
            format!("#{}", p.piece),
            p.to.clone(),
            format_money(p.amount, currency),
        ]);
    }
    t.add_row(vec![
        String::new(),
        "total".into(),
        format_money(total, currency),
    ]);
    let json = payouts
        .iter()
        .map(|p| json!({"piece": p.piece, "to": p.to, "amount": money_json(p.amount, currency)}))
        .collect();
    (t.trim_fmt(), Value::Array(json))
}

/// Reads of a piece that a block changes between its proof and its view
/// before `show --verify` gives up.
const VERIFY_TRIES: usize = 3;

/// `show --verify`: the piece as now, once its record is the one proven in
/// the state of a block the validators committed.
async fn show_verified(r: &Receivables, piece: PieceId) -> Result<Report> {
    for _ in 0..VERIFY_TRIES {
        let proven = r.piece_with_proof(piece).await?;
        let Some(stored) = proven.decode::<rcv::Piece>()? else {
            return Err(CliError::new(
                Class::NotFound,
                format!(
                    "piece #{piece} is proven absent at height {}",
                    proven.height
                ),
            ));
        };
        let view = r.piece(piece).await?;
        if view.piece != stored {
            continue; // a block changed it between the two reads
        }
        let now = now_ms();
        let mut rows = piece_rows(&view, now);
        rows.push((
            "verified",
            format!(
                "in the state of block {} at height {}, which the validators committed",
                proven.block_hash, proven.height
            ),
        ));
        let mut json = piece_json(&view, now);
        json["verified"] = json!({
            "height": proven.height,
            "block_hash": proven.block_hash,
            "state_root": proven.state_root,
        });
        return Ok(Report::new(record(rows), json));
    }
    Err(CliError::other(format!(
        "piece #{piece} changed in each of {VERIFY_TRIES} reads; try again"
    )))
}

async fn lineage(ctx: &Ctx, piece: PieceId) -> Result<Report> {
    let r = reader(ctx)?;
    let lineage = r.lineage(piece).await?;
    let now = now_ms();
    let views: Vec<(usize, &PieceView)> = lineage.path.iter().map(|v| (0, v)).collect();
    let text = format!(
        "{}\n\n{}\nreceivable #{} issued by {} to {}: {} against invoice hash {}",
        lineage_line(&lineage),
        pieces_table(&views, now),
        lineage.root.id,
        lineage.issuer,
        lineage.root.first_holder,
        format_money(lineage.root.face_value, &lineage.root.currency),
        hex::encode(lineage.root.invoice_hash),
    );
    Ok(Report::new(text, lineage_json(&lineage, now)))
}

async fn tree(ctx: &Ctx, id: PieceId) -> Result<Report> {
    let r = reader(ctx)?;
    let root = r.piece(id).await?.piece.root;
    let pieces = r.tree(root).await?;
    let now = now_ms();
    let mut children: BTreeMap<Option<PieceId>, Vec<&PieceView>> = BTreeMap::new();
    for v in &pieces {
        children.entry(v.piece.parent).or_default().push(v);
    }
    let mut ordered = Vec::with_capacity(pieces.len());
    let mut stack: Vec<(usize, &PieceView)> = children
        .get(&None)
        .map(|roots| roots.iter().rev().map(|v| (0, *v)).collect())
        .unwrap_or_default();
    while let Some((depth, v)) = stack.pop() {
        ordered.push((depth, v));
        if let Some(kids) = children.get(&Some(v.piece.id)) {
            stack.extend(kids.iter().rev().map(|k| (depth + 1, *k)));
        }
    }
    let text = pieces_table(&ordered, now);
    let json = json!({
        "root": root,
        "pieces": ordered.iter().map(|(_, v)| piece_json(v, now)).collect::<Vec<_>>(),
    });
    Ok(Report::new(text, json))
}

async fn holdings(ctx: &Ctx, org: Option<&str>) -> Result<Report> {
    let client = ctx.reader()?;
    let org = match org {
        Some(org) => org.to_owned(),
        None => {
            let key = ctx.signer()?.ok_or_else(|| {
                CliError::usage("whose holdings? give an ORG, or --key/--dev-account to use yours")
            })?;
            client
                .account(&key.public())
                .await?
                .ok_or_else(|| {
                    CliError::new(
                        Class::NotFound,
                        format!("key {} is not an account on this chain", key.public()),
                    )
                    .with_code("unknown_sender")
                })?
                .org
        }
    };
    let views = ctx.receivables(&client).holdings(&org).await?;
    let now = now_ms();
    let mut totals: BTreeMap<String, u128> = BTreeMap::new();
    for v in &views {
        if v.status.is_live() {
            let t = totals.entry(v.piece.currency.clone()).or_default();
            *t = t.saturating_add(v.piece.amount);
        }
    }
    let rows: Vec<(usize, &PieceView)> = views.iter().map(|v| (0, v)).collect();
    let total_text: Vec<String> = totals.iter().map(|(c, a)| format_money(*a, c)).collect();
    let text = if views.is_empty() {
        format!("{org} holds no pieces")
    } else {
        format!(
            "{}\n{org} holds {} piece(s); live: {}",
            pieces_table(&rows, now),
            views.len(),
            if total_text.is_empty() {
                "none".into()
            } else {
                total_text.join(", ")
            }
        )
    };
    Ok(Report::new(
        text,
        json!({
            "org": org,
            "pieces": views.iter().map(|v| piece_json(v, now)).collect::<Vec<_>>(),
            "live_totals": totals.iter().map(|(c, a)| money_json(*a, c)).collect::<Vec<_>>(),
        }),
    ))
}
