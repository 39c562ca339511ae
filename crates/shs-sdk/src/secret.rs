//! Secrets: the files of the folder `$SHS_SECRETS`, which holds the secrets a function names in
//! `secrets = [...]` of its `function.toml`.

use std::path::Path;

use crate::Error;

/// The value of secret `name`, read from `$SHS_SECRETS` (the folder holding the secrets the
/// function names in `secrets = [...]` of its `function.toml`). The error says which secret is
/// missing and how to name it; it never holds a value.
///
/// ```no_run
/// let token = shs_sdk::secret("api-token")?;
/// # Ok::<(), shs_sdk::Error>(())
/// ```
pub fn secret(name: &str) -> Result<String, Error> {
    let folder = std::env::var_os("SHS_SECRETS");
    read(folder.as_deref().map(Path::new), name)
}

/// [`secret`] from `folder` (`None`: the function has no secrets).
fn read(folder: Option<&Path>, name: &str) -> Result<String, Error> {
    let Some(folder) = folder.filter(|f| !f.as_os_str().is_empty()) else {
        return Err(Error::new(format!(
            "no secrets: name them in function.toml, e.g. secrets = [{name:?}]"
        )));
    };
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(Error::new(format!("{name:?} is not a secret name")));
    }
    match std::fs::read(folder.join(name)) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| Error::new(format!("secret {name:?} is not UTF-8 text"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::new(format!(
            "no secret {name:?}: name it in secrets = [...] of function.toml"
        ))),
        Err(e) => Err(Error::new(format!("cannot read secret {name:?}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::read;

    #[test]
    fn a_secret_is_read_from_its_folder_and_a_missing_one_is_named() {
        let dir = std::env::temp_dir().join(format!("shs-sdk-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("folder");
        std::fs::write(dir.join("api-token"), "s3cret").expect("write");
        assert_eq!(
            read(Some(&dir), "api-token").ok().as_deref(),
            Some("s3cret")
        );
        let missing = read(Some(&dir), "other").expect_err("missing");
        assert!(
            missing.message().contains("no secret \"other\""),
            "{missing:?}"
        );
        let path = read(Some(&dir), "../api-token").expect_err("a path");
        assert!(path.message().contains("not a secret name"));
        let none = read(None, "api-token").expect_err("no folder");
        assert!(none.message().contains("secrets = [\"api-token\"]"));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
