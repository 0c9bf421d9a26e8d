//! Where records live in etcd: one key per resource and account,
//! `{prefix}{resource}/{account}` (for example
//! `/settingsd/recording_settings/AC0123...`), so that a resource's records
//! are one key range, in account order, and several settingsd deployments
//! can share a cluster under different prefixes.
//!
//! The value is the record in the same versioned encoding as the sled
//! store's ([`crate::store::codec`]), without its revision (etcd's
//! `mod_revision` is the revision). An empty value is a reset's tombstone:
//! a reset puts it instead of deleting the key, so the reset has a revision
//! and a place in the key's MVCC history (which is how history and watches
//! see it), and reads answer the default resource for it.

use crate::{domain::AccountSid, resource::Resource, store::Selector};

/// The key layout under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// The resources whose keys [`Keys::parse`] recognises: a key of a kind
    /// this front end does not serve is not its record.
    resources: Vec<Resource>,
}

impl Keys {
    /// The layout under `prefix`, which gets a trailing `/` if it has none.
    ///
    /// # Errors
    /// An empty prefix (it would put settingsd's keys among everyone
    /// else's).
    pub fn new(prefix: &str) -> Result<Self, String> {
        if prefix.is_empty() {
            return Err("--etcd-prefix must not be empty".into());
        }
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Keys {
            prefix,
            resources: Resource::ALL.to_vec(),
        })
    }

    /// The same layout, recognising `resources`' keys.
    pub fn serving(self, resources: Vec<Resource>) -> Self {
        Keys { resources, ..self }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of an account's resource.
    pub fn key(&self, resource: Resource, account: &AccountSid) -> Vec<u8> {
        format!("{}{}/{}", self.prefix, resource.name(), account.as_str()).into_bytes()
    }

    /// The key of a declared kind's schema (see `Store::schema`): under
    /// `_schemas/`, which no kind name can be (they start with a letter).
    pub fn schema_key(&self, resource: Resource) -> Vec<u8> {
        format!("{}_schemas/{}", self.prefix, resource.name()).into_bytes()
    }

    /// The key range `[start, end)` holding every record of `resource`.
    pub fn resource_range(&self, resource: Resource) -> (Vec<u8>, Vec<u8>) {
        let start = format!("{}{}/", self.prefix, resource.name()).into_bytes();
        let end = prefix_end(&start);
        (start, end)
    }

    /// The narrowest key range holding everything `selector` selects (the
    /// caller still filters by account when only the account is set).
    pub fn selector_range(&self, selector: &Selector) -> (Vec<u8>, Vec<u8>) {
        match (&selector.resource, &selector.account) {
            (Some(resource), Some(account)) => (self.key(*resource, account), Vec::new()),
            (Some(resource), None) => self.resource_range(*resource),
            (None, _) => {
                let start = self.prefix.clone().into_bytes();
                let end = prefix_end(&start);
                (start, end)
            }
        }
    }

    /// Whose record `key` is; `None` for a key under the prefix that
    /// settingsd did not write.
    pub fn parse(&self, key: &[u8]) -> Option<(Resource, AccountSid)> {
        let key = std::str::from_utf8(key).ok()?;
        let (resource, account) = key.strip_prefix(&self.prefix)?.split_once('/')?;
        let resource = *self.resources.iter().find(|r| r.name() == resource)?;
        Some((resource, AccountSid::parse(account).ok()?))
    }
}

/// The end of the range of every key starting with `prefix` (etcd's
/// "prefix end": the prefix with its last byte incremented).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_ranges_hold_them() {
        let keys = Keys::new("/settingsd").unwrap();
        let account = AccountSid::parse("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").unwrap();
        for resource in Resource::ALL {
            let key = keys.key(resource, &account);
            assert_eq!(keys.parse(&key), Some((resource, account.clone())));
            let (start, end) = keys.resource_range(resource);
            assert!(start <= key && key < end);
            let (start, end) = keys.selector_range(&Selector::default());
            assert!(start <= key && key < end);
        }
        assert_eq!(
            keys.parse(b"/settingsd/other/ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            None
        );
        assert_eq!(keys.parse(b"/elsewhere/recording_settings/AC"), None);
        assert!(Keys::new("").is_err());
    }
}
