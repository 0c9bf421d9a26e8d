//! Backup and restore: every record of every resource as JSON lines, and
//! back. Each line names its resource (`"resource": "recording_settings"`);
//! a line without one (an export made before Composition Settings existed)
//! is Recording Settings, so old backups stay restorable.
//!
//! An export reads a data directory directly ([`export`], the server must be
//! stopped: sled allows one process per directory, and a running server's
//! directory is refused with a clear error), or a running server's records
//! from its `AdminService` (the CLI feeds them to an [`ExportWriter`]). An
//! import always writes a data directory directly. An export to a file is atomic:
//! it is written to a temporary file beside the target, fsynced, and renamed
//! over it, so a crash mid-export never leaves a half file in place of a
//! good one.

use std::{
    fs::File,
    io::{BufRead, BufWriter, Write},
    path::{Path, PathBuf},
};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;

use crate::{
    contract::SettingsMessage,
    domain::{AccountSid, Settings},
    error::Error,
    grpc::{replacement, to_message},
    resource::Resource,
    store::{replace_changed, replace_in_batches, Replacement, Store},
};

/// One exported record: its resource, the resource's stored fields, plus
/// the revision and update time it had (informational: an import writes
/// new ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedRecord {
    /// The resource's stable name ([`Resource::name`]); absent in exports
    /// made before there was more than one, which hold Recording Settings.
    #[serde(default)]
    pub resource: Option<String>,
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

impl ExportedRecord {
    /// A record of `resource` as the contract renders it (a running
    /// server's export streams these; an offline export renders stored
    /// records the same way, so there is one conversion).
    pub fn from_message(resource: Resource, s: SettingsMessage) -> Self {
        ExportedRecord {
            resource: Some(resource.name().to_owned()),
            account_sid: s.account_sid,
            friendly_name: s.friendly_name,
            aws_credentials_sid: s.aws_credentials_sid,
            aws_s3_url: s.aws_s3_url,
            aws_storage_enabled: s.aws_storage_enabled,
            encryption_key_sid: s.encryption_key_sid,
            encryption_enabled: s.encryption_enabled,
            revision: s.revision,
            update_time: s.update_time.map(|t| t.to_string()),
        }
    }

    fn from_stored(resource: Resource, settings: Settings) -> Self {
        // The export has no `url` column: the resource names it.
        Self::from_message(resource, to_message(settings, String::new()))
    }

    /// The resource this line is for.
    ///
    /// # Errors
    /// If `resource` names no resource this settingsd knows.
    pub fn resource(&self) -> anyhow::Result<Resource> {
        match &self.resource {
            None => Ok(Resource::Recording),
            Some(name) => Resource::from_name(name).with_context(|| {
                let known: Vec<_> = Resource::ALL.iter().map(|r| r.name()).collect();
                format!(
                    "unknown resource {name:?}: expected one of {}",
                    known.join(", ")
                )
            }),
        }
    }

    /// The write that makes an account's resource hold exactly this record:
    /// every field given, so whatever was stored is replaced.
    ///
    /// # Errors
    /// An unknown resource, or the first invalid field (or broken
    /// cross-field rule), named.
    pub fn into_replacement(self) -> anyhow::Result<Replacement> {
        let (resource, message) = self.into_message()?;
        Ok(replacement(resource, &message)?)
    }

    /// Its resource, and its fields in the contract's shape (without
    /// validating them; the revision and update time are left out).
    ///
    /// # Errors
    /// If `resource` names no resource this settingsd knows.
    pub fn into_message(self) -> anyhow::Result<(Resource, SettingsMessage)> {
        let resource = self.resource()?;
        let message = SettingsMessage {
            account_sid: self.account_sid,
            friendly_name: self.friendly_name,
            aws_credentials_sid: self.aws_credentials_sid,
            aws_s3_url: self.aws_s3_url,
            aws_storage_enabled: self.aws_storage_enabled,
            encryption_key_sid: self.encryption_key_sid,
            encryption_enabled: self.encryption_enabled,
            ..SettingsMessage::default()
        };
        Ok((resource, message))
    }
}

/// What an offline export wrote.
#[derive(Debug)]
pub struct ExportSummary {
    pub written: usize,
    /// Records that do not decode, left out (only with `skip_corrupt`).
    pub skipped: Vec<(Resource, AccountSid)>,
}

/// Writes every record of `store` as JSON lines to `out` (a file, replaced
/// atomically) or to stdout. A record that does not decode fails the
/// export, or with `skip_corrupt` is left out and listed in the summary
/// (so one bad record cannot stop the backup of every other account).
///
/// # Errors
/// An undecodable record (naming its account) unless skipped, or an I/O
/// failure; a target file is then left as it was.
pub async fn export(
    store: &dyn Store,
    out: Option<&Path>,
    skip_corrupt: bool,
) -> anyhow::Result<ExportSummary> {
    let mut writer = ExportWriter::create(out)?;
    let mut skipped = Vec::new();
    let mut scan = store.scan(&Resource::ALL);
    while let Some(record) = scan.next().await {
        match record {
            Ok(record) => {
                writer.write(&ExportedRecord::from_stored(
                    record.resource,
                    record.record.into_twilio()?,
                ))?;
            }
            Err(Error::Corrupt {
                resource,
                account,
                detail,
            }) if skip_corrupt => {
                tracing::warn!(%resource, %account, %detail, "left out of the export: the record does not decode");
                skipped.push((resource, account));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ExportSummary {
        written: writer.commit()?,
        skipped,
    })
}

/// Where an export goes: stdout, or a file that only [`ExportWriter::commit`]
/// puts in place (a temporary file beside it, with a random name, created
/// exclusively, fsynced, renamed over it, the directory fsynced). Dropped
/// uncommitted, it removes the temporary file and leaves the target as it was.
pub struct ExportWriter {
    sink: Sink,
    written: usize,
}

enum Sink {
    Stdout(BufWriter<std::io::Stdout>),
    File {
        writer: BufWriter<tempfile::NamedTempFile>,
        target: PathBuf,
        dir: PathBuf,
    },
}

impl ExportWriter {
    /// # Errors
    /// If `out` is not a file path or its temporary file cannot be created.
    pub fn create(out: Option<&Path>) -> anyhow::Result<ExportWriter> {
        let Some(path) = out else {
            return Ok(ExportWriter {
                sink: Sink::Stdout(BufWriter::new(std::io::stdout())),
                written: 0,
            });
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .with_context(|| format!("{} is not a file path", path.display()))?;
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".tmp")
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
        Ok(ExportWriter {
            sink: Sink::File {
                writer: BufWriter::new(temp),
                target: path.to_owned(),
                dir: dir.to_owned(),
            },
            written: 0,
        })
    }

    /// Appends one record as a JSON line.
    ///
    /// # Errors
    /// An I/O failure.
    pub fn write(&mut self, record: &ExportedRecord) -> anyhow::Result<()> {
        let writer: &mut dyn Write = match &mut self.sink {
            Sink::Stdout(w) => w,
            Sink::File { writer, .. } => writer,
        };
        serde_json::to_writer(&mut *writer, record)?;
        writer.write_all(b"\n")?;
        self.written += 1;
        Ok(())
    }

    /// Makes the export durable and puts it in place. Returns how many
    /// records it holds.
    ///
    /// # Errors
    /// An I/O failure; a target file is then left as it was.
    pub fn commit(self) -> anyhow::Result<usize> {
        match self.sink {
            Sink::Stdout(mut w) => w.flush()?,
            Sink::File {
                writer,
                target,
                dir,
            } => {
                let temp = writer.into_inner().map_err(|e| e.into_error())?;
                temp.as_file().sync_all()?;
                temp.persist(&target)
                    .with_context(|| format!("cannot replace {}", target.display()))?;
                File::open(&dir)?.sync_all()?;
            }
        }
        Ok(self.written)
    }
}

/// Loads JSON lines (as [`export`] writes them) into `store`, replacing each
/// listed account's resource (even a record that does not decode: importing
/// a good line for its account is how to repair it). Every line is validated first, as a Set would
/// be (cross-field rules included), so a bad line anywhere imports nothing;
/// then the records are written in durable batches. The whole input is held
/// in memory meanwhile (a few hundred bytes per record). Returns how many
/// records were imported.
///
/// # Errors
/// The first malformed or invalid line, by line number (nothing is
/// written); or a storage failure while writing, after which the batches
/// before it are imported and durable.
pub async fn import(store: &dyn Store, input: impl BufRead) -> anyhow::Result<usize> {
    let records = read_replacements(input)?;
    Ok(replace_in_batches(store, records).await?)
}

/// Loads a seed file (the export format) at a server's start: every line
/// validated first, as [`import`] does (a bad line stops the start, naming
/// it), then only the records that differ from what is stored are written,
/// so starting again with the same seed changes nothing (no new revisions,
/// no changes for watchers). Returns (written, already as seeded).
///
/// # Errors
/// As [`import`].
pub async fn seed(store: &dyn Store, input: impl BufRead) -> anyhow::Result<(usize, usize)> {
    let records = read_replacements(input)?;
    Ok(replace_changed(store, records).await?)
}

/// Parses and validates every line (as a Set would, cross-field rules
/// included) before anything is written.
fn read_replacements(input: impl BufRead) -> anyhow::Result<Vec<Replacement>> {
    read_lines(input, |record| record.into_replacement())
}

/// The lines of `input` as `ImportSettings` messages for a running server,
/// each validated here first (so that a bad line is reported by its
/// number, and nothing is sent).
///
/// # Errors
/// The first malformed or invalid line, by line number.
pub fn read_import_messages(
    input: impl BufRead,
) -> anyhow::Result<Vec<crate::pb::ImportSettingsRequest>> {
    read_lines(input, |record| {
        let (resource, message) = record.into_message()?;
        replacement(resource, &message)?;
        Ok(crate::pb::ImportSettingsRequest {
            record: Some(crate::pb::ExportedSettings::new(resource, message)),
        })
    })
}

/// Each non-blank line of `input` parsed as an exported record and turned
/// into a `T` by `convert`; the first failure names its line.
fn read_lines<T>(
    input: impl BufRead,
    convert: impl Fn(ExportedRecord) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<T>> {
    let mut records = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let line_no = index + 1;
        let line = line.with_context(|| format!("line {line_no}: cannot read"))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: ExportedRecord = serde_json::from_str(&line)
            .with_context(|| format!("line {line_no}: not an exported record"))?;
        // Validated as a record, cross-field rules included.
        let converted =
            convert(record).with_context(|| format!("line {line_no}: invalid record"))?;
        records.push(converted);
    }
    Ok(records)
}
