//! A certificate authority made on the spot — for tests, `vesta dev --tls` and the compose cluster
//! (`vesta admin certs`). Keys are generated where they are used and never committed.
//!
//! Every certificate it issues is good for both ends of a connection (server and client
//! authentication), since the cluster's hops are mutual: a store node serves proxies and connects to
//! other store nodes with the same certificate.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};

use crate::TlsError;

/// How long what the authority issues is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From a day ago for `days` days.
    Days(i64),
    /// Valid once, expired now (for tests of refusal).
    Expired,
}

pub struct Authority {
    cert: Certificate,
    key: KeyPair,
}

/// A certificate and its private key, PEM-encoded.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Authority {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let cert = ca_params(name).self_signed(&key)?;
        Ok(Authority { cert, key })
    }

    /// The CA kept in `cert_pem` / `key_pem`, made by [`Authority::new`] under `name` (to issue more
    /// certificates from it later).
    ///
    /// The CA certificate is rebuilt from its name and key rather than parsed (the X.509 parser would
    /// add a tree of proc-macros to the build): what it then signs names the same subject and the same
    /// key identifier as the certificate on disk, so peers verify it against that file. The file is
    /// checked to hold this key and this name.
    pub fn load(name: &str, cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem)?;
        let on_disk = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| TlsError::Pem { path: "CA certificate".into(), reason: format!("{e:?}") })?;
        let holds = |needle: &[u8]| on_disk.windows(needle.len()).any(|w| w == needle);
        if !holds(key.public_key_raw()) || !holds(name.as_bytes()) {
            return Err(TlsError::Pem {
                path: "CA certificate".into(),
                reason: format!("it is not the CA {name:?} of this key"),
            });
        }
        let cert = ca_params(name).self_signed(&key)?;
        Ok(Authority { cert, key })
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate for `name`, valid for the host names and IP addresses in `sans`.
    pub fn issue(&self, name: &str, sans: &[String], validity: Validity) -> Result<Issued, TlsError> {
        let mut params = CertificateParams::new(sans.to_vec())?;
        params.distinguished_name = distinguished(name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        window(&mut params, validity);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Writes `ca.crt` and `ca.key` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
        let cert = write(dir, "ca.crt", &self.cert_pem(), false)?;
        let key = write(dir, "ca.key", &self.key_pem(), true)?;
        Ok((cert, key))
    }
}

impl Issued {
    /// Writes `<name>.crt` and `<name>.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), TlsError> {
        let cert = write(dir, &format!("{name}.crt"), &self.cert_pem, false)?;
        let key = write(dir, &format!("{name}.key"), &self.key_pem, true)?;
        Ok((cert, key))
    }
}

/// What a CA named `name` certifies about itself: the same every time, so that [`Authority::load`]
/// rebuilds the certificate it was made with. Valid ten years.
fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished(name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    window(&mut params, Validity::Days(3650));
    params
}

fn distinguished(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Vesta");
    dn.push(DnType::CommonName, name);
    dn
}

fn window(params: &mut CertificateParams, validity: Validity) {
    let now = OffsetDateTime::now_utc();
    let (from, to) = match validity {
        Validity::Days(days) => (now - Duration::days(1), now + Duration::days(days)),
        Validity::Expired => (now - Duration::days(30), now - Duration::days(1)),
    };
    params.not_before = from;
    params.not_after = to;
}

/// Writes a file whole, through a temporary name, so that a process reloading it never reads half of
/// it; keys are readable by their owner only.
fn write(dir: &Path, name: &str, text: &str, secret: bool) -> Result<PathBuf, TlsError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let fail = |source| TlsError::Write { path: path.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(fail)?;
    std::fs::write(&tmp, text).map_err(fail)?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    }
    std::fs::rename(&tmp, &path).map_err(fail)?;
    Ok(path)
}
