//! CLIENT TRACKING, TRACKINGINFO, GETREDIR, CACHING: Redis's server-assisted client-side caching
//! switches, with Redis's validation and replies. Vesta keeps each connection's tracking state (what
//! TRACKINGINFO and GETREDIR report) but **sends no invalidation messages**: a client that caches
//! values on the strength of tracking would never be told they changed. The compatibility notes say so.

use bytes::Bytes;

use super::{parse_i64, shown, syntax_error};
use crate::resp::Reply;

/// A connection's CLIENT TRACKING state (boxed in the session: most connections never turn it on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracking {
    /// The client invalidations would go to; 0: this connection.
    pub redirect: i64,
    pub bcast: bool,
    pub optin: bool,
    pub optout: bool,
    pub noloop: bool,
    /// CLIENT CACHING YES (OPTIN) or NO (OPTOUT) for the next command.
    pub caching: bool,
    /// BCAST prefixes, sorted (as Redis's radix tree lists them).
    pub prefixes: Vec<Bytes>,
}

/// A parsed `CLIENT TRACKING on|off [REDIRECT id] [BCAST] [PREFIX p …] [OPTIN] [OPTOUT] [NOLOOP]`.
#[derive(Debug, PartialEq, Eq)]
pub struct TrackingRequest {
    pub on: bool,
    pub redirect: i64,
    pub bcast: bool,
    pub optin: bool,
    pub optout: bool,
    pub noloop: bool,
    pub prefixes: Vec<Bytes>,
}

/// Parses CLIENT TRACKING's arguments (after `TRACKING`); `client_exists` answers whether a REDIRECT
/// target is connected (to this proxy).
pub fn parse(a: &[Bytes], client_exists: impl Fn(i64) -> bool) -> Result<TrackingRequest, Reply> {
    let mut r = TrackingRequest {
        on: false,
        redirect: 0,
        bcast: false,
        optin: false,
        optout: false,
        noloop: false,
        prefixes: Vec::new(),
    };
    let mut i = 1;
    while i < a.len() {
        let more = i + 1 < a.len();
        let opt = a[i].to_ascii_lowercase();
        match opt.as_slice() {
            b"redirect" if more => {
                i += 1;
                if r.redirect != 0 {
                    return Err(Reply::error("ERR A client can only redirect to a single other client"));
                }
                r.redirect = parse_i64(&a[i]).ok_or_else(super::not_an_integer)?;
                if !client_exists(r.redirect) {
                    return Err(Reply::error("ERR The client ID you want redirect to does not exist"));
                }
            }
            b"bcast" => r.bcast = true,
            b"optin" => r.optin = true,
            b"optout" => r.optout = true,
            b"noloop" => r.noloop = true,
            b"prefix" if more => {
                i += 1;
                r.prefixes.push(a[i].clone());
            }
            _ => return Err(syntax_error()),
        }
        i += 1;
    }
    r.on = match a[0].to_ascii_lowercase().as_slice() {
        b"on" => true,
        b"off" => false,
        _ => return Err(syntax_error()),
    };
    Ok(r)
}

/// Applies a parsed CLIENT TRACKING to the connection's state, with Redis's checks of the options
/// against each other and against the tracking already on.
pub fn apply(current: &mut Option<Box<Tracking>>, r: TrackingRequest) -> Reply {
    if !r.on {
        *current = None;
        return Reply::OK;
    }
    if !r.bcast && !r.prefixes.is_empty() {
        return Reply::error("ERR PREFIX option requires BCAST mode to be enabled");
    }
    if let Some(t) = current.as_deref() {
        if t.bcast != r.bcast {
            return Reply::error(
                "ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then \
                 re-enabling it with a different mode.",
            );
        }
    }
    if r.bcast && (r.optin || r.optout) {
        return Reply::error("ERR OPTIN and OPTOUT are not compatible with BCAST");
    }
    if r.optin && r.optout {
        return Reply::error("ERR You can't specify both OPTIN mode and OPTOUT mode");
    }
    if let Some(t) = current.as_deref() {
        if (r.optin && t.optout) || (r.optout && t.optin) {
            return Reply::error(
                "ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then \
                 re-enabling it with a different mode.",
            );
        }
    }
    if r.bcast {
        if let Err(e) = check_prefixes(current.as_deref().map_or(&[][..], |t| &t.prefixes[..]), &r.prefixes) {
            return e;
        }
    }
    // Like Redis, turning tracking on again adds to the options already set and to the prefixes.
    let t = current.get_or_insert_with(Default::default);
    t.redirect = r.redirect;
    t.bcast |= r.bcast;
    t.optin |= r.optin;
    t.optout |= r.optout;
    t.noloop |= r.noloop;
    for p in r.prefixes {
        if let Err(at) = t.prefixes.binary_search(&p) {
            t.prefixes.insert(at, p);
        }
    }
    // BCAST without a prefix tracks every key: Redis's empty prefix.
    if t.bcast && t.prefixes.is_empty() {
        t.prefixes.push(Bytes::new());
    }
    Reply::OK
}

/// Redis's rule: no prefix may be a prefix of another, among the new ones or against those already set.
fn check_prefixes(existing: &[Bytes], new: &[Bytes]) -> Result<(), Reply> {
    let overlap = |a: &Bytes, b: &Bytes| a.starts_with(b) || b.starts_with(a);
    for (i, p) in new.iter().enumerate() {
        if let Some(old) = existing.iter().find(|old| overlap(old, p)) {
            return Err(Reply::error(format!(
                "ERR Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single client must not overlap.",
                shown(p),
                shown(old)
            )));
        }
        if let Some(other) = new[i + 1..].iter().find(|other| overlap(p, other)) {
            return Err(Reply::error(format!(
                "ERR Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a single client must not overlap.",
                shown(p),
                shown(other)
            )));
        }
    }
    Ok(())
}

/// CLIENT CACHING yes|no.
pub fn caching(current: &mut Option<Box<Tracking>>, opt: &[u8]) -> Reply {
    let Some(t) = current.as_deref_mut() else {
        return Reply::error(
            "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode \
             enabled",
        );
    };
    if opt.eq_ignore_ascii_case(b"yes") {
        if !t.optin {
            return Reply::error("ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.");
        }
    } else if opt.eq_ignore_ascii_case(b"no") {
        if !t.optout {
            return Reply::error("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.");
        }
    } else {
        return syntax_error();
    }
    t.caching = true;
    Reply::OK
}

/// CLIENT GETREDIR: the redirect target, 0 for none, -1 while tracking is off.
pub fn getredir(current: &Option<Box<Tracking>>) -> Reply {
    Reply::Int(current.as_deref().map_or(-1, |t| t.redirect))
}

/// CLIENT TRACKINGINFO: flags, redirect, prefixes.
pub fn info(current: &Option<Box<Tracking>>) -> Reply {
    let mut flags = vec![Reply::bulk(if current.is_some() { "on" } else { "off" })];
    if let Some(t) = current.as_deref() {
        let flag = |on: bool, name: &'static str| on.then(|| Reply::bulk(name));
        flags.extend(
            [
                flag(t.bcast, "bcast"),
                flag(t.optin, "optin"),
                flag(t.optin && t.caching, "caching-yes"),
                flag(t.optout, "optout"),
                flag(t.optout && t.caching, "caching-no"),
                flag(t.noloop, "noloop"),
            ]
            .into_iter()
            .flatten(),
        );
    }
    let prefixes = current.as_deref().map_or(vec![], |t| t.prefixes.iter().cloned().map(Reply::Bulk).collect());
    Reply::Map(vec![
        (Reply::bulk("flags"), Reply::Set(flags)),
        (Reply::bulk("redirect"), getredir(current)),
        (Reply::bulk("prefixes"), Reply::Array(prefixes)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cmd::test_args as args;

    fn track(state: &mut Option<Box<Tracking>>, a: &[&str]) -> Reply {
        match parse(&args(a), |id| id == 7) {
            Ok(r) => apply(state, r),
            Err(e) => e,
        }
    }

    #[test]
    fn validates_like_redis() {
        let mut t = None;
        assert_eq!(track(&mut t, &["maybe"]), syntax_error());
        assert_eq!(track(&mut t, &["on", "bogus"]), syntax_error());
        assert_eq!(
            track(&mut t, &["on", "prefix", "a"]),
            Reply::error("ERR PREFIX option requires BCAST mode to be enabled")
        );
        assert_eq!(
            track(&mut t, &["on", "bcast", "optin"]),
            Reply::error("ERR OPTIN and OPTOUT are not compatible with BCAST")
        );
        assert_eq!(
            track(&mut t, &["on", "optin", "optout"]),
            Reply::error("ERR You can't specify both OPTIN mode and OPTOUT mode")
        );
        assert_eq!(
            track(&mut t, &["on", "redirect", "9"]),
            Reply::error("ERR The client ID you want redirect to does not exist")
        );
        assert_eq!(
            track(&mut t, &["on", "redirect", "x"]),
            Reply::error("ERR value is not an integer or out of range")
        );
        assert_eq!(
            track(&mut t, &["on", "bcast", "prefix", "ab", "prefix", "a"]),
            Reply::error(
                "ERR Prefix 'ab' overlaps with another provided prefix 'a'. Prefixes for a single client must not overlap."
            )
        );
        assert_eq!(t, None, "nothing was turned on by a refused command");
        assert_eq!(caching(&mut t, b"yes"), Reply::error(
            "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled"
        ));
        assert_eq!(getredir(&t), Reply::Int(-1));
    }

    #[test]
    fn state_and_trackinginfo() {
        let mut t = None;
        assert_eq!(track(&mut t, &["on", "redirect", "7", "optin", "noloop"]), Reply::OK);
        assert_eq!(getredir(&t), Reply::Int(7));
        assert_eq!(
            caching(&mut t, b"no"),
            Reply::error("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.")
        );
        assert_eq!(caching(&mut t, b"yes"), Reply::OK);
        let flags = ["on", "optin", "caching-yes", "noloop"].iter().map(|f| Reply::bulk(*f)).collect();
        assert_eq!(
            info(&t),
            Reply::Map(vec![
                (Reply::bulk("flags"), Reply::Set(flags)),
                (Reply::bulk("redirect"), Reply::Int(7)),
                (Reply::bulk("prefixes"), Reply::Array(vec![])),
            ])
        );
        assert_eq!(track(&mut t, &["on", "bcast"]), Reply::error(
            "ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode."
        ));
        assert_eq!(track(&mut t, &["off"]), Reply::OK);
        assert_eq!(t, None);
        assert_eq!(track(&mut t, &["on", "bcast", "prefix", "b", "prefix", "a"]), Reply::OK);
        assert_eq!(t.as_ref().map(|t| t.prefixes.clone()), Some(vec![Bytes::from("a"), Bytes::from("b")]));
        assert!(
            matches!(track(&mut t, &["on", "bcast", "prefix", "bc"]), Reply::Error(e) if e.contains("existing prefix 'b'"))
        );
    }
}
