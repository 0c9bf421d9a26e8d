//! Backup and restore: every record of every kind as JSON lines, and back.
//! Each line names its resource (`"resource": "recording_settings"`); a line
//! without one (an export made before Composition Settings existed) is
//! Recording Settings, so old backups stay restorable.
//!
//! A built-in resource's line holds its fields. A declared kind's line
//! (`serve --kinds`) holds its message instead, as proto3 JSON in `value`:
//!
//! ```json
//! {"resource":"billing_limits","account_sid":"AC…","value":{"displayName":"Acme","monthlyCapCents":"5000"},"revision":7,"update_time":"2026-01-02T03:04:05.678Z"}
//! ```
//!
//! JSON rather than the message's bytes, so that a backup can be read,
//! diffed and edited like the built-in lines; converting needs the kind's
//! descriptors, so every path takes a [`Catalog`] (the kinds file the
//! server serves), and a declared kind's line met without it is refused,
//! naming the kind.
//!
//! An export reads a data directory directly ([`export`], the server must be
//! stopped: sled allows one process per directory, and a running server's
//! directory is refused with a clear error), or a running server's records
//! from its `AdminService` (the CLI feeds them to an [`ExportWriter`]). An
//! import writes a data directory directly ([`import`]), or sends the lines
//! to a running server ([`read_import_messages`]). An export to a file is
//! atomic: it is written to a temporary file beside the target, fsynced, and
//! renamed over it, so a crash mid-export never leaves a half file in place
//! of a good one.

use std::{
    fs::File,
    io::{BufRead, BufWriter, Write},
    path::{Path, PathBuf},
};

use anyhow::Context;
use bytes::Bytes;
use prost::Message as _;
use prost_reflect::DynamicMessage;
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;

use crate::{
    contract::{pb, SettingsMessage},
    domain::{AccountSid, Field, Settings},
    error::Error,
    grpc::{declared_replacement, decode_value, replacement, to_message},
    kinds::{Catalog, Kind},
    resource::Resource,
    store::{replace_changed, replace_in_batches, Record, Replacement, Store, StoredSettings},
};

/// One exported record: its resource, the resource's stored fields (or a
/// declared kind's value), plus the revision and update time it had
/// (informational: an import writes new ones).
///
/// Written as one of two shapes (see the module docs): a built-in
/// resource's line, field for field as exports have always written it, or
/// a declared kind's, with `value` and without the built-in fields (which
/// are then left unset here).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Line")]
pub struct ExportedRecord {
    /// The resource's stable name ([`Resource::name`]: a built-in
    /// resource's, or a declared kind's); absent in exports made before
    /// there was more than one, which hold Recording Settings.
    pub resource: Option<String>,
    pub account_sid: String,
    pub friendly_name: Option<String>,
    pub aws_credentials_sid: Option<String>,
    pub aws_s3_url: Option<String>,
    pub aws_storage_enabled: bool,
    pub encryption_key_sid: Option<String>,
    pub encryption_enabled: bool,
    /// A declared kind's value, as proto3 JSON (prost-reflect's, the same
    /// as the JSON API's); `None` on a built-in resource's line.
    pub value: Option<serde_json::Value>,
    pub revision: u64,
    pub update_time: Option<String>,
}

/// A line as read, before it is known which shape it has: every field
/// optional, so that [`ExportedRecord`]'s `TryFrom` can require each shape's
/// own and refuse a mix.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default)]
    resource: Option<String>,
    account_sid: String,
    #[serde(default)]
    friendly_name: Option<String>,
    #[serde(default)]
    aws_credentials_sid: Option<String>,
    #[serde(default)]
    aws_s3_url: Option<String>,
    #[serde(default)]
    aws_storage_enabled: Option<bool>,
    #[serde(default)]
    encryption_key_sid: Option<String>,
    #[serde(default)]
    encryption_enabled: Option<bool>,
    #[serde(default)]
    value: Option<serde_json::Value>,
    #[serde(default)]
    revision: u64,
    #[serde(default)]
    update_time: Option<String>,
}

impl TryFrom<Line> for ExportedRecord {
    type Error = String;

    /// A built-in resource's line must have both flags (as it always had
    /// to); a declared kind's has a `value` and none of the built-in
    /// fields, so that a line is never half one and half the other.
    fn try_from(line: Line) -> Result<ExportedRecord, String> {
        let built_in = if line.value.is_some() {
            let present = [
                ("friendly_name", line.friendly_name.is_some()),
                ("aws_credentials_sid", line.aws_credentials_sid.is_some()),
                ("aws_s3_url", line.aws_s3_url.is_some()),
                ("aws_storage_enabled", line.aws_storage_enabled.is_some()),
                ("encryption_key_sid", line.encryption_key_sid.is_some()),
                ("encryption_enabled", line.encryption_enabled.is_some()),
            ];
            if let Some((field, _)) = present.iter().find(|(_, present)| *present) {
                return Err(format!(
                    "a line with a value is a declared kind's record: it has no {field} \
                     (a built-in resource's field)"
                ));
            }
            (false, false)
        } else {
            let required = |field: &str| {
                format!(
                    "missing field `{field}` (of a built-in resource's line; a declared \
                     kind's line has a `value` instead)"
                )
            };
            (
                line.aws_storage_enabled
                    .ok_or_else(|| required("aws_storage_enabled"))?,
                line.encryption_enabled
                    .ok_or_else(|| required("encryption_enabled"))?,
            )
        };
        Ok(ExportedRecord {
            resource: line.resource,
            account_sid: line.account_sid,
            friendly_name: line.friendly_name,
            aws_credentials_sid: line.aws_credentials_sid,
            aws_s3_url: line.aws_s3_url,
            aws_storage_enabled: built_in.0,
            encryption_key_sid: line.encryption_key_sid,
            encryption_enabled: built_in.1,
            value: line.value,
            revision: line.revision,
            update_time: line.update_time,
        })
    }
}

/// A built-in resource's line: these fields in this order, as every export
/// has written them (old backups and scripts that read them stay valid).
#[derive(Serialize)]
struct BuiltInLine<'a> {
    resource: &'a Option<String>,
    account_sid: &'a str,
    friendly_name: &'a Option<String>,
    aws_credentials_sid: &'a Option<String>,
    aws_s3_url: &'a Option<String>,
    aws_storage_enabled: bool,
    encryption_key_sid: &'a Option<String>,
    encryption_enabled: bool,
    revision: u64,
    update_time: &'a Option<String>,
}

/// A declared kind's line.
#[derive(Serialize)]
struct DeclaredLine<'a> {
    resource: &'a Option<String>,
    account_sid: &'a str,
    value: &'a serde_json::Value,
    revision: u64,
    update_time: &'a Option<String>,
}

impl Serialize for ExportedRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.value {
            None => BuiltInLine {
                resource: &self.resource,
                account_sid: &self.account_sid,
                friendly_name: &self.friendly_name,
                aws_credentials_sid: &self.aws_credentials_sid,
                aws_s3_url: &self.aws_s3_url,
                aws_storage_enabled: self.aws_storage_enabled,
                encryption_key_sid: &self.encryption_key_sid,
                encryption_enabled: self.encryption_enabled,
                revision: self.revision,
                update_time: &self.update_time,
            }
            .serialize(serializer),
            Some(value) => DeclaredLine {
                resource: &self.resource,
                account_sid: &self.account_sid,
                value,
                revision: self.revision,
                update_time: &self.update_time,
            }
            .serialize(serializer),
        }
    }
}

/// A line read and checked against the kinds, before it becomes a write or
/// a message for a running server.
enum Parsed<'c> {
    /// A built-in resource's fields (not yet validated as a Set would be).
    BuiltIn(Resource, SettingsMessage),
    /// A declared kind's value, encoded.
    Declared {
        kind: &'c Kind,
        account: AccountSid,
        value: Bytes,
    },
}

impl ExportedRecord {
    /// A record of built-in `resource` as the contract renders it (a running
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
            value: None,
            revision: s.revision,
            update_time: s.update_time.map(|t| t.to_string()),
        }
    }

    /// A record of declared `kind`: `message`, its value, as proto3 JSON.
    ///
    /// # Errors
    /// If the value cannot be written as proto3 JSON, saying why.
    fn from_declared(
        kind: &Kind,
        account_sid: String,
        message: &DynamicMessage,
        revision: u64,
        update_time: Option<prost_types::Timestamp>,
    ) -> Result<Self, String> {
        let value = serde_json::to_value(message).map_err(|e| {
            format!(
                "cannot be written as proto3 JSON ({}): {e}",
                kind.message.full_name()
            )
        })?;
        Ok(ExportedRecord {
            resource: Some(kind.name().to_owned()),
            account_sid,
            value: Some(value),
            revision,
            update_time: update_time.map(|t| t.to_string()),
            // A declared kind's line has none of the built-in fields.
            ..ExportedRecord::default()
        })
    }

    /// A stored record; a declared kind's is read with its descriptor from
    /// `catalog`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if a declared kind's value does not decode (so
    /// that `--skip-corrupt` can leave it out, as it does a built-in
    /// resource's); [`Error::Storage`] for a kind `catalog` lacks (the store
    /// is opened with the catalog's kinds, so that is a bug).
    fn from_stored(catalog: &Catalog, stored: StoredSettings) -> Result<Self, Error> {
        let resource = stored.resource;
        match stored.record {
            // The export has no `url` column: the resource names it.
            Record::Twilio(settings) => Ok(Self::from_twilio(resource, settings)),
            Record::Message(record) => {
                let kind = catalog.of(resource).ok_or_else(|| {
                    Error::Storage(format!("the store holds kind {resource}, unknown here"))
                })?;
                DynamicMessage::decode(kind.message.clone(), &record.value[..])
                    .map_err(|e| format!("does not decode as a {}: {e}", kind.message.full_name()))
                    .and_then(|message| {
                        Self::from_declared(
                            kind,
                            record.account_sid.as_str().to_owned(),
                            &message,
                            record.revision,
                            record.update_time.map(prost_types::Timestamp::from),
                        )
                    })
                    .map_err(|detail| Error::Corrupt {
                        resource,
                        account: record.account_sid,
                        detail,
                    })
            }
        }
    }

    fn from_twilio(resource: Resource, settings: Settings) -> Self {
        Self::from_message(resource, to_message(settings, String::new()))
    }

    /// A record of a running server's export (`AdminService/ExportSettings`):
    /// a declared kind's value (an `Any`) is read with its descriptor from
    /// `catalog`.
    ///
    /// # Errors
    /// A record of a kind `catalog` does not declare (naming it: the export
    /// needs the server's kinds file), or whose value is not of the kind's
    /// type here; a resource this settingsd does not know.
    pub fn from_exported(catalog: &Catalog, record: pb::ExportedSettings) -> anyhow::Result<Self> {
        let settings = match record.settings {
            Some(pb::exported_settings::Settings::DeclaredSettings(settings)) => settings,
            settings => {
                let (resource, message) = pb::ExportedSettings { settings }.into_parts().context(
                    "the server exported a resource this settingsd does not know; \
                         export with a settingsd as new as the server",
                )?;
                return Ok(Self::from_message(resource, message));
            }
        };
        let name = &settings.kind;
        let account = &settings.account_sid;
        let kind = catalog
            .get(name)
            .ok()
            .filter(|kind| !kind.resource.is_built_in())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the server exported a record of kind {name:?} (account {account}), which is \
                     not declared here: pass --kinds FILE with the kinds file the server serves"
                )
            })?;
        let message = decode_value(kind, settings.value.as_ref())
            .with_context(|| format!("the server's record of kind {name} of account {account}"))?;
        Self::from_declared(
            kind,
            settings.account_sid,
            &message,
            settings.revision,
            settings.update_time,
        )
        .map_err(anyhow::Error::msg)
    }

    /// The kind this line is a record of.
    ///
    /// # Errors
    /// If `resource` names no kind of `catalog` (listing those there are,
    /// and saying that a declared kind needs its kinds file), or is missing
    /// from a line with a value.
    pub fn kind<'c>(&self, catalog: &'c Catalog) -> anyhow::Result<&'c Kind> {
        let Some(name) = &self.resource else {
            anyhow::ensure!(
                self.value.is_none(),
                "resource is required on a line with a value: the name of the declared kind \
                 it is a record of"
            );
            return Ok(catalog.get(Resource::Recording.name())?);
        };
        catalog.get(name).map_err(|_| {
            let known: Vec<_> = catalog.kinds().iter().map(Kind::name).collect();
            anyhow::anyhow!(
                "unknown resource {name:?}: expected one of {} (a declared kind's records \
                 need the kinds file that declares it: pass --kinds FILE)",
                known.join(", ")
            )
        })
    }

    /// Its kind, checked against the line's shape, and its content: a
    /// built-in resource's fields as given, or a declared kind's value
    /// parsed with the kind's descriptor and encoded.
    fn parse(self, catalog: &Catalog) -> anyhow::Result<Parsed<'_>> {
        let kind = self.kind(catalog)?;
        let name = kind.name();
        let Some(json) = self.value else {
            anyhow::ensure!(
                kind.resource.is_built_in(),
                "value is required: {name} is a declared kind, whose line holds its message as \
                 proto3 JSON"
            );
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
            return Ok(Parsed::BuiltIn(kind.resource, message));
        };
        anyhow::ensure!(
            !kind.resource.is_built_in(),
            "value is only for declared kinds: a {name} line holds the resource's fields \
             (friendly_name, ...)"
        );
        let account = AccountSid::parse(&self.account_sid)?;
        let message = DynamicMessage::deserialize(kind.message.clone(), json).map_err(|e| {
            anyhow::anyhow!(
                "invalid value: not a valid {} in proto3 JSON: {e}",
                kind.message.full_name()
            )
        })?;
        Ok(Parsed::Declared {
            kind,
            account,
            value: Bytes::from(message.encode_to_vec()),
        })
    }

    /// The write that makes an account's resource hold exactly this record:
    /// every field given (or the declared kind's whole value), so whatever
    /// was stored is replaced.
    ///
    /// # Errors
    /// An unknown kind, a line of the wrong shape for it, or the first
    /// invalid field (or broken cross-field rule), named.
    pub fn into_replacement(self, catalog: &Catalog) -> anyhow::Result<Replacement> {
        Ok(match self.parse(catalog)? {
            Parsed::BuiltIn(resource, message) => replacement(resource, &message)?,
            Parsed::Declared {
                kind,
                account,
                value,
            } => line_replacement(kind, account, value)?,
        })
    }

    /// The `ImportSettings` message for a running server, validated here
    /// first as [`ExportedRecord::into_replacement`] validates it.
    ///
    /// # Errors
    /// As [`ExportedRecord::into_replacement`].
    pub fn into_import_message(
        self,
        catalog: &Catalog,
    ) -> anyhow::Result<pb::ImportSettingsRequest> {
        let record = match self.parse(catalog)? {
            Parsed::BuiltIn(resource, message) => {
                replacement(resource, &message)?;
                pb::ExportedSettings::new(resource, message)
            }
            Parsed::Declared {
                kind,
                account,
                value,
            } => {
                line_replacement(kind, account.clone(), value.clone())?;
                pb::ExportedSettings::declared(pb::Settings {
                    kind: kind.name().to_owned(),
                    account_sid: account.as_str().to_owned(),
                    value: Some(prost_types::Any {
                        type_url: kind.type_url(),
                        value: value.to_vec(),
                    }),
                    ..pb::Settings::default()
                })
            }
        };
        Ok(pb::ImportSettingsRequest {
            record: Some(record),
        })
    }
}

/// [`declared_replacement`] of a line: its refusal names the line's field,
/// `value` (the gRPC record's is `settings.value`).
fn line_replacement(kind: &Kind, account: AccountSid, value: Bytes) -> anyhow::Result<Replacement> {
    declared_replacement(kind, account, value)
        .map_err(|e| anyhow::anyhow!("invalid value: {}", e.describe(Field::as_str)))
}

/// What an offline export wrote.
#[derive(Debug)]
pub struct ExportSummary {
    pub written: usize,
    /// Records that do not decode, left out (only with `skip_corrupt`).
    pub skipped: Vec<(Resource, AccountSid)>,
}

/// Writes every record of every kind `store` serves as JSON lines to `out`
/// (a file, replaced atomically) or to stdout, declared kinds' values read
/// with `catalog`'s descriptors. A record that does not decode fails the
/// export, or with `skip_corrupt` is left out and listed in the summary
/// (so one bad record cannot stop the backup of every other account).
///
/// # Errors
/// An undecodable record (naming its account) unless skipped, or an I/O
/// failure; a target file is then left as it was.
pub async fn export(
    store: &dyn Store,
    catalog: &Catalog,
    out: Option<&Path>,
    skip_corrupt: bool,
) -> anyhow::Result<ExportSummary> {
    let mut writer = ExportWriter::create(out)?;
    let mut skipped = Vec::new();
    let mut scan = store.scan(store.resources());
    while let Some(record) = scan.next().await {
        match record.and_then(|record| ExportedRecord::from_stored(catalog, record)) {
            Ok(line) => writer.write(&line)?,
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
/// a good line for its account is how to repair it). Every line is
/// validated first, as a Set would be (cross-field rules included; a
/// declared kind's value parsed with `catalog`'s descriptor), so a bad line
/// anywhere imports nothing; then the records are written in durable
/// batches. The whole input is held in memory meanwhile (a few hundred
/// bytes per record). Returns how many records were imported.
///
/// # Errors
/// The first malformed or invalid line, by line number (nothing is
/// written); or a storage failure while writing, after which the batches
/// before it are imported and durable.
pub async fn import(
    store: &dyn Store,
    catalog: &Catalog,
    input: impl BufRead,
) -> anyhow::Result<usize> {
    let records = read_replacements(catalog, input)?;
    Ok(replace_in_batches(store, records).await?)
}

/// Loads a seed file (the export format) at a server's start, its declared
/// kinds' lines read with the server's `catalog`: every line validated
/// first, as [`import`] does (a bad line stops the start, naming it), then
/// only the records that differ from what is stored are written, so
/// starting again with the same seed changes nothing (no new revisions, no
/// changes for watchers). Returns (written, already as seeded).
///
/// # Errors
/// As [`import`].
pub async fn seed(
    store: &dyn Store,
    catalog: &Catalog,
    input: impl BufRead,
) -> anyhow::Result<(usize, usize)> {
    let records = read_replacements(catalog, input)?;
    Ok(replace_changed(store, records).await?)
}

/// Parses and validates every line (as a Set would, cross-field rules
/// included) before anything is written.
fn read_replacements(catalog: &Catalog, input: impl BufRead) -> anyhow::Result<Vec<Replacement>> {
    read_lines(input, |record| record.into_replacement(catalog))
}

/// The lines of `input` as `ImportSettings` messages for a running server,
/// each validated here first, declared kinds' values with `catalog` (so
/// that a bad line is reported by its number, and nothing is sent; the
/// server checks declared values against its own kinds again).
///
/// # Errors
/// The first malformed or invalid line, by line number.
pub fn read_import_messages(
    catalog: &Catalog,
    input: impl BufRead,
) -> anyhow::Result<Vec<pb::ImportSettingsRequest>> {
    read_lines(input, |record| record.into_import_message(catalog))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn built_in() -> ExportedRecord {
        ExportedRecord {
            resource: Some("recording_settings".into()),
            account_sid: "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into(),
            friendly_name: Some("n".into()),
            aws_credentials_sid: None,
            aws_s3_url: None,
            aws_storage_enabled: false,
            encryption_key_sid: None,
            encryption_enabled: true,
            value: None,
            revision: 3,
            update_time: Some("2026-01-02T03:04:05Z".into()),
        }
    }

    /// Old backups, and scripts reading them, depend on this exact text.
    #[test]
    fn a_built_in_line_is_written_as_exports_always_wrote_it() {
        let line = serde_json::to_string(&built_in()).unwrap();

        assert_eq!(
            line,
            r#"{"resource":"recording_settings","account_sid":"ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","friendly_name":"n","aws_credentials_sid":null,"aws_s3_url":null,"aws_storage_enabled":false,"encryption_key_sid":null,"encryption_enabled":true,"revision":3,"update_time":"2026-01-02T03:04:05Z"}"#
        );
        assert_eq!(
            serde_json::from_str::<ExportedRecord>(&line).unwrap(),
            built_in()
        );
    }

    #[test]
    fn a_declared_line_holds_the_value_and_none_of_the_built_in_fields() {
        let record = ExportedRecord {
            resource: Some("billing_limits".into()),
            value: Some(serde_json::json!({"displayName": "Acme"})),
            friendly_name: None,
            encryption_enabled: false,
            ..built_in()
        };

        let line = serde_json::to_string(&record).unwrap();

        assert_eq!(
            line,
            r#"{"resource":"billing_limits","account_sid":"ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","value":{"displayName":"Acme"},"revision":3,"update_time":"2026-01-02T03:04:05Z"}"#
        );
        assert_eq!(
            serde_json::from_str::<ExportedRecord>(&line).unwrap(),
            record
        );
    }

    #[test]
    fn a_line_mixing_both_shapes_or_missing_a_flag_is_refused_naming_the_field() {
        let mixed = r#"{"resource":"billing_limits","account_sid":"AC1","value":{},"encryption_enabled":false}"#;
        let no_flag = r#"{"account_sid":"AC1","friendly_name":"n","aws_storage_enabled":false}"#;

        let mixed = serde_json::from_str::<ExportedRecord>(mixed).unwrap_err();
        let no_flag = serde_json::from_str::<ExportedRecord>(no_flag).unwrap_err();

        assert!(mixed.to_string().contains("encryption_enabled"), "{mixed}");
        assert!(
            no_flag.to_string().contains("encryption_enabled"),
            "{no_flag}"
        );
    }
}
