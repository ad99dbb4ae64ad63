//! `vesta admin certs`: a certificate authority and the certificates of a cluster's processes, made
//! where they are used (tests, compose, a first deployment) — never committed.

use std::path::Path;

use vesta_tls::authority::{Authority, Validity};

/// The name of the CAs this command makes (and can therefore reuse).
const CA_NAME: &str = "Vesta cluster CA";

pub fn make(out: &Path, certs: &[String], days: i64) -> Result<(), String> {
    if days < 1 {
        return Err("--days must be at least 1".into());
    }
    let (ca_cert, ca_key) = (out.join("ca.crt"), out.join("ca.key"));
    let ca = if ca_cert.exists() && ca_key.exists() {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("read {}: {e}", p.display()));
        let ca = Authority::load(CA_NAME, &read(&ca_cert)?, &read(&ca_key)?)
            .map_err(|e| format!("{}: {e}", ca_cert.display()))?;
        println!("using the CA in {}", ca_cert.display());
        ca
    } else {
        let ca = Authority::new(CA_NAME).map_err(|e| e.to_string())?;
        ca.write(out).map_err(|e| e.to_string())?;
        println!("new CA: {} (keep {} secret)", ca_cert.display(), ca_key.display());
        ca
    };
    for spec in certs {
        let (name, sans) = spec.split_once('=').ok_or_else(|| format!("--cert {spec:?}: expected NAME=SAN[;SAN…]"))?;
        let sans: Vec<String> = sans.split(';').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
        if name.is_empty() || sans.is_empty() || name.contains('/') {
            return Err(format!("--cert {spec:?}: expected NAME=SAN[;SAN…] with a plain file name"));
        }
        let issued = ca.issue(name, &sans, Validity::Days(days)).map_err(|e| format!("{name}: {e}"))?;
        let (cert, key) = issued.write(out, name).map_err(|e| e.to_string())?;
        println!("{name}: {} {} for {}", cert.display(), key.display(), sans.join(", "));
    }
    Ok(())
}
