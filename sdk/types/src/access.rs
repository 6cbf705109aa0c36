//! Signed API requests: how a member's systems say who reads.
//!
//! A request carries `Authorization: Trellis key=…,time=…,nonce=…,signature=…`:
//! an account key, the signer's clock in ms, a random nonce, and the key's
//! signature over [`signing_hash`] of the chain id, the method, the path with
//! its query string, those two numbers and the body's blake3 hash. The node
//! takes a signature once, within [`MAX_CLOCK_SKEW_MS`] of its own clock, so a
//! request seen on the way cannot be sent again or later, nor to another
//! chain, path or body.

use crate::codec::encode;
use crate::crypto::{KeyPair, PublicKey, Signature};
use crate::hash::{Domain, Hash};
use serde::Serialize;

/// The authentication scheme's name in the `Authorization` header.
pub const SCHEME: &str = "Trellis";

/// How far a request's time may be from the node's clock, either way.
pub const MAX_CLOCK_SKEW_MS: u64 = 60_000;

/// What a request's signature covers.
#[derive(Serialize)]
struct SignedRequest<'a> {
    chain_id: &'a str,
    method: &'a str,
    path_and_query: &'a str,
    time_ms: u64,
    nonce: u64,
    body: Hash,
}

/// The digest a request's signature is over. `path_and_query` is the path as
/// the node receives it, with `?` and the query string if there is one.
pub fn signing_hash(
    chain_id: &str,
    method: &str,
    path_and_query: &str,
    time_ms: u64,
    nonce: u64,
    body: &[u8],
) -> Hash {
    Domain::ApiRequest.hash(&encode(&SignedRequest {
        chain_id,
        method,
        path_and_query,
        time_ms,
        nonce,
        body: Hash(*blake3::hash(body).as_bytes()),
    }))
}

/// A request's `Authorization` credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSignature {
    pub key: PublicKey,
    pub time_ms: u64,
    pub nonce: u64,
    pub signature: Signature,
}

/// Why an `Authorization` header is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the scheme is not {SCHEME}")]
    Scheme,
    #[error("expected key=<hex>,time=<ms>,nonce=<hex>,signature=<hex>, in that order")]
    Shape,
    #[error("{0} is not well formed")]
    Field(&'static str),
}

impl RequestSignature {
    /// Signs a request as `key` at `time_ms`, with a fresh random nonce.
    pub fn sign(
        key: &KeyPair,
        chain_id: &str,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        time_ms: u64,
    ) -> RequestSignature {
        let nonce = rand::random();
        let digest = signing_hash(chain_id, method, path_and_query, time_ms, nonce, body);
        RequestSignature {
            key: key.public(),
            time_ms,
            nonce,
            signature: key.sign(&digest),
        }
    }

    /// Whether the signature is the key's over this request.
    pub fn verify(&self, chain_id: &str, method: &str, path_and_query: &str, body: &[u8]) -> bool {
        let digest = signing_hash(
            chain_id,
            method,
            path_and_query,
            self.time_ms,
            self.nonce,
            body,
        );
        self.key.verify(&digest, &self.signature).is_ok()
    }

    /// The `Authorization` header's value.
    pub fn header_value(&self) -> String {
        format!(
            "{SCHEME} key={},time={},nonce={:016x},signature={}",
            self.key, self.time_ms, self.nonce, self.signature
        )
    }

    /// Reads an `Authorization` header's value, exactly as
    /// [`RequestSignature::header_value`] writes it.
    pub fn parse(value: &str) -> Result<RequestSignature, HeaderError> {
        let fields = value
            .strip_prefix(SCHEME)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or(HeaderError::Scheme)?;
        let mut fields = fields.split(',');
        let mut field = |name: &'static str| {
            fields
                .next()
                .and_then(|f| f.strip_prefix(name))
                .and_then(|f| f.strip_prefix('='))
                .ok_or(HeaderError::Shape)
        };
        let key = field("key")?;
        let time = field("time")?;
        let nonce = field("nonce")?;
        let signature = field("signature")?;
        if fields.next().is_some() {
            return Err(HeaderError::Shape);
        }
        let decimal = time.bytes().all(|b| b.is_ascii_digit());
        let hex16 = nonce.len() == 16 && nonce.bytes().all(|b| b.is_ascii_hexdigit());
        Ok(RequestSignature {
            key: key.parse().map_err(|_| HeaderError::Field("key"))?,
            time_ms: time
                .parse()
                .ok()
                .filter(|_| decimal)
                .ok_or(HeaderError::Field("time"))?,
            nonce: u64::from_str_radix(nonce, 16)
                .ok()
                .filter(|_| hex16)
                .ok_or(HeaderError::Field("nonce"))?,
            signature: signature
                .parse()
                .map_err(|_| HeaderError::Field("signature"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query request signed by a fixed key at time 1,000 ms.
    fn signed() -> RequestSignature {
        let key = KeyPair::from_seed([7; 32]);
        RequestSignature::sign(&key, "trellis-dev", "POST", PATH, b"{}", 1_000)
    }

    const PATH: &str = "/v1/contracts/00/query?x=1";

    #[test]
    fn a_signature_covers_chain_method_path_body_and_time() {
        let auth = signed();
        assert!(auth.verify("trellis-dev", "POST", PATH, b"{}"));
        assert!(!auth.verify("other-chain", "POST", PATH, b"{}"));
        assert!(!auth.verify("trellis-dev", "GET", PATH, b"{}"));
        assert!(!auth.verify("trellis-dev", "POST", "/v1/contracts/00/query?x=2", b"{}"));
        assert!(!auth.verify("trellis-dev", "POST", PATH, b"{ }"));
        let later = RequestSignature {
            time_ms: auth.time_ms + 1,
            ..auth.clone()
        };
        assert!(!later.verify("trellis-dev", "POST", PATH, b"{}"));
        let other_nonce = RequestSignature {
            nonce: auth.nonce ^ 1,
            ..auth
        };
        assert!(!other_nonce.verify("trellis-dev", "POST", PATH, b"{}"));
    }

    #[test]
    fn two_signatures_of_one_request_differ_by_their_nonce() {
        let (a, b) = (signed(), signed());
        assert_eq!((a.key, a.time_ms), (b.key, b.time_ms));
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.signature, b.signature);
    }

    #[test]
    fn the_header_reads_back_and_nothing_else_does() {
        let auth = signed();
        let value = auth.header_value();
        assert_eq!(RequestSignature::parse(&value), Ok(auth.clone()));
        assert_eq!(
            RequestSignature::parse(&value.replacen("Trellis", "Bearer", 1)),
            Err(HeaderError::Scheme)
        );
        assert_eq!(
            RequestSignature::parse(&format!("{value},extra=1")),
            Err(HeaderError::Shape)
        );
        assert_eq!(
            RequestSignature::parse(&value.replacen(",nonce=", ",n=", 1)),
            Err(HeaderError::Shape)
        );
        let field = |from: &str, to: &str| RequestSignature::parse(&value.replacen(from, to, 1));
        assert_eq!(field("key=", "key=zz"), Err(HeaderError::Field("key")));
        assert_eq!(field("time=", "time=+"), Err(HeaderError::Field("time")));
        assert_eq!(
            field(",nonce=", ",nonce=0"),
            Err(HeaderError::Field("nonce"))
        );
        assert_eq!(
            field(",signature=", ",signature=00"),
            Err(HeaderError::Field("signature"))
        );
    }
}
