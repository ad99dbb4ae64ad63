//! The Redis wire protocol as a client sees it: requests in ([`request`]) and replies out ([`reply`]).

pub mod reply;
pub mod request;

pub use reply::Reply;
pub use request::{parse_request, ParseError, RequestLimits};
