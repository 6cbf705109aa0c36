//! Typed access to the receivables contract, with the contract crate's own
//! argument and result types (a [`Piece`](trellis_receivables::Piece) is a
//! piece everywhere).
//!
//! Each call signs, submits and waits for the commit (the client's commit
//! timeout), and returns a [`Committed`] whose `value` is what the contract
//! returned, read from the event the call emitted (receipts carry events, not
//! return values). A contract refusal is [`Error::Failed`] with the
//! contract's code (`not_holder`, `invoice_used`, `already_financed`, ...).

use crate::client::{Client, VerifiedState};
use crate::error::{Error, Result};
use crate::submit::{Committed, PendingTx};
use serde::Serialize;
use trellis_receivables::{
    AcceptFinancing, ByHolder, CreditRef, Financing, FreezePiece, IdRef, InvoiceRef, Issue,
    Lineage, MAX_PAGE, OfferFinancing, Params, Payout, PieceId, PieceRef, PieceView,
    RequestFinancing, Root, RootRef, SetCreditLimit, Settle, SettlePiece, Split, Transfer,
    TreePage,
};
use trellis_types::{Address, Event, EventSource};

/// The hash that ties a receivable to its underlying document (invoice,
/// purchase order): blake3 of the document's bytes. Only the hash goes on chain.
///
/// ```
/// let hash = trellis_sdk::invoice_hash(b"INV-001");
/// assert_eq!(hash, *blake3::hash(b"INV-001").as_bytes());
/// ```
pub fn invoice_hash(document: &[u8]) -> [u8; 32] {
    *blake3::hash(document).as_bytes()
}

fn credit_ref(issuer: &str, currency: &str) -> CreditRef {
    CreditRef {
        issuer: issuer.into(),
        currency: currency.into(),
    }
}

/// The receivables contract at one address, used through one [`Client`]
/// (whose signer acts for its organisation).
///
/// ```no_run
/// # async fn demo(client: trellis_sdk::Client, address: trellis_types::Address) -> trellis_sdk::Result<()> {
/// use trellis_receivables::Issue;
/// let receivables = client.receivables(address);
/// let issued = receivables
///     .issue(&Issue {
///         to: "supplier-t1".into(),
///         amount: 100_000_000, // 1,000,000.00 in minor units
///         currency: "CNY".into(),
///         maturity_ms: 1_900_000_000_000,
///         invoice_hash: trellis_sdk::invoice_hash(b"INV-001"),
///         terms: "net 180".into(),
///     })
///     .await?;
/// println!("root piece {} at height {}", issued.value, issued.height);
/// let piece = receivables.piece(issued.value).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Receivables {
    client: Client,
    contract: Address,
}

impl Receivables {
    pub(crate) fn new(client: Client, contract: Address) -> Self {
        Receivables { client, contract }
    }

    /// The contract's address.
    ///
    /// ```no_run
    /// # fn demo(r: trellis_sdk::Receivables) {
    /// let address = r.address();
    /// # }
    /// ```
    pub fn address(&self) -> Address {
        self.contract
    }

    /// Submits `method(args)` without waiting: for calls this type has no
    /// method for, or to submit many and wait later.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// let pending = r.submit("accept", &trellis_receivables::PieceRef { piece: 1 }).await?;
    /// let committed = pending.wait().await?;
    /// # Ok(()) }
    /// ```
    pub async fn submit<A: Serialize>(&self, method: &str, args: &A) -> Result<PendingTx> {
        self.client.call(&self.contract, method, args).await
    }

    async fn run<A: Serialize>(&self, method: &str, args: &A) -> Result<Committed> {
        self.submit(method, args).await?.wait().await
    }

    /// The first event of `kind` this contract emitted in the commit.
    fn event<'a, T>(&self, committed: &'a Committed<T>, kind: &str) -> Result<&'a Event> {
        committed
            .events()
            .iter()
            .find(|e| e.kind == kind && e.source == EventSource::Contract(self.contract))
            .ok_or_else(|| {
                Error::Decode(format!(
                    "the receipt has no `{kind}` event from the contract"
                ))
            })
    }

    /// Issues a receivable (a root piece) to a supplier; the value is its [`PieceId`].
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// use trellis_receivables::Issue;
    /// let root = r.issue(&Issue { to: "supplier-t1".into(), amount: 100_000_000, currency: "CNY".into(), maturity_ms: 1_900_000_000_000, invoice_hash: trellis_sdk::invoice_hash(b"INV-001"), terms: "net 180".into() }).await?.value;
    /// # Ok(()) }
    /// ```
    pub async fn issue(&self, issue: &Issue) -> Result<Committed<PieceId>> {
        let committed = self.run("issue", issue).await?;
        let piece = parse(attribute(self.event(&committed, "issued")?, "piece")?)?;
        Ok(committed.map(|()| piece))
    }

    /// The first holder accepts an issued receivable.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// r.accept(1).await?;
    /// # Ok(()) }
    /// ```
    pub async fn accept(&self, piece: PieceId) -> Result<Committed> {
        self.run("accept", &PieceRef { piece }).await
    }

    /// The first holder rejects an issued receivable; it returns to its issuer.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// r.reject(1).await?;
    /// # Ok(()) }
    /// ```
    pub async fn reject(&self, piece: PieceId) -> Result<Committed> {
        self.run("reject", &PieceRef { piece }).await
    }

    /// Returns a receivable nobody accepted within the acceptance window.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// r.expire(1).await?;
    /// # Ok(()) }
    /// ```
    pub async fn expire(&self, piece: PieceId) -> Result<Committed> {
        self.run("expire", &PieceRef { piece }).await
    }

    /// The holder moves a whole piece to another organisation.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// r.transfer(&trellis_receivables::Transfer { piece: 3, to: "supplier-t3".into() }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn transfer(&self, transfer: &Transfer) -> Result<Committed> {
        self.run("transfer", transfer).await
    }

    /// The holder splits a piece; the value is the new pieces' ids: the
    /// parts in order, then the remainder (kept by the holder) if any.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// use trellis_receivables::Split;
    /// let split = r.split(&Split { piece: 1, parts: vec![("supplier-t2".into(), 40_000_000)] }).await?;
    /// let (to_t2, rest) = (split.value[0], split.value[1]);
    /// # Ok(()) }
    /// ```
    pub async fn split(&self, split: &Split) -> Result<Committed<Vec<PieceId>>> {
        let committed = self.run("split", split).await?;
        let children = attributes(self.event(&committed, "split")?, "child")
            .map(|child| parse(child.split(':').next().unwrap_or_default()))
            .collect::<Result<Vec<PieceId>>>()?;
        Ok(committed.map(|()| children))
    }

    /// The holder asks a bank to finance a piece on `terms`.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// use trellis_receivables::{RequestFinancing, Terms};
    /// let terms = Terms { price: None, annual_rate_bps: Some(350), expires_ms: 1_900_000_000_000 };
    /// r.request_financing(&RequestFinancing { piece: 5, bank: "bank-first".into(), terms }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn request_financing(&self, request: &RequestFinancing) -> Result<Committed> {
        self.run("request_financing", request).await
    }

    /// A bank offers to finance a piece.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// use trellis_receivables::{OfferFinancing, Terms};
    /// let terms = Terms { price: Some(14_800_000), annual_rate_bps: None, expires_ms: 1_900_000_000_000 };
    /// r.offer_financing(&OfferFinancing { piece: 5, terms }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn offer_financing(&self, offer: &OfferFinancing) -> Result<Committed> {
        self.run("offer_financing", offer).await
    }

    /// The other side accepts an open financing offer (the bank funds); the
    /// value is the recorded [`Financing`].
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// use trellis_receivables::{AcceptFinancing, Terms};
    /// let terms = Terms { price: None, annual_rate_bps: Some(350), expires_ms: 1_900_000_000_000 };
    /// let accept = AcceptFinancing { piece: 5, bank: "bank-first".into(), terms, payment_ref: "PAY-1".into() };
    /// let financing = r.accept_financing(&accept).await?.value;
    /// println!("{} pays {} {}", financing.bank, financing.seller, financing.price);
    /// # Ok(()) }
    /// ```
    pub async fn accept_financing(&self, accept: &AcceptFinancing) -> Result<Committed<Financing>> {
        let committed = self.run("accept_financing", accept).await?;
        let event = self.event(&committed, "financed")?;
        let financing = Financing {
            bank: attribute(event, "bank")?.to_owned(),
            seller: attribute(event, "seller")?.to_owned(),
            price: parse(attribute(event, "price")?)?,
            annual_rate_bps: attributes(event, "annual_rate_bps")
                .next()
                .map(parse)
                .transpose()?,
            payment_ref: attribute(event, "payment_ref")?.to_owned(),
            financed_ms: committed.block_time_ms,
        };
        Ok(committed.map(|()| financing))
    }

    /// Withdraws or declines the open financing offer on a piece.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// r.cancel_financing(5).await?;
    /// # Ok(()) }
    /// ```
    pub async fn cancel_financing(&self, piece: PieceId) -> Result<Committed> {
        self.run("cancel_financing", &PieceRef { piece }).await
    }

    /// The issuer settles a receivable at maturity; the value is who was paid what.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// let payouts = r.settle(&trellis_receivables::Settle { root: 1, payment_ref: "CORE-PAY-1".into() }).await?.value;
    /// for p in payouts {
    ///     println!("piece {}: {} to {}", p.piece, p.amount, p.to);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn settle(&self, settle: &Settle) -> Result<Committed<Vec<Payout>>> {
        let committed = self.run("settle", settle).await?;
        let payouts = payouts(self.event(&committed, "settled")?)?;
        Ok(committed.map(|()| payouts))
    }

    /// The issuer settles one piece at maturity.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// let payout = r.settle_piece(&trellis_receivables::SettlePiece { piece: 5, payment_ref: "PAY-5".into() }).await?.value;
    /// # Ok(()) }
    /// ```
    pub async fn settle_piece(&self, settle: &SettlePiece) -> Result<Committed<Payout>> {
        let committed = self.run("settle_piece", settle).await?;
        let payout = payouts(self.event(&committed, "settled")?)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Decode("the `settled` event has no payout".into()))?;
        Ok(committed.map(|()| payout))
    }

    /// Marks a receivable's unpaid pieces overdue; the value is the pieces marked.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// let marked = r.mark_overdue(1).await?.value;
    /// # Ok(()) }
    /// ```
    pub async fn mark_overdue(&self, root: PieceId) -> Result<Committed<Vec<PieceId>>> {
        let committed = self.run("mark_overdue", &RootRef { root }).await?;
        let pieces = attributes(self.event(&committed, "overdue")?, "piece")
            .map(parse)
            .collect::<Result<Vec<PieceId>>>()?;
        Ok(committed.map(|()| pieces))
    }

    /// Marks one unpaid piece overdue (for receivables too large for
    /// [`Receivables::mark_overdue`] in one call).
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// r.mark_overdue_piece(7).await?;
    /// # Ok(()) }
    /// ```
    pub async fn mark_overdue_piece(&self, piece: PieceId) -> Result<Committed<()>> {
        self.run("mark_overdue_piece", &PieceRef { piece }).await
    }

    /// A consortium admin freezes a piece.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// r.freeze(&trellis_receivables::FreezePiece { piece: 5, reason: "court order 42".into() }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn freeze(&self, freeze: &FreezePiece) -> Result<Committed> {
        self.run("freeze", freeze).await
    }

    /// A consortium admin lifts a freeze.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// r.unfreeze(5).await?;
    /// # Ok(()) }
    /// ```
    pub async fn unfreeze(&self, piece: PieceId) -> Result<Committed> {
        self.run("unfreeze", &PieceRef { piece }).await
    }

    /// A consortium admin sets a core enterprise's credit limit in one
    /// currency (each currency has its own; absent, 0).
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// r.set_credit_limit(&trellis_receivables::SetCreditLimit { issuer: "core-acme".into(), currency: "CNY".into(), limit: 1_000_000_000 }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_credit_limit(&self, limit: &SetCreditLimit) -> Result<Committed> {
        self.run("set_credit_limit", limit).await
    }

    // ---- queries (latest committed state) ----

    async fn query<A: Serialize, R: Serialize + serde::de::DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<R> {
        self.client.query(&self.contract, method, args).await
    }

    /// A piece with its status as of the latest block.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// let view = r.piece(1).await?;
    /// println!("{} holds {} {} ({:?})", view.piece.holder, view.piece.amount, view.piece.currency, view.status);
    /// # Ok(()) }
    /// ```
    pub async fn piece(&self, id: PieceId) -> Result<PieceView> {
        self.query("piece", &IdRef { id }).await
    }

    /// Piece `id`'s record as the contract stores it, with its proof,
    /// verified against a header the validators committed
    /// ([`Client::state_with_proof`]): what a bank checks before it finances
    /// a piece without trusting the node it asks. Decodes to the stored
    /// [`Piece`](trellis_receivables::Piece) (`None`: proven absent); its
    /// `status` is as stored, where [`Receivables::piece`] gives the status
    /// as of now.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// let proven = r.piece_with_proof(7).await?;
    /// let piece: Option<trellis_receivables::Piece> = proven.decode()?;
    /// println!("at height {}: {:?}", proven.height, piece.map(|p| p.holder));
    /// # Ok(()) }
    /// ```
    pub async fn piece_with_proof(&self, id: PieceId) -> Result<VerifiedState> {
        let key = self.contract.state_key(&trellis_receivables::piece_key(id));
        self.client.state_with_proof(&key).await
    }

    /// What is recorded once per receivable (its root).
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// let root = r.root(1).await?;
    /// println!("{} owes {} {}, settled {}", root.issuer, root.face_value, root.currency, root.settled);
    /// # Ok(()) }
    /// ```
    pub async fn root(&self, id: PieceId) -> Result<Root> {
        self.query("root", &IdRef { id }).await
    }

    /// Every piece `org` holds, in id order (all pages).
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// for view in r.holdings("supplier-t2").await? {
    ///     println!("{} {} {:?}", view.piece.id, view.piece.amount, view.status);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn holdings(&self, org: &str) -> Result<Vec<PieceView>> {
        every_page(|after| {
            let page = ByHolder {
                org: org.into(),
                after,
                limit: Some(MAX_PAGE),
            };
            async move { self.holdings_page(&page).await }
        })
        .await
    }

    /// One page of the pieces an organisation holds.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// let page = r.holdings_page(&trellis_receivables::ByHolder { org: "supplier-t2".into(), after: None, limit: Some(50) }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn holdings_page(&self, page: &ByHolder) -> Result<Vec<PieceView>> {
        self.query("pieces_by_holder", page).await
    }

    /// A piece's ancestry back to its root and issuer.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// let lineage = r.lineage(7).await?;
    /// let chain: Vec<String> = lineage.path.iter().map(|v| v.piece.id.to_string()).collect();
    /// println!("{} (issued by {})", chain.join(" <- "), lineage.issuer);
    /// # Ok(()) }
    /// ```
    pub async fn lineage(&self, piece: PieceId) -> Result<Lineage> {
        self.query("lineage", &IdRef { id: piece }).await
    }

    /// Every piece of a receivable (retired ones too), its root first, read
    /// page by page so that a tree of any size fits the queries' fuel.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// let pieces = r.tree(1).await?;
    /// # Ok(()) }
    /// ```
    pub async fn tree(&self, root: PieceId) -> Result<Vec<PieceView>> {
        every_page(|after| {
            let page = TreePage {
                root,
                after,
                limit: Some(MAX_PAGE),
            };
            async move { self.tree_page(&page).await }
        })
        .await
    }

    /// One page of a receivable's pieces in walk order: the root piece, then
    /// after each piece the pieces split from it (and theirs), in split order.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// let first = r.tree_page(&trellis_receivables::TreePage { root: 1, after: None, limit: Some(50) }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn tree_page(&self, page: &TreePage) -> Result<Vec<PieceView>> {
        self.query("tree_page", page).await
    }

    /// What `issuer` owes in live pieces in `currency`.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// let owed = r.outstanding("core-acme", "CNY").await?;
    /// # Ok(()) }
    /// ```
    pub async fn outstanding(&self, issuer: &str, currency: &str) -> Result<u128> {
        self.query("outstanding", &credit_ref(issuer, currency))
            .await
    }

    /// The credit limit the consortium set for `issuer` in `currency`.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// let limit = r.credit_limit("core-acme", "CNY").await?;
    /// # Ok(()) }
    /// ```
    pub async fn credit_limit(&self, issuer: &str, currency: &str) -> Result<u128> {
        self.query("credit_limit", &credit_ref(issuer, currency))
            .await
    }

    /// The receivable an invoice hash backs, if any (see [`invoice_hash`]).
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// if let Some(root) = r.by_invoice(trellis_sdk::invoice_hash(b"INV-001")).await? {
    ///     println!("INV-001 already backs receivable {}", root.id);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn by_invoice(&self, hash: [u8; 32]) -> Result<Option<Root>> {
        self.query("by_invoice", &InvoiceRef { hash }).await
    }

    /// The contract's settings.
    ///
    /// ```no_run
    /// # async fn demo(r: trellis_sdk::Receivables) -> trellis_sdk::Result<()> {
    /// let params = r.params().await?;
    /// # Ok(()) }
    /// ```
    pub async fn params(&self) -> Result<Params> {
        self.query("params", &()).await
    }
}

fn attributes<'a>(event: &'a Event, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    event
        .attributes
        .iter()
        .filter(move |(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn attribute<'a>(event: &'a Event, key: &'a str) -> Result<&'a str> {
    attributes(event, key).next().ok_or_else(|| {
        Error::Decode(format!(
            "the `{}` event has no `{key}` attribute",
            event.kind
        ))
    })
}

fn parse<T: std::str::FromStr>(value: &str) -> Result<T> {
    value
        .parse()
        .map_err(|_| Error::Decode(format!("`{value}` is not a number in an event attribute")))
}

/// `payout` attributes: `piece:org:amount`.
fn payouts(event: &Event) -> Result<Vec<Payout>> {
    attributes(event, "payout")
        .map(|p| {
            let mut fields = p.splitn(3, ':');
            let (Some(piece), Some(to), Some(amount)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(Error::Decode(format!(
                    "payout `{p}` is not piece:org:amount"
                )));
            };
            Ok(Payout {
                piece: parse(piece)?,
                to: to.to_owned(),
                amount: parse(amount)?,
            })
        })
        .collect()
}

/// Reads a paged piece query to its end: `page(after)` returns up to
/// [`MAX_PAGE`] pieces with ids after `after`; a short page is the last.
async fn every_page<F, Fut>(mut page: F) -> Result<Vec<PieceView>>
where
    F: FnMut(Option<PieceId>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<PieceView>>>,
{
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let next = page(after).await?;
        let full = next.len() >= MAX_PAGE as usize;
        after = next.last().map(|p| p.piece.id);
        all.extend(next);
        if !full || after.is_none() {
            return Ok(all);
        }
    }
}
