//! What a process is told about TLS, named as Redis names it where Redis has the setting.

use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

use crate::TlsError;

/// A certificate chain, its key, and the CA that peers' certificates must chain to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM: this process's certificate chain, leaf first (Redis's `tls-cert-file`).
    pub cert_file: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1) (`tls-key-file`).
    pub key_file: PathBuf,
    /// PEM: the CA certificates peers are verified against (`tls-ca-cert-file`).
    pub ca_file: Option<PathBuf>,
}

impl TlsFiles {
    pub(crate) fn paths(&self) -> Vec<PathBuf> {
        let mut p = vec![self.cert_file.clone(), self.key_file.clone()];
        p.extend(self.ca_file.clone());
        p
    }
}

/// The cluster's own hops (proxy ↔ store node, admin ↔ store node, store ↔ store, site ↔ site): always
/// mutual — each side presents a certificate and verifies the other's against the cluster CA.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
}

impl InternalTls {
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            ca_file: Some(self.ca_file.clone()),
        }
    }
}

/// Redis's `tls-auth-clients`: whether a client must present a certificate the CA signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// A client without a valid certificate is refused (Redis's default).
    #[default]
    Yes,
    No,
    /// A certificate is verified if given; none is accepted too.
    Optional,
}

impl FromStr for ClientAuth {
    type Err = TlsError;
    fn from_str(s: &str) -> Result<Self, TlsError> {
        match s.to_ascii_lowercase().as_str() {
            "yes" | "true" => Ok(ClientAuth::Yes),
            "no" | "false" => Ok(ClientAuth::No),
            "optional" => Ok(ClientAuth::Optional),
            _ => Err(TlsError::ClientAuth(s.to_string())),
        }
    }
}

impl<'de> Deserialize<'de> for ClientAuth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(ClientAuth::Yes),
            Raw::Bool(false) => Ok(ClientAuth::No),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Redis's `tls-protocols`: `"TLSv1.2 TLSv1.3"` (the default: both). TLS 1.0 and 1.1 are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocols {
    pub tls12: bool,
    pub tls13: bool,
}

impl Default for Protocols {
    fn default() -> Self {
        Protocols { tls12: true, tls13: true }
    }
}

impl FromStr for Protocols {
    type Err = TlsError;
    fn from_str(s: &str) -> Result<Self, TlsError> {
        let mut p = Protocols { tls12: false, tls13: false };
        for word in s.split_whitespace() {
            match word.to_ascii_lowercase().as_str() {
                "tlsv1.2" => p.tls12 = true,
                "tlsv1.3" => p.tls13 = true,
                _ => return Err(TlsError::Protocols(s.to_string())),
            }
        }
        if !p.tls12 && !p.tls13 {
            return Err(TlsError::Protocols(s.to_string()));
        }
        Ok(p)
    }
}

impl<'de> Deserialize<'de> for Protocols {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Protocols {
    pub(crate) fn versions(&self) -> Vec<&'static rustls::SupportedProtocolVersion> {
        let mut v = Vec::new();
        if self.tls13 {
            v.push(&rustls::version::TLS13);
        }
        if self.tls12 {
            v.push(&rustls::version::TLS12);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_like_redis() {
        assert_eq!("TLSv1.2 TLSv1.3".parse::<Protocols>().unwrap(), Protocols::default());
        assert_eq!("tlsv1.3".parse::<Protocols>().unwrap(), Protocols { tls12: false, tls13: true });
        assert!("TLSv1.1 TLSv1.2".parse::<Protocols>().is_err(), "old protocols are refused, not ignored");
        assert!("".parse::<Protocols>().is_err());
    }

    #[test]
    fn client_auth_parses_redis_words() {
        assert_eq!("yes".parse::<ClientAuth>().unwrap(), ClientAuth::Yes);
        assert_eq!("optional".parse::<ClientAuth>().unwrap(), ClientAuth::Optional);
        assert_eq!("NO".parse::<ClientAuth>().unwrap(), ClientAuth::No);
        assert!("maybe".parse::<ClientAuth>().is_err());
    }
}
