//! The Redis wire protocol as a client sees it: request parsing and reply encoding live in the
//! `vesta-resp` crate (fuzzed on its own); this module keeps the proxy's `crate::resp::…` paths.

pub use vesta_resp::{parse_request, ParseError, Reply, RequestLimits, RequestParser};
pub use vesta_resp::{reply, request};
