//! The canonical byte encoding of everything hashed, signed, stored or sent.
//!
//! An encoding is one version byte followed by the postcard serialisation of
//! the value. Decoding accepts exactly what [`encode`] produces: the version
//! must match, nothing may trail the value, and the bytes must re-encode to
//! themselves, which rules out over-long varints and any other second form of
//! the same value. Types that go through here use no floats and no hash maps.

#![no_std]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use serde::{Serialize, de::DeserializeOwned};

/// Version byte in front of every encoding; bumped when any encoded type changes shape.
pub const ENCODING_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    Empty,
    Version { found: u8 },
    Malformed(String),
    TrailingBytes(usize),
    NonCanonical,
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Empty => f.write_str("empty input"),
            CodecError::Version { found } => {
                write!(
                    f,
                    "unsupported encoding version {found} (expected {ENCODING_VERSION})"
                )
            }
            CodecError::Malformed(m) => write!(f, "malformed encoding: {m}"),
            CodecError::TrailingBytes(n) => write!(f, "{n} trailing bytes after the value"),
            CodecError::NonCanonical => f.write_str("non-canonical encoding"),
        }
    }
}

impl core::error::Error for CodecError {}

/// Encodes `value` canonically.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Writing into a Vec cannot fail, and our types contain nothing postcard refuses
    // (no unsized sequences, no floats), so an error here is a programming bug.
    postcard::to_extend(value, vec![ENCODING_VERSION]).expect("canonical types always serialise")
}

/// [`encode`] into a buffer of the exact size, measured by a first pass
/// over `value`: for values of megabytes, which a growing buffer would
/// copy several times and leave behind in pieces of every size.
pub fn encode_sized<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let size = postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .expect("canonical types always serialise");
    let mut out = Vec::with_capacity(1 + size);
    out.push(ENCODING_VERSION);
    postcard::to_extend(value, out).expect("canonical types always serialise")
}

/// Decodes bytes produced by [`encode`], rejecting every other form.
// Not written in terms of `decode_prefix`: contracts are built with this
// function, and their committed, reproducible code (and with it the genesis
// hash and contract addresses) should not move for a change of form alone.
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != ENCODING_VERSION {
        return Err(CodecError::Version { found: version });
    }
    let (value, rest): (T, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes(rest.len()));
    }
    match postcard::serialize_with_flavor(&value, Matches { expected: body }) {
        Ok(true) => Ok(value),
        _ => Err(CodecError::NonCanonical),
    }
}

/// Decodes a value from the start of the encoding of a larger one whose
/// first field it is (a block's header from the start of a block), with
/// [`decode`]'s checks on the value itself; gives the value and the bytes
/// after it.
pub fn decode_prefix<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, &[u8]), CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != ENCODING_VERSION {
        return Err(CodecError::Version { found: version });
    }
    let (value, rest): (T, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| CodecError::Malformed(e.to_string()))?;
    let expected = &body[..body.len() - rest.len()];
    match postcard::serialize_with_flavor(&value, Matches { expected }) {
        Ok(true) => Ok((value, rest)),
        _ => Err(CodecError::NonCanonical),
    }
}

/// A postcard output that compares what is written with `expected` instead
/// of keeping it: the canonical check re-encodes every decoded value, without
/// allocating for it. Gives whether the whole of `expected` was written.
struct Matches<'a> {
    expected: &'a [u8],
}

impl postcard::ser_flavors::Flavor for Matches<'_> {
    type Output = bool;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        match self.expected.strip_prefix(data) {
            Some(rest) => {
                self.expected = rest;
                Ok(())
            }
            // Any error stops the encoding; `decode` reports it as non-canonical.
            None => Err(postcard::Error::SerializeBufferFull),
        }
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        match self.expected.split_first() {
            Some((&first, rest)) if first == data => {
                self.expected = rest;
                Ok(())
            }
            _ => Err(postcard::Error::SerializeBufferFull),
        }
    }

    fn finalize(self) -> postcard::Result<bool> {
        Ok(self.expected.is_empty())
    }
}
