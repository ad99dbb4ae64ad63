//! `vesta admin keys add`: a new encryption key, appended to a key file under the next id (so it becomes
//! the current key of the proxies that load the file). The file is rewritten whole and readable by its
//! owner only; keys are made where they are used, never committed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use vesta_proxy::crypto::{parse, MasterKey};

pub fn add(file: &Path) -> Result<(), String> {
    let existing = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("read {}: {e}", file.display())),
    };
    let keys = parse(&existing).map_err(|e| format!("{}: {e}", file.display()))?;
    let id = keys.iter().map(|(id, _)| *id).max().unwrap_or(0) + 1;
    let mut text = existing;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&MasterKey::generate().entry(id));
    text.push('\n');
    let tmp = file.with_extension("tmp");
    let fail = |e: std::io::Error| format!("write {}: {e}", file.display());
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    std::fs::write(&tmp, text).map_err(fail)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    std::fs::rename(&tmp, file).map_err(fail)?;
    println!("encryption key {id} added to {} (the current key for proxies that load it from now on)", file.display());
    Ok(())
}
