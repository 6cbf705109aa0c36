//! Properties of the canonical encoding: every transaction round-trips, and
//! every other byte string for it (extended, re-versioned, truncated, or with
//! an over-long varint anywhere postcard writes one) is refused; blocks,
//! votes, certificates and receipts round-trip to the same bytes and refuse
//! extended or truncated ones.
//!
//! A failure prints the minimal input and proptest records its seed under
//! `proptest-regressions/`, from where the next run replays it first.

use proptest::prelude::*;
use trellis_types::codec::{ENCODING_VERSION, decode_prefix};
use trellis_types::{
    Address, Block, Bytes, CodecError, Event, EventSource, ExecError, Hash, Header, PublicKey,
    QuorumCertificate, Receipt, ReceiptStatus, Signature, SignedTransaction, Transaction, Vote,
    VoteData, VoteKind, decode, encode,
};
use trellis_types::{Change, Payload, Role, SystemOp};

const CASES: u32 = 512;

fn bytes32() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn public_key() -> impl Strategy<Value = PublicKey> {
    bytes32().prop_map(PublicKey)
}

fn signature() -> impl Strategy<Value = Signature> {
    (bytes32(), bytes32()).prop_map(|(r, s)| {
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r);
        sig[32..].copy_from_slice(&s);
        Signature(sig)
    })
}

/// Lengths straddle the one-byte/two-byte varint boundary at 128.
fn blob() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..8),
        prop::collection::vec(any::<u8>(), 120..300),
    ]
    .prop_map(Bytes)
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z_]{0,12}", "\\PC{100,200}"]
}

/// u64s of every varint length, with the edges of each length well represented.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (0u32..64).prop_map(|bits| 1u64 << bits),
        (1u32..64).prop_map(|bits| (1u64 << bits) - 1),
        0u64..300,
        Just(u64::MAX),
    ]
}

fn system_op() -> impl Strategy<Value = SystemOp> {
    prop_oneof![
        (public_key(), any::<bool>())
            .prop_map(|(key, org_admin)| SystemOp::AddKey { key, org_admin }),
        public_key().prop_map(|key| SystemOp::RemoveKey { key }),
        blob().prop_map(|data| SystemOp::Remark { data }),
        (change(), number()).prop_map(|(change, expires_at_ms)| SystemOp::Propose {
            change,
            expires_at_ms
        }),
        bytes32().prop_map(|id| SystemOp::Approve { proposal: Hash(id) }),
    ]
}

fn roles() -> impl Strategy<Value = Vec<Role>> {
    prop::collection::vec(prop::sample::select(Role::ALL.to_vec()), 0..6)
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (text(), text(), roles(), public_key()).prop_map(|(id, name, roles, admin_key)| {
            Change::AddOrganisation {
                id,
                name,
                roles,
                admin_key,
            }
        }),
        (text(), roles()).prop_map(|(org, roles)| Change::SetRoles { org, roles }),
        (bytes32(), blob()).prop_map(|(c, code)| Change::UpgradeContract {
            contract: Address(c),
            code
        }),
        (text(), public_key(), any::<bool>()).prop_map(|(org, key, org_admin)| {
            Change::AddAccount {
                org,
                key,
                org_admin,
            }
        }),
        public_key().prop_map(|key| Change::RemoveAccount { key }),
    ]
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        (bytes32(), text(), blob()).prop_map(|(c, method, args)| Payload::Call {
            contract: Address(c),
            method,
            args
        }),
        (blob(), bytes32()).prop_map(|(code, salt)| Payload::Deploy {
            code,
            salt: Hash(salt)
        }),
        system_op().prop_map(Payload::System),
    ]
}

fn transaction() -> impl Strategy<Value = Transaction> {
    (text(), public_key(), number(), number(), payload()).prop_map(
        |(chain_id, sender, nonce, expires_at_ms, payload)| Transaction {
            chain_id,
            sender,
            nonce,
            expires_at_ms,
            payload,
        },
    )
}

fn signed_transaction() -> impl Strategy<Value = SignedTransaction> {
    (transaction(), signature()).prop_map(|(tx, signature)| SignedTransaction { tx, signature })
}

/// postcard's varint: seven bits a byte, low first, high bit set on all but the last.
fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// The same value with `extra` redundant zero groups: a second, longer form.
fn over_long(v: u64, extra: usize) -> Vec<u8> {
    let mut out = varint(v);
    for _ in 0..extra {
        *out.last_mut().expect("a varint has a byte") |= 0x80;
        out.push(0);
    }
    out
}

/// The body of `value`'s canonical encoding, without the version byte.
fn body<T: serde::Serialize>(value: &T) -> Vec<u8> {
    encode(value)[1..].to_vec()
}

/// Which varint of a transaction's encoding to write over-long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    ChainIdLength,
    Nonce,
    ExpiresAt,
    PayloadVariant,
}

/// Encodes `tx` field by field, as postcard lays out a struct, writing `field`
/// with `extra` redundant varint groups (`extra == 0` gives the canonical form).
fn hand_encode(tx: &Transaction, field: Field, extra: usize) -> Vec<u8> {
    let write = |f: Field, v: u64| {
        if f == field {
            over_long(v, extra)
        } else {
            varint(v)
        }
    };
    let mut out = vec![ENCODING_VERSION];
    out.extend(write(Field::ChainIdLength, tx.chain_id.len() as u64));
    out.extend(tx.chain_id.as_bytes());
    out.extend(tx.sender.0);
    out.extend(write(Field::Nonce, tx.nonce));
    out.extend(write(Field::ExpiresAt, tx.expires_at_ms));
    let payload = body(&tx.payload);
    let variant: u64 = match tx.payload {
        Payload::Call { .. } => 0,
        Payload::Deploy { .. } => 1,
        Payload::System(_) => 2,
    };
    assert_eq!(
        payload[0] as u64, variant,
        "a payload starts with its one-byte variant index"
    );
    out.extend(write(Field::PayloadVariant, variant));
    out.extend(&payload[1..]);
    out
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        Just(Field::ChainIdLength),
        Just(Field::Nonce),
        Just(Field::ExpiresAt),
        Just(Field::PayloadVariant)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn transactions_round_trip_through_the_encoding(tx in transaction()) {
        let bytes = encode(&tx);
        prop_assert_eq!(bytes[0], ENCODING_VERSION);
        prop_assert_eq!(decode::<Transaction>(&bytes), Ok(tx.clone()));
        prop_assert_eq!(encode(&decode::<Transaction>(&bytes).unwrap()), bytes);
    }

    #[test]
    fn signed_transactions_round_trip_and_keep_their_hash(stx in signed_transaction()) {
        let bytes = encode(&stx);
        let back: SignedTransaction = decode(&bytes).unwrap();
        prop_assert_eq!(back.hash(), stx.hash());
        prop_assert_eq!(back, stx);
    }

    #[test]
    fn the_encoding_is_laid_out_field_by_field(tx in transaction()) {
        prop_assert_eq!(hand_encode(&tx, Field::Nonce, 0), encode(&tx));
    }

    #[test]
    fn any_bytes_after_the_value_are_refused(stx in signed_transaction(), extra in prop::collection::vec(any::<u8>(), 1..40)) {
        let mut bytes = encode(&stx);
        bytes.extend(&extra);
        prop_assert_eq!(decode::<SignedTransaction>(&bytes), Err(CodecError::TrailingBytes(extra.len())));
    }

    #[test]
    fn a_value_decodes_from_the_start_of_a_longer_encoding(stx in signed_transaction(), extra in prop::collection::vec(any::<u8>(), 0..40)) {
        let mut bytes = encode(&stx);
        bytes.extend(&extra);
        let (value, rest) = decode_prefix::<SignedTransaction>(&bytes).unwrap();
        prop_assert_eq!(value, stx);
        prop_assert_eq!(rest, &extra[..]);
    }

    #[test]
    fn any_other_version_byte_is_refused(stx in signed_transaction(), version in any::<u8>()) {
        prop_assume!(version != ENCODING_VERSION);
        let mut bytes = encode(&stx);
        bytes[0] = version;
        prop_assert_eq!(decode::<SignedTransaction>(&bytes), Err(CodecError::Version { found: version }));
    }

    #[test]
    fn every_truncation_is_refused(stx in signed_transaction(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&stx);
        let len = cut.index(bytes.len());
        let result = decode::<SignedTransaction>(&bytes[..len]);
        prop_assert!(result.is_err(), "{} of {} bytes decoded", len, bytes.len());
        if len == 0 {
            prop_assert_eq!(result, Err(CodecError::Empty));
        }
    }

    #[test]
    fn an_over_long_varint_is_refused_as_non_canonical(tx in transaction(), field in field(), extra in 1usize..10) {
        let value = match field {
            Field::ChainIdLength => tx.chain_id.len() as u64,
            Field::Nonce => tx.nonce,
            Field::ExpiresAt => tx.expires_at_ms,
            Field::PayloadVariant => 0, // only its length matters below: one byte
        };
        // postcard reads at most 10 bytes for a u64/usize and 5 for a u32 variant index;
        // longer still is refused too, as malformed rather than non-canonical.
        let max = if matches!(field, Field::PayloadVariant) { 5 } else { 10 };
        let len = varint(value).len();
        let bytes = hand_encode(&tx, field, extra);
        let result = decode::<Transaction>(&bytes);
        // A value read from the start of a longer encoding is held to the same rules.
        prop_assert_eq!(decode_prefix::<Transaction>(&bytes).err(), result.clone().err());
        if len + extra <= max {
            prop_assert_eq!(result, Err(CodecError::NonCanonical), "{:?} with {} extra bytes", field, extra);
        } else {
            prop_assert!(matches!(result, Err(CodecError::Malformed(_))), "{:?}: {:?}", field, result);
        }
        // Signed or not, the same bytes are refused.
        let mut signed = bytes;
        signed.extend([0u8; 64]);
        prop_assert!(decode::<SignedTransaction>(&signed).is_err());
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics_and_accepts_only_canonical_forms(
        body in prop::collection::vec(any::<u8>(), 0..400),
        versioned in any::<bool>(),
    ) {
        let mut bytes = if versioned { vec![ENCODING_VERSION] } else { Vec::new() };
        bytes.extend(&body);
        if let Ok(stx) = decode::<SignedTransaction>(&bytes) {
            prop_assert_eq!(encode(&stx), bytes.clone());
        }
        if let Ok(tx) = decode::<Transaction>(&bytes) {
            prop_assert_eq!(encode(&tx), bytes.clone());
        }
        if let Ok(block) = decode::<Block>(&bytes) {
            prop_assert_eq!(encode(&block), bytes.clone());
        }
        if let Ok(receipt) = decode::<Receipt>(&bytes) {
            prop_assert_eq!(encode(&receipt), bytes.clone());
        }
    }

    #[test]
    fn a_mutated_transaction_never_panics_and_never_decodes_to_another_encoding(
        stx in signed_transaction(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encode(&stx);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(back) = decode::<SignedTransaction>(&bytes) {
            prop_assert_eq!(encode(&back), bytes);
        }
    }
}

// ---------------------------------------------------------------------------
// Every other hashed or signed type: headers and blocks (the header hash is
// the block id), votes (signed), commit certificates (carried in blocks) and
// receipts (their root is in the header).

fn hash() -> impl Strategy<Value = Hash> {
    bytes32().prop_map(Hash)
}

fn header() -> impl Strategy<Value = Header> {
    (
        text(),
        (number(), number(), number()),
        (hash(), hash(), hash(), hash(), hash()),
        public_key(),
    )
        .prop_map(
            |(
                chain_id,
                (height, round, timestamp_ms),
                (parent, tx_root, parent_commit_hash, receipts_root, state_root),
                proposer,
            )| Header {
                chain_id,
                height,
                round,
                parent,
                tx_root,
                parent_commit_hash,
                receipts_root,
                state_root,
                timestamp_ms,
                proposer,
            },
        )
}

fn certificate() -> impl Strategy<Value = QuorumCertificate> {
    (
        number(),
        number(),
        hash(),
        prop::collection::vec((public_key(), signature()), 0..5),
    )
        .prop_map(|(height, round, block, votes)| QuorumCertificate {
            height,
            round,
            block,
            votes,
        })
}

fn block() -> impl Strategy<Value = Block> {
    (
        header(),
        certificate(),
        prop::collection::vec(signed_transaction(), 0..4),
    )
        .prop_map(|(header, parent_commit, txs)| Block {
            header,
            parent_commit,
            txs,
        })
}

fn vote() -> impl Strategy<Value = Vote> {
    (
        text(),
        number(),
        number(),
        prop_oneof![Just(VoteKind::Prevote), Just(VoteKind::Precommit)],
        prop::option::of(hash()),
        public_key(),
        signature(),
    )
        .prop_map(
            |(chain_id, height, round, kind, block, voter, signature)| Vote {
                data: VoteData {
                    chain_id,
                    height,
                    round,
                    kind,
                    block,
                },
                voter,
                signature,
            },
        )
}

fn receipt() -> impl Strategy<Value = Receipt> {
    let event = (
        prop_oneof![
            Just(EventSource::System),
            bytes32().prop_map(|a| EventSource::Contract(Address(a)))
        ],
        text(),
        prop::collection::vec((text(), text()), 0..4),
    )
        .prop_map(|(source, kind, attributes)| Event {
            source,
            kind,
            attributes,
        });
    (
        hash(),
        prop::option::of((text(), text())),
        number(),
        prop::collection::vec(event, 0..4),
    )
        .prop_map(|(tx, error, fuel_used, events)| Receipt {
            tx,
            status: match error {
                None => ReceiptStatus::Success,
                Some(_) => ReceiptStatus::Failed,
            },
            error: error.map(|(code, message)| ExecError { code, message }),
            fuel_used,
            events,
        })
}

/// One value's bytes are its only encoding: it round-trips to the same
/// bytes, and the same bytes with more after them, or cut short, are refused.
fn only_encoding<T>(value: &T, extra: &[u8], cut: prop::sample::Index) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = encode(value);
    let back: T = decode(&bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(&back, value);
    prop_assert_eq!(encode(&back), bytes.clone());
    let mut longer = bytes.clone();
    longer.extend_from_slice(extra);
    prop_assert_eq!(
        decode::<T>(&longer),
        Err(CodecError::TrailingBytes(extra.len()))
    );
    let len = cut.index(bytes.len());
    prop_assert!(
        decode::<T>(&bytes[..len]).is_err(),
        "{} of {} bytes decoded",
        len,
        bytes.len()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn blocks_have_one_encoding_and_keep_their_hash(
        b in block(),
        extra in prop::collection::vec(any::<u8>(), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        only_encoding(&b, &extra, cut)?;
        prop_assert_eq!(decode::<Block>(&encode(&b)).unwrap().hash(), b.hash());
        // Sized first, the same bytes, in a buffer of exactly their length.
        let sized = trellis_types::codec::encode_sized(&b);
        prop_assert_eq!(&sized, &encode(&b));
        prop_assert_eq!(sized.capacity(), sized.len());
    }

    #[test]
    fn a_blocks_header_decodes_from_the_start_of_the_block(b in block()) {
        let bytes = encode(&b);
        let (header, _) = decode_prefix::<Header>(&bytes).unwrap();
        prop_assert_eq!(header.hash(), b.hash());
    }

    #[test]
    fn votes_have_one_encoding_and_keep_their_signing_hash(
        v in vote(),
        extra in prop::collection::vec(any::<u8>(), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        only_encoding(&v, &extra, cut)?;
        prop_assert_eq!(
            decode::<Vote>(&encode(&v)).unwrap().data.signing_hash(),
            v.data.signing_hash()
        );
    }

    #[test]
    fn certificates_have_one_encoding(
        qc in certificate(),
        extra in prop::collection::vec(any::<u8>(), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        only_encoding(&qc, &extra, cut)?;
    }

    #[test]
    fn receipts_have_one_encoding_and_keep_their_hash(
        r in receipt(),
        extra in prop::collection::vec(any::<u8>(), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        only_encoding(&r, &extra, cut)?;
        prop_assert_eq!(decode::<Receipt>(&encode(&r)).unwrap().hash(), r.hash());
    }
}
