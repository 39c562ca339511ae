//! Secrets: the secrets folder (`--secrets-dir`, refused when its group or others may read it),
//! the private copy of the secrets a function names that its processes find at `SHS_SECRETS`,
//! and the key a `[webhook]` is checked with.
//!
//! A secret's value never enters an environment, a log line, an error message or anything
//! the HTTP API shows: errors name the secret, never its value.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::spec::{FunctionSpec, WebhookKind};

/// The longest secret name.
pub const MAX_SECRET_NAME: usize = 128;

/// Checks a secret name: 1 to 128 characters of A-Z, a-z, 0-9, `_`, `-` and `.`, not
/// starting with `.` (a file of the secrets folder, never a path).
pub fn validate_secret_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SECRET_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a secret name: 1 to {MAX_SECRET_NAME} characters of A-Z, a-z, 0-9, '_', '-' and '.', not starting with '.'",
            name.chars().take(80).collect::<String>()
        ))
    }
}

/// The secrets folder and where functions' private copies are made.
pub(crate) struct Secrets {
    /// The folder (absolute when it exists); it may not exist, then there are no secrets.
    dir: PathBuf,
    /// The parent of every private copy (mode 0711), removed with the supervisor.
    runtime: tempfile::TempDir,
}

/// Why the secrets folder cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the secrets folder {} (--secrets-dir): {reason}", dir.display())]
pub struct SecretsDirError {
    /// The folder.
    pub dir: PathBuf,
    /// What is wrong.
    pub reason: String,
}

impl Secrets {
    /// Checks `dir`: a folder neither its group nor others may read, write or enter (a
    /// missing folder means no secrets). Makes the parent of the private copies.
    pub(crate) fn open(dir: &Path) -> Result<Secrets, SecretsDirError> {
        let error = |reason: String| SecretsDirError {
            dir: dir.to_owned(),
            reason,
        };
        let dir = match fs::metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => dir.to_owned(),
            Err(e) => return Err(error(e.to_string())),
            Ok(meta) if !meta.is_dir() => return Err(error("not a folder".into())),
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(error(format!(
                        "its group or others may read it (mode {mode:04o}); run `chmod 700` on it"
                    )));
                }
                dir.canonicalize().map_err(|e| error(e.to_string()))?
            }
        };
        let runtime = tempfile::Builder::new()
            .prefix("shs-secrets-")
            .permissions(fs::Permissions::from_mode(0o711))
            .tempdir()
            .map_err(|e| error(format!("cannot make a private folder for functions: {e}")))?;
        Ok(Secrets { dir, runtime })
    }

    /// Removes every private copy and their parent (at shutdown, once the processes are
    /// gone; the process may exit without running destructors).
    pub(crate) fn close(&self) {
        if let Ok(entries) = fs::read_dir(self.runtime.path()) {
            for entry in entries.flatten() {
                let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o700));
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        let _ = fs::remove_dir(self.runtime.path());
    }

    /// The value of secret `name`: its file's contents less one trailing newline. The error
    /// names the secret, never a value.
    pub(crate) fn read(&self, name: &str) -> Result<Vec<u8>, String> {
        validate_secret_name(name)?;
        let path = self.dir.join(name);
        let meta = fs::metadata(&path)
            .map_err(|e| format!("secret {name:?}: cannot read {}: {e}", path.display()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "secret {name:?}: {} may be read by its group or others; run `chmod 600` on it",
                path.display()
            ));
        }
        let mut value = fs::read(&path)
            .map_err(|e| format!("secret {name:?}: cannot read {}: {e}", path.display()))?;
        if value.last() == Some(&b'\n') {
            value.pop();
            if value.last() == Some(&b'\r') {
                value.pop();
            }
        }
        Ok(value)
    }

    /// A private copy of the secrets `spec` names, for one deployment: a folder and files
    /// only the function's user may read. `None` when it names none.
    pub(crate) fn private_copy(&self, spec: &FunctionSpec) -> Result<Option<PrivateCopy>, String> {
        if spec.secrets.is_empty() {
            return Ok(None);
        }
        let values: Vec<(&str, Vec<u8>)> = spec
            .secrets
            .iter()
            .map(|name| self.read(name).map(|v| (name.as_str(), v)))
            .collect::<Result<_, _>>()?;
        let failed = |e: std::io::Error| format!("cannot make the secrets folder: {e}");
        let folder = tempfile::Builder::new()
            .prefix(&format!("{}-", spec.name))
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(self.runtime.path())
            .map_err(failed)?;
        let owner = spec.run_as.as_ref().map(|r| {
            (
                nix::unistd::Uid::from_raw(r.uid),
                nix::unistd::Gid::from_raw(r.gid),
            )
        });
        for (name, value) in values {
            let path = folder.path().join(name);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .open(&path)
                .map_err(failed)?;
            file.write_all(&value).map_err(failed)?;
            if let Some((uid, gid)) = owner {
                nix::unistd::chown(&path, Some(uid), Some(gid))
                    .map_err(|e| failed(std::io::Error::from(e)))?;
            }
        }
        if let Some((uid, gid)) = owner {
            nix::unistd::chown(folder.path(), Some(uid), Some(gid))
                .map_err(|e| failed(std::io::Error::from(e)))?;
        }
        fs::set_permissions(folder.path(), fs::Permissions::from_mode(0o500)).map_err(failed)?;
        Ok(Some(PrivateCopy { folder }))
    }

    /// The key of `spec`'s `[webhook]`, when it has one.
    pub(crate) fn webhook_key(&self, spec: &FunctionSpec) -> Result<Option<WebhookKey>, String> {
        let Some(webhook) = &spec.webhook else {
            return Ok(None);
        };
        let secret = self.read(&webhook.secret)?;
        if secret.is_empty() {
            return Err(format!("secret {:?} is empty", webhook.secret));
        }
        Ok(Some(WebhookKey {
            kind: webhook.kind,
            header: webhook.header.clone(),
            secret,
        }))
    }
}

/// One deployment's private copy of its secrets, removed when dropped.
pub(crate) struct PrivateCopy {
    folder: tempfile::TempDir,
}

impl PrivateCopy {
    /// The folder, `SHS_SECRETS`.
    pub(crate) fn path(&self) -> &Path {
        self.folder.path()
    }
}

impl Drop for PrivateCopy {
    fn drop(&mut self) {
        // Read-only: writable again so that its files can be removed.
        let _ = fs::set_permissions(self.folder.path(), fs::Permissions::from_mode(0o700));
    }
}

/// What a function's `[webhook]` is checked with: its kind, the header holding the signature,
/// and the secret. Its `Debug` leaves the secret out.
pub struct WebhookKey {
    /// Who signs the requests.
    pub kind: WebhookKind,
    /// The header holding the signature.
    pub header: String,
    secret: Vec<u8>,
}

impl WebhookKey {
    /// The shared secret the signature is made with.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
}

impl fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookKey")
            .field("kind", &self.kind)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}
