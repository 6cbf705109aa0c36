//! The canonical byte encoding: see the `trellis-codec` crate, shared with contracts.

pub use trellis_codec::{
    CodecError, ENCODING_VERSION, decode, decode_prefix, encode, encode_sized,
};
