//! Loading agenda templates from their folder.

use std::path::Path;

use crate::domain::agenda::{TemplateError, TemplateSet};

/// The shipped templates, used when the configured folder is the default and does not exist
/// (muster started outside its source tree).
const BUILT_IN: &[(&str, &str)] = &[
    (
        "agendas/coal-mine-resumption.toml",
        include_str!("../agendas/coal-mine-resumption.toml"),
    ),
    (
        "agendas/industry-trade-resumption.toml",
        include_str!("../agendas/industry-trade-resumption.toml"),
    ),
    (
        "agendas/non-coal-mine-resumption.toml",
        include_str!("../agendas/non-coal-mine-resumption.toml"),
    ),
    (
        "agendas/remote-safety-inspection.toml",
        include_str!("../agendas/remote-safety-inspection.toml"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum AgendasError {
    #[error("cannot read agenda templates in {dir}: {message}")]
    Folder { dir: String, message: String },
    #[error("{} invalid agenda template(s):\n{}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<TemplateError>),
}

/// Reads and validates every `*.toml` in `dir`.
pub fn load_dir(dir: &Path) -> Result<TemplateSet, AgendasError> {
    let folder_error = |message: String| AgendasError::Folder {
        dir: dir.display().to_string(),
        message,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| folder_error(e.to_string()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| folder_error(e.to_string()))?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| folder_error(format!("{}: {e}", path.display())))?;
            files.push((path.display().to_string(), text));
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(folder_error("no *.toml templates in it".into()));
    }
    TemplateSet::parse(&files).map_err(AgendasError::Invalid)
}

/// The templates muster serves: the configured folder, or the built-in ones when the default
/// folder is absent.
pub fn load(dir: &Path, is_default: bool) -> Result<TemplateSet, AgendasError> {
    if is_default && !dir.exists() {
        tracing::info!(
            "no {} folder here; using the built-in agenda templates",
            dir.display()
        );
        let files: Vec<(String, String)> = BUILT_IN
            .iter()
            .map(|(f, t)| (f.to_string(), t.to_string()))
            .collect();
        return TemplateSet::parse(&files).map_err(AgendasError::Invalid);
    }
    load_dir(dir)
}
