//! What a command prints: a [`Report`] holds both renderings, a table or
//! sentences for people and one JSON document for programs, and `main`
//! prints the one `--output` asks for. Amounts in JSON are strings (exact,
//! whatever the consumer's number type) with their minor units beside them.

use crate::amount::{format_money, format_rate, plain_minor};
use crate::when::format_ms;
use comfy_table::{Cell, LineStyle, Table, TableStyle};
use serde_json::{Value, json};
use trellis_receivables::{Lineage, PieceView, Status};

/// A command's result in both renderings.
#[derive(Debug, Clone)]
pub struct Report {
    pub text: String,
    pub json: Value,
    /// A verdict that fails the command although it has a result to print
    /// (a benchmark below its floor): printed after the result, and its exit code.
    pub failure: Option<crate::error::CliError>,
}

impl Report {
    pub fn new(text: impl Into<String>, json: Value) -> Report {
        Report {
            text: text.into(),
            json,
            failure: None,
        }
    }

    pub fn with_failure(mut self, failure: crate::error::CliError) -> Report {
        self.failure = Some(failure);
        self
    }
}

/// Columns with a rule under the header, and nothing else.
const TABLE_STYLE: TableStyle =
    TableStyle::new().header_separator(LineStyle::none().fill('─').junction('─'));

/// A table with a header row, in the CLI's style.
pub fn table<I, S>(header: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<Cell>,
{
    let mut t = Table::new();
    t.load_style(TABLE_STYLE);
    t.set_header(header);
    for column in t.column_iter_mut() {
        column.set_padding((0, 2));
    }
    t
}

/// `key  value` lines, aligned, for one record.
pub fn record<'a>(rows: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let rows: Vec<(&str, String)> = rows.into_iter().collect();
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = Vec::with_capacity(rows.len());
    for (k, v) in rows {
        let mut lines = v.lines();
        out.push(format!("{k:<width$}  {}", lines.next().unwrap_or_default()));
        out.extend(lines.map(|l| format!("{:<width$}  {l}", "")));
    }
    out.join("\n")
}

/// An amount for JSON: `{"value": "1000000.00", "currency": "CNY", "minor_units": "100000000"}`.
pub fn money_json(minor: u128, currency: &str) -> Value {
    json!({
        "value": plain_minor(minor, currency),
        "currency": currency,
        "minor_units": minor.to_string(),
    })
}

pub fn status_name(status: Status) -> &'static str {
    match status {
        Status::PendingAcceptance => "pending_acceptance",
        Status::Active => "active",
        Status::Financed => "financed",
        Status::Split => "split",
        Status::Settled => "settled",
        Status::Overdue => "overdue",
        Status::Returned => "returned",
    }
}

/// The status as people read it, with the overlays (open offer, freeze).
pub fn status_text(view: &PieceView, now_ms: u64) -> String {
    let mut s = status_name(view.status).replace('_', " ");
    if let Some(offer) = &view.piece.offer
        && now_ms < offer.terms.expires_ms
    {
        s.push_str(&format!(", financing offer open ({})", offer.bank));
    }
    if view.piece.frozen.is_some() {
        s.push_str(", FROZEN");
    }
    s
}

/// A piece for JSON: every field, amounts and times in both forms.
pub fn piece_json(view: &PieceView, now_ms: u64) -> Value {
    let p = &view.piece;
    let money = |m: u128| money_json(m, &p.currency);
    let offer = p.offer.as_ref().map(|o| {
        let price_now = trellis_receivables::discounted_price(
            p.amount,
            o.terms.annual_rate_bps.unwrap_or(0),
            p.maturity_ms,
            now_ms,
        );
        json!({
            "initiator": match o.initiator {
                trellis_receivables::Initiator::Holder => "holder",
                trellis_receivables::Initiator::Bank => "bank",
            },
            "holder": o.holder,
            "bank": o.bank,
            "price": o.terms.price.map(money),
            "annual_rate_bps": o.terms.annual_rate_bps,
            "price_if_accepted_now": match o.terms.price {
                Some(price) => Some(money(price)),
                None => price_now.map(money),
            },
            "expires": format_ms(o.terms.expires_ms),
            "expires_ms": o.terms.expires_ms,
            "open": now_ms < o.terms.expires_ms,
        })
    });
    json!({
        "id": p.id,
        "root": p.root,
        "parent": p.parent,
        "issuer": p.issuer,
        "holder": p.holder,
        "amount": money(p.amount),
        "maturity": format_ms(p.maturity_ms),
        "maturity_ms": p.maturity_ms,
        "status": status_name(view.status),
        "stored_status": status_name(p.status),
        "depth": p.depth,
        "invoice_hash": hex::encode(p.invoice_hash),
        "created": format_ms(p.created_ms),
        "created_ms": p.created_ms,
        "offer": offer,
        "financing": p.financing.as_ref().map(|f| json!({
            "bank": f.bank,
            "seller": f.seller,
            "price": money(f.price),
            "annual_rate_bps": f.annual_rate_bps,
            "payment_ref": f.payment_ref,
            "financed": format_ms(f.financed_ms),
            "financed_ms": f.financed_ms,
        })),
        "settlement": p.settlement.as_ref().map(|s| json!({
            "paid_to": s.paid_to,
            "amount": money(s.amount),
            "payment_ref": s.payment_ref,
            "settled": format_ms(s.settled_ms),
            "settled_ms": s.settled_ms,
        })),
        "frozen": p.frozen.as_ref().map(|f| json!({
            "reason": f.reason,
            "by": f.by,
            "frozen": format_ms(f.frozen_ms),
            "frozen_ms": f.frozen_ms,
        })),
    })
}

/// One piece as `key value` lines.
pub fn piece_text(view: &PieceView, now_ms: u64) -> String {
    record(piece_rows(view, now_ms))
}

/// [`piece_text`]'s rows, for a caller that adds its own.
pub fn piece_rows(view: &PieceView, now_ms: u64) -> Vec<(&'static str, String)> {
    let p = &view.piece;
    let money = |m: u128| format_money(m, &p.currency);
    let mut rows = vec![
        ("piece", format!("#{}", p.id)),
        ("holder", p.holder.clone()),
        ("amount", money(p.amount)),
        ("status", status_text(view, now_ms)),
        ("maturity", format_ms(p.maturity_ms)),
        ("issuer", p.issuer.clone()),
        (
            "root",
            if p.root == p.id {
                "this piece (the original receivable)".into()
            } else {
                format!("#{}", p.root)
            },
        ),
    ];
    if let Some(parent) = p.parent {
        rows.push(("parent", format!("#{parent}")));
    }
    rows.push(("depth", p.depth.to_string()));
    rows.push(("invoice hash", hex::encode(p.invoice_hash)));
    rows.push(("created", format_ms(p.created_ms)));
    if let Some(o) = &p.offer {
        let terms = match (o.terms.price, o.terms.annual_rate_bps) {
            (Some(price), _) => format!("price {}", money(price)),
            (None, Some(rate)) => {
                let now =
                    trellis_receivables::discounted_price(p.amount, rate, p.maturity_ms, now_ms)
                        .map_or_else(String::new, |price| {
                            format!(" (price if accepted now: {})", money(price))
                        });
                format!("{} a year{now}", format_rate(rate))
            }
            (None, None) => "no terms".into(),
        };
        let who = match o.initiator {
            trellis_receivables::Initiator::Holder => format!("{} asked {}", o.holder, o.bank),
            trellis_receivables::Initiator::Bank => format!("{} offered to {}", o.bank, o.holder),
        };
        let open = if now_ms < o.terms.expires_ms {
            "open until"
        } else {
            "expired at"
        };
        rows.push((
            "financing offer",
            format!("{who}: {terms}, {open} {}", format_ms(o.terms.expires_ms)),
        ));
    }
    if let Some(f) = &p.financing {
        let rate = f
            .annual_rate_bps
            .map_or_else(String::new, |r| format!(" at {} a year", format_rate(r)));
        rows.push((
            "financed",
            format!(
                "{} sold it to {} for {}{rate} on {} (payment {})",
                f.seller,
                f.bank,
                money(f.price),
                format_ms(f.financed_ms),
                f.payment_ref
            ),
        ));
    }
    if let Some(s) = &p.settlement {
        rows.push((
            "settled",
            format!(
                "{} paid to {} on {} (payment {})",
                money(s.amount),
                s.paid_to,
                format_ms(s.settled_ms),
                s.payment_ref
            ),
        ));
    }
    if let Some(f) = &p.frozen {
        rows.push((
            "frozen",
            format!("by {} on {}: {}", f.by, format_ms(f.frozen_ms), f.reason),
        ));
    }
    rows
}

/// Pieces as a table; `indent` shows each piece's depth (for trees).
pub fn pieces_table(views: &[(usize, &PieceView)], now_ms: u64) -> String {
    let mut t = table(["PIECE", "HOLDER", "AMOUNT", "STATUS", "MATURITY", "ROOT"]);
    for (indent, view) in views {
        let p = &view.piece;
        let id = if *indent == 0 {
            format!("#{}", p.id)
        } else {
            format!("{}└ #{}", "  ".repeat(indent - 1), p.id)
        };
        t.add_row(vec![
            id,
            p.holder.clone(),
            format_money(p.amount, &p.currency),
            status_text(view, now_ms),
            format_ms(p.maturity_ms),
            format!("#{} by {}", p.root, p.issuer),
        ]);
    }
    t.trim_fmt()
}

/// The path from a piece back to its root, one line: `#5 bank-first 150,000.00 CNY ← #3 … ← issued by core-acme`.
pub fn lineage_line(lineage: &Lineage) -> String {
    let mut parts: Vec<String> = lineage
        .path
        .iter()
        .map(|v| {
            format!(
                "#{} {} {}",
                v.piece.id,
                v.piece.holder,
                format_money(v.piece.amount, &v.piece.currency)
            )
        })
        .collect();
    parts.push(format!("issued by {}", lineage.issuer));
    parts.join(" ← ")
}

pub fn lineage_json(lineage: &Lineage, now_ms: u64) -> Value {
    json!({
        "piece": lineage.path.first().map(|v| v.piece.id),
        "issuer": lineage.issuer,
        "root": lineage.root.id,
        "invoice_hash": hex::encode(lineage.root.invoice_hash),
        "face_value": money_json(lineage.root.face_value, &lineage.root.currency),
        "path": lineage.path.iter().map(|v| piece_json(v, now_ms)).collect::<Vec<_>>(),
    })
}

/// Prints to stderr unless quiet: progress and notes never go to stdout.
pub fn note(message: impl AsRef<str>) {
    eprintln!("{}", message.as_ref());
}

/// Prints stdout text, ignoring a closed pipe (`trellis … | head`).
pub fn print_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}
