//! Attachment files on disk, named by the SHA-256 of their content (so the same file uploaded
//! twice is stored once, and a name never reaches the file system).

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::AppError;
use crate::store::{AttachmentRecord, Store};

pub async fn save(
    store: &Store,
    dir: &Path,
    followup_id: i64,
    name: &str,
    content_type: &str,
    bytes: &[u8],
    actor: &str,
) -> Result<AttachmentRecord, AppError> {
    let sha = hex::encode(Sha256::digest(bytes));
    tokio::fs::create_dir_all(dir).await.map_err(|e| {
        AppError::Internal(anyhow::anyhow!("attachments folder {}: {e}", dir.display()))
    })?;
    let path = dir.join(&sha);
    if tokio::fs::metadata(&path).await.is_err() {
        // Write then rename, so a crash never leaves a half-written file under the final name.
        let partial = dir.join(format!("{sha}.partial"));
        tokio::fs::write(&partial, bytes).await.map_err(|e| {
            AppError::Internal(anyhow::anyhow!("writing {}: {e}", partial.display()))
        })?;
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(|e| AppError::Internal(anyhow::anyhow!("storing {}: {e}", path.display())))?;
    }
    Ok(store
        .insert_attachment(
            followup_id,
            name,
            content_type,
            bytes.len() as i64,
            &sha,
            actor,
        )
        .await?)
}

pub async fn load(dir: &Path, sha256: &str) -> Result<Vec<u8>, AppError> {
    if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(AppError::NotFound("attachment".into()));
    }
    tokio::fs::read(dir.join(sha256)).await.map_err(|e| {
        AppError::Internal(anyhow::anyhow!(
            "attachment {sha256} is missing from {}: {e}",
            dir.display()
        ))
    })
}
