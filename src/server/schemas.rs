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
    for kind in catalog.declared().kinds() {
        let resource = Resource::declared(kind.name.as_str());
        let schema = StoredSchema {
            message: kind.message.full_name().to_owned(),
            file_descriptor_set: catalog.declared().schema_of(kind),
        }
        .encode_to_vec();
        if let Some(old) = store.schema(resource).await? {
            if old != schema {
                let old = StoredSchema::decode(old.as_slice()).map_err(|e| {
                    anyhow::anyhow!("kind {}: the stored schema does not decode: {e}", kind.name)
                })?;
                let old = schema_from_bytes(&old.file_descriptor_set, &old.message)
                    .map_err(|e| anyhow::anyhow!("kind {}: the stored schema: {e}", kind.name))?;
                match compat::check(kind.name.as_str(), &old, &kind.message) {
                    Ok(()) => tracing::info!(kind = %kind.name, "schema changed compatibly"),
                    Err(e) if allow_incompatible => tracing::warn!(
                        kind = %kind.name,
                        error = %e,
                        "schema changed incompatibly; serving it anyway (--allow-incompatible-kinds)"
                    ),
                    Err(e) => anyhow::bail!(
                        "{e}. Records of this kind stored under the old schema would be misread; \
                         fix the schema (reserve removed field numbers, keep each number's type), \
                         or start with --allow-incompatible-kinds to serve it anyway"
                    ),
                }
            }
        }
        store.put_schema(resource, schema).await?;
    }
    Ok(())
}
