//! `trellis demo`: the supply-chain story, played with signed transactions
//! on a dev or local chain and printed as it goes.
//!
//! core-acme issues 1,000,000.00 CNY to supplier-t1 against an invoice;
//! supplier-t1 accepts and splits 400,000.00 to supplier-t2; supplier-t2
//! splits 150,000.00 to supplier-t3; supplier-t3 has bank-first finance its
//! piece at 3.5 % a year; a second issue on the same invoice is refused; at
//! maturity core-acme settles. Every account signs with its public dev key.
//!
//! The story goes to stdout (stderr with `--output json`, whose one JSON
//! document is the result); waiting goes to stderr. Each run uses its own
//! invoice number, so the demo runs any number of times on one chain.

use crate::amount::{format_money, format_rate};
use crate::cli::DemoArgs;
use crate::cmd::receivable::commit_json;
use crate::context::Ctx;
use crate::devnode::{DevNodeProcess, HOW_TO_START, find_binary};
use crate::error::{Class, CliError, Result};
use crate::output::{Report, lineage_json, lineage_line, money_json, note, table};
use crate::when::{format_duration, format_ms, now_ms};
use serde_json::{Value, json};
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use trellis_receivables as rcv;
use trellis_sdk::{Client, Committed, RetryPolicy};

const CORE: &str = "core-acme";
const T1: &str = "supplier-t1";
const T2: &str = "supplier-t2";
const T3: &str = "supplier-t3";
const BANK: &str = "bank-first";
const CURRENCY: &str = "CNY";
const FACE_VALUE: u128 = 100_000_000; // 1,000,000.00
const TO_T2: u128 = 40_000_000; // 400,000.00
const TO_T3: u128 = 15_000_000; // 150,000.00
const RATE_BPS: u32 = 350; // 3.5 % a year
/// Slack between the acceptance deadline and maturity, for slow commits.
const MIN_SLACK: Duration = Duration::from_secs(3);
/// The demo waits for maturity: keep it within a coffee break.
const MAX_MATURITY_IN: Duration = Duration::from_secs(3_600);
/// How long past maturity the chain's clock may lag before the demo gives up.
const MATURITY_GRACE: Duration = Duration::from_secs(60);

/// Prints the story: to stdout for people, to stderr when stdout is JSON.
struct Story {
    json: bool,
    steps: Vec<Value>,
}

impl Story {
    fn say(&self, line: impl AsRef<str>) {
        if self.json {
            note(line);
        } else {
            crate::output::print_stdout(line.as_ref());
        }
    }

    /// A numbered step and the transaction that did it.
    fn step<T>(&mut self, actor: &str, action: &str, sentence: String, c: &Committed<T>) {
        let n = self.steps.len() + 1;
        self.say(format!("{n:>2}. {sentence}"));
        self.say(format!(
            "    tx {} in block {}",
            c.tx_hash.to_hex().get(..16).unwrap_or_default(),
            c.height
        ));
        self.steps.push(json!({
            "step": n,
            "actor": actor,
            "action": action,
            "summary": sentence,
            "transaction": commit_json(c),
        }));
    }
}

fn money(minor: u128) -> String {
    format_money(minor, CURRENCY)
}

/// Runs the demo. `node_defaulted`: no --node or TRELLIS_NODE was given, so
/// the demo may start its own node when nothing answers there.
pub async fn run(ctx: &Ctx, args: &DemoArgs, node_defaulted: bool) -> Result<Report> {
    if args.maturity_in > MAX_MATURITY_IN {
        return Err(CliError::usage(format!(
            "--maturity-in {} is too long for a demo: at most {}",
            format_duration(args.maturity_in),
            format_duration(MAX_MATURITY_IN)
        )));
    }
    let mut story = Story {
        json: ctx.json(),
        steps: Vec::new(),
    };
    // Held to the end: dropping it (also on error or Ctrl-C) stops the node.
    let mut started: Option<DevNodeProcess> = None;
    let endpoints = if args.start {
        let node = start_node(args).await?;
        let url = node.url().to_owned();
        started = Some(node);
        vec![url]
    } else {
        let endpoints = ctx.endpoints();
        match probe(&endpoints).await {
            Ok(()) => endpoints,
            Err(e) if is_unreachable(&e) && node_defaulted && !args.no_start => {
                note(format!(
                    "no node answers at {}: starting a dev node for the demo",
                    endpoints.join(", ")
                ));
                let node = start_node(args).await?;
                let url = node.url().to_owned();
                started = Some(node);
                vec![url]
            }
            Err(e) => {
                let mut e = CliError::from(e);
                if e.class == Class::Unreachable {
                    e = e.with_hint(HOW_TO_START);
                }
                return Err(e);
            }
        }
    };

    let contract = ctx.contract();
    let client_of = |org: &str| -> Result<Client> {
        Ok(Client::builder()
            .endpoints(endpoints.clone())
            .signer(trellis_genesis::dev_account(&format!("{org}/ops")))
            .commit_timeout(ctx.global.timeout)
            .build()?)
    };
    let [core, t1, t2, t3, bank] =
        [CORE, T1, T2, T3, BANK].map(|org| client_of(org).map(|c| c.receivables(contract)));
    let (core, t1, t2, t3, bank) = (core?, t1?, t2?, t3?, bank?);
    let chain = client_of(CORE)?;
    let status = chain.status().await?;
    let params = core.params().await.map_err(|e| {
        CliError::from(e).with_hint(format!(
            "the demo needs a dev or local chain, whose genesis deploys the receivables contract at {contract}"
        ))
    })?;
    if chain
        .account(&trellis_genesis::dev_account("core-acme/ops").public())
        .await?
        .is_none()
    {
        return Err(CliError::new(
            Class::Rejected,
            format!(
                "chain {} does not know the dev accounts the demo signs with",
                status.chain_id
            ),
        )
        .with_code("unknown_sender")
        .with_hint("run the demo on a dev chain (trellis-node --dev) or a local network (trellis-node localnet)"));
    }
    let window = Duration::from_millis(params.acceptance_window_ms);
    if args.maturity_in < window + MIN_SLACK {
        return Err(CliError::usage(format!(
            "--maturity-in {} is too soon: on this chain a receivable must mature after its {} acceptance window; give at least {}",
            format_duration(args.maturity_in),
            format_duration(window),
            format_duration(window + MIN_SLACK)
        )));
    }

    let run_id = format!(
        "{}{}",
        base36(now_ms()),
        base36(u64::from(std::process::id()))
    );
    let invoice = format!("{}-{run_id}", args.invoice);
    let invoice_hash = trellis_sdk::invoice_hash(invoice.as_bytes());
    story.say(format!(
        "Trellis demo on chain {} via {}{}; every account signs with its public dev key.",
        status.chain_id,
        endpoints.join(", "),
        if started.is_some() {
            " (a dev node started for this demo)"
        } else {
            ""
        }
    ));
    story.say("");

    // 1. Issue.
    let maturity_ms =
        now_ms().saturating_add(u64::try_from(args.maturity_in.as_millis()).unwrap_or(u64::MAX));
    let issue = rcv::Issue {
        to: T1.into(),
        amount: FACE_VALUE,
        currency: CURRENCY.into(),
        maturity_ms,
        invoice_hash,
        terms: "demo: paid in full at maturity".into(),
    };
    let issued = core.issue(&issue).await?;
    let root = issued.value;
    let deadline = params.acceptance_window_ms + issued.block_time_ms;
    story.step(
        CORE,
        "issue",
        format!(
            "{CORE} issues {} to {T1} against invoice {invoice}: receivable #{root}, maturing {} (in {}); {T1} must accept by {}",
            money(FACE_VALUE),
            format_ms(maturity_ms),
            format_duration(args.maturity_in),
            format_ms(deadline)
        ),
        &issued,
    );

    // 2. Accept.
    let accepted = t1.accept(root).await?;
    story.step(T1, "accept", format!("{T1} accepts #{root}"), &accepted);

    // 3. Tier 1 splits 400,000.00 to tier 2.
    let split = t1
        .split(&rcv::Split {
            piece: root,
            parts: vec![(T2.into(), TO_T2)],
        })
        .await?;
    let [t2_piece, t1_kept] = two(&split.value)?;
    story.step(
        T1,
        "split",
        format!(
            "{T1} splits #{root}: #{t2_piece} {} to {T2}, keeps #{t1_kept} {}",
            money(TO_T2),
            money(FACE_VALUE - TO_T2)
        ),
        &split,
    );

    // 4. Tier 2 splits 150,000.00 to tier 3.
    let split = t2
        .split(&rcv::Split {
            piece: t2_piece,
            parts: vec![(T3.into(), TO_T3)],
        })
        .await?;
    let [t3_piece, t2_kept] = two(&split.value)?;
    story.step(
        T2,
        "split",
        format!(
            "{T2} splits #{t2_piece}: #{t3_piece} {} to {T3}, keeps #{t2_kept} {}",
            money(TO_T3),
            money(TO_T2 - TO_T3)
        ),
        &split,
    );

    // 5. Tier 3 asks the bank; 6. the bank accepts and pays.
    let terms = rcv::Terms {
        price: None,
        annual_rate_bps: Some(RATE_BPS),
        expires_ms: maturity_ms.saturating_sub(1_000),
    };
    let requested = t3
        .request_financing(&rcv::RequestFinancing {
            piece: t3_piece,
            bank: BANK.into(),
            terms: terms.clone(),
        })
        .await?;
    story.step(
        T3,
        "request_financing",
        format!(
            "{T3} asks {BANK} to finance #{t3_piece} ({}) at a {} annual discount",
            money(TO_T3),
            format_rate(RATE_BPS)
        ),
        &requested,
    );
    let financed = bank
        .accept_financing(&rcv::AcceptFinancing {
            piece: t3_piece,
            bank: BANK.into(),
            terms,
            payment_ref: format!("BANK-{run_id}"),
        })
        .await?;
    let financing = financed.value.clone();
    let discount = TO_T3.saturating_sub(financing.price);
    let days = maturity_ms
        .saturating_sub(financing.financed_ms)
        .div_ceil(rcv::MS_PER_DAY);
    story.step(
        BANK,
        "accept_financing",
        format!(
            "{BANK} accepts: pays {T3} {} for #{t3_piece} and will collect {} at maturity; \
             the contract priced it at {} a year for {days} day(s) (actual/365, whole days rounded up): discount {}",
            money(financing.price),
            money(TO_T3),
            format_rate(RATE_BPS),
            money(discount)
        ),
        &financed,
    );

    // 7. The same invoice cannot back a second receivable.
    let double = match core
        .issue(&rcv::Issue {
            maturity_ms,
            ..issue.clone()
        })
        .await
    {
        Err(trellis_sdk::Error::Failed { code, message, .. }) => {
            let n = story.steps.len() + 1;
            story.say(format!(
                "{n:>2}. {CORE} tries to issue against {invoice} again: refused by the contract with `{code}`: {message}"
            ));
            story.steps.push(json!({
                "step": n,
                "actor": CORE,
                "action": "issue_again",
                "summary": format!("refused: {code}"),
            }));
            json!({"refused": true, "code": code, "message": message})
        }
        Err(e) => return Err(e.into()),
        Ok(c) => {
            return Err(CliError::other(format!(
                "the contract accepted a second receivable (#{}) on invoice {invoice}",
                c.value
            )));
        }
    };

    // 8. Maturity on the chain's clock, then settlement.
    wait_for_chain_time(&chain, maturity_ms).await?;
    let settled = core
        .settle(&rcv::Settle {
            root,
            payment_ref: format!("ACME-{run_id}"),
        })
        .await?;
    let payouts = settled.value.clone();
    let total: u128 = payouts.iter().map(|p| p.amount).sum();
    story.step(
        CORE,
        "settle",
        format!(
            "{CORE} settles #{root} at maturity: pays {} to the holders of its {} live pieces",
            money(total),
            payouts.len()
        ),
        &settled,
    );

    // Who was paid what, and every piece's lineage.
    let mut t = table(["PIECE", "PAID TO", "AMOUNT", "WHEN"]);
    for p in &payouts {
        let when = if p.piece == t3_piece {
            format!("at maturity by {CORE} (bought from {T3})")
        } else {
            format!("at maturity by {CORE}")
        };
        t.add_row(vec![
            format!("#{}", p.piece),
            p.to.clone(),
            money(p.amount),
            when,
        ]);
    }
    t.add_row(vec![
        format!("#{t3_piece}"),
        financing.seller.clone(),
        money(financing.price),
        format!("at financing by {}", financing.bank),
    ]);
    let tree = core.tree(root).await?;
    let now = now_ms();
    let mut lineages = Vec::with_capacity(tree.len());
    for view in &tree {
        lineages.push(core.lineage(view.piece.id).await?);
    }
    let lineage_text: Vec<String> = lineages.iter().map(lineage_line).collect();
    let text = format!(
        "\nWho was paid what\n{}\n{CORE} paid {} in all; {BANK} paid {} and collected {} (earned {}).\n\n\
         Every piece's lineage, back to {CORE}\n{}",
        t.trim_fmt(),
        money(total),
        money(financing.price),
        money(TO_T3),
        money(discount),
        lineage_text.join("\n"),
    );

    let json = json!({
        "chain_id": status.chain_id,
        "nodes": endpoints,
        "started_node": started.is_some(),
        "contract": contract.to_hex(),
        "invoice": invoice,
        "invoice_hash": hex::encode(invoice_hash),
        "currency": CURRENCY,
        "root": root,
        "maturity": format_ms(maturity_ms),
        "maturity_ms": maturity_ms,
        "pieces": {
            "root": root,
            "supplier_t2": t2_piece,
            "supplier_t1_kept": t1_kept,
            "supplier_t3": t3_piece,
            "supplier_t2_kept": t2_kept,
        },
        "steps": story.steps,
        "financing": {
            "piece": t3_piece,
            "seller": financing.seller,
            "bank": financing.bank,
            "amount": money_json(TO_T3, CURRENCY),
            "price": money_json(financing.price, CURRENCY),
            "discount": money_json(discount, CURRENCY),
            "annual_rate_bps": financing.annual_rate_bps,
            "days": days,
            "payment_ref": financing.payment_ref,
        },
        "double_issue": double,
        "payouts": payouts.iter().map(|p| json!({
            "piece": p.piece,
            "to": p.to,
            "amount": money_json(p.amount, CURRENCY),
        })).collect::<Vec<_>>(),
        "total_paid": money_json(total, CURRENCY),
        "lineage": lineages.iter().map(|l| lineage_json(l, now)).collect::<Vec<_>>(),
    });
    if let Some(node) = started.take() {
        drop(node);
        note("stopped the dev node started for the demo");
    }
    Ok(Report::new(text, json))
}

fn two(ids: &[u64]) -> Result<[u64; 2]> {
    match ids {
        [a, b] => Ok([*a, *b]),
        other => Err(CliError::other(format!(
            "a split into a part and a remainder gave {} pieces",
            other.len()
        ))),
    }
}

async fn start_node(args: &DemoArgs) -> Result<DevNodeProcess> {
    let binary = find_binary(args.node_bin.as_deref())?;
    note(format!("starting {} --dev ...", binary.display()));
    let node = DevNodeProcess::start(&binary).await?;
    note(format!(
        "dev node up at {} (pid {}; temporary data; stopped when the demo ends)",
        node.url(),
        node.pid()
    ));
    Ok(node)
}

/// Whether anything answers at `endpoints` (one quick try each).
async fn probe(endpoints: &[String]) -> Result<(), trellis_sdk::Error> {
    let client = Client::builder()
        .endpoints(endpoints.to_vec())
        .request_timeout(Duration::from_secs(3))
        .retry(RetryPolicy {
            max_attempts: u32::try_from(endpoints.len()).unwrap_or(u32::MAX).max(1),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(20),
        })
        .build()?;
    client.health().await.map(|_| ())
}

fn is_unreachable(e: &trellis_sdk::Error) -> bool {
    matches!(e, trellis_sdk::Error::Transport { .. })
}

/// Waits until a committed block is stamped at or after `at_ms`, showing
/// the countdown on stderr.
async fn wait_for_chain_time(chain: &Client, at_ms: u64) -> Result<()> {
    let terminal = std::io::stderr().is_terminal();
    let deadline =
        Instant::now() + Duration::from_millis(at_ms.saturating_sub(now_ms())) + MATURITY_GRACE;
    let mut last_note: Option<Instant> = None;
    loop {
        let chain_ms = chain.status().await?.status.last_block_time_ms;
        if chain_ms >= at_ms {
            if terminal {
                eprintln!();
            }
            note(format!(
                "maturity reached on the chain's clock ({})",
                format_ms(chain_ms)
            ));
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CliError::new(
                Class::CommitTimeout,
                format!(
                    "the chain's clock is at {}, still before maturity {}: is the chain producing blocks?",
                    format_ms(chain_ms),
                    format_ms(at_ms)
                ),
            ));
        }
        let left = Duration::from_millis(at_ms.saturating_sub(chain_ms));
        if terminal {
            eprint!(
                "\rwaiting for maturity at {}: {} to go   ",
                format_ms(at_ms),
                format_duration(left)
            );
        } else if last_note.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            note(format!(
                "waiting for maturity at {}: {} to go",
                format_ms(at_ms),
                format_duration(left)
            ));
            last_note = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Base 36 digits, for short run ids (`INV-001-mgx3k2a14kq`).
fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}
