//! Where a configuration comes from: a file, a text, or the built-in defaults.

use std::path::{Path, PathBuf};

use crate::{Config, ConfigError, ValidatedConfig, BUILTIN_NAME};

/// A configuration document and the directory its relative paths are resolved against.
#[derive(Debug, Clone)]
pub struct Source {
    pub(crate) name: String,
    pub(crate) text: String,
    pub(crate) base_dir: PathBuf,
}

impl Source {
    /// Reads `path`; relative paths inside it are relative to the file's directory.
    pub fn read(path: &Path) -> Result<Source, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: name.clone(),
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base_dir = std::path::absolute(&parent).unwrap_or(parent);
        Ok(Source {
            name,
            text,
            base_dir,
        })
    }

    /// A document held in memory (`name` is used in error messages).
    pub fn new(name: impl Into<String>, text: impl Into<String>, base_dir: PathBuf) -> Source {
        Source {
            name: name.into(),
            text: text.into(),
            base_dir,
        }
    }

    /// No file at all: every default, relative paths resolved against `cwd`.
    pub fn builtin(cwd: PathBuf) -> Source {
        Source::new(BUILTIN_NAME, "", cwd)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// Parses and validates.
    pub fn load(&self) -> Result<ValidatedConfig, ConfigError> {
        Config::parse(self)?.validate(self)
    }
}
