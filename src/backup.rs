//! Backup and restore: every record as JSON lines, and back.
//!
//! Both work on a data directory directly, so the server must be stopped
//! first (sled allows one process per directory; a running server's
//! directory is refused with a clear error). An export to a file is atomic:
//! it is written to a temporary file beside the target, fsynced, and renamed
//! over it, so a crash mid-export never leaves a half file in place of a
//! good one.

use std::{
    fs::{self, File},
    io::{BufRead, BufWriter, Write},
    path::Path,
};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::{
    domain::{
        AccountSid, CredentialSid, Field, FriendlyName, RecordingSettings, RecordingSettingsPatch,
        S3Url, Update,
    },
    store::Store,
};

/// One exported record: the resource's stored fields, plus the revision and
/// update time it had (informational: an import writes new ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedRecord {
    pub account_sid: String,
    pub friendly_name: Option<String>,
    pub aws_credentials_sid: Option<String>,
    pub aws_s3_url: Option<String>,
    pub aws_storage_enabled: bool,
    pub encryption_key_sid: Option<String>,
    pub encryption_enabled: bool,
    #[serde(default)]
    pub revision: u64,
    #[serde(default)]
    pub update_time: Option<String>,
}

impl From<&RecordingSettings> for ExportedRecord {
    fn from(s: &RecordingSettings) -> Self {
        ExportedRecord {
            account_sid: s.account_sid.as_str().to_owned(),
            friendly_name: s.friendly_name.as_ref().map(|v| v.as_str().to_owned()),
            aws_credentials_sid: s
                .aws_credentials_sid
                .as_ref()
                .map(|v| v.as_str().to_owned()),
            aws_s3_url: s.aws_s3_url.as_ref().map(|v| v.as_str().to_owned()),
            aws_storage_enabled: s.aws_storage_enabled,
            encryption_key_sid: s.encryption_key_sid.as_ref().map(|v| v.as_str().to_owned()),
            encryption_enabled: s.encryption_enabled,
            revision: s.revision,
            update_time: s
                .update_time
                .map(|t| prost_types::Timestamp::from(t).to_string()),
        }
    }
}

impl ExportedRecord {
    /// The Set that makes an account hold exactly this record: every field
    /// given, so the merge replaces whatever was stored.
    ///
    /// # Errors
    /// The first invalid field, named.
    pub fn into_patch(self) -> anyhow::Result<(AccountSid, RecordingSettingsPatch)> {
        let account = AccountSid::parse(&self.account_sid)?;
        let name = self
            .friendly_name
            .as_deref()
            .with_context(|| format!("{account}: friendly_name is missing"))?;
        let exact = |v: Option<String>, parse: &dyn Fn(&str) -> Result<_, _>| match v {
            None => Ok(Update::Clear),
            Some(v) => parse(&v).map(Update::Set),
        };
        let patch = RecordingSettingsPatch {
            friendly_name: FriendlyName::parse(name)?,
            aws_credentials_sid: exact(self.aws_credentials_sid, &|v| {
                CredentialSid::parse(Field::AwsCredentialsSid, v)
            })?,
            aws_s3_url: match self.aws_s3_url {
                None => Update::Clear,
                Some(v) => Update::Set(S3Url::parse(&v)?),
            },
            aws_storage_enabled: Some(self.aws_storage_enabled),
            encryption_key_sid: exact(self.encryption_key_sid, &|v| {
                CredentialSid::parse(Field::EncryptionKeySid, v)
            })?,
            encryption_enabled: Some(self.encryption_enabled),
        };
        Ok((account, patch))
    }
}

/// Writes every record of `store` as JSON lines to `out` (a file, replaced
/// atomically) or to stdout. Returns how many records were written.
///
/// # Errors
/// An undecodable record (naming its account) or an I/O failure; a target
/// file is then left as it was.
pub fn export(store: &Store, out: Option<&Path>) -> anyhow::Result<usize> {
    match out {
        None => {
            let stdout = std::io::stdout();
            let mut writer = BufWriter::new(stdout.lock());
            let n = write_records(store, &mut writer)?;
            writer.flush()?;
            Ok(n)
        }
        Some(path) => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let name = path
                .file_name()
                .with_context(|| format!("{} is not a file path", path.display()))?;
            let temp = dir.join(format!(
                ".{}.tmp-{}",
                name.to_string_lossy(),
                std::process::id()
            ));
            let result = (|| {
                let file = File::create(&temp)
                    .with_context(|| format!("cannot create {}", temp.display()))?;
                let mut writer = BufWriter::new(file);
                let n = write_records(store, &mut writer)?;
                let file = writer.into_inner().map_err(|e| e.into_error())?;
                file.sync_all()?;
                fs::rename(&temp, path)
                    .with_context(|| format!("cannot replace {}", path.display()))?;
                File::open(dir)?.sync_all()?;
                Ok(n)
            })();
            if result.is_err() {
                let _ = fs::remove_file(&temp);
            }
            result
        }
    }
}

fn write_records(store: &Store, writer: &mut impl Write) -> anyhow::Result<usize> {
    let mut n = 0;
    for record in store.scan() {
        let record = record?;
        serde_json::to_writer(&mut *writer, &ExportedRecord::from(&record))?;
        writer.write_all(b"\n")?;
        n += 1;
    }
    Ok(n)
}

/// How many records an import applies per durable commit.
const IMPORT_BATCH: usize = 4096;

/// Loads JSON lines (as [`export`] writes them) into `store`, replacing each
/// listed account's settings. Every line is validated as a Set would be.
/// Returns how many records were imported.
///
/// # Errors
/// The first malformed or invalid line, by line number; the lines before it
/// are imported and durable.
pub async fn import(store: &Store, input: impl BufRead) -> anyhow::Result<usize> {
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    let mut imported = 0;
    for (index, line) in input.lines().enumerate() {
        let line_no = index + 1;
        let line = line.with_context(|| format!("line {line_no}: cannot read"))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: ExportedRecord = serde_json::from_str(&line)
            .with_context(|| format!("line {line_no}: not an exported record"))?;
        let patch = record
            .into_patch()
            .with_context(|| format!("line {line_no}: invalid record"))?;
        batch.push(patch);
        if batch.len() == IMPORT_BATCH {
            imported += store.set_many(std::mem::take(&mut batch)).await?;
        }
    }
    imported += store.set_many(batch).await?;
    Ok(imported)
}
