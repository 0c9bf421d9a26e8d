//! Schema evolution at start: each declared kind's schema is checked
//! against the one its stored records were written with, and then recorded
//! as the one they are written with from now on.
//!
//! The rules are [`crate::kinds::compat`]'s: a change is accepted when
//! records stored under the old schema still read correctly under the new
//! one (fields added, fields removed with their numbers reserved, fields
//! or messages renamed), and refused otherwise (a field number that
//! changes type, say), naming the kind and the field, unless the operator
//! passes `--allow-incompatible-kinds`.
//!
//! The offline `export` and `import` read and write a data directory with a
//! kinds file too, so they hold the same line ([`check_offline`]).

use prost::Message as _;

use crate::{
    kinds::{compat, schema_from_bytes, Catalog},
    resource::Resource,
    store::Store,
};

/// What the store keeps per declared kind: its message's full name and the
/// files that define it (an encoded `google.protobuf.FileDescriptorSet`).
#[derive(Clone, PartialEq, prost::Message)]
struct StoredSchema {
    #[prost(string, tag = "1")]
    message: String,
    #[prost(bytes = "vec", tag = "2")]
    file_descriptor_set: Vec<u8>,
}

/// Checks every declared kind's schema against the stored one and records
/// it.
///
/// # Errors
/// An incompatible change (unless `allow_incompatible`), naming the kind
/// and the field; the store's errors.
pub(super) async fn check_and_record(
    store: &dyn Store,
    catalog: &Catalog,
    allow_incompatible: bool,
) -> anyhow::Result<()> {
    let schemas = check(store, catalog, |kind, e| {
        if allow_incompatible {
            tracing::warn!(
                %kind,
                error = %e,
                "schema changed incompatibly; serving it anyway (--allow-incompatible-kinds)"
            );
            return Ok(());
        }
        anyhow::bail!(
            "{e}. Records of this kind stored under the old schema would be misread; \
             fix the schema (reserve removed field numbers, keep each number's type), \
             or start with --allow-incompatible-kinds to serve it anyway"
        )
    })
    .await?;
    record(store, schemas).await
}

/// The check of an offline export or import with a kinds file: an
/// incompatible change is always refused (there is no serving it anyway:
/// an export would misread the stored records, an import would write
/// records that the stored ones' schema misreads). An import, which writes
/// records in this schema, records it (`record`), as a start does.
///
/// # Errors
/// As [`check_and_record`].
pub(crate) async fn check_offline(
    store: &dyn Store,
    catalog: &Catalog,
    record_schema: bool,
) -> anyhow::Result<()> {
    let schemas = check(store, catalog, |_, e| {
        anyhow::bail!(
            "{e}. The data directory's records of this kind were written under an \
             incompatible schema and would be misread: use the kinds file the server \
             serves them with"
        )
    })
    .await?;
    if record_schema {
        record(store, schemas).await?;
    }
    Ok(())
}

/// Each declared kind's schema, encoded as the store keeps it, once checked
/// against the stored one; `incompatible` decides about an incompatible
/// change (an error refuses it).
async fn check(
    store: &dyn Store,
    catalog: &Catalog,
    incompatible: impl Fn(&str, compat::Incompatibility) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Checked>> {
    let mut schemas = Vec::new();
    for kind in catalog.declared().kinds() {
        let resource = Resource::declared(kind.name.as_str());
        let schema = StoredSchema {
            message: kind.message.full_name().to_owned(),
            file_descriptor_set: catalog.declared().schema_of(kind),
        }
        .encode_to_vec();
        let stored = store.schema(resource).await?;
        if let Some(old) = &stored {
            if *old != schema {
                let old = StoredSchema::decode(old.as_slice()).map_err(|e| {
                    anyhow::anyhow!("kind {}: the stored schema does not decode: {e}", kind.name)
                })?;
                let old = schema_from_bytes(&old.file_descriptor_set, &old.message)
                    .map_err(|e| anyhow::anyhow!("kind {}: the stored schema: {e}", kind.name))?;
                match compat::check(kind.name.as_str(), &old, &kind.message) {
                    Ok(()) => tracing::info!(kind = %kind.name, "schema changed compatibly"),
                    Err(e) => incompatible(kind.name.as_str(), e)?,
                }
            }
        }
        schemas.push(Checked {
            resource,
            stored,
            schema,
        });
    }
    Ok(schemas)
}

/// A declared kind's schema, checked against what was stored.
struct Checked {
    resource: Resource,
    /// The stored schema it was checked against.
    stored: Option<Vec<u8>>,
    /// Its own, encoded as the store keeps it.
    schema: Vec<u8>,
}

/// Records each checked schema as the one its kind's records are written
/// with from now on.
async fn record(store: &dyn Store, schemas: Vec<Checked>) -> anyhow::Result<()> {
    for checked in schemas {
        // Unchanged: nothing to record (and, on sled, no sync to pay).
        if checked.stored.as_deref() == Some(checked.schema.as_slice()) {
            continue;
        }
        store
            .put_schema(checked.resource, checked.stored, checked.schema)
            .await?;
    }
    Ok(())
}
