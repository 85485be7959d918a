//! Secret values: written in the file as `env:NAME` or `file:/path` so they need not sit in clear text.

use std::fmt;

/// A resolved secret. Its `Debug` never shows the value, so a config dump or a log line cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Resolves `env:NAME`, `file:/path` (trailing newline trimmed) or a literal value.
pub fn resolve_secret(raw: &str) -> Result<Secret, String> {
    if let Some(name) = raw.strip_prefix("env:") {
        return match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok(Secret(v)),
            Ok(_) => Err(format!("environment variable `{name}` is empty")),
            Err(_) => Err(format!("environment variable `{name}` is not set")),
        };
    }
    if let Some(path) = raw.strip_prefix("file:") {
        return std::fs::read_to_string(path)
            .map(|v| Secret(v.trim_end_matches(['\n', '\r']).to_string()))
            .map_err(|e| format!("cannot read secret file `{path}`: {e}"));
    }
    Ok(Secret(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_value() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }

    #[test]
    fn resolves_env_and_file_and_literal() {
        std::env::set_var("PASSERELLE_TEST_SECRET_X", "from-env");
        assert_eq!(
            resolve_secret("env:PASSERELLE_TEST_SECRET_X")
                .unwrap()
                .expose(),
            "from-env"
        );
        assert!(resolve_secret("env:PASSERELLE_SURELY_UNSET_VAR")
            .unwrap_err()
            .contains("not set"));
        let dir = std::env::temp_dir().join(format!("passerelle-secret-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").unwrap();
        assert_eq!(
            resolve_secret(&format!("file:{}", dir.display()))
                .unwrap()
                .expose(),
            "from-file"
        );
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(resolve_secret("plain").unwrap().expose(), "plain");
    }
}
