//! The Redis wire protocol as a client sees it: requests in ([`request`]) and replies out ([`reply`]).
//!
//! A crate of its own, without I/O, so that the parser can be fuzzed (`fuzz/`) and tested without
//! building the proxy.

pub mod reply;
pub mod request;

pub use reply::Reply;
pub use request::{parse_request, ParseError, RequestLimits, RequestParser};
