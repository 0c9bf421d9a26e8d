//! `settingsd.v1.SettingsService`: every kind (built-in and declared)
//! through one service, its values as `google.protobuf.Any`.
//!
//! It is a binding of the same core as the typed services ([`SettingsApi`]:
//! in-flight limit, auth, faults, the store, watch, history, rollback), so
//! every kind gets the same guarantees. What it adds is the value's
//! conversion:
//!
//! - a **declared kind**'s value is its message's encoding, which the store
//!   keeps as is. An update decodes the value with the kind's descriptor
//!   (so a value of another type, or one that does not decode, is refused
//!   before the store is touched), checks the mask's paths, and hands the
//!   store a merge that decodes the stored message, applies the update
//!   (AIP-134, [`crate::kinds::mask`]) and encodes the result, inside the
//!   store's atomic read-merge-write.
//! - a **built-in kind** keeps its own rules: the update is applied to the
//!   stored resource as a message, and the result is validated exactly as a
//!   typed Set validates (every field, then the cross-field rules). Both
//!   run inside the store's atomic read-merge-write (a
//!   [`Patch::TwilioWith`]), so it is as atomic as a typed Set, and an etag
//!   is checked against the state the update is applied to.

use std::{sync::Arc, time::SystemTime};

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{DynamicMessage, Value};
use tokio_stream::{wrappers::ReceiverStream, StreamExt};
use tonic::{metadata::MetadataMap, Request, Response, Status};

use super::{
    convert::{parse_etag, replacement, replacing_patch, to_message},
    faults::Method,
    services::{observed, WatchStream},
    watch::WatchRender,
    SettingsApi,
};
use crate::{
    contract::{pb, SettingsMessage, WatchSettingsMessage},
    domain::{AccountSid, Etag, Field, Settings, ValidationError, Violation},
    error::Error,
    kinds::{mask, Catalog, Kind},
    resource::Resource,
    store::{MessagePatch, MessageRecord, Patch, Record, Replacement, TwilioMerge},
};

/// The largest a declared kind's stored value may grow, encoded: a merge
/// can combine fields sent in different updates, each within the request
/// limit, so the result is bounded here too (a settings record is small;
/// a large one is a mistake, and would slow every read of it).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// `settingsd.v1.SettingsService`. Cheap to clone.
#[derive(Clone)]
pub struct SettingsGrpc {
    api: SettingsApi,
    catalog: Arc<Catalog>,
}

fn malformed(field: Field, why: String) -> Error {
    Error::Invalid(ValidationError {
        field,
        violation: Violation::Malformed(why),
    })
}

/// An UpdateSettings error of a field inside its `settings`, named by its
/// path in the request (`settings.account_sid`, not `account_sid`).
fn in_settings(e: Error) -> Error {
    match e {
        Error::Invalid(mut invalid) => {
            invalid.field = match invalid.field {
                Field::AccountSid => Field::SettingsAccountSid,
                Field::Kind => Field::SettingsKind,
                Field::Etag => Field::SettingsEtag,
                other => other,
            };
            Error::Invalid(invalid)
        }
        other => other,
    }
}

fn mask_error(e: &mask::MaskError) -> Error {
    malformed(
        Field::UpdateMask,
        format!("path {:?}: {}", e.path, e.reason),
    )
}

impl SettingsGrpc {
    pub fn new(api: SettingsApi, catalog: Arc<Catalog>) -> SettingsGrpc {
        SettingsGrpc { api, catalog }
    }

    /// The kind named `name`, for a caller that authenticates: a caller
    /// without valid credentials learns nothing, not even which kinds exist.
    fn kind_for(&self, metadata: &MetadataMap, name: &str) -> Result<&Kind, Error> {
        self.api.caller(metadata)?;
        self.kind(name)
    }

    /// The kind named `name` (the caller already authenticated).
    fn kind(&self, name: &str) -> Result<&Kind, Error> {
        if name.is_empty() {
            return Err(Error::Invalid(ValidationError {
                field: Field::Kind,
                violation: Violation::Missing,
            }));
        }
        self.catalog.get(name)
    }

    /// A record as the service answers it.
    fn render(&self, kind: &Kind, record: Record) -> Result<pb::Settings, Error> {
        Ok(match record {
            Record::Message(m) => render_declared(kind, m),
            Record::Twilio(s) => {
                let (account, revision, update_time) =
                    (s.account_sid.clone(), s.revision, s.update_time);
                let message = to_message(s, self.api.url(kind.resource));
                let value = encode_built_in(kind.resource, message);
                settings_of(kind, &account, value, revision, update_time)
            }
        })
    }

    /// `GetSettings`, for the gRPC binding and the JSON API.
    ///
    /// # Errors
    /// As the typed Get; [`Error::UnknownKind`].
    pub(crate) async fn get(
        &self,
        metadata: &MetadataMap,
        request: pb::GetSettingsRequest,
    ) -> Result<pb::Settings, Error> {
        let _slot = self.api.start()?;
        let account = self.api.authorize(metadata, &request.account_sid)?;
        let kind = self.kind(&request.kind)?;
        tracing::Span::current().record("account", account.as_str());
        self.api
            .inject(kind.resource, Method::Get, &account)
            .await?;
        let record = self.api.store.get(kind.resource, &account).await?;
        self.render(kind, record)
    }

    /// `UpdateSettings`, for the gRPC binding and the JSON API.
    ///
    /// # Errors
    /// As the typed Set; [`Error::UnknownKind`]; [`Error::Invalid`] naming
    /// the value or the mask path.
    pub(crate) async fn update(
        &self,
        metadata: &MetadataMap,
        request: pb::UpdateSettingsRequest,
    ) -> Result<pb::Settings, Error> {
        let settings = request.settings.ok_or(Error::Invalid(ValidationError {
            field: Field::Settings,
            violation: Violation::Missing,
        }))?;
        let _slot = self.api.start()?;
        let account = self
            .api
            .authorize(metadata, &settings.account_sid)
            .map_err(in_settings)?;
        let kind = self.kind(&settings.kind).map_err(in_settings)?;
        let update = decode_value(kind, settings.value.as_ref())?;
        refuse_unknown_fields(kind, &update)?;
        check_json(kind, &update)?;
        let paths = request
            .update_mask
            .map(|m| m.paths)
            .filter(|paths| !paths.is_empty());
        if let Some(paths) = &paths {
            mask::validate(&kind.message, paths).map_err(|e| mask_error(&e))?;
        }
        let expected = parse_etag(&settings.etag).map_err(|e| in_settings(e.into()))?;
        tracing::Span::current().record("account", account.as_str());
        self.api
            .inject(kind.resource, Method::Set, &account)
            .await?;
        let stored = if kind.resource.is_built_in() {
            self.update_built_in(kind, &account, update, paths, expected)
                .await?
        } else {
            let patch = declared_patch(kind, &account, update, paths);
            self.api
                .store
                .set(kind.resource, &account, patch, expected)
                .await?
        };
        tracing::debug!(revision = stored.revision(), "settings stored");
        self.render(kind, stored)
    }

    /// An update of a built-in kind: see the module docs.
    async fn update_built_in(
        &self,
        kind: &Kind,
        account: &AccountSid,
        update: DynamicMessage,
        paths: Option<Vec<String>>,
        expected: Option<Etag>,
    ) -> Result<Record, Error> {
        let (resource, descriptor) = (kind.resource, kind.message.clone());
        let merge = move |current: &Settings| {
            let message = encode_built_in(resource, to_message(current.clone(), String::new()));
            let mut merged = DynamicMessage::decode(descriptor.clone(), message.as_slice())
                .map_err(|e| Error::Storage(format!("a built-in resource does not decode: {e}")))?;
            mask::apply(&mut merged, &update, paths.as_deref()).map_err(|e| mask_error(&e))?;
            let merged = decode_built_in(&merged.encode_to_vec())
                .map_err(|e| Error::Storage(format!("a built-in resource does not decode: {e}")))?;
            // Only the resource's own fields are read: the output-only ones
            // (account_sid, url, revision, update_time, etag) an update
            // carries are ignored (AIP-203). A string sent empty clears the
            // field, as in the typed Set.
            Ok(replacing_patch(current.account_sid.clone(), &merged, true)?)
        };
        let patch = Patch::TwilioWith(TwilioMerge(Arc::new(merge)));
        self.api.store.set(resource, account, patch, expected).await
    }
}

/// A built-in resource's message, encoded as its own type (Recording and
/// Composition Settings have the same wire shape, but each its own name).
fn encode_built_in(resource: Resource, message: SettingsMessage) -> Vec<u8> {
    match resource {
        Resource::Composition => pb::CompositionSettings::from(message).encode_to_vec(),
        _ => pb::RecordingSettings::from(message).encode_to_vec(),
    }
}

/// A built-in resource's message from its encoding (either message type:
/// they have the same wire shape).
fn decode_built_in(value: &[u8]) -> Result<SettingsMessage, prost::DecodeError> {
    pb::RecordingSettings::decode(value).map(SettingsMessage::from)
}

/// A record in the generic shape: `value` (the encoding of the kind's
/// message) in an `Any` of the kind's type.
fn settings_of(
    kind: &Kind,
    account: &AccountSid,
    value: Vec<u8>,
    revision: u64,
    update_time: Option<SystemTime>,
) -> pb::Settings {
    pb::Settings {
        kind: kind.name().to_owned(),
        account_sid: account.as_str().to_owned(),
        value: Some(prost_types::Any {
            type_url: kind.type_url(),
            value,
        }),
        revision,
        etag: Etag::of_revision(revision).to_string(),
        update_time: update_time.map(prost_types::Timestamp::from),
    }
}

/// A declared kind's stored record in the generic shape, as
/// `SettingsService` answers it and `AdminService/ExportSettings` streams
/// it. The stored bytes are the message's encoding, so they go out as they
/// are: nothing is decoded, and a record written under an older schema
/// keeps the fields this one no longer declares.
pub fn render_declared(kind: &Kind, record: MessageRecord) -> pb::Settings {
    settings_of(
        kind,
        &record.account_sid,
        record.value.to_vec(),
        record.revision,
        record.update_time,
    )
}

/// `value` as a message of `kind`'s type.
///
/// # Errors
/// A [`Field::Value`] error if it is missing, names another type, or does
/// not decode as this one.
pub fn decode_value(
    kind: &Kind,
    value: Option<&prost_types::Any>,
) -> Result<DynamicMessage, ValidationError> {
    let expected = kind.message.full_name();
    let any = value.ok_or(ValidationError {
        field: Field::Value,
        violation: Violation::Missing,
    })?;
    let named = any.type_url.rsplit('/').next().unwrap_or_default();
    if named != expected {
        return Err(ValidationError {
            field: Field::Value,
            violation: Violation::Malformed(format!(
                "must be a {expected} (type_url {:?}) for kind {}, not {:?}",
                kind.type_url(),
                kind.name(),
                any.type_url
            )),
        });
    }
    DynamicMessage::decode(kind.message.clone(), any.value.as_slice()).map_err(|e| {
        ValidationError {
            field: Field::Value,
            violation: Violation::Malformed(format!("does not decode as a {expected}: {e}")),
        }
    })
}

/// Refuses a value that cannot be written as proto3 JSON (an `Any` of a
/// type the schema does not have, a `Timestamp` out of range...): stored,
/// it could be read over gRPC but not through the JSON API or into a
/// backup. Checked only for kinds whose values may hold such types.
///
/// # Errors
/// A [`Field::Value`] error saying why.
pub fn check_json(kind: &Kind, value: &DynamicMessage) -> Result<(), ValidationError> {
    if !kind.holds_well_known {
        return Ok(());
    }
    serde_json::to_value(value)
        .map(drop)
        .map_err(|e| ValidationError {
            field: Field::Value,
            violation: Violation::Malformed(format!("cannot be written as proto3 JSON: {e}")),
        })
}

/// Refuses an update's value with a field the kind's schema does not
/// define (a client built from another version of the .proto, say),
/// rather than store it unread: what an update stores is what the schema
/// says. (An import is not checked so: a record written before a field
/// was removed, and exported since, still carries it, and restores as it
/// was.)
///
/// # Errors
/// A [`Field::Value`] error naming the field number and where it is.
fn refuse_unknown_fields(kind: &Kind, value: &DynamicMessage) -> Result<(), ValidationError> {
    let Some((path, number)) = unknown_field(value, "") else {
        return Ok(());
    };
    Err(ValidationError {
        field: Field::Value,
        violation: Violation::Malformed(format!(
            "has a field number {number} in {} that {} does not define",
            if path.is_empty() {
                "the message"
            } else {
                &path
            },
            kind.message.full_name()
        )),
    })
}

/// The first field of `message` (or of a message inside it) that its
/// schema does not define: where (dotted, from the top) and its number.
fn unknown_field(message: &DynamicMessage, at: &str) -> Option<(String, u32)> {
    if let Some(field) = message.unknown_fields().next() {
        return Some((at.to_owned(), field.number()));
    }
    let inner = |name: &str| {
        if at.is_empty() {
            name.to_owned()
        } else {
            format!("{at}.{name}")
        }
    };
    message.fields().find_map(|(field, value)| match value {
        Value::Message(m) => unknown_field(m, &inner(field.name())),
        Value::List(items) => items.iter().find_map(|item| match item {
            Value::Message(m) => unknown_field(m, &inner(field.name())),
            _ => None,
        }),
        Value::Map(entries) => entries.values().find_map(|item| match item {
            Value::Message(m) => unknown_field(m, &inner(field.name())),
            _ => None,
        }),
        _ => None,
    })
}

/// The write that makes an account's record of declared `kind` hold
/// exactly `value` (an encoded message of its type): an import's, a
/// seed's.
///
/// A load of records leaves equal ones alone
/// ([`crate::store::replace_changed`]), and the store can only compare
/// bytes. One message has many encodings (a map's entries in any order,
/// for one: prost-reflect encodes them in hash order), so an equal value
/// may come with other bytes than the stored ones. The merge therefore
/// keeps the stored encoding when the stored message equals `value` as a
/// message, and writes `value` otherwise. (A stored record that does not
/// decode is replaced: an import is how one is repaired.)
///
/// # Errors
/// A [`Field::Value`] error if `value` is over [`MAX_VALUE_BYTES`]: an
/// import may not store what no update could.
pub fn declared_replacement(
    kind: &Kind,
    account: AccountSid,
    value: Bytes,
) -> Result<Replacement, ValidationError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(ValidationError {
            field: Field::Value,
            violation: Violation::Malformed(format!(
                "is {} bytes encoded; a value may hold at most {MAX_VALUE_BYTES}",
                value.len()
            )),
        });
    }
    let descriptor = kind.message.clone();
    let merge = move |stored: &[u8]| {
        let decode = |bytes: &[u8]| DynamicMessage::decode(descriptor.clone(), bytes).ok();
        let same = stored == value.as_ref()
            || (!stored.is_empty() && decode(stored).is_some_and(|s| decode(&value) == Some(s)));
        Ok(if same {
            Bytes::copy_from_slice(stored)
        } else {
            value.clone()
        })
    };
    Ok(Replacement {
        resource: kind.resource,
        account,
        patch: Patch::Message(MessagePatch(Arc::new(merge))),
    })
}

/// An import's record in the generic shape (`ExportedSettings`'s
/// `declared_settings`) as the write it asks for: its kind must be one
/// `catalog` serves, its account valid, and its value a message of the
/// kind's type that decodes. A declared kind's value is written as given
/// (so an export imported elsewhere has the same bytes); a built-in kind's
/// value is validated as a Set would be.
///
/// # Errors
/// The first invalid field: `kind` (missing or unknown, listing the kinds
/// there are), `account_sid`, `settings.value`, or a built-in field.
pub fn settings_replacement(
    catalog: &Catalog,
    settings: pb::Settings,
) -> Result<Replacement, ValidationError> {
    if settings.kind.is_empty() {
        return Err(ValidationError {
            field: Field::Kind,
            violation: Violation::Missing,
        });
    }
    let kind = catalog.get(&settings.kind).map_err(|e| ValidationError {
        field: Field::Kind,
        violation: Violation::Malformed(e.to_string()),
    })?;
    let account = AccountSid::parse(&settings.account_sid)?;
    check_json(kind, &decode_value(kind, settings.value.as_ref())?)?;
    let value = settings.value.map(|any| any.value).unwrap_or_default();
    if !kind.resource.is_built_in() {
        return declared_replacement(kind, account, Bytes::from(value));
    }
    let mut message = decode_built_in(&value).map_err(|e| ValidationError {
        field: Field::Value,
        violation: Violation::Malformed(format!("does not decode: {e}")),
    })?;
    message.account_sid = account.as_str().to_owned();
    replacement(kind.resource, &message)
}

/// The store's merge for an update of a declared kind.
fn declared_patch(
    kind: &Kind,
    account: &AccountSid,
    update: DynamicMessage,
    paths: Option<Vec<String>>,
) -> Patch {
    let (resource, descriptor, account) = (kind.resource, kind.message.clone(), account.clone());
    Patch::Message(MessagePatch(Arc::new(move |stored: &[u8]| {
        let mut message =
            DynamicMessage::decode(descriptor.clone(), stored).map_err(|e| Error::Corrupt {
                resource,
                account: account.clone(),
                detail: e.to_string(),
            })?;
        mask::apply(&mut message, &update, paths.as_deref()).map_err(|e| mask_error(&e))?;
        let encoded = message.encode_to_vec();
        if encoded.len() > MAX_VALUE_BYTES {
            return Err(malformed(
                Field::Value,
                format!(
                    "the merged value would be {} bytes; a value may hold at most {MAX_VALUE_BYTES}",
                    encoded.len()
                ),
            ));
        }
        Ok(Bytes::from(encoded))
    })))
}

/// A watch of one kind, answered in the generic shape.
struct GenericRender {
    service: SettingsGrpc,
    kind: Kind,
}

impl WatchRender for GenericRender {
    type Message = pb::SettingsChange;

    fn change(&self, record: Record, revision: u64, reset: bool) -> Result<Self::Message, Error> {
        Ok(pb::SettingsChange {
            revision,
            settings: Some(self.service.render(&self.kind, record)?),
            progress: false,
            reset,
        })
    }

    fn progress(&self, revision: u64) -> Self::Message {
        pb::SettingsChange {
            revision,
            progress: true,
            ..pb::SettingsChange::default()
        }
    }
}

#[tonic::async_trait]
impl pb::settings_service_server::SettingsService for SettingsGrpc {
    type WatchSettingsStream = WatchStream<pb::SettingsChange>;

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_kinds(
        &self,
        request: Request<pb::ListKindsRequest>,
    ) -> Result<Response<pb::ListKindsResponse>, Status> {
        observed(&self.api, "ListKinds", async {
            let _slot = self.api.start()?;
            // Any caller that may call anything: kinds are no secret, but
            // an accounts-file server answers only callers it knows.
            self.api.caller(request.metadata())?;
            let kinds = self
                .catalog
                .kinds()
                .iter()
                .map(|k| pb::Kind {
                    name: k.name().to_owned(),
                    message_type: k.message.full_name().to_owned(),
                })
                .collect();
            Ok(Response::new(pb::ListKindsResponse { kinds }))
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind, account))]
    async fn get_settings(
        &self,
        request: Request<pb::GetSettingsRequest>,
    ) -> Result<Response<pb::Settings>, Status> {
        observed(&self.api, "GetSettings", async {
            let (metadata, _, message) = request.into_parts();
            tracing::Span::current().record("kind", message.kind.as_str());
            Ok(Response::new(self.get(&metadata, message).await?))
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind, account))]
    async fn update_settings(
        &self,
        request: Request<pb::UpdateSettingsRequest>,
    ) -> Result<Response<pb::Settings>, Status> {
        observed(&self.api, "UpdateSettings", async {
            let (metadata, _, message) = request.into_parts();
            if let Some(settings) = &message.settings {
                tracing::Span::current().record("kind", settings.kind.as_str());
            }
            Ok(Response::new(self.update(&metadata, message).await?))
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind, account))]
    async fn watch_settings(
        &self,
        request: Request<pb::WatchSettingsRequest>,
    ) -> Result<Response<Self::WatchSettingsStream>, Status> {
        observed(&self.api, "WatchSettings", async {
            let (metadata, _, message) = request.into_parts();
            tracing::Span::current().record("kind", message.kind.as_str());
            let kind = self.kind_for(&metadata, &message.kind)?.clone();
            let render = GenericRender {
                service: self.clone(),
                kind: kind.clone(),
            };
            let watch = WatchSettingsMessage {
                account_sid: message.account_sid,
                start_revision: message.start_revision,
            };
            let messages = self
                .api
                .watch_with(kind.resource, &metadata, watch, render)
                .await?;
            let stream: Self::WatchSettingsStream =
                Box::pin(ReceiverStream::new(messages).map(|m| m.map_err(Status::from)));
            Ok(Response::new(stream))
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind, account))]
    async fn list_settings_revisions(
        &self,
        request: Request<pb::ListSettingsRevisionsRequest>,
    ) -> Result<Response<pb::ListSettingsRevisionsResponse>, Status> {
        observed(&self.api, "ListSettingsRevisions", async {
            let (metadata, _, message) = request.into_parts();
            tracing::Span::current().record("kind", message.kind.as_str());
            let kind = self.kind_for(&metadata, &message.kind)?;
            let (records, next_page_token) = self
                .api
                .history_page(
                    kind.resource,
                    &metadata,
                    &message.account_sid,
                    message.page_size,
                    &message.page_token,
                )
                .await?;
            let revisions = records
                .into_iter()
                .map(|record| self.render(kind, record))
                .collect::<Result<_, Error>>()?;
            Ok(Response::new(pb::ListSettingsRevisionsResponse {
                revisions,
                next_page_token,
            }))
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind, account))]
    async fn rollback_settings(
        &self,
        request: Request<pb::RollbackSettingsRequest>,
    ) -> Result<Response<pb::Settings>, Status> {
        observed(&self.api, "RollbackSettings", async {
            let (metadata, _, message) = request.into_parts();
            tracing::Span::current().record("kind", message.kind.as_str());
            let kind = self.kind_for(&metadata, &message.kind)?;
            let record = self
                .api
                .rollback_record(
                    kind.resource,
                    &metadata,
                    &message.account_sid,
                    message.revision,
                    &message.etag,
                )
                .await?;
            Ok(Response::new(self.render(kind, record)?))
        })
        .await
    }
}
